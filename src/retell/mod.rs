//! Retell's management API: the client `askpro agent` provisions with, what a provisioned
//! branch looks like there, and a fake of the API for tests and demos.

pub mod client;
pub mod fake;
pub mod provision;
pub mod spec;

pub use client::{RetellClient, RetellError};
pub use fake::{FakeRetell, FakeRetellConfig};
