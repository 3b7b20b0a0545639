//! AskPro's pipeline core.
//!
//! This crate owns the contracts every backend implements ([`EventLog`], [`StateStore`],
//! [`Clock`]), the domain rules (phone numbers, dedup keys, order-tolerant handlers) and the
//! supervised actors that run one tenant's pipeline. It never names a transport: Kafka, CQL,
//! SQLite and HTTP live in the `askpro` crate as adapters.

pub mod booking;
pub mod catalog;
pub mod clock;
pub mod dedup;
pub mod domain;
pub mod error;
pub mod extract;
pub mod group;
pub mod handlers;
pub mod ids;
pub mod ingress;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod partition_consumer;
pub mod phone;
pub mod pipeline;
pub mod reconciler;
pub mod record;
pub mod retry;
pub mod retry_tier;
pub mod settings;
pub mod store;
pub mod tenant;
pub mod tenant_supervisor;
#[cfg(test)]
pub(crate) mod testkit;
pub mod timestamp;
pub mod tools;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{LogError, StoreError};
pub use ids::{BranchId, CompanyId, EventId};
pub use log::{EventLog, LogPosition};
pub use record::{Disposition, LogRecord, Provider, RecordMeta, StoredRecord};
pub use store::StateStore;
