//! Cal.com API v2: the reqwest client the pipeline books through, and a fake Cal.com that
//! speaks the same HTTP API (with fault injection) for tests, demos and load runs.

pub mod client;
pub mod fake;

pub use client::{CalcomClient, ClientBuildError, ClientOptions};
pub use fake::{FakeBooking, FakeCalcom, FakeConfig, FakeStats, FaultError, FaultUpdate, Faults};

/// The header every Cal.com v2 request carries; a missing value silently selects an old
/// contract on the real service, so both sides insist on it.
pub const API_VERSION_HEADER: &str = "cal-api-version";
/// `cal-api-version` of the bookings endpoints.
pub const BOOKINGS_API_VERSION: &str = "2024-08-13";
/// `cal-api-version` of `GET /v2/slots`.
pub const SLOTS_API_VERSION: &str = "2024-09-04";

/// Metadata limits Cal.com enforces on a booking.
pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_MAX_KEY_CHARS: usize = 40;
pub const METADATA_MAX_VALUE_CHARS: usize = 500;

/// Why `metadata` breaks Cal.com's limits, naming the offending key; `None` when it fits.
pub fn metadata_violation<'a>(
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let mut keys = 0usize;
    for (key, value) in metadata {
        keys += 1;
        if key.chars().count() > METADATA_MAX_KEY_CHARS {
            return Some(format!(
                "metadata key `{key}` is longer than {METADATA_MAX_KEY_CHARS} characters"
            ));
        }
        if value.chars().count() > METADATA_MAX_VALUE_CHARS {
            return Some(format!(
                "metadata value of `{key}` is longer than {METADATA_MAX_VALUE_CHARS} characters"
            ));
        }
    }
    (keys > METADATA_MAX_KEYS)
        .then(|| format!("metadata has {keys} keys; at most {METADATA_MAX_KEYS} are allowed"))
}
