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
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
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
    pub partition: u32,
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

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let live = state.slots.values().filter(|s| s.actor.is_some()).count();
        state.args.pipeline.metrics.tenant_actors.sub(live as i64);
        Ok(())
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
            actor.cast(TenantMsg::Process(Delivery { record, attempt: 1 }))?;
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
            actor.cast(TenantMsg::Process(Delivery {
                record: Arc::clone(&queued.record),
                attempt: queued.panics + 1,
            }))?;
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
