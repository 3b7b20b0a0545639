//! TenantActor: runs one tenant's events strictly in log order, one at a time.
//!
//! Supervision: a panic fails this actor; its TenantSupervisor restarts it and redelivers the
//! tenant's unfinished events (see `tenant_supervisor.rs`). An unavailable store is not a
//! panic: the actor retries the same event with capped exponential backoff, so the tenant
//! waits, nothing is skipped and nothing spins.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::EventStatus;
use crate::ids::CompanyId;
use crate::pipeline::{Finished, Pipeline};
use crate::record::StoredRecord;
use crate::retry;
use crate::tenant_supervisor::SupervisorMsg;

/// One event handed to a tenant actor.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub record: Arc<StoredRecord>,
    /// 1 for the first run, +1 per redelivery after a panic.
    pub attempt: u32,
}

pub enum TenantMsg {
    Process(Delivery),
}

pub struct TenantArgs {
    pub company_id: CompanyId,
    pub pipeline: Arc<Pipeline>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub shutdown: CancellationToken,
}

pub struct TenantActor;

impl Actor for TenantActor {
    type Msg = TenantMsg;
    type State = TenantArgs;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let TenantMsg::Process(delivery) = message;
        if let Some(fault) = &state.pipeline.fault {
            fault.before_process(&delivery.record);
        }
        let started = Instant::now();
        let meta = &delivery.record.meta;
        let span = tracing::info_span!(
            "event",
            event_id = %meta.event_id,
            correlation_id = %meta.correlation_id,
            company_id = %meta.company_id,
            partition = delivery.record.partition,
            offset = delivery.record.offset,
        );
        let outcome = run_until_final(state, &delivery).instrument(span).await;
        let Some(finished) = outcome else {
            return Ok(()); // shutting down: the record stays uncommitted and is redelivered
        };
        state
            .pipeline
            .metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        let record = &delivery.record;
        tracing::debug!(
            company_id = %state.company_id,
            event_id = %record.meta.event_id,
            correlation_id = %record.meta.correlation_id,
            offset = record.offset,
            status = %finished.status,
            "event finished"
        );
        state.supervisor.cast(SupervisorMsg::Done {
            company_id: state.company_id,
            offset: record.offset,
            finished,
        })?;
        Ok(())
    }
}

/// Processes until a final status, retrying while the store is unavailable. `None` when
/// shutdown interrupted the wait.
async fn run_until_final(state: &TenantArgs, delivery: &Delivery) -> Option<Finished> {
    let pipeline = &state.pipeline;
    let max_backoff = pipeline.settings.store_retry_max_backoff;
    let outcome = retry::while_unavailable(
        "process event",
        &pipeline.metrics,
        max_backoff,
        &state.shutdown,
        || pipeline.process(&delivery.record, delivery.attempt),
    )
    .await?;
    // `process` turns permanent store errors into `failed` itself; this is a safety net.
    Some(outcome.unwrap_or_else(|error| Finished {
        status: EventStatus::Failed,
        error: Some(format!("store refused the event: {error}")),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::EventStatus;
    use crate::store::StateStore;
    use crate::testkit::{self, call_ended, probe, received, stored, yield_turns, MemStore};
    use tokio::sync::mpsc::UnboundedReceiver;

    struct Fixture {
        store: Arc<MemStore>,
        pipeline: Arc<Pipeline>,
        company: CompanyId,
        shutdown: CancellationToken,
        actor: ActorRef<TenantMsg>,
        reports: UnboundedReceiver<SupervisorMsg>,
    }

    async fn fixture() -> Fixture {
        let store = Arc::new(MemStore::new());
        let pipeline = testkit::pipeline(Arc::clone(&store), testkit::settings(), None);
        let company = CompanyId::new();
        let shutdown = CancellationToken::new();
        let (supervisor, reports) = probe::<SupervisorMsg>().await;
        let args = TenantArgs {
            company_id: company,
            pipeline: Arc::clone(&pipeline),
            supervisor,
            shutdown: shutdown.clone(),
        };
        let (actor, _) = Actor::spawn(None, TenantActor, args).await.unwrap();
        Fixture {
            store,
            pipeline,
            company,
            shutdown,
            actor,
            reports,
        }
    }

    impl Fixture {
        /// A record of this tenant with its `received` ledger row written.
        async fn record(&self, call_id: &str, offset: u64) -> Arc<StoredRecord> {
            let record = Arc::new(stored(call_ended(self.company, call_id), 0, offset));
            self.store
                .record_events(&[received(&record)])
                .await
                .unwrap();
            record
        }

        fn deliver(&self, record: &Arc<StoredRecord>) {
            let delivery = Delivery {
                record: Arc::clone(record),
                attempt: 1,
            };
            self.actor.cast(TenantMsg::Process(delivery)).unwrap();
        }

        async fn next_done(&mut self) -> (u64, Finished) {
            match self.reports.recv().await.expect("probe alive") {
                SupervisorMsg::Done {
                    company_id,
                    offset,
                    finished,
                } => {
                    assert_eq!(company_id, self.company);
                    (offset, finished)
                }
                _ => panic!("tenant actors only report Done"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_processed_one_at_a_time_in_delivery_order() {
        let mut f = fixture().await;
        for (i, call) in ["c0", "c1", "c2"].iter().enumerate() {
            let record = f.record(call, i as u64).await;
            f.deliver(&record);
        }
        for expected in 0..3 {
            let (offset, finished) = f.next_done().await;
            assert_eq!(offset, expected);
            assert_eq!(finished.status, EventStatus::Processed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_store_is_retried_with_backoff_until_the_event_finishes() {
        let mut f = fixture().await;
        let record = f.record("c0", 7).await;
        f.store.fail_next(3);
        let started = tokio::time::Instant::now();
        f.deliver(&record);

        let (offset, finished) = f.next_done().await;

        assert_eq!(offset, 7);
        assert_eq!(
            finished,
            Finished {
                status: EventStatus::Processed,
                error: None
            }
        );
        assert_eq!(f.store.failures(), 3);
        assert_eq!(f.pipeline.metrics.store_retries.get(), 3);
        // Virtual time: the waits were 50 + 100 + 200 ms, so the retries did not spin.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        let row = &f.store.rows(f.company)[0];
        assert_eq!(
            (row.id, row.status),
            (record.meta.event_id, EventStatus::Processed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backoff_doubles_up_to_store_retry_max_backoff() {
        let mut f = fixture().await;
        let record = f.record("c0", 0).await;
        f.store.set_unavailable(true);
        f.deliver(&record);
        // Tries at 0, 50, 150, 350, 750, 1550, 3150, 6350 ms, then every 5 s (the cap):
        // the 9th try is at 11 350 ms. Uncapped doubling would make it 12 750 ms.
        tokio::time::sleep(Duration::from_millis(11_351)).await;
        let tries = f.store.failures();
        f.store.set_unavailable(false);

        let (_, finished) = f.next_done().await;

        assert_eq!(tries, 9);
        assert_eq!(finished.status, EventStatus::Processed);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_backoff_stops_retrying_without_reporting_done() {
        let mut f = fixture().await;
        let record = f.record("c0", 0).await;
        f.store.set_unavailable(true);
        f.deliver(&record);
        // Time is paused and this task never sleeps here: the actor fails once, then waits.
        for _ in 0..1000 {
            if f.store.failures() == 1 {
                break;
            }
            yield_turns(1).await;
        }
        assert_eq!(f.store.failures(), 1);

        f.shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(60)).await;

        assert_eq!(f.store.failures(), 1, "no retry after cancellation");
        assert_eq!(f.pipeline.metrics.store_retries.get(), 1);
        assert!(
            f.reports.try_recv().is_err(),
            "no Done for an unfinished event"
        );
        f.store.set_unavailable(false);
        // The event stays unfinished in the ledger, so it is redelivered after a restart.
        assert_eq!(f.store.statuses(f.company), vec![EventStatus::Received]);
        assert_eq!(f.actor.get_status(), ractor::ActorStatus::Running);
    }
}
