//! The log contract, shaped after Kafka: records are keyed by tenant and hashed onto
//! partitions ([`crate::partition::partition_for`]); each partition is an ordered sequence of
//! offsets; consumer groups commit "the next offset to read" per partition.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::LogError;
use crate::record::{LogRecord, StoredRecord};

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

/// A durable, partitioned, append-only log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Number of partitions; records are placed by `partition_for(key, partitions())`.
    fn partitions(&self) -> u32;

    /// Appends a batch and returns only once every record is durable (fsync'd, or acknowledged
    /// by all in-sync replicas). Positions are returned in input order. All-or-nothing is not
    /// promised across partitions; an error means the caller must treat every record in the
    /// batch as not acknowledged.
    async fn append(&self, records: Vec<LogRecord>) -> Result<Vec<LogPosition>, LogError>;

    /// Reads up to `max` records of `partition` starting at `offset`. When none are available
    /// it waits up to `wait` for new ones and may then return an empty batch.
    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>, LogError>;

    /// Commits `next_offset` (the first offset *not* yet processed) for `group`.
    async fn commit(&self, group: &str, partition: u32, next_offset: u64) -> Result<(), LogError>;

    /// The committed next offset of `group` on `partition`, if any.
    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError>;

    /// The offset the next appended record of `partition` will get (Kafka's high watermark).
    async fn end_offset(&self, partition: u32) -> Result<u64, LogError>;

    /// A cheap liveness probe for `/health`.
    async fn check(&self) -> Result<(), LogError>;

    /// Stops the backend prefetching `partition` while its consumer is backed up (a tenant's
    /// queue is full). Kafka pauses the partition; the embedded log reads on demand anyway.
    fn pause(&self, partition: u32) {
        let _ = partition;
    }

    /// Undoes [`EventLog::pause`].
    fn resume(&self, partition: u32) {
        let _ = partition;
    }

    /// Drops records appended before `older_than` that every consumer group has committed,
    /// and returns how many went. Backends whose broker enforces retention itself (Kafka)
    /// keep the default, which does nothing.
    async fn enforce_retention(&self, older_than: DateTime<Utc>) -> Result<u64, LogError> {
        let _ = older_than;
        Ok(0)
    }
}
