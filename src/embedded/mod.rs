//! The embedded backend: a durable log and a state store in SQLite under the data dir.
