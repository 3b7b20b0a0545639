//! A scripted fake [`BookingApi`] and the fixture the booker, reconciler and retry-tier tests
//! share.
//!
//! [`ScriptedCalcom`] answers every method from a queue of scripted results; when a queue is
//! empty it behaves like a healthy Cal.com: a create books (fresh uid, echoing start and
//! metadata) and a find returns only a booking some earlier create committed under the same
//! idempotency key. A create can be scripted to commit and still fail (a lost answer). Every
//! call is logged with its method and the tokio instant it was made at.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::booking::{
    Booker, Booking, BookingApi, BookingError, BookingMetrics, BookingSettings, CreateBooking,
    FindBooking, SlotReservation, Slots, SyncOutcome,
};
use crate::catalog::CalcomConfig;
use crate::clock::TokioClock;
use crate::dedup::retell_key;
use crate::domain::{Appointment, AppointmentStatus, Branch, Company};
use crate::error::StoreError;
use crate::ids::{BranchId, CompanyId, EventId};
use crate::record::{Disposition, LogRecord};
use crate::store::StateStore;

use super::{record_with, t0, MemStore};

/// The branch's number in [`BookingFixture`] (the callee of its calls).
pub const BRANCH_PHONE: &str = "+493011111111";
/// A caller's number.
pub const CALLER_PHONE: &str = "+491701234567";

/// The API methods, for counting calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Slots,
    Reserve,
    Release,
    Create,
    Find,
    Cancel,
    Reschedule,
}

/// One request the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCall {
    pub method: Method,
    pub at: Instant,
}

/// What one `create_booking` does.
#[derive(Clone, Debug)]
pub enum CreateStep {
    /// Books it and answers (also what an empty queue does).
    Succeed,
    /// Books nothing and fails with this error.
    Fail(BookingError),
    /// Books it, then fails with this error: the answer was lost.
    CommitThenFail(BookingError),
}

#[derive(Default)]
struct Inner {
    creates: VecDeque<CreateStep>,
    finds: VecDeque<Result<Option<Booking>, BookingError>>,
    bookings: Vec<Booking>,
    create_requests: Vec<CreateBooking>,
    calls: Vec<ApiCall>,
    next_id: i64,
    /// Starts `slots` offers (before bookings and holds are taken out).
    open: Vec<DateTime<Utc>>,
    /// Held starts by reservation uid.
    holds: Vec<(String, DateTime<Utc>)>,
}

/// A fake Cal.com driven by scripts.
#[derive(Default)]
pub struct ScriptedCalcom {
    inner: Mutex<Inner>,
}

impl ScriptedCalcom {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("scripted calcom lock poisoned")
    }

    // ---- scripts ---------------------------------------------------------------------------

    /// Queues what the next unscripted `create_booking` does.
    pub fn script_create(&self, step: CreateStep) {
        self.inner().creates.push_back(step);
    }

    /// The next create fails with `error` and books nothing.
    pub fn fail_create(&self, error: BookingError) {
        self.script_create(CreateStep::Fail(error));
    }

    /// The next create books, but its answer is lost (`Unknown`).
    pub fn create_commits_but_unknown(&self) {
        self.script_create(CreateStep::CommitThenFail(unknown()));
    }

    /// Queues the answer of the next `find_booking` (instead of looking at what was booked).
    pub fn script_find(&self, result: Result<Option<Booking>, BookingError>) {
        self.inner().finds.push_back(result);
    }

    // ---- observations ----------------------------------------------------------------------

    /// Calls of one method.
    pub fn calls(&self, method: Method) -> usize {
        self.inner()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Calls of every method.
    pub fn total_calls(&self) -> usize {
        self.inner().calls.len()
    }

    /// Every call, in order, with the instant it was made.
    pub fn call_log(&self) -> Vec<ApiCall> {
        self.inner().calls.clone()
    }

    /// Every create request, in order.
    pub fn create_requests(&self) -> Vec<CreateBooking> {
        self.inner().create_requests.clone()
    }

    /// The bookings that exist in the fake Cal.com.
    pub fn bookings(&self) -> Vec<Booking> {
        self.inner().bookings.clone()
    }

    fn log(&self, method: Method) {
        self.inner().calls.push(ApiCall {
            method,
            at: Instant::now(),
        });
    }

    fn commit(&self, request: &CreateBooking) -> Booking {
        let mut inner = self.inner();
        inner.next_id += 1;
        let id = inner.next_id;
        let length = chrono::Duration::minutes(i64::from(request.length_minutes.unwrap_or(30)));
        let booking = Booking {
            id,
            uid: format!("bk_{id}"),
            start: request.start,
            end: request.start + length,
            status: "accepted".into(),
            event_type_id: Some(request.event_type_id),
            metadata: request.metadata.clone(),
            rescheduled_to_uid: None,
        };
        inner.bookings.push(booking.clone());
        booking
    }
}

#[async_trait]
impl BookingApi for ScriptedCalcom {
    async fn slots(
        &self,
        _target: &CalcomConfig,
        _event_type_id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        _time_zone: &str,
    ) -> Result<Slots, BookingError> {
        self.log(Method::Slots);
        let inner = self.inner();
        let taken = |at: &DateTime<Utc>| {
            inner
                .bookings
                .iter()
                .any(|b| b.status == "accepted" && b.start == *at)
                || inner.holds.iter().any(|(_, held)| held == at)
        };
        Ok(inner
            .open
            .iter()
            .filter(|at| **at >= start && **at < end && !taken(at))
            .copied()
            .collect())
    }

    async fn reserve_slot(
        &self,
        _target: &CalcomConfig,
        _event_type_id: i64,
        start: DateTime<Utc>,
        _length_minutes: Option<u32>,
    ) -> Result<SlotReservation, BookingError> {
        self.log(Method::Reserve);
        let mut inner = self.inner();
        let booked = inner
            .bookings
            .iter()
            .any(|b| b.status == "accepted" && b.start == start);
        if booked || inner.holds.iter().any(|(_, held)| *held == start) {
            return Err(permanent(409, "ConflictException", "slot taken or held"));
        }
        inner.next_id += 1;
        let uid = format!("hold_{}", inner.next_id);
        inner.holds.push((uid.clone(), start));
        Ok(SlotReservation {
            uid,
            start,
            until: start,
        })
    }

    async fn release_slot(&self, _target: &CalcomConfig, uid: &str) -> Result<(), BookingError> {
        self.log(Method::Release);
        self.inner().holds.retain(|(held, _)| held != uid);
        Ok(())
    }

    async fn create_booking(
        &self,
        _target: &CalcomConfig,
        request: &CreateBooking,
    ) -> Result<Booking, BookingError> {
        self.log(Method::Create);
        let step = {
            let mut inner = self.inner();
            inner.create_requests.push(request.clone());
            if inner.holds.iter().any(|(_, held)| *held == request.start) {
                return Err(permanent(
                    409,
                    "ConflictException",
                    "reserved_slot_not_first_in_line",
                ));
            }
            inner.creates.pop_front().unwrap_or(CreateStep::Succeed)
        };
        match step {
            CreateStep::Succeed => Ok(self.commit(request)),
            CreateStep::Fail(error) => Err(error),
            CreateStep::CommitThenFail(error) => {
                self.commit(request);
                Err(error)
            }
        }
    }

    async fn find_booking(
        &self,
        _target: &CalcomConfig,
        find: &FindBooking<'_>,
    ) -> Result<Option<Booking>, BookingError> {
        self.log(Method::Find);
        let mut inner = self.inner();
        if let Some(scripted) = inner.finds.pop_front() {
            return scripted;
        }
        Ok(inner.bookings.iter().find(|b| find.owns(b)).cloned())
    }

    async fn cancel_booking(
        &self,
        _target: &CalcomConfig,
        uid: &str,
        _reason: Option<&str>,
    ) -> Result<(), BookingError> {
        self.log(Method::Cancel);
        let mut inner = self.inner();
        match inner.bookings.iter_mut().find(|b| b.uid == uid) {
            Some(booking) => {
                booking.status = "cancelled".into();
                Ok(())
            }
            None => Err(permanent(404, "NotFoundException", "booking not found")),
        }
    }

    async fn reschedule_booking(
        &self,
        _target: &CalcomConfig,
        uid: &str,
        _start: DateTime<Utc>,
        _reason: Option<&str>,
    ) -> Result<Booking, BookingError> {
        self.log(Method::Reschedule);
        Err(permanent(
            400,
            "BadRequestException",
            &format!("the scripted fake does not reschedule {uid}"),
        ))
    }
}

// ---- errors -------------------------------------------------------------------------------

/// A 503 without `Retry-After`.
pub fn transient(reason: &str) -> BookingError {
    BookingError::Transient {
        reason: reason.into(),
        retry_after: None,
        status: Some(503),
    }
}

/// A 429 with `Retry-After`.
pub fn rate_limited(retry_after: Duration) -> BookingError {
    BookingError::Transient {
        reason: "429 too many requests".into(),
        retry_after: Some(retry_after),
        status: Some(429),
    }
}

/// A timeout after the request was sent.
pub fn unknown() -> BookingError {
    BookingError::Unknown {
        reason: "timed out waiting for the answer".into(),
    }
}

/// A 4xx.
pub fn permanent(status: u16, code: &str, message: &str) -> BookingError {
    BookingError::Permanent {
        status,
        code: code.into(),
        message: message.into(),
    }
}

// ---- fixture ------------------------------------------------------------------------------

/// A branch's Cal.com connection (the scripted fake ignores it).
pub fn calcom_config(rate_limit_per_min: Option<u32>) -> CalcomConfig {
    CalcomConfig {
        api_key: "cal_test_key".into(),
        event_type_id: 4711,
        base_url: "http://calcom.invalid".into(),
        rate_limit_per_min,
    }
}

/// A store with one company and one branch, a booker over a [`ScriptedCalcom`] and a
/// [`TokioClock`] starting at [`t0`]. Build it inside a paused-time test.
pub struct BookingFixture {
    pub store: Arc<MemStore>,
    pub api: Arc<ScriptedCalcom>,
    pub booker: Arc<Booker>,
    pub clock: Arc<TokioClock>,
    pub shutdown: CancellationToken,
    pub company: CompanyId,
    pub branch: Branch,
}

impl BookingFixture {
    /// A branch connected to Cal.com with the default rate limit.
    pub async fn new() -> Self {
        Self::with_calcom(Some(calcom_config(None))).await
    }

    /// A branch with this Cal.com connection (or none).
    pub async fn with_calcom(calcom: Option<CalcomConfig>) -> Self {
        let store = Arc::new(MemStore::new());
        let company = Company {
            id: CompanyId::new(),
            name: "Acme".into(),
            allow_unsigned_calcom: false,
            created_at: t0(),
        };
        store.create_company(&company).await.unwrap();
        let branch = Branch {
            id: BranchId::new(),
            company_id: company.id,
            name: "Mitte".into(),
            phone: BRANCH_PHONE.into(),
            timezone: "Europe/Berlin".into(),
            retell_agent_id: None,
            retell_llm_id: None,
            calcom,
            created_at: t0(),
            fallback_email: None,
        };
        store.create_branch(&branch).await.unwrap();
        let api = ScriptedCalcom::new();
        let shutdown = CancellationToken::new();
        let booker = Arc::new(Booker::new(
            Arc::clone(&api) as Arc<dyn BookingApi>,
            BookingSettings::default(),
            BookingMetrics::unregistered(),
            shutdown.clone(),
        ));
        Self {
            store,
            api,
            booker,
            clock: Arc::new(TokioClock::starting_at(t0())),
            shutdown,
            company: company.id,
            branch,
        }
    }

    /// Another booker over the same fake Cal.com, as a process of its own (fresh rate
    /// limiters and breakers) whose worker identity is `worker_id`.
    pub fn booker_of_worker(&self, worker_id: Uuid) -> Arc<Booker> {
        let settings = BookingSettings {
            worker_id,
            ..BookingSettings::default()
        };
        Arc::new(Booker::new(
            Arc::clone(&self.api) as Arc<dyn BookingApi>,
            settings,
            BookingMetrics::unregistered(),
            self.shutdown.clone(),
        ))
    }

    /// A `pending_sync` appointment of the branch (not stored), last changed `age` ago.
    pub fn pending(&self, age: Duration) -> Appointment {
        let at = crate::clock::Clock::now(&*self.clock)
            - chrono::Duration::from_std(age).expect("age fits");
        let id = Uuid::now_v7();
        Appointment {
            company_id: self.company,
            id,
            calcom_uid: None,
            branch_id: Some(self.branch.id),
            service_id: None,
            customer_id: None,
            status: AppointmentStatus::PendingSync,
            start_at: Some(t0() + chrono::Duration::days(7)),
            end_at: None,
            title: None,
            attendee_name: Some("Erika Mustermann".into()),
            attendee_email: None,
            attendee_phone: Some(CALLER_PHONE.into()),
            timezone: None,
            rescheduled_to_uid: None,
            idempotency_key: Some(format!("test-key:{id}")),
            sync_attempts: 0,
            last_error: None,
            source_event: EventId::new(),
            version: at.timestamp_millis(),
            created_at: at,
            updated_at: at,
            contact_source: None,
        }
    }

    /// Stores an appointment.
    pub async fn put(&self, appointment: &Appointment) {
        assert!(self.store.upsert_appointment(appointment).await.unwrap());
    }

    /// Stores a fresh `pending_sync` appointment and returns its id.
    pub async fn add_pending(&self) -> Uuid {
        let appointment = self.pending(Duration::ZERO);
        self.put(&appointment).await;
        appointment.id
    }

    /// The stored appointment.
    pub async fn appointment(&self, id: Uuid) -> Appointment {
        self.store
            .appointment(self.company, id)
            .await
            .unwrap()
            .expect("appointment exists")
    }

    /// Runs one sync of the appointment.
    pub async fn sync(&self, id: Uuid) -> SyncOutcome {
        self.booker
            .sync(&*self.store, &*self.clock, self.company, id)
            .await
            .expect("the store is up")
    }

    /// Runs one sync of the appointment in a task of its own.
    pub fn spawn_sync(&self, id: Uuid) -> JoinHandle<Result<SyncOutcome, StoreError>> {
        self.spawn_sync_on(&self.booker, id)
    }

    /// Runs one sync of the appointment on `booker`, in a task of its own.
    pub fn spawn_sync_on(
        &self,
        booker: &Arc<Booker>,
        id: Uuid,
    ) -> JoinHandle<Result<SyncOutcome, StoreError>> {
        let (store, clock, booker) = (
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            Arc::clone(booker),
        );
        let company = self.company;
        tokio::spawn(async move { booker.sync(&*store, &*clock, company, id).await })
    }

    /// The tenant's breaker gauge.
    pub fn breaker_gauge(&self) -> i64 {
        let label = self.company.to_string();
        self.booker
            .metrics
            .breaker_state
            .with_label_values(&[label.as_str()])
            .get()
    }
}

/// An accepted Retell `call_analyzed` of `call_id` to `to_number`, whose analysis asks for
/// `date_time` (`YYYY-MM-DD HH:MM`, the branch's zone) for the caller [`CALLER_PHONE`].
pub fn call_analyzed_booking(
    company_id: CompanyId,
    call_id: &str,
    to_number: &str,
    date_time: &str,
) -> LogRecord {
    let body = serde_json::json!({
        "event": "call_analyzed",
        "call": {
            "call_id": call_id,
            "direction": "inbound",
            "from_number": CALLER_PHONE,
            "to_number": to_number,
            "call_status": "ended",
            "call_analysis": {
                "call_summary": "Termin vereinbart",
                "custom_analysis_data": {
                    "appointment_made": true,
                    "appointment_date_time": date_time,
                    "caller_full_name": "Erika Mustermann"
                }
            }
        }
    });
    let mut record = record_with(
        company_id,
        &body.to_string(),
        &retell_key("call_analyzed", call_id),
        Disposition::Accept,
    );
    record.meta.event_type = "call_analyzed".into();
    record
}

/// The metadata an appointment's create request carries, for matching requests to rows.
pub fn appointment_of(request: &CreateBooking) -> Option<Uuid> {
    let metadata: &BTreeMap<String, String> = &request.metadata;
    metadata.get("askpro_appointment")?.parse().ok()
}
