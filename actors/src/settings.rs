//! Tunables of the pipeline, validated by the binary's config layer.

use std::time::Duration;

/// How the consumers and tenant actors behave.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Consumer group whose committed offsets this worker advances.
    pub consumer_group: String,
    /// Records fetched per poll of one partition.
    pub fetch_batch: usize,
    /// Long-poll wait when a partition has nothing new.
    pub fetch_wait: Duration,
    /// Events one tenant may have queued; beyond it the partition's intake pauses.
    pub tenant_queue_capacity: usize,
    /// Events one partition may have in flight (all tenants together).
    pub partition_max_inflight: usize,
    /// A tenant actor with nothing to do for this long is stopped.
    pub idle_timeout: Duration,
    /// How long a completed dedup key is remembered.
    pub dedup_window: Duration,
    /// How long a claim blocks other deliveries if its holder crashes.
    pub dedup_lease: Duration,
    /// Panics one event may cause before it is marked `failed`.
    pub max_panics_per_event: u32,
    /// First restart delay after a tenant actor panics; doubles per consecutive panic.
    pub restart_backoff: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// Upper bound of the store-retry backoff when the store is unavailable.
    pub store_retry_max_backoff: Duration,
    /// Region for reading national phone numbers (e.g. "DE").
    pub default_region: String,
    /// Book from `call_ended` too. Off by default: `call_analyzed` follows with the post-call
    /// analysis, which may correct the slot or say no appointment was made, and a booking
    /// made from `call_ended` would not follow that correction.
    pub book_on_call_ended: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            consumer_group: "askpro".into(),
            fetch_batch: 256,
            fetch_wait: Duration::from_millis(200),
            tenant_queue_capacity: 256,
            partition_max_inflight: 2048,
            idle_timeout: Duration::from_secs(300),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            dedup_lease: Duration::from_secs(30),
            max_panics_per_event: 3,
            restart_backoff: Duration::from_millis(100),
            commit_interval: Duration::from_millis(200),
            store_retry_max_backoff: Duration::from_secs(5),
            default_region: "DE".into(),
            book_on_call_ended: false,
        }
    }
}
