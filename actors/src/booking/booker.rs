//! The booker: turns one local `pending_sync` appointment into exactly one Cal.com booking.
//!
//! Exactly once, because:
//! - one tenant's syncs are serialised by a per-tenant lock (the tenant actor and the
//!   reconciler both come through here), and across processes by a lease on the
//!   appointment held in the store (`lease.rs`: two workers during a Kafka rebalance). A
//!   lease held elsewhere defers the sync and parks the appointment (`parked.rs`) for the
//!   reconciler, so the tenant's later events never wait behind it;
//! - `sync_attempts` is stored *before* a create is sent, and any attempt after the first
//!   looks the booking up by our idempotency key (in the booking's metadata) before creating,
//!   so a create whose answer was lost (timeout, crash) is found instead of repeated;
//! - an `Unknown` outcome is looked up at once.
//!
//! Every Cal.com request passes the tenant's circuit breaker and its API key's rate limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::api::{BookingApi, BookingError, FindBooking};
use super::breaker::{Breaker, BreakerSettings, BreakerState, Permit, Transition};
use super::lease::{Acquired, Hold, SyncLease};
use super::limiter::Limiters;
use super::metrics::BookingMetrics;
use super::parked::Parked;
use super::request::{self, Prepared};
use crate::catalog::CalcomConfig;
use crate::clock::Clock;
use crate::domain::{Appointment, AppointmentStatus};
use crate::error::StoreError;
use crate::ids::CompanyId;
use crate::store::StateStore;

/// Booking tunables.
#[derive(Clone, Debug)]
pub struct BookingSettings {
    pub breaker: BreakerSettings,
    /// Requests per minute per Cal.com API key unless the branch sets its own.
    pub default_rate_per_min: u32,
    /// This worker's identity, from which its sync lease holders derive: a worker restarted
    /// with the same identity takes its own leases over at once. Must not be shared by two
    /// live processes. The default is a fresh one (a restart then waits for the leases its
    /// previous incarnation left, without holding up the tenant).
    pub worker_id: Uuid,
}

impl Default for BookingSettings {
    fn default() -> Self {
        Self {
            breaker: BreakerSettings::default(),
            default_rate_per_min: 120,
            worker_id: Uuid::now_v7(),
        }
    }
}

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The appointment is now `scheduled`; `found` when an earlier create was found.
    Booked {
        appointment: Appointment,
        found: bool,
    },
    /// It was not `pending_sync` (already booked, cancelled or failed): nothing sent.
    NothingToDo(Appointment),
    /// The breaker is open: nothing sent, it stays `pending_sync` for the reconciler.
    Deferred { reason: String },
    /// Cal.com failed transiently: it stays `pending_sync` with `last_error`.
    Transient { error: BookingError },
    /// Cal.com (or our data) refuses it for good: the appointment is `failed`.
    Permanent { reason: String },
    /// Shutdown began while waiting for the rate limit: nothing sent.
    Interrupted,
}

/// Why a gated call did not reach Cal.com.
enum Gate {
    Open { retry_in: Duration },
    Interrupted,
}

pub struct Booker {
    api: Arc<dyn BookingApi>,
    settings: BookingSettings,
    limiters: Limiters,
    breakers: Mutex<HashMap<CompanyId, Breaker>>,
    locks: Mutex<HashMap<CompanyId, Arc<tokio::sync::Mutex<()>>>>,
    /// Appointments waiting for another process's lease; the reconciler syncs them.
    pub parked: Parked,
    pub metrics: BookingMetrics,
    shutdown: CancellationToken,
}

impl Booker {
    pub fn new(
        api: Arc<dyn BookingApi>,
        settings: BookingSettings,
        metrics: BookingMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            api,
            settings,
            limiters: Limiters::new(),
            breakers: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            parked: Parked::default(),
            metrics,
            shutdown,
        }
    }

    /// Every tenant that has a breaker, with its state (for `/health`).
    pub fn breaker_states(&self) -> Vec<(CompanyId, BreakerState)> {
        let now = Instant::now();
        let breakers = self.breakers.lock().expect("breakers lock poisoned");
        let mut states: Vec<_> = breakers.iter().map(|(c, b)| (*c, b.state(now))).collect();
        states.sort_by_key(|(c, _)| *c);
        states
    }

    /// Tenants whose breaker has not seen a Cal.com outcome since this process started
    /// (breaker state is not persisted, so theirs is being re-learned; for `/health`).
    pub fn relearning_breakers(&self) -> Vec<CompanyId> {
        let breakers = self.breakers.lock().expect("breakers lock poisoned");
        let mut tenants: Vec<_> = breakers
            .iter()
            .filter(|(_, b)| !b.has_outcome())
            .map(|(c, _)| *c)
            .collect();
        tenants.sort();
        tenants
    }

    /// The tenant's breaker state now (closed when it never booked).
    pub fn breaker_state(&self, company_id: CompanyId) -> BreakerState {
        let breakers = self.breakers.lock().expect("breakers lock poisoned");
        breakers
            .get(&company_id)
            .map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }

    /// Pushes one appointment to Cal.com if it is still `pending_sync`. `Err` only when the
    /// store fails.
    pub async fn sync(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        company_id: CompanyId,
        appointment_id: Uuid,
    ) -> Result<SyncOutcome, StoreError> {
        let lock = self.tenant_lock(company_id);
        let _serial = lock.lock().await;
        let worker_id = self.settings.worker_id;
        let acquired =
            SyncLease::acquire(store, clock, worker_id, company_id, appointment_id).await?;
        let mut lease = match acquired {
            Acquired::Held(lease) => lease,
            Acquired::Elsewhere { until } => {
                let outcome = self.parked.defer(clock, company_id, appointment_id, until);
                self.count(&outcome);
                return Ok(outcome);
            }
        };
        self.parked.unpark(company_id, appointment_id);
        let result = self
            .sync_leased(store, clock, company_id, appointment_id, &mut lease)
            .await;
        lease.release(store).await;
        let outcome = result?;
        self.count(&outcome);
        Ok(outcome)
    }

    async fn sync_leased(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        company_id: CompanyId,
        appointment_id: Uuid,
        lease: &mut SyncLease,
    ) -> Result<SyncOutcome, StoreError> {
        let Some(appointment) = store.appointment(company_id, appointment_id).await? else {
            return Err(StoreError::NotFound(format!(
                "appointment {appointment_id} of company {company_id}"
            )));
        };
        if appointment.status != AppointmentStatus::PendingSync {
            return Ok(SyncOutcome::NothingToDo(appointment));
        }
        match request::prepare(store, &appointment).await? {
            Ok(prepared) => self.push(store, clock, appointment, &prepared, lease).await,
            Err(reason) => self.fail(store, clock, appointment, reason).await,
        }
    }

    async fn push(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        mut appointment: Appointment,
        prepared: &Prepared,
        lease: &mut SyncLease,
    ) -> Result<SyncOutcome, StoreError> {
        let company_id = appointment.company_id;
        let target = &prepared.target;
        if appointment.sync_attempts > 0 {
            match self.lookup(company_id, target, prepared).await {
                Err(gate) => return Ok(gated(gate)),
                Ok(Ok(Some(booking))) => {
                    return self.booked(store, clock, appointment, booking, true).await
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => return self.failed(store, clock, appointment, error).await,
            }
        }
        let per_min = match self.admit(company_id, target).await {
            Ok(per_min) => per_min,
            Err(gate) => return Ok(gated(gate)),
        };
        // The rate-limit wait can outlast the lease: make sure nobody synced meanwhile.
        if let Some(deferred) = self.lease_lost(store, clock, &appointment, lease).await? {
            self.abandon(company_id);
            return Ok(deferred);
        }
        // Stored after admission and before sending: if the answer is lost, the next attempt
        // looks first; a deferred or interrupted sync never counts as an attempt.
        appointment.sync_attempts += 1;
        bump(&mut appointment, clock.now());
        if let Err(error) = store.upsert_appointment(&appointment).await {
            self.abandon(company_id);
            return Err(error);
        }
        let started = Instant::now();
        let created = self.api.create_booking(target, &prepared.create).await;
        self.settle(company_id, target, per_min, created.as_ref().err(), started);
        match created {
            Ok(booking) => self.booked(store, clock, appointment, booking, false).await,
            Err(unknown @ BookingError::Unknown { .. }) => {
                match self.lookup(company_id, target, prepared).await {
                    Ok(Ok(Some(booking))) => {
                        self.booked(store, clock, appointment, booking, true).await
                    }
                    _ => self.failed(store, clock, appointment, unknown).await,
                }
            }
            Err(error) => self.failed(store, clock, appointment, error).await,
        }
    }

    /// `Some(Deferred)` when the lease is gone, or was retaken after another process
    /// changed the appointment; `None` when this sync may go on.
    async fn lease_lost(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        appointment: &Appointment,
        lease: &mut SyncLease,
    ) -> Result<Option<SyncOutcome>, StoreError> {
        let changed = match lease.check(store, clock).await? {
            Hold::Continuous => false,
            Hold::Lost => true,
            Hold::Retaken => {
                let stored = store
                    .appointment(appointment.company_id, appointment.id)
                    .await?;
                stored.is_none_or(|s| s.version != appointment.version)
            }
        };
        Ok(changed.then(|| SyncOutcome::Deferred {
            reason: "another process synced this appointment meanwhile; left to it".into(),
        }))
    }

    async fn lookup(
        &self,
        company_id: CompanyId,
        target: &CalcomConfig,
        prepared: &Prepared,
    ) -> Result<Result<Option<super::api::Booking>, BookingError>, Gate> {
        let find = FindBooking {
            company_id,
            appointment_id: prepared.appointment_id,
            idempotency_key: &prepared.idempotency_key,
            event_type_id: prepared.create.event_type_id,
            start: prepared.create.start,
            attendee_email: prepared.create.attendee.email.as_deref(),
        };
        let found = self
            .gated(company_id, target, || self.api.find_booking(target, &find))
            .await?;
        // Defense in depth: whatever the client matched, only a booking whose metadata names
        // this tenant, appointment and key is ever adopted.
        Ok(found.map(|booking| {
            booking.filter(|b| {
                let ours = find.owns(b);
                if !ours {
                    tracing::warn!(%company_id, appointment_id = %prepared.appointment_id, uid = %b.uid, "cal.com lookup returned a booking that is not this appointment's; ignored");
                }
                ours
            })
        }))
    }

    /// One Cal.com request through the tenant's breaker and the key's rate limit.
    async fn gated<T, F, Fut>(
        &self,
        company_id: CompanyId,
        target: &CalcomConfig,
        op: F,
    ) -> Result<Result<T, BookingError>, Gate>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, BookingError>>,
    {
        let per_min = self.admit(company_id, target).await?;
        let started = Instant::now();
        let result = op().await;
        self.settle(company_id, target, per_min, result.as_ref().err(), started);
        Ok(result)
    }

    /// Waits for the key's rate limit and takes a breaker permit. Returns the key's limit.
    async fn admit(&self, company_id: CompanyId, target: &CalcomConfig) -> Result<u32, Gate> {
        // Do not spend rate-limit budget while the breaker would refuse anyway.
        if let BreakerState::Open = self.breaker_state(company_id) {
            return Err(Gate::Open {
                retry_in: self.open_remaining(company_id),
            });
        }
        let per_min = target
            .rate_limit_per_min
            .unwrap_or(self.settings.default_rate_per_min);
        let waited = self
            .limiters
            .acquire(&target.api_key, per_min, &self.shutdown)
            .await
            .map_err(|_| Gate::Interrupted)?;
        if !waited.is_zero() {
            self.metrics.rate_limit_waits_total.inc();
            self.metrics
                .rate_limit_wait_seconds
                .observe(waited.as_secs_f64());
            tracing::debug!(company_id = %company_id, waited_ms = waited.as_millis() as u64, "waited for cal.com rate limit");
        }
        if let Permit::Rejected { retry_in } =
            self.with_breaker(company_id, |b| b.acquire(Instant::now()))
        {
            return Err(Gate::Open { retry_in });
        }
        Ok(per_min)
    }

    /// Feeds a request's outcome to the breaker, the latency histogram and the limiter.
    fn settle(
        &self,
        company_id: CompanyId,
        target: &CalcomConfig,
        per_min: u32,
        error: Option<&BookingError>,
        started: Instant,
    ) {
        self.metrics
            .booking_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        match error {
            None => self.with_breaker(company_id, |b| ((), b.on_success())),
            Some(e) if e.trips_breaker() => {
                self.with_breaker(company_id, |b| ((), b.on_failure(Instant::now())))
            }
            Some(_) => self.with_breaker(company_id, |b| ((), b.on_permanent())),
        }
        if let Some(retry_after) = error.and_then(BookingError::retry_after) {
            self.limiters.block(&target.api_key, per_min, retry_after);
        }
    }

    /// A permit was taken but no request went out.
    fn abandon(&self, company_id: CompanyId) {
        self.with_breaker(company_id, |b| {
            b.on_abandoned();
            ((), None)
        });
    }

    /// Runs `f` on the tenant's breaker and publishes any state change.
    fn with_breaker<T>(
        &self,
        company_id: CompanyId,
        f: impl FnOnce(&mut Breaker) -> (T, Option<Transition>),
    ) -> T {
        let (out, transition, state) = {
            let mut breakers = self.breakers.lock().expect("breakers lock poisoned");
            let breaker = breakers
                .entry(company_id)
                .or_insert_with(|| Breaker::new(self.settings.breaker));
            let (out, transition) = f(breaker);
            (out, transition, breaker.state(Instant::now()))
        };
        let label = company_id.to_string();
        self.metrics
            .breaker_state
            .with_label_values(&[label.as_str()])
            .set(state.gauge());
        if let Some(t) = transition {
            self.metrics
                .breaker_transitions_total
                .with_label_values(&[t.from.as_str(), t.to.as_str()])
                .inc();
            tracing::warn!(company_id = %company_id, from = %t.from, to = %t.to, "cal.com circuit breaker changed state");
        }
        out
    }

    fn open_remaining(&self, company_id: CompanyId) -> Duration {
        let breakers = self.breakers.lock().expect("breakers lock poisoned");
        breakers
            .get(&company_id)
            .map_or(Duration::ZERO, |b| b.open_for(Instant::now()))
    }

    fn tenant_lock(&self, company_id: CompanyId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("tenant locks poisoned");
        Arc::clone(locks.entry(company_id).or_default())
    }

    /// Holds the tenant's booking lock: other writers of appointments (the Cal.com webhook
    /// handler) take it so a sync never works on a copy they changed underneath it.
    pub async fn lock_tenant(&self, company_id: CompanyId) -> tokio::sync::OwnedMutexGuard<()> {
        self.tenant_lock(company_id).lock_owned().await
    }

    async fn booked(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        mut appointment: Appointment,
        booking: super::api::Booking,
        found: bool,
    ) -> Result<SyncOutcome, StoreError> {
        // Our booking exists but was cancelled or rejected in Cal.com meanwhile: that is the
        // business's decision; booking it again would overrule it.
        if matches!(booking.status.as_str(), "cancelled" | "rejected") {
            appointment.status = AppointmentStatus::Cancelled;
            appointment.calcom_uid = Some(booking.uid.clone());
            appointment.last_error = Some(format!("the booking is {} in cal.com", booking.status));
            bump(&mut appointment, clock.now());
            store.upsert_appointment(&appointment).await?;
            return Ok(SyncOutcome::NothingToDo(appointment));
        }
        appointment.status = AppointmentStatus::Scheduled;
        appointment.calcom_uid = Some(booking.uid.clone());
        appointment.start_at = Some(booking.start);
        appointment.end_at = Some(booking.end);
        appointment.last_error = None;
        bump(&mut appointment, clock.now());
        store.upsert_appointment(&appointment).await?;
        tracing::info!(
            company_id = %appointment.company_id,
            appointment_id = %appointment.id,
            calcom_uid = %booking.uid,
            found,
            "appointment booked in cal.com"
        );
        Ok(SyncOutcome::Booked { appointment, found })
    }

    async fn failed(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        appointment: Appointment,
        error: BookingError,
    ) -> Result<SyncOutcome, StoreError> {
        if let BookingError::Permanent { .. } = error {
            return self
                .fail(store, clock, appointment, error.to_string())
                .await;
        }
        let mut appointment = appointment;
        appointment.last_error = Some(error.to_string());
        bump(&mut appointment, clock.now());
        store.upsert_appointment(&appointment).await?;
        Ok(SyncOutcome::Transient { error })
    }

    async fn fail(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        mut appointment: Appointment,
        reason: String,
    ) -> Result<SyncOutcome, StoreError> {
        appointment.status = AppointmentStatus::Failed;
        appointment.last_error = Some(reason.clone());
        bump(&mut appointment, clock.now());
        store.upsert_appointment(&appointment).await?;
        tracing::warn!(
            company_id = %appointment.company_id,
            appointment_id = %appointment.id,
            reason = %reason,
            "appointment cannot be booked"
        );
        Ok(SyncOutcome::Permanent { reason })
    }

    fn count(&self, outcome: &SyncOutcome) {
        let status = match outcome {
            SyncOutcome::Booked { found: false, .. } => "booked",
            SyncOutcome::Booked { found: true, .. } => "found",
            SyncOutcome::NothingToDo(_) | SyncOutcome::Interrupted => return,
            SyncOutcome::Deferred { .. } => "deferred",
            SyncOutcome::Transient { .. } => "transient",
            SyncOutcome::Permanent { .. } => "permanent",
        };
        self.metrics
            .bookings_total
            .with_label_values(&[status])
            .inc();
    }
}

fn gated(gate: Gate) -> SyncOutcome {
    match gate {
        Gate::Open { retry_in } => SyncOutcome::Deferred {
            reason: format!(
                "cal.com circuit breaker is open (next probe in {} s); appointment kept as pending_sync",
                retry_in.as_secs()
            ),
        },
        Gate::Interrupted => SyncOutcome::Interrupted,
    }
}

/// Our writes are ordered after everything stored so far and after Cal.com webhooks up to now.
fn bump(appointment: &mut Appointment, now: DateTime<Utc>) {
    appointment.version = (appointment.version + 1).max(now.timestamp_millis());
    appointment.updated_at = now;
}

#[cfg(test)]
#[path = "booker_tests.rs"]
mod tests;
