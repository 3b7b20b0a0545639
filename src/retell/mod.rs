//! Retell's management API: a fake of it for tests and demos.

pub mod fake;

pub use fake::{FakeRetell, FakeRetellConfig};
