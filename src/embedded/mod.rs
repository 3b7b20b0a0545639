//! The embedded backend: a durable log and a state store in SQLite under the data dir.
//!
//! `log.db` holds the log (records, consumer-group offsets, the partition count) and
//! `state.db` the tenant state. Both run in WAL mode so the CLI can read (and write) the same
//! files while the server runs; the schemas are versioned migrations in `schemas/sql/`.

mod checkpoint;
mod disk;
mod log;
mod log_codec;
mod log_health;
mod migrate;
mod retention;
mod sqlite;
mod store;
mod store_catalog_sql;
mod store_rows;
mod store_sql;
mod writer;

pub use self::disk::{DiskReserve, RESERVE_FILE};
pub use self::log::{EmbeddedLog, LOG_FILE};
pub use self::store::{EmbeddedStore, STATE_FILE};
