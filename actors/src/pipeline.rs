//! One event's way to a final status, shared by every tenant actor:
//! ledger `processing` → dedup claim → handler → dedup complete → ledger final status.
//!
//! Crash safety: a claim that is never completed (the process died mid-event) is taken over
//! by the redelivered record itself (same holder) or, after the lease, by anyone. Handlers
//! are idempotent, so running one twice after a crash changes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::domain::{DedupClaim, EventRow, EventStatus};
use crate::error::StoreError;
use crate::handlers::{self, HandlerCtx, HandlerError};
use crate::metrics::PipelineMetrics;
use crate::record::{Disposition, StoredRecord};
use crate::settings::PipelineSettings;
use crate::store::{ClaimRequest, StateStore};

/// A test seam: called before each event is processed, may panic to exercise supervision.
pub trait FaultHook: Send + Sync + 'static {
    fn before_process(&self, record: &StoredRecord);
}

/// The final outcome of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub status: EventStatus,
    pub error: Option<String>,
}

/// Everything a tenant actor needs to process events.
pub struct Pipeline {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub settings: PipelineSettings,
    pub metrics: PipelineMetrics,
    pub fault: Option<Arc<dyn FaultHook>>,
}

/// The ledger row of a record just taken off the log.
pub fn received_row(record: &StoredRecord, now: DateTime<Utc>) -> EventRow {
    let meta = &record.meta;
    EventRow {
        id: meta.event_id,
        company_id: meta.company_id,
        provider: meta.provider,
        event_type: meta.event_type.clone(),
        dedup_key: meta.dedup_key.clone(),
        status: EventStatus::Received,
        attempts: 0,
        error: None,
        correlation_id: meta.correlation_id,
        secret_id: meta.secret_id.clone(),
        partition: record.partition,
        offset: record.offset,
        received_at: meta.received_at,
        updated_at: now,
        payload: record.value.clone(),
    }
}

impl Pipeline {
    /// Runs one event to a final status. `Err` means the store is unavailable: retry later
    /// with the same record (the dedup claim recognises its own holder).
    pub async fn process(
        &self,
        record: &StoredRecord,
        attempt: u32,
    ) -> Result<Finished, StoreError> {
        let finished = match &record.meta.disposition {
            Disposition::Rejected(reason) => Finished {
                status: EventStatus::Rejected,
                error: Some(reason.clone()),
            },
            Disposition::Unrouted(reason) => Finished {
                status: EventStatus::Unrouted,
                error: Some(reason.clone()),
            },
            Disposition::Accept => self.process_accepted(record, attempt).await?,
        };
        self.record_final(record, attempt, &finished).await?;
        Ok(finished)
    }

    /// Marks an event `failed` without running it (crash loop, exhausted retries).
    pub async fn fail(
        &self,
        record: &StoredRecord,
        attempts: u32,
        error: String,
    ) -> Result<(), StoreError> {
        let meta = &record.meta;
        self.store
            .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
            .await?;
        let finished = Finished {
            status: EventStatus::Failed,
            error: Some(error),
        };
        self.record_final(record, attempts, &finished).await
    }

    async fn process_accepted(
        &self,
        record: &StoredRecord,
        attempt: u32,
    ) -> Result<Finished, StoreError> {
        let meta = &record.meta;
        let now = self.clock.now();
        self.store
            .set_event_status(
                meta.company_id,
                meta.event_id,
                EventStatus::Processing,
                attempt,
                None,
                now,
            )
            .await?;
        let claim = self
            .store
            .dedup_claim(self.claim_request(record, now))
            .await?;
        match claim {
            DedupClaim::Claimed => {}
            // This very event completed before (its report was lost to a crash or restart).
            DedupClaim::Completed { holder } if holder == meta.event_id => {
                return Ok(Finished {
                    status: EventStatus::Processed,
                    error: None,
                });
            }
            DedupClaim::Completed { holder } => {
                return Ok(duplicate(format!("duplicate of event {holder}")));
            }
            // Another worker holds a live claim for the same delivery. Its record stays
            // uncommitted until it finishes, so it cannot be lost; this copy is redundant.
            DedupClaim::InFlight { holder, .. } => {
                return Ok(duplicate(format!(
                    "duplicate of event {holder} (still in flight)"
                )));
            }
        }
        let ctx = HandlerCtx {
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            default_region: &self.settings.default_region,
        };
        match handlers::handle(&ctx, record).await {
            Ok(handled) => {
                if let Some(note) = &handled.note {
                    tracing::debug!(event_id = %meta.event_id, note = %note, "event changed nothing");
                }
                self.store
                    .dedup_complete(meta.company_id, &meta.dedup_key, meta.event_id)
                    .await?;
                Ok(Finished {
                    status: EventStatus::Processed,
                    error: None,
                })
            }
            Err(HandlerError::Store(e)) if e.is_transient() => Err(e),
            Err(e) => {
                // A permanent failure frees the key, so a corrected redelivery can succeed.
                self.store
                    .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
                    .await?;
                Ok(Finished {
                    status: EventStatus::Failed,
                    error: Some(e.to_string()),
                })
            }
        }
    }

    fn claim_request<'a>(&self, record: &'a StoredRecord, now: DateTime<Utc>) -> ClaimRequest<'a> {
        let meta = &record.meta;
        ClaimRequest {
            company_id: meta.company_id,
            key: &meta.dedup_key,
            holder: meta.event_id,
            now,
            lease_until: now + to_chrono(self.settings.dedup_lease),
            expires_at: now + to_chrono(self.settings.dedup_window),
        }
    }

    async fn record_final(
        &self,
        record: &StoredRecord,
        attempts: u32,
        finished: &Finished,
    ) -> Result<(), StoreError> {
        let meta = &record.meta;
        self.store
            .set_event_status(
                meta.company_id,
                meta.event_id,
                finished.status,
                attempts,
                finished.error.as_deref(),
                self.clock.now(),
            )
            .await?;
        self.metrics
            .events_total
            .with_label_values(&[finished.status.as_str()])
            .inc();
        Ok(())
    }
}

fn duplicate(error: String) -> Finished {
    Finished {
        status: EventStatus::Duplicate,
        error: Some(error),
    }
}

fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
