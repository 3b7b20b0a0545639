//! What a tenant offers and to whom: services, staff, their assignments, customers and the
//! branch's Cal.com connection. Every row names its tenant (`company_id`).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{BranchId, CompanyId};

/// The name of the service created when a branch needs one and has none.
pub const DEFAULT_SERVICE_NAME: &str = "Standardberatung";
/// Its length in minutes.
pub const DEFAULT_SERVICE_MINUTES: u32 = 30;
/// Cal.com's production API; the client appends `/v2/...`.
pub const DEFAULT_CALCOM_BASE_URL: &str = "https://api.cal.com";

/// A branch's Cal.com connection: the tenant's own API key and the event type bookings use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalcomConfig {
    /// `cal_live_...`; never logged.
    pub api_key: String,
    pub event_type_id: i64,
    /// Without `/v2` (e.g. `https://api.cal.com`), so a tenant or a test can point at a fake.
    pub base_url: String,
    /// Requests per minute allowed for this API key; `None` uses the configured default (120).
    pub rate_limit_per_min: Option<u32>,
}

impl fmt::Debug for CalcomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalcomConfig")
            .field("api_key", &"<redacted>")
            .field("event_type_id", &self.event_type_id)
            .field("base_url", &self.base_url)
            .field("rate_limit_per_min", &self.rate_limit_per_min)
            .finish()
    }
}

/// Something a branch (or, with `branch_id: None`, every branch of the company) offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub company_id: CompanyId,
    pub id: Uuid,
    /// `None`: offered by every branch of the company.
    pub branch_id: Option<BranchId>,
    pub name: String,
    pub duration_minutes: u32,
    /// In minor units (cents).
    pub price_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// Overrides the branch's event type when set.
    pub calcom_event_type_id: Option<i64>,
    pub active: bool,
    /// Free-form; the default service carries `auto_created` and `reason`.
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

impl Service {
    /// Whether this service can be booked at `branch`.
    pub fn offered_at(&self, branch: BranchId) -> bool {
        self.active && self.branch_id.is_none_or(|b| b == branch)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    pub company_id: CompanyId,
    pub id: Uuid,
    pub branch_id: Option<BranchId>,
    pub name: String,
    pub email: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// Staff member ↔ service: who can perform what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub company_id: CompanyId,
    pub staff_id: Uuid,
    pub service_id: Uuid,
}

/// A caller who booked. Found by phone within the company; anonymous callers have no phone
/// (never invented), so each of their bookings gets its own customer row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub company_id: CompanyId,
    pub id: Uuid,
    pub name: Option<String>,
    /// E.164 or `None`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The service [`crate::store::StateStore::ensure_default_service`] creates for `branch`
/// when it has none; `reason` is kept in its metadata.
pub fn default_service(
    branch: &crate::domain::Branch,
    reason: &str,
    now: DateTime<Utc>,
) -> Service {
    Service {
        company_id: branch.company_id,
        id: Uuid::now_v7(),
        branch_id: Some(branch.id),
        name: DEFAULT_SERVICE_NAME.into(),
        duration_minutes: DEFAULT_SERVICE_MINUTES,
        price_cents: 0,
        currency: "EUR".into(),
        calcom_event_type_id: None,
        active: true,
        metadata: BTreeMap::from([
            ("auto_created".to_owned(), "true".to_owned()),
            ("reason".to_owned(), reason.to_owned()),
            ("created_at".to_owned(), now.to_rfc3339()),
        ]),
        created_at: now,
    }
}

/// Result of [`crate::store::StateStore::ensure_default_service`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultService {
    /// The branch already had an active service (the first by creation time is returned).
    Existing(Service),
    /// The default service was created now, with these staff assignments.
    Created {
        service: Service,
        assignments: Vec<Assignment>,
    },
}

impl DefaultService {
    pub fn service(&self) -> &Service {
        match self {
            DefaultService::Existing(s) => s,
            DefaultService::Created { service, .. } => service,
        }
    }
}
