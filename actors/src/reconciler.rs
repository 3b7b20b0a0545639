//! ReconcilerActor: pushes `pending_sync` appointments to Cal.com once a tenant's breaker
//! lets requests through again, oldest first, within the tenant's rate limit.
//!
//! Every `interval` it starts one run per tenant this worker owns, unless that tenant's
//! previous run is still going (so each tenant has at most one reconciler at a time, and a
//! slow tenant never delays another). A run stops at the first appointment that cannot be
//! pushed (breaker open again, transient failure) so younger ones never overtake it.
//!
//! Appointments whose sync found their lease held by another process are parked by the
//! booker (`booking/parked.rs`) rather than waited for. Every [`LEASE_WATCH`] the reconciler
//! starts a run of those whose lease has ended, whatever their age, so they are booked
//! within about a second of it ending; a regular run syncs due ones first and steps over
//! those still waiting (another process is on them, so overtaking them is fine).
//! Exactly once: the booker serialises with the tenant actor and looks up before it
//! re-creates (see `booking/booker.rs`).
//!
//! Supervision: a failed tick (store down) is logged and the next tick tries again; the
//! actor itself has no state worth a restart, so the worker stops with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::booking::{Booker, BreakerState, SyncOutcome};
use crate::clock::Clock;
use crate::domain::AppointmentStatus;
use crate::error::StoreError;
use crate::ids::CompanyId;
use crate::store::StateStore;

/// Reconciler tunables.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    pub interval: Duration,
    /// Appointments younger than this (since their last change) are left to their event's
    /// own retries.
    pub min_age: Duration,
    /// Appointments per tenant per run.
    pub batch: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            min_age: Duration::from_secs(60),
            batch: 100,
        }
    }
}

/// Which tenants this worker reconciles (those whose partitions it owns).
pub type Owns = Arc<dyn Fn(CompanyId) -> bool + Send + Sync>;

/// How often parked appointments are checked for an ended lease (in memory; only due ones
/// cost a store request).
pub const LEASE_WATCH: Duration = Duration::from_secs(1);

pub enum ReconcilerMsg {
    Tick,
    /// Sync parked appointments whose foreign lease has ended.
    LeaseTick,
    Finished {
        company_id: CompanyId,
        run: Run,
        /// A run of parked appointments only: it saw only those, so it says nothing about
        /// the tenant's pending count and is not counted as a reconciler run.
        parked_only: bool,
    },
}

/// What one tenant run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// `pending_sync` appointments seen (up to the batch size).
    pub pending: usize,
    pub synced: usize,
    pub failed: usize,
    /// The run stopped early (breaker open, transient failure, store error).
    pub stopped: bool,
}

pub struct ReconcilerArgs {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub booker: Arc<Booker>,
    pub settings: ReconcileSettings,
    pub owns: Owns,
    pub shutdown: CancellationToken,
}

pub struct ReconcilerState {
    args: ReconcilerArgs,
    running: HashSet<CompanyId>,
    pending: HashMap<CompanyId, usize>,
}

pub struct ReconcilerActor;

impl Actor for ReconcilerActor {
    type Msg = ReconcilerMsg;
    type State = ReconcilerState;
    type Arguments = ReconcilerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = args.settings.interval;
        spawn_ticker(myself.clone(), interval, args.shutdown.clone(), || {
            ReconcilerMsg::Tick
        });
        spawn_ticker(myself, LEASE_WATCH, args.shutdown.clone(), || {
            ReconcilerMsg::LeaseTick
        });
        Ok(ReconcilerState {
            args,
            running: HashSet::new(),
            pending: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReconcilerMsg::Tick => {
                if let Err(error) = tick(&myself, state).await {
                    tracing::warn!(error = %error, "reconciler tick failed; next tick retries");
                }
            }
            ReconcilerMsg::LeaseTick => lease_tick(&myself, state),
            ReconcilerMsg::Finished {
                company_id,
                run,
                parked_only,
            } => finished(state, company_id, run, parked_only),
        }
        Ok(())
    }
}

fn finished(state: &mut ReconcilerState, company_id: CompanyId, run: Run, parked_only: bool) {
    state.running.remove(&company_id);
    let booker = &state.args.booker;
    if !parked_only {
        state
            .pending
            .insert(company_id, run.pending - run.synced.min(run.pending));
        let total: usize = state.pending.values().sum();
        booker.metrics.pending_sync.set(total as i64);
        let outcome = match run {
            Run { pending: 0, .. } => "idle",
            Run { stopped: true, .. } => "deferred",
            _ => "synced",
        };
        booker
            .metrics
            .reconciler_runs_total
            .with_label_values(&[outcome])
            .inc();
    }
    if run.synced > 0 || run.failed > 0 {
        tracing::info!(
            company_id = %company_id,
            synced = run.synced,
            failed = run.failed,
            stopped = run.stopped,
            parked_only,
            "reconciler pushed pending appointments"
        );
    }
}

fn spawn_ticker(
    myself: ActorRef<ReconcilerMsg>,
    every: Duration,
    shutdown: CancellationToken,
    message: fn() -> ReconcilerMsg,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if myself.cast(message()).is_err() {
                return;
            }
        }
    });
}

async fn tick(
    myself: &ActorRef<ReconcilerMsg>,
    state: &mut ReconcilerState,
) -> Result<(), StoreError> {
    let companies = state.args.store.companies().await?;
    for company in companies {
        start_run(myself, state, company.id, false);
    }
    Ok(())
}

fn lease_tick(myself: &ActorRef<ReconcilerMsg>, state: &mut ReconcilerState) {
    let due = state.args.booker.parked.due(state.args.clock.now());
    for (company_id, _) in due {
        if !(state.args.owns)(company_id) {
            // Its partition moved: the new owner's tenant actor and reconciler take over.
            state.args.booker.parked.forget(company_id);
            continue;
        }
        start_run(myself, state, company_id, true);
    }
}

/// Starts a run for the tenant unless it has one going, is not ours or its breaker is open.
/// `parked_only`: only the parked appointments whose lease has ended.
fn start_run(
    myself: &ActorRef<ReconcilerMsg>,
    state: &mut ReconcilerState,
    company_id: CompanyId,
    parked_only: bool,
) {
    if !(state.args.owns)(company_id) || state.running.contains(&company_id) {
        return;
    }
    // An open breaker refuses anyway; half-open lets the run's first push be the probe.
    if state.args.booker.breaker_state(company_id) == BreakerState::Open {
        return;
    }
    state.running.insert(company_id);
    let (store, clock, booker) = (
        Arc::clone(&state.args.store),
        Arc::clone(&state.args.clock),
        Arc::clone(&state.args.booker),
    );
    let settings = state.args.settings.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let mut run = Run::default();
        if parked_only {
            reconcile_parked(&*store, &*clock, &booker, company_id, &mut run).await;
        } else {
            run = reconcile_tenant(&*store, &*clock, &booker, company_id, &settings).await;
        }
        let _ = myself.cast(ReconcilerMsg::Finished {
            company_id,
            run,
            parked_only,
        });
    });
}

/// Syncs the tenant's parked appointments whose foreign lease has ended. Returns false when
/// the run must stop (see [`sync_one`]).
pub async fn reconcile_parked(
    store: &dyn StateStore,
    clock: &dyn Clock,
    booker: &Booker,
    company_id: CompanyId,
    run: &mut Run,
) -> bool {
    let due = booker.parked.due_of(company_id, clock.now());
    run.pending += due.len();
    for appointment_id in due {
        if !sync_one(store, clock, booker, company_id, appointment_id, run).await {
            return false;
        }
    }
    true
}

/// One tenant's run: oldest first, stopping at the first appointment that has to wait.
pub async fn reconcile_tenant(
    store: &dyn StateStore,
    clock: &dyn Clock,
    booker: &Booker,
    company_id: CompanyId,
    settings: &ReconcileSettings,
) -> Run {
    let mut run = Run::default();
    if !reconcile_parked(store, clock, booker, company_id, &mut run).await {
        run.stopped = true;
        return run;
    }
    let pending = match store
        .appointments_by_status(company_id, AppointmentStatus::PendingSync, settings.batch)
        .await
    {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(company_id = %company_id, error = %error, "reconciler cannot list pending appointments");
            run.stopped = true;
            return run;
        }
    };
    run.pending += pending.len();
    let min_age = chrono::Duration::from_std(settings.min_age).unwrap_or(chrono::Duration::MAX);
    for appointment in pending {
        if booker.parked.contains(company_id, appointment.id) {
            continue; // another process is on it; synced once its lease ends
        }
        if clock.now() - appointment.updated_at < min_age {
            break; // oldest first: a younger one never overtakes it
        }
        if !sync_one(store, clock, booker, company_id, appointment.id, &mut run).await {
            break;
        }
    }
    run
}

/// Syncs one appointment into `run`. False when the run must stop so younger appointments do
/// not overtake this one (breaker open, transient failure, store down, shutdown); a sync
/// deferred because another process holds the appointment's lease does not stop it.
async fn sync_one(
    store: &dyn StateStore,
    clock: &dyn Clock,
    booker: &Booker,
    company_id: CompanyId,
    appointment_id: uuid::Uuid,
    run: &mut Run,
) -> bool {
    match booker.sync(store, clock, company_id, appointment_id).await {
        Ok(SyncOutcome::Booked { .. } | SyncOutcome::NothingToDo(_)) => run.synced += 1,
        Ok(SyncOutcome::Permanent { .. }) => run.failed += 1,
        Ok(SyncOutcome::Deferred { .. }) if booker.parked.contains(company_id, appointment_id) => {}
        // One appointment the store refuses (a conflict) must not hold back the rest.
        Err(error) if !error.is_transient() => {
            tracing::warn!(company_id = %company_id, appointment_id = %appointment_id, error = %error, "reconciler skipped an appointment the store refuses");
            run.failed += 1;
        }
        Ok(
            SyncOutcome::Deferred { .. } | SyncOutcome::Transient { .. } | SyncOutcome::Interrupted,
        )
        | Err(_) => {
            run.stopped = true;
            return false;
        }
    }
    true
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
