//! The booking contract (Cal.com API v2, as the pipeline needs it). The reqwest client and the
//! fake Cal.com live in the `askpro` crate; this crate only knows the trait.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::catalog::CalcomConfig;
use crate::ids::CompanyId;

/// The metadata key that carries our idempotency key in a Cal.com booking.
pub const IDEMPOTENCY_METADATA_KEY: &str = "askpro_key";
/// The metadata key that names the tenant a booking was made for. Several tenants may share
/// one Cal.com account, so every booking we make says whose it is.
pub const COMPANY_METADATA_KEY: &str = "askpro_company";
/// The metadata key that names our appointment row a booking was made for.
pub const APPOINTMENT_METADATA_KEY: &str = "askpro_appointment";

/// Who the booking is for. Cal.com needs an email or a phone number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    pub name: String,
    /// IANA zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// e.g. `de`.
    pub language: Option<String>,
}

/// `POST /v2/bookings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateBooking {
    /// Sent as ISO 8601 UTC.
    pub start: DateTime<Utc>,
    pub event_type_id: i64,
    pub length_minutes: Option<u32>,
    pub attendee: Attendee,
    /// At most 50 keys of ≤ 40 chars, values ≤ 500 chars; carries
    /// [`IDEMPOTENCY_METADATA_KEY`].
    pub metadata: BTreeMap<String, String>,
}

/// A booking as Cal.com reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub id: i64,
    pub uid: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `accepted | pending | cancelled | rejected`.
    pub status: String,
    pub event_type_id: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// Set on a booking that was rescheduled: its successor.
    pub rescheduled_to_uid: Option<String>,
}

impl Booking {
    /// Our idempotency key, if we made this booking.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.metadata
            .get(IDEMPOTENCY_METADATA_KEY)
            .map(String::as_str)
    }

    /// The tenant named in the booking's metadata, if we made it.
    pub fn company(&self) -> Option<&str> {
        self.metadata.get(COMPANY_METADATA_KEY).map(String::as_str)
    }

    /// Our appointment named in the booking's metadata, if we made it.
    pub fn appointment(&self) -> Option<&str> {
        self.metadata
            .get(APPOINTMENT_METADATA_KEY)
            .map(String::as_str)
    }
}

/// How to look for a booking we may have made (Cal.com has no idempotency header). A booking
/// is only ever ours when its metadata names this tenant, this appointment and this key: two
/// tenants may share one Cal.com account and see the same provider ids (a call id is signed by
/// whichever tenant's Retell key sent it), so a key alone must never adopt a booking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindBooking<'a> {
    pub company_id: CompanyId,
    pub appointment_id: Uuid,
    pub idempotency_key: &'a str,
    pub event_type_id: i64,
    /// The booking's start; the search window is built around it.
    pub start: DateTime<Utc>,
    pub attendee_email: Option<&'a str>,
}

impl FindBooking<'_> {
    /// Whether `booking` is the one this lookup is for: key, tenant and appointment all match.
    pub fn owns(&self, booking: &Booking) -> bool {
        booking.idempotency_key() == Some(self.idempotency_key)
            && booking.company() == Some(self.company_id.to_string().as_str())
            && booking.appointment() == Some(self.appointment_id.to_string().as_str())
    }
}

/// Why a Cal.com request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// 5xx, 429, connection refused: nothing happened; trying again later may work. Counts
    /// toward the circuit breaker.
    #[error("cal.com transient failure: {reason}")]
    Transient {
        reason: String,
        /// From `Retry-After` (or the rate-limit headers) when Cal.com sent one.
        retry_after: Option<Duration>,
        /// HTTP status, when there was a response.
        status: Option<u16>,
    },
    /// A timeout or a broken connection after the request was sent: Cal.com may have acted.
    /// Look the booking up before repeating a create. Counts toward the circuit breaker.
    #[error("cal.com outcome unknown: {reason}")]
    Unknown { reason: String },
    /// Other 4xx: this request can never succeed as sent. Does not trip the breaker.
    #[error("cal.com refused the request ({status} {code}): {message}")]
    Permanent {
        status: u16,
        /// Cal.com's `error.code`, e.g. `BadRequestException`.
        code: String,
        message: String,
    },
}

impl BookingError {
    /// Whether this failure counts toward opening the circuit breaker.
    pub fn trips_breaker(&self) -> bool {
        !matches!(self, BookingError::Permanent { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BookingError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Free start times, as UTC instants.
pub type Slots = Vec<DateTime<Utc>>;

/// A hold on one slot (`POST /v2/slots/reservations`): nobody else can book it until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReservation {
    pub uid: String,
    pub start: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Cal.com API v2, the calls the pipeline makes. Every call takes the branch's connection, so
/// one client serves every tenant (each with its own key and base URL).
#[async_trait]
pub trait BookingApi: Send + Sync + 'static {
    /// `GET /v2/slots` (`cal-api-version: 2024-09-04`).
    async fn slots(
        &self,
        target: &CalcomConfig,
        event_type_id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        time_zone: &str,
    ) -> Result<Slots, BookingError>;

    /// `POST /v2/slots/reservations` (`cal-api-version: 2024-09-04`): holds `start` for
    /// Cal.com's default 5 minutes. A slot taken or held by someone else is `Permanent` (409).
    async fn reserve_slot(
        &self,
        target: &CalcomConfig,
        event_type_id: i64,
        start: DateTime<Utc>,
        length_minutes: Option<u32>,
    ) -> Result<SlotReservation, BookingError>;

    /// `DELETE /v2/slots/reservations/{uid}`: gives a hold back (a booking against a hold is
    /// refused, even for the holder, since the booking request cannot name the hold).
    async fn release_slot(&self, target: &CalcomConfig, uid: &str) -> Result<(), BookingError>;

    /// `POST /v2/bookings` (`cal-api-version: 2024-08-13`).
    async fn create_booking(
        &self,
        target: &CalcomConfig,
        request: &CreateBooking,
    ) -> Result<Booking, BookingError>;

    /// `GET /v2/bookings` around `find.start`, keeping the booking whose metadata carries
    /// `find.idempotency_key`.
    async fn find_booking(
        &self,
        target: &CalcomConfig,
        find: &FindBooking<'_>,
    ) -> Result<Option<Booking>, BookingError>;

    /// `POST /v2/bookings/{uid}/cancel`.
    async fn cancel_booking(
        &self,
        target: &CalcomConfig,
        uid: &str,
        reason: Option<&str>,
    ) -> Result<(), BookingError>;

    /// `POST /v2/bookings/{uid}/reschedule`: returns the new booking (a new uid).
    async fn reschedule_booking(
        &self,
        target: &CalcomConfig,
        uid: &str,
        start: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<Booking, BookingError>;
}
