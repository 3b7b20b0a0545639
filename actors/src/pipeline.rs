//! One event's way to a final status, shared by every tenant actor:
//! ledger `processing` → dedup claim → handler → dedup complete → ledger final status.
//!
//! Crash safety: a claim that is never completed (the process died mid-event) is taken over
//! by the redelivered record itself (same holder) or, after the lease, by anyone. Handlers
//! are idempotent, so running one twice after a crash changes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::booking::Booker;
use crate::clock::Clock;
use crate::domain::{DedupClaim, EventRow, EventStatus};
use crate::error::StoreError;
use crate::handlers::{self, HandlerCtx, HandlerError};
use crate::metrics::PipelineMetrics;
use crate::record::{Disposition, StoredRecord};
use crate::retry_tier::{self, RetryTopology, Route};
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
    /// Books appointments; `None` leaves them `pending_sync`.
    pub booker: Option<Arc<Booker>>,
    /// Where transiently failed events wait; `None` fails them at once.
    pub retries: Option<RetryTopology>,
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
        payload: ledger_payload(record),
    }
}

/// The body the ledger row keeps. A `rejected` body is never replayed (it failed the schema),
/// so the log holds its only copy and the row points at it by partition and offset:
/// authentic senders cannot make us store each bad body twice. Other bodies are kept, because
/// `askpro events replay` runs them again from the ledger after the log has dropped them.
fn ledger_payload(record: &StoredRecord) -> bytes::Bytes {
    match record.meta.disposition {
        Disposition::Rejected(_) => bytes::Bytes::new(),
        _ => record.value.clone(),
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
        // The ledger counts every run: retries of the record plus redeliveries after a panic.
        let attempt = record.meta.attempt() + attempt.saturating_sub(1);
        let done = match &record.meta.disposition {
            Disposition::Rejected(reason) => Done::plain(Finished {
                status: EventStatus::Rejected,
                error: Some(reason.clone()),
            }),
            Disposition::Unrouted(reason) => Done::plain(Finished {
                status: EventStatus::Unrouted,
                error: Some(reason.clone()),
            }),
            Disposition::Accept => match self.process_accepted(record, attempt).await {
                Ok(done) => done,
                Err(error) if error.is_transient() => return Err(error),
                // Retrying cannot fix a permanent refusal (a conflict, a corrupt row): the
                // event fails with the reason instead of blocking its tenant forever.
                Err(error) => Done::plain(self.refused(record, error).await),
            },
        };
        let Done {
            finished,
            complete_key,
        } = done;
        match self
            .record_final(record, attempt, &finished, complete_key)
            .await
        {
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                tracing::error!(
                    company_id = %record.meta.company_id,
                    event_id = %record.meta.event_id,
                    error = %error,
                    "final status not recorded; event finished anyway"
                );
                Ok(finished)
            }
            Ok(()) => Ok(finished),
        }
    }

    async fn refused(&self, record: &StoredRecord, error: StoreError) -> Finished {
        let meta = &record.meta;
        let released = self
            .store
            .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
            .await;
        if let Err(release_error) = released {
            tracing::warn!(event_id = %meta.event_id, error = %release_error, "dedup key not released");
        }
        Finished {
            status: EventStatus::Failed,
            error: Some(format!("store refused the event: {error}")),
        }
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
        self.record_final(record, attempts, &finished, false).await
    }

    async fn process_accepted(
        &self,
        record: &StoredRecord,
        attempt: u32,
    ) -> Result<Done, StoreError> {
        let meta = &record.meta;
        let now = self.clock.now();
        let claim = self
            .store
            .begin_event(self.claim_request(record, now), attempt)
            .await?;
        match claim {
            DedupClaim::Claimed => {}
            // This very event completed before (its report was lost to a crash or restart).
            DedupClaim::Completed { holder } if holder == meta.event_id => {
                return Ok(Done::plain(Finished {
                    status: EventStatus::Processed,
                    error: None,
                }));
            }
            DedupClaim::Completed { holder } => {
                return Ok(Done::plain(duplicate(format!(
                    "duplicate of event {holder}"
                ))));
            }
            // Another worker holds a live claim for the same delivery. Its record stays
            // uncommitted until it finishes, so it cannot be lost; this copy is redundant.
            DedupClaim::InFlight { holder, .. } => {
                return Ok(Done::plain(duplicate(format!(
                    "duplicate of event {holder} (still in flight)"
                ))));
            }
        }
        let ctx = HandlerCtx {
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            default_region: &self.settings.default_region,
            booker: self.booker.as_deref(),
            book_on_call_ended: self.settings.book_on_call_ended,
        };
        match handlers::handle(&ctx, record).await {
            Ok(handled) => {
                if let Some(note) = &handled.note {
                    tracing::debug!(event_id = %meta.event_id, note = %note, "event changed nothing");
                }
                // The key is completed together with the final status (record_final).
                Ok(Done {
                    finished: Finished {
                        status: EventStatus::Processed,
                        error: None,
                    },
                    complete_key: true,
                })
            }
            Err(HandlerError::Store(e)) if e.is_transient() => Err(e),
            Err(HandlerError::Interrupted) => Err(StoreError::Unavailable {
                operation: "booking (interrupted by shutdown)",
                source: "shutdown began while waiting for the cal.com rate limit".into(),
            }),
            // The claim stays: a duplicate delivery meanwhile is recognised as one.
            Err(HandlerError::Transient(error)) => {
                self.retry_later(record, &error).await.map(Done::plain)
            }
            Err(e) => {
                // A permanent failure frees the key, so a corrected redelivery can succeed.
                self.store
                    .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
                    .await?;
                Ok(Done::plain(Finished {
                    status: EventStatus::Failed,
                    error: Some(e.to_string()),
                }))
            }
        }
    }

    /// Sends a transiently failed record to its retry tier, or after the last tier to the
    /// dead-letter log (the event becomes `failed`, its claim released for a replay).
    async fn retry_later(
        &self,
        record: &StoredRecord,
        error: &str,
    ) -> Result<Finished, StoreError> {
        let meta = &record.meta;
        let attempt = meta.attempt();
        let now = self.clock.now();
        let Some(retries) = &self.retries else {
            self.store
                .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
                .await?;
            return Ok(Finished {
                status: EventStatus::Failed,
                error: Some(format!("{error} (no retry tiers configured)")),
            });
        };
        match retries.route(attempt) {
            Route::Retry(tier_no, tier) => {
                let due_at = now + to_chrono(tier.delay);
                let copy = retry_tier::retry_copy(record, attempt + 1, due_at, error);
                tier.log.append(vec![copy]).await.map_err(log_unavailable)?;
                if let Some(booker) = &self.booker {
                    let tier_label = tier_no.to_string();
                    booker
                        .metrics
                        .retries_scheduled_total
                        .with_label_values(&[tier_label.as_str()])
                        .inc();
                }
                tracing::info!(
                    company_id = %meta.company_id,
                    event_id = %meta.event_id,
                    attempt,
                    tier = tier_no,
                    due_at = %due_at,
                    error,
                    "event sent to retry tier"
                );
                Ok(Finished {
                    status: EventStatus::Retrying,
                    error: Some(format!(
                        "attempt {attempt} failed: {error}; retry {} due at {}",
                        attempt + 1,
                        due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )),
                })
            }
            Route::DeadLetter(dead_letters) => {
                let copy = retry_tier::retry_copy(record, attempt, now, error);
                dead_letters
                    .append(vec![copy])
                    .await
                    .map_err(log_unavailable)?;
                if let Some(booker) = &self.booker {
                    booker.metrics.dead_letters_total.inc();
                }
                self.store
                    .dedup_release(meta.company_id, &meta.dedup_key, meta.event_id)
                    .await?;
                tracing::warn!(
                    company_id = %meta.company_id,
                    event_id = %meta.event_id,
                    attempt,
                    error,
                    "event dead-lettered after its last retry"
                );
                Ok(Finished {
                    status: EventStatus::Failed,
                    error: Some(format!("gave up after {attempt} attempts: {error}")),
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

    /// Records the final status; with `complete_key`, completes the dedup key in the same
    /// store write.
    async fn record_final(
        &self,
        record: &StoredRecord,
        attempts: u32,
        finished: &Finished,
        complete_key: bool,
    ) -> Result<(), StoreError> {
        let meta = &record.meta;
        let (status, error, now) = (finished.status, finished.error.as_deref(), self.clock.now());
        let written = match complete_key {
            true => {
                self.store
                    .finish_event(
                        meta.company_id,
                        &meta.dedup_key,
                        meta.event_id,
                        status,
                        attempts,
                        error,
                        now,
                    )
                    .await
            }
            false => {
                self.store
                    .set_event_status(meta.company_id, meta.event_id, status, attempts, error, now)
                    .await
            }
        };
        written?;
        self.metrics
            .events_total
            .with_label_values(&[finished.status.as_str()])
            .inc();
        Ok(())
    }
}

/// An event's outcome, and whether its dedup key still has to be completed.
struct Done {
    finished: Finished,
    complete_key: bool,
}

impl Done {
    fn plain(finished: Finished) -> Self {
        Self {
            finished,
            complete_key: false,
        }
    }
}

fn duplicate(error: String) -> Finished {
    Finished {
        status: EventStatus::Duplicate,
        error: Some(error),
    }
}

/// A retry tier or the dead-letter log is down: like an unavailable store, wait and retry.
fn log_unavailable(error: crate::error::LogError) -> StoreError {
    StoreError::Unavailable {
        operation: "append to a retry tier",
        source: Box::new(error),
    }
}

fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CompanyId;
    use crate::testkit::{self, call_ended, received, record_with, retell_body, stored, MemStore};

    struct Fixture {
        store: Arc<MemStore>,
        pipeline: Arc<Pipeline>,
        company: CompanyId,
        next_offset: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let store = Arc::new(MemStore::new());
            let pipeline = testkit::pipeline(Arc::clone(&store), testkit::settings(), None);
            Self {
                store,
                pipeline,
                company: CompanyId::new(),
                next_offset: 0,
            }
        }

        /// Stores the record's `received` ledger row, as the consumer does before dispatch.
        async fn take(&mut self, record: crate::record::LogRecord) -> StoredRecord {
            let record = stored(record, 0, self.next_offset);
            self.next_offset += 1;
            self.store
                .record_events(&[received(&record)])
                .await
                .unwrap();
            record
        }

        fn row(&self, record: &StoredRecord) -> EventRow {
            self.store
                .rows(self.company)
                .into_iter()
                .find(|r| r.id == record.meta.event_id)
                .expect("ledger row exists")
        }

        fn processed_total(&self) -> u64 {
            let m = &self.pipeline.metrics.events_total;
            m.with_label_values(&["processed"]).get()
        }
    }

    #[tokio::test]
    async fn claimed_event_is_processed_and_its_key_completed() {
        let mut f = Fixture::new();
        let record = f.take(call_ended(f.company, "call_1")).await;

        let finished = f.pipeline.process(&record, 1).await.unwrap();

        assert_eq!(
            finished,
            Finished {
                status: EventStatus::Processed,
                error: None
            }
        );
        let row = f.row(&record);
        assert_eq!(
            (row.status, row.attempts, row.error),
            (EventStatus::Processed, 1, None)
        );
        let entry = f
            .store
            .dedup_row(f.company, &record.meta.dedup_key)
            .unwrap();
        assert!(entry.completed);
        assert_eq!(entry.holder, record.meta.event_id);
        assert!(
            f.store.call_row(f.company, "call_1").is_some(),
            "the handler ran"
        );
        assert_eq!(f.processed_total(), 1);
    }

    #[tokio::test]
    async fn second_event_with_the_same_key_is_a_duplicate_of_the_first() {
        let mut f = Fixture::new();
        let first = f.take(call_ended(f.company, "call_1")).await;
        let second = f.take(call_ended(f.company, "call_1")).await;
        assert_eq!(first.meta.dedup_key, second.meta.dedup_key);

        f.pipeline.process(&first, 1).await.unwrap();
        let upserts = f.store.calls_of("upsert_call");
        let finished = f.pipeline.process(&second, 1).await.unwrap();

        assert_eq!(finished.status, EventStatus::Duplicate);
        let error = finished.error.unwrap();
        assert!(error.contains(&first.meta.event_id.to_string()), "{error}");
        assert_eq!(f.row(&second).status, EventStatus::Duplicate);
        assert_eq!(
            f.store.calls_of("upsert_call"),
            upserts,
            "no second side effect"
        );
    }

    #[tokio::test]
    async fn key_claimed_by_a_live_lease_of_another_event_is_a_duplicate_in_flight() {
        let mut f = Fixture::new();
        let first = f.take(call_ended(f.company, "call_1")).await;
        let second = f.take(call_ended(f.company, "call_1")).await;
        // The first event claimed the key but has not finished (it is still running).
        let now = testkit::t0();
        let claim = f
            .store
            .dedup_claim(ClaimRequest {
                company_id: f.company,
                key: &first.meta.dedup_key,
                holder: first.meta.event_id,
                now,
                lease_until: now + chrono::Duration::seconds(30),
                expires_at: now + chrono::Duration::days(7),
            })
            .await
            .unwrap();
        assert_eq!(claim, DedupClaim::Claimed);

        let finished = f.pipeline.process(&second, 1).await.unwrap();

        assert_eq!(finished.status, EventStatus::Duplicate);
        let error = finished.error.unwrap();
        assert!(error.contains(&first.meta.event_id.to_string()), "{error}");
        assert!(error.contains("still in flight"), "{error}");
    }

    #[tokio::test]
    async fn same_event_rerun_after_completion_is_processed_not_a_duplicate_of_itself() {
        let mut f = Fixture::new();
        let record = f.take(call_ended(f.company, "call_1")).await;
        f.pipeline.process(&record, 1).await.unwrap();
        let upserts = f.store.calls_of("upsert_call");

        // Redelivered after a crash that lost the report: same event id.
        let finished = f.pipeline.process(&record, 2).await.unwrap();

        assert_eq!(
            finished,
            Finished {
                status: EventStatus::Processed,
                error: None
            }
        );
        assert_eq!(f.row(&record).attempts, 2);
        assert_eq!(
            f.store.calls_of("upsert_call"),
            upserts,
            "the handler did not run again"
        );
        assert_eq!(f.processed_total(), 2);
    }

    #[tokio::test]
    async fn rejected_and_unrouted_records_keep_their_reason_and_skip_dedup() {
        let mut f = Fixture::new();
        let body = retell_body("call_ended", "call_1");
        let rejected = record_with(
            f.company,
            &body,
            "k1",
            Disposition::Rejected("schema: call is required".into()),
        );
        let unrouted = record_with(
            f.company,
            &body,
            "k2",
            Disposition::Unrouted("no branch for +4930".into()),
        );
        let rejected = f.take(rejected).await;
        let unrouted = f.take(unrouted).await;

        let a = f.pipeline.process(&rejected, 1).await.unwrap();
        let b = f.pipeline.process(&unrouted, 1).await.unwrap();

        assert_eq!(a.status, EventStatus::Rejected);
        assert_eq!(a.error.as_deref(), Some("schema: call is required"));
        assert_eq!(b.status, EventStatus::Unrouted);
        assert_eq!(b.error.as_deref(), Some("no branch for +4930"));
        let row = f.row(&unrouted);
        assert_eq!(
            (row.status, row.error.as_deref()),
            (EventStatus::Unrouted, Some("no branch for +4930"))
        );
        // A rejected body lives in the log only; the row points at it (partition, offset).
        // Other dispositions keep their copy.
        let kept = f.row(&rejected);
        assert!(
            kept.payload.is_empty(),
            "rejected body copied into the ledger"
        );
        assert_eq!(
            (kept.partition, kept.offset),
            (rejected.partition, rejected.offset)
        );
        assert_eq!(row.payload, unrouted.value);
        assert_eq!(f.store.calls_of("dedup_claim"), 0);
        assert_eq!(f.store.calls_of("upsert_call"), 0);
    }

    #[tokio::test]
    async fn permanent_handler_failure_fails_the_event_and_releases_its_key() {
        let mut f = Fixture::new();
        let bad = record_with(
            f.company,
            "{not json",
            "retell:call_ended:call_1",
            Disposition::Accept,
        );
        let bad = f.take(bad).await;

        let finished = f.pipeline.process(&bad, 1).await.unwrap();

        assert_eq!(finished.status, EventStatus::Failed);
        let error = finished.error.unwrap();
        assert!(error.contains("does not parse"), "{error}");
        let row = f.row(&bad);
        assert_eq!(row.status, EventStatus::Failed);
        assert_eq!(row.error.as_deref(), Some(error.as_str()));
        assert_eq!(
            f.store.dedup_row(f.company, &bad.meta.dedup_key),
            None,
            "key released"
        );

        // A corrected delivery with the same key can claim it and is processed.
        let fixed = f.take(call_ended(f.company, "call_1")).await;
        assert_eq!(fixed.meta.dedup_key, bad.meta.dedup_key);
        let finished = f.pipeline.process(&fixed, 1).await.unwrap();
        assert_eq!(finished.status, EventStatus::Processed);
    }

    #[tokio::test]
    async fn unavailable_store_is_transient_and_the_claim_stays_with_its_holder() {
        let mut f = Fixture::new();
        let record = f.take(call_ended(f.company, "call_1")).await;
        let other = f.take(call_ended(f.company, "call_1")).await;
        // The store goes away after the claim: the handler's write fails.
        f.store.set_op_failing("upsert_call", true);

        let err = f.pipeline.process(&record, 1).await.unwrap_err();

        assert!(err.is_transient(), "{err}");
        let entry = f
            .store
            .dedup_row(f.company, &record.meta.dedup_key)
            .unwrap();
        assert_eq!(
            (entry.holder, entry.completed),
            (record.meta.event_id, false)
        );
        assert_eq!(f.row(&record).status, EventStatus::Processing, "not final");
        assert_eq!(
            f.pipeline
                .metrics
                .events_total
                .with_label_values(&["failed"])
                .get(),
            0
        );

        // Another delivery of the key is held off by the live lease...
        f.store.set_op_failing("upsert_call", false);
        let finished = f.pipeline.process(&other, 1).await.unwrap();
        assert_eq!(finished.status, EventStatus::Duplicate);
        // ...while the holder's retry reclaims its own key and finishes.
        let finished = f.pipeline.process(&record, 1).await.unwrap();
        assert_eq!(finished.status, EventStatus::Processed);
        assert!(f.store.call_row(f.company, "call_1").is_some());
    }

    #[tokio::test]
    async fn permanent_store_refusal_fails_the_event_instead_of_retrying_forever() {
        let mut f = Fixture::new();
        let record = f.take(call_ended(f.company, "call_refused")).await;
        // The pipeline's own store call (not the handler's) is refused for good.
        f.store.set_op_refusing("dedup_claim", true);

        let finished = f.pipeline.process(&record, 1).await.unwrap();

        assert_eq!(finished.status, EventStatus::Failed);
        let error = finished.error.unwrap();
        assert!(
            error.contains("store refused") && error.contains("dedup_claim"),
            "{error}"
        );
        assert_eq!(f.row(&record).status, EventStatus::Failed);
        assert!(
            f.store
                .dedup_row(f.company, &record.meta.dedup_key)
                .is_none(),
            "the key is released so a later delivery may succeed"
        );
    }

    #[tokio::test]
    async fn fail_releases_the_key_and_marks_the_event_failed() {
        let mut f = Fixture::new();
        let record = f.take(call_ended(f.company, "call_1")).await;
        f.store.set_op_failing("upsert_call", true);
        f.pipeline.process(&record, 1).await.unwrap_err(); // leaves a claim behind

        f.pipeline
            .fail(&record, 3, "tenant actor panicked 3 times: boom".into())
            .await
            .unwrap();

        let row = f.row(&record);
        assert_eq!(row.status, EventStatus::Failed);
        assert_eq!(row.attempts, 3);
        assert_eq!(
            row.error.as_deref(),
            Some("tenant actor panicked 3 times: boom")
        );
        assert_eq!(f.store.dedup_row(f.company, &record.meta.dedup_key), None);
    }
}
