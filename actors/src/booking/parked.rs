//! Appointments whose sync found their lease held by another process.
//!
//! Waiting for that lease inside the sync would hold the tenant's booking lock, and with it
//! every later event of the tenant, for up to [`super::lease::LEASE`]. Instead the sync is
//! deferred and the appointment parked here with the instant the foreign lease ends; the
//! reconciler syncs it again once that instant has passed (see `reconciler.rs`). A sync that
//! takes the lease unparks the appointment, whatever it then finds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SyncOutcome;
use crate::clock::Clock;
use crate::ids::CompanyId;

/// Parked appointments kept at most. Past it a new one is not parked: it stays
/// `pending_sync` and the reconciler's regular run books it once it is old enough.
pub const MAX_PARKED: usize = 10_000;

/// How long a parked appointment waits at most before its lease is tried again: the holder
/// may release it early without having booked (e.g. when it shuts down).
pub const PARKED_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The parked appointments, per tenant, with when each one's foreign lease ends.
#[derive(Debug, Default)]
pub struct Parked {
    inner: Mutex<HashMap<CompanyId, BTreeMap<Uuid, DateTime<Utc>>>>,
}

impl Parked {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CompanyId, BTreeMap<Uuid, DateTime<Utc>>>> {
        self.inner.lock().expect("parked lock poisoned")
    }

    /// Another process holds the appointment's lease until about `until`: waiting for it in
    /// the sync would hold the tenant's lock, and with it the tenant's every later event. The
    /// appointment is parked instead, due when the lease ends or after [`PARKED_RECHECK`],
    /// whichever comes first, and the sync is deferred.
    pub fn defer(
        &self,
        clock: &dyn Clock,
        company_id: CompanyId,
        appointment_id: Uuid,
        until: DateTime<Utc>,
    ) -> SyncOutcome {
        let recheck = chrono::Duration::from_std(PARKED_RECHECK).unwrap_or_default();
        let due = until.min(clock.now() + recheck);
        let again = self.contains(company_id, appointment_id);
        let parked = self.park(company_id, appointment_id, due);
        if !again {
            tracing::info!(company_id = %company_id, appointment_id = %appointment_id, lease_until = %until, parked, "appointment sync leased by another process; deferred");
        }
        SyncOutcome::Deferred {
            reason: "another process is syncing this appointment; kept as pending_sync and synced again when its lease ends".into(),
        }
    }

    /// Parks (or re-parks) an appointment until `due`. Returns false when the set is full.
    pub fn park(&self, company_id: CompanyId, appointment_id: Uuid, due: DateTime<Utc>) -> bool {
        let mut inner = self.lock();
        let known = inner
            .get(&company_id)
            .is_some_and(|t| t.contains_key(&appointment_id));
        if !known && inner.values().map(BTreeMap::len).sum::<usize>() >= MAX_PARKED {
            return false;
        }
        inner
            .entry(company_id)
            .or_default()
            .insert(appointment_id, due);
        true
    }

    pub fn unpark(&self, company_id: CompanyId, appointment_id: Uuid) {
        let mut inner = self.lock();
        if let Some(tenant) = inner.get_mut(&company_id) {
            tenant.remove(&appointment_id);
            if tenant.is_empty() {
                inner.remove(&company_id);
            }
        }
    }

    pub fn contains(&self, company_id: CompanyId, appointment_id: Uuid) -> bool {
        self.lock()
            .get(&company_id)
            .is_some_and(|t| t.contains_key(&appointment_id))
    }

    /// Drops a tenant's parked appointments (its partition moved to another worker, whose
    /// tenant actor and reconciler take over).
    pub fn forget(&self, company_id: CompanyId) {
        self.lock().remove(&company_id);
    }

    /// The tenants with appointments due at `now`, each with those appointments (ids are
    /// UUIDv7, so in creation order). They stay parked until a sync takes their lease.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<(CompanyId, Vec<Uuid>)> {
        self.lock()
            .iter()
            .filter_map(|(company_id, tenant)| {
                let ids: Vec<Uuid> = tenant
                    .iter()
                    .filter(|(_, due)| **due <= now)
                    .map(|(id, _)| *id)
                    .collect();
                (!ids.is_empty()).then_some((*company_id, ids))
            })
            .collect()
    }

    /// The tenant's appointments due at `now`.
    pub fn due_of(&self, company_id: CompanyId, now: DateTime<Utc>) -> Vec<Uuid> {
        self.lock().get(&company_id).map_or_else(Vec::new, |t| {
            t.iter()
                .filter(|(_, due)| **due <= now)
                .map(|(id, _)| *id)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::t0;

    #[test]
    fn due_lists_only_what_has_come_due_and_unpark_removes_it() {
        let parked = Parked::default();
        let (a, b) = (CompanyId::new(), CompanyId::new());
        let (early, late, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (second, minute) = (chrono::Duration::seconds(1), chrono::Duration::seconds(60));
        assert!(parked.park(a, early, t0() + second));
        assert!(parked.park(a, late, t0() + minute));
        assert!(parked.park(b, other, t0() + minute));

        assert!(parked.due(t0()).is_empty());
        assert_eq!(parked.due(t0() + second), vec![(a, vec![early])]);
        assert_eq!(parked.due_of(a, t0() + minute), vec![early, late]);

        parked.unpark(a, early);
        assert!(!parked.contains(a, early));
        parked.forget(b);
        assert_eq!(parked.due(t0() + minute), vec![(a, vec![late])]);
    }

    #[test]
    fn the_set_is_bounded_but_a_parked_one_may_be_re_parked() {
        let parked = Parked::default();
        let company = CompanyId::new();
        let first = Uuid::now_v7();
        assert!(parked.park(company, first, t0()));
        for _ in 1..MAX_PARKED {
            assert!(parked.park(company, Uuid::now_v7(), t0()));
        }
        assert!(!parked.park(company, Uuid::now_v7(), t0()), "full");
        assert!(parked.park(company, first, t0() + chrono::Duration::seconds(5)));
    }
}
