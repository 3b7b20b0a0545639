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
//!
//! The holder is derived from the worker's identity and the appointment
//! ([`holder_for`]), so a worker restarted with the same identity takes its previous
//! incarnation's leases over at once (a claim by the same holder is taken over) instead of
//! waiting [`LEASE`] out. That is safe because one identity is one live process at a time
//! (embedded: the data dir's worker lock), and inside a process the booker's per-tenant lock
//! already keeps two syncs of one appointment apart.

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

/// What [`SyncLease::acquire`] got.
#[derive(Debug)]
pub enum Acquired {
    Held(SyncLease),
    /// Another process holds it, until about `until` (by the store's record) unless it
    /// releases it sooner.
    Elsewhere {
        until: DateTime<Utc>,
    },
}

/// The lease holder of `worker_id` for one appointment: the same for every incarnation of
/// that worker, different for every other worker.
pub fn holder_for(worker_id: Uuid, appointment_id: Uuid) -> EventId {
    EventId(Uuid::new_v5(&worker_id, appointment_id.as_bytes()))
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
    /// Takes the lease on `appointment_id` for `worker_id` (also when an earlier
    /// incarnation of this worker left it held).
    pub async fn acquire(
        store: &dyn StateStore,
        clock: &dyn Clock,
        worker_id: Uuid,
        company_id: CompanyId,
        appointment_id: Uuid,
    ) -> Result<Acquired, StoreError> {
        let mut lease = SyncLease {
            company_id,
            key: format!("{KEY_PREFIX}{appointment_id}"),
            holder: holder_for(worker_id, appointment_id),
            safe_until: clock.now(),
        };
        if lease.claim(store, clock).await? {
            return Ok(Acquired::Held(lease));
        }
        // Released since the claim failed: due at once.
        let now = clock.now();
        let until = match store.dedup_entry(company_id, &lease.key, now).await? {
            Some(entry) if !entry.completed => entry.lease_until.max(now),
            _ => now,
        };
        Ok(Acquired::Elsewhere { until })
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
#[path = "lease_tests.rs"]
mod tests;
