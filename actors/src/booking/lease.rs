//! A lease on one appointment's sync, held in the state store, so that two processes never
//! push the same appointment to Cal.com at once.
//!
//! The booker's per-tenant lock covers one process. With Kafka, a rebalance can briefly
//! leave two workers acting for one tenant: the old owner's reconciler and the new owner's
//! tenant actor can both reach the same `pending_sync` appointment, both see no earlier
//! attempt and both create. The lease closes that window: it is a dedup claim
//! ([`StateStore::dedup_claim`]: an LWT in CQL, a transaction in SQLite) on the key
//! `calcom-sync:<appointment id>`, taken before the appointment is read and released when the
//! sync ends. A holder that crashed loses it after [`LEASE`]; whoever takes it over then sees
//! the stored `sync_attempts` and looks the booking up before creating.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::StoreError;
use crate::ids::{CompanyId, EventId};
use crate::store::{ClaimRequest, StateStore};

/// How long a lease holds without renewal: longer than the slowest sync without a rate-limit
/// wait (a lookup, a create and the lookup after an unknown outcome, 10 s each at the default
/// Cal.com timeout; a sync that waited longer retakes the lease and re-reads before sending).
/// After a crash the appointment waits at most this long before another process syncs it.
pub const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// Prefix of the lease's dedup key.
pub const KEY_PREFIX: &str = "calcom-sync:";

/// What [`SyncLease::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Ours all along: nobody else can have synced since it was taken.
    Continuous,
    /// Ours again, but it may have run out in between (a long rate-limit wait): another
    /// process may have synced meanwhile, so re-read before acting.
    Retaken,
    /// Another process holds it now.
    Lost,
}

/// A held lease. Release it with [`SyncLease::release`].
#[derive(Debug)]
pub struct SyncLease {
    company_id: CompanyId,
    key: String,
    holder: EventId,
    /// Until when it is certainly ours (by our clock, half the lease: room for clock skew).
    safe_until: DateTime<Utc>,
}

impl SyncLease {
    /// Takes the lease on `appointment_id`; `None` while another process holds it.
    pub async fn acquire(
        store: &dyn StateStore,
        clock: &dyn Clock,
        company_id: CompanyId,
        appointment_id: Uuid,
    ) -> Result<Option<Self>, StoreError> {
        let mut lease = SyncLease {
            company_id,
            key: format!("{KEY_PREFIX}{appointment_id}"),
            holder: EventId::new(),
            safe_until: clock.now(),
        };
        Ok(lease.claim(store, clock).await?.then_some(lease))
    }

    /// Whether the lease is still ours: [`Hold::Continuous`] when it was taken recently
    /// enough that it cannot have run out, else it is claimed again.
    pub async fn check(
        &mut self,
        store: &dyn StateStore,
        clock: &dyn Clock,
    ) -> Result<Hold, StoreError> {
        if clock.now() < self.safe_until {
            return Ok(Hold::Continuous);
        }
        Ok(match self.claim(store, clock).await? {
            true => Hold::Retaken,
            false => Hold::Lost,
        })
    }

    /// Gives the lease up. A failure only logs: the lease then runs out by itself.
    pub async fn release(self, store: &dyn StateStore) {
        let (company_id, key) = (self.company_id, self.key.as_str());
        if let Err(error) = store.dedup_release(company_id, key, self.holder).await {
            tracing::warn!(company_id = %company_id, key, error = %error, "sync lease not released; it expires by itself");
        }
    }

    async fn claim(
        &mut self,
        store: &dyn StateStore,
        clock: &dyn Clock,
    ) -> Result<bool, StoreError> {
        let now = clock.now();
        let claim = store
            .dedup_claim(ClaimRequest {
                company_id: self.company_id,
                key: &self.key,
                holder: self.holder,
                now,
                lease_until: now + LEASE,
                expires_at: now + LEASE,
            })
            .await?;
        let held = claim == crate::domain::DedupClaim::Claimed;
        if held {
            self.safe_until = now + LEASE / 2;
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::booking::SyncOutcome;
    use crate::domain::{AppointmentStatus, DedupClaim};
    use crate::testkit::booking::{rate_limited, BookingFixture, Method};
    use crate::testkit::yield_turns;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(id: Uuid) -> String {
        format!("{KEY_PREFIX}{id}")
    }

    /// Another process takes the appointment's lease (as a worker of the old owner would).
    async fn take_lease(f: &BookingFixture, id: Uuid) -> EventId {
        let (holder, now) = (EventId::new(), f.clock.now());
        let claim = f
            .store
            .dedup_claim(ClaimRequest {
                company_id: f.company,
                key: &key(id),
                holder,
                now,
                lease_until: now + LEASE,
                expires_at: now + LEASE,
            })
            .await
            .unwrap();
        assert_eq!(
            claim,
            DedupClaim::Claimed,
            "the other process gets the lease"
        );
        holder
    }

    /// The other process (holding the lease as `other`) books the appointment and releases.
    async fn book_elsewhere(f: &BookingFixture, id: Uuid, other: EventId) {
        let mut booked = f.appointment(id).await;
        booked.status = AppointmentStatus::Scheduled;
        booked.calcom_uid = Some("bk_other".into());
        booked.version += 1;
        assert!(f.store.upsert_appointment(&booked).await.unwrap());
        f.store
            .dedup_release(f.company, &key(id), other)
            .await
            .unwrap();
    }

    fn deferred(outcome: SyncOutcome) -> String {
        match outcome {
            SyncOutcome::Deferred { reason } => reason,
            other => panic!("expected Deferred, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_waits_for_a_lease_held_elsewhere_until_it_runs_out() {
        let f = BookingFixture::new().await;
        let id = f.add_pending().await;
        take_lease(&f, id).await;

        let waiting = f.spawn_sync(id);
        yield_turns(10).await;
        tokio::time::advance(Duration::from_secs(50)).await;
        yield_turns(10).await;
        assert!(!waiting.is_finished(), "it waits while the lease is held");
        assert_eq!(f.api.total_calls(), 0);
        assert_eq!(
            f.appointment(id).await.status,
            AppointmentStatus::PendingSync
        );

        // The holder died: its lease runs out and this process takes over.
        tokio::time::advance(Duration::from_secs(11)).await;
        yield_turns(10).await;
        assert!(waiting.is_finished());
        assert!(matches!(
            waiting.await.unwrap().unwrap(),
            SyncOutcome::Booked { .. }
        ));
        assert_eq!(f.api.calls(Method::Create), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_released_elsewhere_finds_the_appointment_booked_and_sends_nothing() {
        let f = BookingFixture::new().await;
        let id = f.add_pending().await;
        let other = take_lease(&f, id).await;
        let waiting = f.spawn_sync(id);
        yield_turns(10).await;

        book_elsewhere(&f, id, other).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        yield_turns(10).await;

        assert!(matches!(
            waiting.await.unwrap().unwrap(),
            SyncOutcome::NothingToDo(_)
        ));
        assert_eq!(f.api.total_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn every_sync_releases_its_lease() {
        let f = BookingFixture::new().await;
        let id = f.add_pending().await;
        assert!(matches!(f.sync(id).await, SyncOutcome::Booked { .. }));
        let entry = f
            .store
            .dedup_entry(f.company, &key(id), f.clock.now())
            .await
            .unwrap();
        assert_eq!(entry, None, "the lease is released");
    }

    /// A sync waits ten minutes for the rate limit (a 429 on another appointment), so its
    /// lease runs out. Another process then either still holds the lease when the wait ends
    /// (`still_held`), or took it, booked the appointment and released it.
    async fn lapsed_while_waiting(still_held: bool) -> (BookingFixture, Uuid, SyncOutcome) {
        let f = BookingFixture::new().await;
        let first = f.add_pending().await;
        let id = f.add_pending().await;
        f.api.fail_create(rate_limited(10 * MINUTE));
        assert!(matches!(f.sync(first).await, SyncOutcome::Transient { .. }));

        let waiting = f.spawn_sync(id);
        yield_turns(10).await;
        tokio::time::advance(6 * MINUTE).await;
        yield_turns(10).await;
        if still_held {
            // Taken at 9:30, so still held when the wait ends at 10:00.
            tokio::time::advance(3 * MINUTE + MINUTE / 2).await;
            take_lease(&f, id).await;
            tokio::time::advance(MINUTE / 2).await;
        } else {
            let other = take_lease(&f, id).await;
            book_elsewhere(&f, id, other).await;
            tokio::time::advance(4 * MINUTE).await;
        }
        yield_turns(10).await;
        assert!(waiting.is_finished());
        let outcome = waiting.await.unwrap().unwrap();
        (f, id, outcome)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_retaken_after_another_process_synced_sends_nothing() {
        let (f, id, outcome) = lapsed_while_waiting(false).await;
        let reason = deferred(outcome);
        assert!(reason.contains("meanwhile"), "{reason}");
        assert_eq!(
            f.api.calls(Method::Create),
            1,
            "only the rate-limited create"
        );
        assert_eq!(
            f.appointment(id).await.calcom_uid.as_deref(),
            Some("bk_other")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_held_by_another_process_at_send_time_sends_nothing() {
        let (f, _, outcome) = lapsed_while_waiting(true).await;
        deferred(outcome);
        assert_eq!(
            f.api.calls(Method::Create),
            1,
            "only the rate-limited create"
        );
    }
}
