//! Claims: unique lookups (a phone number, a Cal.com uid, an idempotency key, a customer's
//! phone, a branch's default service) are taken with `INSERT ... IF NOT EXISTS` on the
//! lookup row *before* the row it points to is written, because CQL has no transaction
//! spanning both. A crash in between leaves a claim whose target never appeared; such a
//! claim blocks others for [`STALE_CLAIM_GRACE`] (the claimant may still be writing its row)
//! and is then taken over with a conditional update naming the stale owner, so two takers
//! cannot both win.
//!
//! Compare-and-set loops (a conditional write that lost to a concurrent writer re-reads and
//! tries again) are bounded by [`MAX_ATTEMPTS`] with a short jittered pause; past that the
//! operation fails as transient contention.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long a claim whose target row does not (yet) carry it blocks other claimants.
pub(super) const STALE_CLAIM_GRACE: Duration = Duration::from_secs(60);

/// Compare-and-set attempts before giving up with `CqlError::Contention`.
pub(super) const MAX_ATTEMPTS: u32 = 20;

/// Whether a claim made at `claimed_at` may be taken over at `now` (its target is absent).
pub(super) fn is_stale(claimed_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let grace = chrono::Duration::from_std(STALE_CLAIM_GRACE).unwrap_or(chrono::Duration::MAX);
    claimed_at.is_none_or(|t| now.signed_duration_since(t) >= grace)
}

/// Waits a little before the next compare-and-set attempt (grows with `attempt`, jittered so
/// competing writers spread out).
pub(super) async fn pause(attempt: u32) {
    let base = 5u64.saturating_mul(u64::from(attempt.min(10)) + 1);
    let jitter = rand::random::<u64>() % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// A client-side write timestamp (µs since the epoch) taken *before* a compare-and-set, for
/// the deletes of the index entries that the write replaces: any entry re-written after the
/// compare-and-set was observed carries a later timestamp and survives the delete.
pub(super) fn write_timestamp() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_go_stale_after_the_grace() {
        let now = Utc::now();
        assert!(is_stale(None, now));
        assert!(!is_stale(Some(now - chrono::Duration::seconds(59)), now));
        assert!(is_stale(Some(now - chrono::Duration::seconds(60)), now));
    }
}
