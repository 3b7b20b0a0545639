//! Retry tiers and the dead-letter log.
//!
//! A transiently failed event (Cal.com 5xx, 429, timeout) is not retried in place: that would
//! hold back every later event of its tenant. Its record is copied to the retry tier for its
//! attempt (a log of its own, like a Kafka topic) with a due time, and its tenant moves on.
//! Each tier has one fixed delay, so each tier partition is ordered by due time and its
//! forwarder only ever waits for the head. When the head is due, the forwarder appends it to
//! the main log again (same key, so the same partition and tenant actor) and then commits
//! the tier offset. A crash between the two forwards it twice; dedup absorbs that.
//!
//! Ordering rule: events of a tenant are processed in log order; a retried event comes back
//! behind whatever its tenant received meanwhile. That is safe because handlers are
//! order-tolerant (versioned upserts) and every path to a booking converges on the
//! appointment row keyed by the call's idempotency key: whichever event gets there first
//! books, the others find it booked.
//!
//! After the last tier, the record goes to the dead-letter log and the event is `failed`
//! (`askpro events replay` runs it again).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::LogError;
use crate::log::EventLog;
use crate::record::{LogRecord, RetryMeta, StoredRecord};

const FETCH_MAX: usize = 64;
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// Longest single sleep while waiting for a due time, so a moved clock is noticed.
const MAX_NAP: Duration = Duration::from_secs(1);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// One retry tier: records wait `delay` here before going back to the main log.
#[derive(Clone)]
pub struct RetryTier {
    pub delay: Duration,
    pub log: Arc<dyn EventLog>,
}

/// The retry tiers (in attempt order) and the dead-letter log.
#[derive(Clone)]
pub struct RetryTopology {
    pub tiers: Vec<RetryTier>,
    pub dead_letters: Arc<dyn EventLog>,
}

/// Where a transiently failed record goes next.
pub enum Route<'a> {
    /// Tier number (1-based) and the tier.
    Retry(usize, &'a RetryTier),
    DeadLetter(&'a Arc<dyn EventLog>),
}

impl RetryTopology {
    /// The destination of a record that failed on `attempt` (1 for a first delivery).
    pub fn route(&self, attempt: u32) -> Route<'_> {
        let index = attempt.max(1) as usize - 1;
        match self.tiers.get(index) {
            Some(tier) => Route::Retry(index + 1, tier),
            None => Route::DeadLetter(&self.dead_letters),
        }
    }
}

/// A copy of `record` for a retry tier or the dead-letter log.
pub fn retry_copy(
    record: &StoredRecord,
    attempt: u32,
    due_at: DateTime<Utc>,
    error: &str,
) -> LogRecord {
    let mut meta = record.meta.clone();
    meta.retry = Some(RetryMeta {
        attempt,
        due_at,
        last_error: error.to_owned(),
    });
    LogRecord {
        meta,
        value: record.value.clone(),
    }
}

/// Moves due records from `tier` back to `main`, one task per partition, until shutdown.
pub async fn forward(
    tier_no: usize,
    tier: RetryTier,
    main: Arc<dyn EventLog>,
    group: String,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for partition in 0..tier.log.partitions() {
        let forwarder = Forwarder {
            tier_no,
            partition,
            tier: tier.log.clone(),
            main: Arc::clone(&main),
            group: group.clone(),
            clock: Arc::clone(&clock),
        };
        tasks.spawn(forward_partition(forwarder, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// What one partition's forwarder works with. A backend whose partitions move between
/// workers (Kafka) runs one [`forward_partition`] per tier partition it is assigned.
pub struct Forwarder {
    /// 1-based tier number (for logs).
    pub tier_no: usize,
    pub partition: u32,
    pub tier: Arc<dyn EventLog>,
    pub main: Arc<dyn EventLog>,
    /// Consumer group whose tier offsets the forwarder commits.
    pub group: String,
    pub clock: Arc<dyn Clock>,
}

/// Forwards one tier partition until `shutdown`.
pub async fn forward_partition(forwarder: Forwarder, shutdown: CancellationToken) {
    let forwarder = PartitionForwarder {
        tier_no: forwarder.tier_no,
        partition: forwarder.partition,
        tier: forwarder.tier,
        main: forwarder.main,
        group: forwarder.group,
        clock: forwarder.clock,
    };
    forwarder.run(&shutdown).await
}

struct PartitionForwarder {
    tier_no: usize,
    partition: u32,
    tier: Arc<dyn EventLog>,
    main: Arc<dyn EventLog>,
    group: String,
    clock: Arc<dyn Clock>,
}

impl PartitionForwarder {
    async fn run(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.pass(shutdown).await {
                tracing::warn!(
                    tier = self.tier_no,
                    partition = self.partition,
                    error = %error,
                    "retry forwarder failed; backing off"
                );
                nap(ERROR_BACKOFF, shutdown).await;
            }
        }
    }

    /// Forwards what is due from the committed offset on; returns to re-read the offset.
    async fn pass(&self, shutdown: &CancellationToken) -> Result<(), LogError> {
        let mut next = self
            .tier
            .committed(&self.group, self.partition)
            .await?
            .unwrap_or(0);
        while !shutdown.is_cancelled() {
            // A long poll (few idle reads) that shutdown still ends at once.
            let fetched = tokio::select! {
                fetched = self.tier.fetch(self.partition, next, FETCH_MAX, FETCH_WAIT) => fetched,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let batch = fetched?;
            for record in batch {
                if !self.wait_until_due(&record, shutdown).await {
                    return Ok(());
                }
                let copy = LogRecord {
                    meta: record.meta.clone(),
                    value: record.value.clone(),
                };
                self.main.append(vec![copy]).await?;
                next = record.offset + 1;
                self.tier.commit(&self.group, self.partition, next).await?;
                tracing::debug!(
                    tier = self.tier_no,
                    partition = self.partition,
                    event_id = %record.meta.event_id,
                    attempt = record.meta.attempt(),
                    "retry forwarded to the main log"
                );
            }
        }
        Ok(())
    }

    /// Sleeps until the record is due; `false` on shutdown.
    async fn wait_until_due(&self, record: &StoredRecord, shutdown: &CancellationToken) -> bool {
        let Some(due_at) = record.meta.retry.as_ref().map(|r| r.due_at) else {
            return true;
        };
        loop {
            let left = due_at - self.clock.now();
            let Ok(left) = left.to_std() else {
                return true; // due (negative remainder)
            };
            if left.is_zero() {
                return true;
            }
            if !nap(left.min(MAX_NAP), shutdown).await {
                return false;
            }
        }
    }
}

/// Sleeps `d`; `false` when shutdown interrupted it.
async fn nap(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
#[path = "retry_tier_tests.rs"]
mod tests;
