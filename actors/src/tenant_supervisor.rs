//! TenantSupervisor: one per partition. Spawns a TenantActor per company on its first event,
//! routes events to it, restarts it after a panic and stops it when idle.
//!
//! Supervision decisions:
//! - TenantActor panics → restart after `restart_backoff × 2^(n-1)` and redeliver the tenant's
//!   unfinished events in order. The event being processed when it panicked (the queue head)
//!   counts a panic; after `max_panics_per_event` it is marked `failed` with the panic message
//!   and skipped, so a poison event cannot loop forever. Other tenants are unaffected.
//! - TenantActor stops (idle, shutdown) → forget it; a later event spawns a fresh one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
// Tokio's clock, like the ractor timers that drive `IdleTick` (and pausable in tests).
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::EventStatus;
use crate::ids::CompanyId;
use crate::partition_consumer::ConsumerMsg;
use crate::pipeline::{Finished, Pipeline};
use crate::record::StoredRecord;
use crate::tenant::{Delivery, TenantActor, TenantArgs, TenantMsg};

pub enum SupervisorMsg {
    /// A record for its tenant (from the partition consumer, in log order).
    Dispatch(Arc<StoredRecord>),
    /// A tenant actor finished the head of its queue.
    Done {
        company_id: CompanyId,
        offset: u64,
        finished: Finished,
    },
    /// A tenant actor panicked. Supervision events overtake ordinary messages in ractor, so
    /// they are re-sent as this message to be handled after the `Done`s the actor sent before.
    Panicked {
        company_id: CompanyId,
        panic: String,
    },
    /// A tenant actor stopped (idle or shutdown); re-sent for the same ordering reason.
    Stopped(CompanyId),
    /// Backoff after a panic elapsed: respawn and redeliver.
    Restart(CompanyId),
    /// Stop tenant actors idle for longer than the idle timeout.
    IdleTick,
}

pub struct SupervisorArgs {
    pub pipeline: Arc<Pipeline>,
    pub consumer: ActorRef<ConsumerMsg>,
    pub shutdown: CancellationToken,
}

struct Queued {
    record: Arc<StoredRecord>,
    panics: u32,
}

struct Slot {
    actor: Option<ActorRef<TenantMsg>>,
    /// A panic was seen and a restart is scheduled: queue new events, do not spawn.
    restart_pending: bool,
    queue: VecDeque<Queued>,
    last_active: Instant,
    consecutive_panics: u32,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    slots: HashMap<CompanyId, Slot>,
    by_actor: HashMap<ActorId, CompanyId>,
}

pub struct TenantSupervisor;

impl Actor for TenantSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tick = (args.pipeline.settings.idle_timeout / 4).max(Duration::from_millis(100));
        myself.send_interval(tick, || SupervisorMsg::IdleTick);
        Ok(SupervisorState {
            args,
            slots: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Dispatch(record) => state.dispatch(&myself, record).await?,
            SupervisorMsg::Done {
                company_id,
                offset,
                finished,
            } => state.done(company_id, offset, finished)?,
            SupervisorMsg::Panicked { company_id, panic } => {
                state.on_panic(&myself, company_id, panic).await?
            }
            SupervisorMsg::Stopped(company_id) => state.on_stopped(&myself, company_id).await?,
            SupervisorMsg::Restart(company_id) => state.restart(&myself, company_id).await?,
            SupervisorMsg::IdleTick => state.stop_idle(),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(company_id) = state.forget_actor(cell.get_id(), true) {
                    let panic = error.to_string();
                    myself.cast(SupervisorMsg::Panicked { company_id, panic })?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(company_id) = state.forget_actor(cell.get_id(), false) {
                    myself.cast(SupervisorMsg::Stopped(company_id))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for SupervisorState {
    /// However the supervisor ends, its live tenant actors leave the gauge. (`post_stop` is
    /// not enough: when the consumer stops or fails, ractor kills this supervisor as its
    /// child, and a killed actor skips `post_stop`.)
    fn drop(&mut self) {
        let live = self.slots.values().filter(|s| s.actor.is_some()).count();
        self.args.pipeline.metrics.tenant_actors.sub(live as i64);
    }
}

impl SupervisorState {
    async fn dispatch(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        record: Arc<StoredRecord>,
    ) -> Result<(), ActorProcessingErr> {
        let company_id = record.meta.company_id;
        let slot = self.slots.entry(company_id).or_insert_with(|| Slot {
            actor: None,
            restart_pending: false,
            queue: VecDeque::new(),
            last_active: Instant::now(),
            consecutive_panics: 0,
        });
        slot.queue.push_back(Queued {
            record: Arc::clone(&record),
            panics: 0,
        });
        slot.last_active = Instant::now();
        if let Some(actor) = &slot.actor {
            // The actor may be stopping (idle stop) before its termination notice reached us:
            // the cast then fails, but the record is queued and `on_stopped` redelivers it.
            let _ = actor.cast(TenantMsg::Process(Delivery { record, attempt: 1 }));
        } else if !slot.restart_pending {
            // Start the tenant now; the queue holds the record.
            self.spawn_and_deliver(myself, company_id).await?;
        }
        Ok(())
    }

    fn done(
        &mut self,
        company_id: CompanyId,
        offset: u64,
        finished: Finished,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.slots.get_mut(&company_id) else {
            return Ok(()); // a late report from an actor we already replaced
        };
        if slot.queue.front().map(|q| q.record.offset) != Some(offset) {
            tracing::warn!(company_id = %company_id, offset, "done report does not match queue head");
            return Ok(());
        }
        slot.queue.pop_front();
        slot.consecutive_panics = 0;
        slot.last_active = Instant::now();
        self.args.consumer.cast(ConsumerMsg::Finished {
            offset,
            company_id,
            status: finished.status,
        })?;
        Ok(())
    }

    async fn on_panic(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        company_id: CompanyId,
        panic: String,
    ) -> Result<(), ActorProcessingErr> {
        let pipeline = Arc::clone(&self.args.pipeline);
        pipeline.metrics.actor_restarts.inc();
        let Some(slot) = self.slots.get_mut(&company_id) else {
            return Ok(());
        };
        slot.consecutive_panics += 1;
        let mut failed_offset = None;
        if let Some(head) = slot.queue.front_mut() {
            head.panics += 1;
            tracing::error!(
                company_id = %company_id,
                event_id = %head.record.meta.event_id,
                panics = head.panics,
                panic = %panic,
                "tenant actor panicked"
            );
            if head.panics >= pipeline.settings.max_panics_per_event {
                let error = format!("tenant actor panicked {} times: {panic}", head.panics);
                // If the store refuses, keep the event: the restart will meet it again.
                match pipeline.fail(&head.record, head.panics, error).await {
                    Ok(()) => failed_offset = Some(head.record.offset),
                    Err(e) => tracing::warn!(error = %e, "could not mark poison event failed"),
                }
            }
        }
        if let Some(offset) = failed_offset {
            slot.queue.pop_front();
            self.args.consumer.cast(ConsumerMsg::Finished {
                offset,
                company_id,
                status: EventStatus::Failed,
            })?;
        }
        let exponent = slot.consecutive_panics.saturating_sub(1).min(6);
        let delay = pipeline.settings.restart_backoff * 2u32.pow(exponent);
        myself.send_after(delay, move || SupervisorMsg::Restart(company_id));
        Ok(())
    }

    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        company_id: CompanyId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.slots.get_mut(&company_id) else {
            return Ok(());
        };
        slot.restart_pending = false;
        if slot.actor.is_none() {
            self.spawn_and_deliver(myself, company_id).await?;
        }
        Ok(())
    }

    /// An actor stopped on purpose. Events cast to it after it decided to stop are lost with
    /// its mailbox, so anything still queued is delivered to a fresh actor.
    async fn on_stopped(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        company_id: CompanyId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.slots.get(&company_id) else {
            return Ok(());
        };
        if slot.actor.is_some() || slot.restart_pending {
            return Ok(());
        }
        if slot.queue.is_empty() {
            self.slots.remove(&company_id);
        } else if !self.args.shutdown.is_cancelled() {
            self.spawn_and_deliver(myself, company_id).await?;
        }
        Ok(())
    }

    /// Spawns the tenant's actor and hands it every queued event, in order.
    async fn spawn_and_deliver(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        company_id: CompanyId,
    ) -> Result<(), ActorProcessingErr> {
        let args = TenantArgs {
            company_id,
            pipeline: Arc::clone(&self.args.pipeline),
            supervisor: myself.clone(),
            shutdown: self.args.shutdown.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, TenantActor, args, myself.get_cell()).await?;
        self.args.pipeline.metrics.tenant_actors.inc();
        self.by_actor.insert(actor.get_id(), company_id);
        let slot = self
            .slots
            .get_mut(&company_id)
            .expect("slot exists for a spawned tenant");
        for queued in &slot.queue {
            // If the fresh actor already died (it panicked on the head), the cast fails; the
            // queue still holds every record and the panic notice triggers redelivery.
            let _ = actor.cast(TenantMsg::Process(Delivery {
                record: Arc::clone(&queued.record),
                attempt: queued.panics + 1,
            }));
        }
        slot.actor = Some(actor);
        Ok(())
    }

    fn forget_actor(&mut self, id: ActorId, panicked: bool) -> Option<CompanyId> {
        let company_id = self.by_actor.remove(&id)?;
        self.args.pipeline.metrics.tenant_actors.dec();
        if let Some(slot) = self.slots.get_mut(&company_id) {
            slot.actor = None;
            slot.restart_pending |= panicked;
        }
        Some(company_id)
    }

    fn stop_idle(&mut self) {
        let idle = self.args.pipeline.settings.idle_timeout;
        for (company_id, slot) in &self.slots {
            if slot.queue.is_empty() && slot.last_active.elapsed() >= idle {
                if let Some(actor) = &slot.actor {
                    tracing::debug!(company_id = %company_id, "stopping idle tenant actor");
                    actor.stop(Some("idle".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::pipeline::FaultHook;
    use crate::settings::PipelineSettings;
    use crate::store::StateStore;
    use crate::testkit::{self, call_ended, eventually, probe, received, stored, MemStore};

    /// Records the order events reach the actors; panics on `call_boom` (the first `flaky`
    /// times per offset) and on `call_poison` (always).
    #[derive(Default)]
    struct Faults {
        flaky: u32,
        seen: Mutex<Vec<(CompanyId, u64)>>,
        panics: Mutex<HashMap<u64, u32>>,
    }

    impl FaultHook for Faults {
        fn before_process(&self, record: &StoredRecord) {
            let offset = record.offset;
            self.seen
                .lock()
                .unwrap()
                .push((record.meta.company_id, offset));
            let body = String::from_utf8_lossy(&record.value);
            if body.contains("call_poison") {
                panic!("poison event at offset {offset}");
            }
            if body.contains("call_boom") {
                let n = {
                    let mut panics = self.panics.lock().unwrap();
                    let n = panics.entry(offset).or_insert(0);
                    *n += 1;
                    *n
                }; // released before panicking, so the lock is not poisoned
                if n <= self.flaky {
                    panic!("flaky panic {n} at offset {offset}");
                }
            }
        }
    }

    impl Faults {
        fn seen_by(&self, company: CompanyId) -> Vec<u64> {
            let seen = self.seen.lock().unwrap();
            seen.iter()
                .filter(|(c, _)| *c == company)
                .map(|(_, o)| *o)
                .collect()
        }
    }

    struct Fixture {
        store: Arc<MemStore>,
        pipeline: Arc<Pipeline>,
        faults: Arc<Faults>,
        supervisor: ActorRef<SupervisorMsg>,
        consumer: UnboundedReceiver<ConsumerMsg>,
        next_offset: u64,
    }

    async fn fixture(settings: PipelineSettings, faults: Faults) -> Fixture {
        let store = Arc::new(MemStore::new());
        let faults = Arc::new(faults);
        let hook: Arc<dyn FaultHook> = faults.clone();
        let pipeline = testkit::pipeline(Arc::clone(&store), settings, Some(hook));
        let (consumer_ref, consumer) = probe::<ConsumerMsg>().await;
        let args = SupervisorArgs {
            pipeline: Arc::clone(&pipeline),
            consumer: consumer_ref,
            shutdown: CancellationToken::new(),
        };
        let (supervisor, _) = Actor::spawn(None, TenantSupervisor, args).await.unwrap();
        Fixture {
            store,
            pipeline,
            faults,
            supervisor,
            consumer,
            next_offset: 0,
        }
    }

    impl Fixture {
        /// Dispatches the tenant's next event (ledger row first, as the consumer does).
        async fn dispatch(&mut self, company: CompanyId, call_id: &str) -> u64 {
            let offset = self.next_offset;
            self.next_offset += 1;
            let record = Arc::new(stored(call_ended(company, call_id), 0, offset));
            self.store
                .record_events(&[received(&record)])
                .await
                .unwrap();
            self.supervisor
                .cast(SupervisorMsg::Dispatch(record))
                .unwrap();
            offset
        }

        async fn next_finished(&mut self) -> (CompanyId, u64, EventStatus) {
            match self.consumer.recv().await.expect("probe alive") {
                ConsumerMsg::Finished {
                    offset,
                    company_id,
                    status,
                } => (company_id, offset, status),
                _ => panic!("the supervisor only reports Finished to its consumer"),
            }
        }

        /// Collects `n` Finished reports.
        async fn finished(&mut self, n: usize) -> Vec<(CompanyId, u64, EventStatus)> {
            let mut all = Vec::new();
            for _ in 0..n {
                all.push(self.next_finished().await);
            }
            all
        }

        fn row(&self, company: CompanyId, offset: u64) -> crate::domain::EventRow {
            self.store
                .rows(company)
                .into_iter()
                .find(|r| r.offset == offset)
                .unwrap()
        }
    }

    fn of(all: &[(CompanyId, u64, EventStatus)], company: CompanyId) -> Vec<(u64, EventStatus)> {
        all.iter()
            .filter(|(c, _, _)| *c == company)
            .map(|(_, o, s)| (*o, *s))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn panic_restarts_the_tenant_redelivers_in_order_and_spares_other_tenants() {
        let settings = PipelineSettings {
            // Long enough that the other tenant visibly finishes while this one waits.
            restart_backoff: Duration::from_secs(3600),
            ..testkit::settings()
        };
        let faults = Faults {
            flaky: 1,
            ..Faults::default()
        };
        let mut f = fixture(settings, faults).await;
        let (a, b) = (CompanyId::new(), CompanyId::new());
        f.dispatch(a, "call_a0").await; // 0
        f.dispatch(b, "call_b1").await; // 1
        f.dispatch(a, "call_boom").await; // 2: panics once
        f.dispatch(b, "call_b3").await; // 3
        f.dispatch(a, "call_a4").await; // 4
        f.dispatch(b, "call_b5").await; // 5

        // Before the restart backoff elapses: A finished only what preceded the panic, B all.
        let early = f.finished(4).await;
        let processed = EventStatus::Processed;
        assert_eq!(of(&early, a), vec![(0, processed)]);
        assert_eq!(
            of(&early, b),
            vec![(1, processed), (3, processed), (5, processed)]
        );
        assert_eq!(f.pipeline.metrics.actor_restarts.get(), 1);

        tokio::time::sleep(Duration::from_secs(3600)).await;
        let late = f.finished(2).await;
        assert_eq!(of(&late, a), vec![(2, processed), (4, processed)]);
        // The panicking event was redelivered first, then the one queued behind it.
        assert_eq!(f.faults.seen_by(a), vec![0, 2, 2, 4]);
        assert_eq!(
            f.faults.seen_by(b),
            vec![1, 3, 5],
            "B's actor never restarted"
        );
        assert_eq!(f.row(a, 2).attempts, 2, "the redelivery is attempt 2");
        assert_eq!(
            f.row(a, 4).attempts,
            1,
            "a panic counts only against the head"
        );
        assert_eq!(f.row(b, 3).attempts, 1);
        assert_eq!(f.pipeline.metrics.actor_restarts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn poison_event_fails_after_max_panics_and_the_tenant_moves_on() {
        let mut f = fixture(testkit::settings(), Faults::default()).await;
        let a = CompanyId::new();
        f.dispatch(a, "call_poison").await; // 0
        f.dispatch(a, "call_after").await; // 1

        let all = f.finished(2).await;

        assert_eq!(
            all,
            vec![(a, 0, EventStatus::Failed), (a, 1, EventStatus::Processed)]
        );
        let poison = f.row(a, 0);
        assert_eq!((poison.status, poison.attempts), (EventStatus::Failed, 3));
        let error = poison.error.unwrap();
        assert!(
            error.contains("panicked 3 times") && error.contains("poison event at offset 0"),
            "{error}"
        );
        assert_eq!(f.faults.seen_by(a), vec![0, 0, 0, 1]);
        assert_eq!(f.pipeline.metrics.actor_restarts.get(), 3);
        assert_eq!(
            f.pipeline
                .metrics
                .events_total
                .with_label_values(&["failed"])
                .get(),
            1
        );
        eventually("actor of the tenant alive", || {
            f.pipeline.metrics.tenant_actors.get() == 1
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_actor_is_stopped_and_a_later_event_spawns_a_fresh_one() {
        let settings = PipelineSettings {
            idle_timeout: Duration::from_secs(10),
            ..testkit::settings()
        };
        let mut f = fixture(settings, Faults::default()).await;
        let (a, b) = (CompanyId::new(), CompanyId::new());
        f.dispatch(a, "call_a0").await;
        f.dispatch(b, "call_b1").await;
        f.finished(2).await;
        assert_eq!(f.pipeline.metrics.tenant_actors.get(), 2);

        // Not idle long enough yet.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(f.pipeline.metrics.tenant_actors.get(), 2);
        // B gets an event and stays busy-ish; A goes idle.
        f.dispatch(b, "call_b2").await;
        assert_eq!(f.next_finished().await, (b, 2, EventStatus::Processed));
        tokio::time::sleep(Duration::from_secs(8)).await; // A idle 13 s, B idle 8 s
        assert_eq!(
            f.pipeline.metrics.tenant_actors.get(),
            1,
            "only A was stopped"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(f.pipeline.metrics.tenant_actors.get(), 0);

        f.dispatch(a, "call_a3").await;
        assert_eq!(f.next_finished().await, (a, 3, EventStatus::Processed));
        assert_eq!(f.pipeline.metrics.tenant_actors.get(), 1);
        assert_eq!(f.faults.seen_by(a), vec![0, 3]);
        assert_eq!(
            f.pipeline.metrics.actor_restarts.get(),
            0,
            "an idle stop is no restart"
        );
    }

    /// An idle stop races with a new event: the supervisor still has the stopped actor as
    /// the tenant's actor when the Dispatch arrives (the termination notice is on its way).
    #[tokio::test(start_paused = true)]
    async fn dispatch_to_an_actor_that_just_stopped_keeps_the_event_for_a_fresh_actor() {
        let store = Arc::new(MemStore::new());
        let pipeline = testkit::pipeline(Arc::clone(&store), testkit::settings(), None);
        let (consumer, mut finished) = probe::<ConsumerMsg>().await;
        // Stands in for the supervisor actor: receives the tenant actors' reports.
        let (myself, mut reports) = probe::<SupervisorMsg>().await;
        let mut state = SupervisorState {
            args: SupervisorArgs {
                pipeline: Arc::clone(&pipeline),
                consumer,
                shutdown: CancellationToken::new(),
            },
            slots: HashMap::new(),
            by_actor: HashMap::new(),
        };
        let company = CompanyId::new();
        let first = Arc::new(stored(call_ended(company, "call_0"), 0, 0));
        let second = Arc::new(stored(call_ended(company, "call_1"), 0, 1));
        store
            .record_events(&[received(&first), received(&second)])
            .await
            .unwrap();
        state.dispatch(&myself, first).await.unwrap();
        let Some(SupervisorMsg::Done {
            offset: 0,
            finished: done,
            ..
        }) = reports.recv().await
        else {
            panic!("expected Done for offset 0");
        };
        state.done(company, 0, done).unwrap();
        assert!(matches!(
            finished.recv().await,
            Some(ConsumerMsg::Finished { offset: 0, .. })
        ));
        let stale = state.slots[&company].actor.clone().unwrap();
        stale
            .stop_and_wait(Some("idle".into()), None)
            .await
            .unwrap();

        // The Dispatch is handled before the termination notice.
        state.dispatch(&myself, Arc::clone(&second)).await.unwrap();
        assert_eq!(state.slots[&company].queue.len(), 1, "the event is kept");

        // The notice arrives: the queued event goes to a fresh actor.
        assert_eq!(state.forget_actor(stale.get_id(), false), Some(company));
        state.on_stopped(&myself, company).await.unwrap();
        let Some(SupervisorMsg::Done {
            offset: 1,
            finished: done,
            ..
        }) = reports.recv().await
        else {
            panic!("expected Done for offset 1");
        };
        assert_eq!(done.status, EventStatus::Processed);
    }
}
