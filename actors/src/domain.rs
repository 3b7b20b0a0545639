//! Rows of the state store. Every row names its tenant (`company_id`).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::CalcomConfig;
use crate::ids::{BranchId, CompanyId, EventId};
use crate::record::Provider;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Company {
    pub id: CompanyId,
    pub name: String,
    /// Accept Cal.com webhooks signed `no-secret-provided` (only when the tenant opts in).
    pub allow_unsigned_calcom: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub id: BranchId,
    pub company_id: CompanyId,
    pub name: String,
    /// E.164.
    pub phone: String,
    /// IANA zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// The Retell agent that answers this branch's calls (`call_inbound` override).
    pub retell_agent_id: Option<String>,
    /// The Retell LLM behind that agent, when `askpro agent provision` made it (kept so a
    /// provisioning run that stopped before creating the agent reuses it).
    #[serde(default)]
    pub retell_llm_id: Option<String>,
    /// Where this branch books; `None` until `askpro branch set-calcom`.
    pub calcom: Option<CalcomConfig>,
    pub created_at: DateTime<Utc>,
    /// The attendee email Cal.com gets for a caller who left no phone or email (anonymous
    /// number, nothing said); `None` fails such bookings. `askpro branch update --fallback-email`.
    #[serde(default)]
    pub fallback_email: Option<String>,
}

/// Global lookup row: phone number → owner. Holds nothing beyond the pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneRoute {
    pub company_id: CompanyId,
    pub branch_id: BranchId,
}

/// A webhook signing secret. Several may be active per tenant and provider (rotation).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub company_id: CompanyId,
    pub provider: Provider,
    pub id: String,
    pub value: String,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("company_id", &self.company_id)
            .field("provider", &self.provider)
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Ledger status of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Received,
    Processing,
    Processed,
    Duplicate,
    /// A transient failure sent it to a retry tier; it comes back on its own.
    Retrying,
    Failed,
    Rejected,
    Unrouted,
}

impl EventStatus {
    pub const ALL: [EventStatus; 8] = [
        EventStatus::Received,
        EventStatus::Processing,
        EventStatus::Processed,
        EventStatus::Duplicate,
        EventStatus::Retrying,
        EventStatus::Failed,
        EventStatus::Rejected,
        EventStatus::Unrouted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Processing => "processing",
            EventStatus::Processed => "processed",
            EventStatus::Duplicate => "duplicate",
            EventStatus::Retrying => "retrying",
            EventStatus::Failed => "failed",
            EventStatus::Rejected => "rejected",
            EventStatus::Unrouted => "unrouted",
        }
    }

    /// Final states: the event's offset may be committed. `retrying` counts: the retry tier
    /// holds a durable copy of the record.
    pub fn is_final(self) -> bool {
        !matches!(self, EventStatus::Received | EventStatus::Processing)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (expected one of received, processing, processed, duplicate, retrying, failed, rejected, unrouted)"
                )
            })
    }
}

/// One row of the event ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: EventId,
    pub company_id: CompanyId,
    pub provider: Provider,
    pub event_type: String,
    pub dedup_key: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub error: Option<String>,
    pub correlation_id: Uuid,
    pub secret_id: String,
    pub partition: u32,
    pub offset: u64,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The raw body, so rejected and failed events can be inspected and replayed.
    #[serde(skip)]
    pub payload: Bytes,
}

/// Result of claiming a dedup key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupClaim {
    /// The caller holds the key now (fresh claim, its own earlier claim, or an expired lease).
    Claimed,
    /// Another event completed this key inside the window.
    Completed { holder: EventId },
    /// Another event holds a live lease on this key.
    InFlight {
        holder: EventId,
        lease_until: DateTime<Utc>,
    },
}

/// The stored state of a dedup key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupEntry {
    pub holder: EventId,
    pub completed: bool,
    pub lease_until: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A Retell call as we know it. `version` orders updates: an older event never overwrites
/// newer state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub company_id: CompanyId,
    pub call_id: String,
    pub branch_id: Option<BranchId>,
    pub agent_id: Option<String>,
    pub direction: Option<String>,
    /// E.164, or `None` for anonymous callers. Never invented.
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub status: String,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub disconnection_reason: Option<String>,
    pub summary: Option<String>,
    pub last_event: String,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// Appointment lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Scheduled,
    PendingSync,
    Cancelled,
    Failed,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Scheduled => "scheduled",
            AppointmentStatus::PendingSync => "pending_sync",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::Failed => "failed",
        }
    }
}

impl FromStr for AppointmentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AppointmentStatus::Scheduled,
            AppointmentStatus::PendingSync,
            AppointmentStatus::Cancelled,
            AppointmentStatus::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            format!("unknown appointment status {s:?} (expected scheduled, pending_sync, cancelled or failed)")
        })
    }
}

/// An appointment, keyed by `id` inside its tenant and found also by its Cal.com uid and by
/// its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub company_id: CompanyId,
    pub id: Uuid,
    pub calcom_uid: Option<String>,
    pub branch_id: Option<BranchId>,
    pub service_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: AppointmentStatus,
    /// Unknown only when a cancellation arrives before its booking (kept as a tombstone, so
    /// the older creation cannot resurrect it).
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub title: Option<String>,
    pub attendee_name: Option<String>,
    pub attendee_email: Option<String>,
    pub attendee_phone: Option<String>,
    /// IANA zone of the attendee (the branch's), sent to Cal.com.
    pub timezone: Option<String>,
    pub rescheduled_to_uid: Option<String>,
    /// Ours, for bookings we make: stored in the Cal.com booking's metadata, so a create whose
    /// answer was lost can be found instead of repeated. `None` for bookings made in Cal.com.
    pub idempotency_key: Option<String>,
    /// Create requests sent to Cal.com; above 0 a lookup comes before any new create.
    pub sync_attempts: u32,
    pub last_error: Option<String>,
    pub source_event: EventId,
    /// Orders updates (ms since the epoch: Cal.com's `createdAt` or our clock).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Where the attendee's phone or email came from, for appointments made from a call;
    /// `None` for bookings made in Cal.com and for a caller who left no contact at a branch
    /// without a fallback.
    #[serde(default)]
    pub contact_source: Option<ContactSource>,
}

/// Where an appointment's attendee contact came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactSource {
    /// The caller's own number (`from_number`).
    Caller,
    /// A callback number or email the caller gave during the call (analysis, collected
    /// variables, tool-call arguments).
    CallData,
    /// The caller left no contact: the branch's fallback email stands in.
    BranchFallback,
}

impl ContactSource {
    pub const ALL: [ContactSource; 3] = [
        ContactSource::Caller,
        ContactSource::CallData,
        ContactSource::BranchFallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContactSource::Caller => "caller",
            ContactSource::CallData => "call_data",
            ContactSource::BranchFallback => "branch_fallback",
        }
    }
}

impl fmt::Display for ContactSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContactSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContactSource::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown contact source {s:?} (expected caller, call_data or branch_fallback)"
                )
            })
    }
}

/// A tenant API key as stored: the key itself is shown once at creation and never kept; the
/// store holds only its SHA-256 (hex), which is what a request's key is looked up by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id (`key_…`), for listing and revoking; it is not a secret.
    pub id: String,
    pub company_id: CompanyId,
    pub name: Option<String>,
    /// Lowercase hex SHA-256 of the whole key string.
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    /// Set once; a revoked key is kept (and listed) but no longer authenticates.
    pub revoked_at: Option<DateTime<Utc>>,
}
