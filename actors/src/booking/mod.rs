//! Booking: the Cal.com contract, the per-tenant circuit breaker and rate limiter, and the
//! booker that turns a local appointment into exactly one Cal.com booking.

pub mod api;
pub mod booker;
pub mod breaker;
pub mod lease;
pub mod limiter;
pub mod metrics;
pub mod parked;
pub mod request;

pub use api::{
    Attendee, Booking, BookingApi, BookingError, CreateBooking, FindBooking, SlotReservation,
    Slots, APPOINTMENT_METADATA_KEY, COMPANY_METADATA_KEY, IDEMPOTENCY_METADATA_KEY,
};
pub use booker::{Booker, BookingSettings, SyncOutcome};
pub use breaker::{BreakerSettings, BreakerState};
pub use metrics::BookingMetrics;
