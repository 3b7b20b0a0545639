//! Event handlers: turn one accepted record into state. Every handler is idempotent and
//! order-tolerant (a conditional write on a version), so redelivery after a crash and
//! out-of-order arrival are both safe.

mod booking;
mod calcom;
mod contact;
mod retell;
mod wire;

use crate::booking::Booker;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::record::{Provider, StoredRecord};
use crate::store::StateStore;

pub use booking::call_booking_key;
pub use calcom::{calcom_version, read_webhook as read_calcom_webhook, BookingWebhook};
pub use retell::{read_event as read_retell_event, retell_version, RetellCall, RetellEvent};

/// What a handler needs.
pub struct HandlerCtx<'a> {
    pub store: &'a dyn StateStore,
    pub clock: &'a dyn Clock,
    pub default_region: &'a str,
    /// Books appointments in Cal.com; `None` keeps them `pending_sync` (tests, tools).
    pub booker: Option<&'a Booker>,
    /// Whether `call_ended` books too (see `PipelineSettings::book_on_call_ended`).
    pub book_on_call_ended: bool,
}

/// Why a handler did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Retrying the same event cannot help (bad data): the event becomes `failed`.
    #[error("{0}")]
    Permanent(String),
    /// An outside service failed transiently (Cal.com 5xx, 429, timeout): the event goes to
    /// a retry tier, its tenant moves on.
    #[error("{0}")]
    Transient(String),
    /// Shutdown interrupted a wait (rate limit): nothing was sent; run it again later.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The store failed; transient failures are retried.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handler's result: what it did, for the ledger and the logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Set when the event was accepted but changed nothing (ignored type, stale version).
    pub note: Option<String>,
}

/// Runs the handler for the record's provider.
pub async fn handle(ctx: &HandlerCtx<'_>, record: &StoredRecord) -> Result<Handled, HandlerError> {
    match record.meta.provider {
        Provider::Retell => retell::handle(ctx, record).await,
        Provider::Calcom => calcom::handle(ctx, record).await,
        // Decoding refuses it; kept total rather than panicking.
        Provider::RetellApi => Err(HandlerError::Permanent(
            "retell-api sends no webhooks".into(),
        )),
    }
}
