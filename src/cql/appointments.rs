//! Appointments: keyed by (tenant, id); unique lookups by Cal.com uid and by idempotency key
//! (`appointment_uids`, `appointment_keys`: LWT claims, see `claims.rs`); indexes by status
//! (pending_sync, and all of a tenant's appointments), by (branch, local day) and by
//! customer, maintained by the index rule of `calls.rs`.
//!
//! The upsert reproduces the SQLite rules: a row whose id is not stored falls back to the
//! live row owning its uid (keeping that row's id); a uid or key owned by another live row,
//! or differing from the stored one, is a conflict; a missing one keeps the stored value;
//! older versions do not apply. It reads, checks, claims new lookups, writes the index
//! entries of the new state, then writes the row with a compare-and-set on its `write_id`;
//! a lost compare-and-set starts over with serial reads.
//! Difference: a uid or key claimed by a writer that has not written its row yet counts as
//! owned (a conflict) for [`super::claims::STALE_CLAIM_GRACE`]; afterwards it is taken over.

use askpro_actors::domain::{Appointment, AppointmentStatus};
use askpro_actors::error::StoreError;
use askpro_actors::ids::CompanyId;
use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use super::claims::{self, write_timestamp, MAX_ATTEMPTS};
use super::rows_calls::{AppointmentBody, AppointmentInsert, AppointmentRow, AppointmentUpdate};
use super::{CqlError, CqlStore, Out};

const T: &str = "appointments";
const STATUSES: [AppointmentStatus; 4] = [
    AppointmentStatus::Scheduled,
    AppointmentStatus::PendingSync,
    AppointmentStatus::Cancelled,
    AppointmentStatus::Failed,
];

#[derive(Clone, Copy, PartialEq)]
enum Lookup {
    Uid,
    Key,
}

impl Lookup {
    fn what(self) -> &'static str {
        match self {
            Lookup::Uid => "calcom uid",
            Lookup::Key => "idempotency key",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Lookup::Uid => "appointment_uids",
            Lookup::Key => "appointment_keys",
        }
    }

    fn of(self, a: &Appointment) -> Option<&str> {
        match self {
            Lookup::Uid => a.calcom_uid.as_deref(),
            Lookup::Key => a.idempotency_key.as_deref(),
        }
    }
}

/// A lookup row and what it points at.
struct Owner {
    id: Uuid,
    claimed_at: Option<DateTime<Utc>>,
    /// The owner's row, when it exists and carries the value (a live owner).
    live: Option<(Appointment, Uuid)>,
}

/// The index entries of one appointment state.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Entry {
    Status(&'static str, DateTime<Utc>),
    BranchDay(Uuid, NaiveDate, DateTime<Utc>),
    Customer(Uuid, DateTime<Utc>),
}

fn entries(a: &Appointment) -> Vec<Entry> {
    let mut all = vec![Entry::Status(a.status.as_str(), a.created_at)];
    if let (Some(branch), Some(start)) = (a.branch_id, a.start_at) {
        // The branch's local day: the appointment's zone, else UTC.
        let day = match a.timezone.as_deref().map(str::parse::<chrono_tz::Tz>) {
            Some(Ok(zone)) => start.with_timezone(&zone).date_naive(),
            _ => start.date_naive(),
        };
        all.push(Entry::BranchDay(branch.0, day, start));
    }
    if let Some(customer) = a.customer_id {
        all.push(Entry::Customer(customer, a.created_at));
    }
    all
}

impl CqlStore {
    async fn appointment_row(
        &self,
        op: &'static str,
        serial: bool,
        company: Uuid,
        id: Uuid,
    ) -> Out<Option<(Appointment, Uuid)>> {
        let st = &self.st().appointment_get;
        let row: Option<AppointmentRow> = if serial {
            self.db().one_serial(op, T, st, (company, id)).await?
        } else {
            self.db().one(op, T, st, (company, id)).await?
        };
        Ok(match row {
            Some(r) => {
                let write_id = r.write_id;
                Some((r.into_domain()?, write_id))
            }
            None => None,
        })
    }

    async fn owner(
        &self,
        op: &'static str,
        serial: bool,
        which: Lookup,
        company: Uuid,
        value: &str,
    ) -> Out<Option<Owner>> {
        let st = match which {
            Lookup::Uid => &self.st().appointment_uid_get,
            Lookup::Key => &self.st().appointment_key_get,
        };
        let claim: Option<(Uuid, Option<DateTime<Utc>>)> = if serial {
            self.db()
                .one_serial(op, which.table(), st, (company, value))
                .await?
        } else {
            self.db()
                .one(op, which.table(), st, (company, value))
                .await?
        };
        let Some((id, claimed_at)) = claim else {
            return Ok(None);
        };
        let live = self
            .appointment_row(op, serial, company, id)
            .await?
            .filter(|(a, _)| which.of(a) == Some(value));
        Ok(Some(Owner {
            id,
            claimed_at,
            live,
        }))
    }

    pub(super) async fn upsert_appointment_cql(&self, a: &Appointment) -> Out<bool> {
        const OP: &str = "upsert_appointment";
        let company = a.company_id.0;
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let serial = attempt > 0;
            let now = Utc::now();
            let mut owners = Vec::new();
            for which in [Lookup::Uid, Lookup::Key] {
                if let Some(value) = which.of(a) {
                    owners.push((
                        which,
                        value,
                        self.owner(OP, serial, which, company, value).await?,
                    ));
                }
            }
            let by_id = self.appointment_row(OP, serial, company, a.id).await?;
            let by_uid = owners
                .iter()
                .find(|(w, _, _)| *w == Lookup::Uid)
                .and_then(|(_, _, o)| o.as_ref())
                .and_then(|o| o.live.clone());
            let stored = by_id.or(by_uid);
            let id = stored.as_ref().map_or(a.id, |(s, _)| s.id);
            for (which, _, owner) in &owners {
                let Some(owner) = owner.as_ref().filter(|o| o.id != id) else {
                    continue;
                };
                if owner.live.is_none() && !claims::is_stale(owner.claimed_at, now) {
                    // Claimed, but the owner's row is not written: a writer still at work, or
                    // one that died between the claim and the row (a worker killed
                    // mid-event). Not a conflict: a transient error, so the caller backs off
                    // and retries, and takes the claim over once it is stale.
                    return Err(CqlError::Contention {
                        operation: OP,
                        what: format!(
                            "{} of appointment {} is claimed by appointment {} of company {} \
                             whose row is not written yet (taken over after {} s)",
                            which.what(),
                            a.id,
                            owner.id,
                            a.company_id,
                            claims::STALE_CLAIM_GRACE.as_secs()
                        ),
                        attempts: attempt + 1,
                    }
                    .into());
                }
                if owner.live.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "{} of appointment {} is already used by appointment {} of company {}",
                        which.what(),
                        a.id,
                        owner.id,
                        a.company_id
                    ))
                    .into());
                }
            }
            if let Some((s, _)) = &stored {
                for which in [Lookup::Uid, Lookup::Key] {
                    if let (Some(old), Some(new)) = (which.of(s), which.of(a)) {
                        if old != new {
                            return Err(StoreError::Conflict(format!(
                                "appointment {id} of company {} has {} {old}, not {new}",
                                a.company_id,
                                which.what()
                            ))
                            .into());
                        }
                    }
                }
                if s.version > a.version {
                    return Ok(false);
                }
            }
            // Claim the uid and key this row does not own yet.
            for (which, value, owner) in &owners {
                if owner.as_ref().is_some_and(|o| o.id == id) {
                    continue;
                }
                if !self
                    .claim(OP, *which, company, value, id, owner.as_ref(), now)
                    .await?
                {
                    claims::pause(attempt).await;
                    continue 'attempt;
                }
            }
            let uid = a
                .calcom_uid
                .as_deref()
                .or(stored.as_ref().and_then(|(s, _)| s.calcom_uid.as_deref()));
            let key = a.idempotency_key.as_deref().or(stored
                .as_ref()
                .and_then(|(s, _)| s.idempotency_key.as_deref()));
            let ts = write_timestamp();
            let new_entries = entries(a);
            let old_entries = stored.as_ref().map(|(s, _)| entries(s)).unwrap_or_default();
            let added: Vec<&Entry> = new_entries
                .iter()
                .filter(|e| !old_entries.contains(e))
                .collect();
            self.index(OP, company, id, &added, None).await?;
            let body = AppointmentBody::of(a, uid, key, Uuid::now_v7())?;
            let applied = match &stored {
                None => {
                    let values = AppointmentInsert {
                        company_id: company,
                        appointment_id: id,
                        body,
                    };
                    let st = &self.st().appointment_insert;
                    self.db().lwt(OP, T, st, values).await?
                }
                Some((_, seen_write_id)) => {
                    let values = AppointmentUpdate {
                        body,
                        company_id: company,
                        appointment_id: id,
                        seen_write_id: *seen_write_id,
                    };
                    let st = &self.st().appointment_update;
                    self.db().lwt(OP, T, st, values).await?
                }
            };
            if applied {
                let removed: Vec<&Entry> = old_entries
                    .iter()
                    .filter(|e| !new_entries.contains(e))
                    .collect();
                self.index(OP, company, id, &removed, Some(ts)).await?;
                return Ok(true);
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!(
                "appointment {} of company {} kept changing",
                a.id, a.company_id
            ),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Claims `value` for appointment `id` (fresh, or taking over a stale owner); false when
    /// a concurrent writer got there first.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        op: &'static str,
        which: Lookup,
        company: Uuid,
        value: &str,
        id: Uuid,
        stale: Option<&Owner>,
        now: DateTime<Utc>,
    ) -> Out<bool> {
        let st = self.st();
        let applied = match (which, stale) {
            (Lookup::Uid, None) => {
                let values = (company, value, id, now);
                self.db()
                    .lwt(op, which.table(), &st.appointment_uid_claim, values)
                    .await?
            }
            (Lookup::Key, None) => {
                let values = (company, value, id, now);
                self.db()
                    .lwt(op, which.table(), &st.appointment_key_claim, values)
                    .await?
            }
            (Lookup::Uid, Some(o)) => {
                let values = (id, now, company, value, o.id);
                self.db()
                    .lwt(op, which.table(), &st.appointment_uid_takeover, values)
                    .await?
            }
            (Lookup::Key, Some(o)) => {
                let values = (id, now, company, value, o.id);
                self.db()
                    .lwt(op, which.table(), &st.appointment_key_takeover, values)
                    .await?
            }
        };
        if applied && stale.is_some() {
            tracing::warn!(company_id = %company, appointment_id = %id, what = which.what(), "took over a stale appointment lookup claim");
        }
        Ok(applied)
    }

    /// Writes (`delete_at: None`) or deletes (at that write timestamp) index entries.
    async fn index(
        &self,
        op: &'static str,
        company: Uuid,
        id: Uuid,
        entries: &[&Entry],
        delete_at: Option<i64>,
    ) -> Out<()> {
        let st = self.st();
        let writes = entries.iter().map(|entry| async move {
            let db = self.db();
            match (entry, delete_at) {
                (Entry::Status(s, c), None) => {
                    db.exec(op, &st.appointment_status_insert, (company, *s, *c, id))
                        .await
                }
                (Entry::Status(s, c), Some(ts)) => {
                    db.exec(op, &st.appointment_status_delete, (ts, company, *s, *c, id))
                        .await
                }
                (Entry::BranchDay(b, d, t), None) => {
                    db.exec(op, &st.appointment_branch_insert, (company, *b, *d, *t, id))
                        .await
                }
                (Entry::BranchDay(b, d, t), Some(ts)) => {
                    let values = (ts, company, *b, *d, *t, id);
                    db.exec(op, &st.appointment_branch_delete, values).await
                }
                (Entry::Customer(c, t), None) => {
                    db.exec(op, &st.appointment_customer_insert, (company, *c, *t, id))
                        .await
                }
                (Entry::Customer(c, t), Some(ts)) => {
                    let values = (ts, company, *c, *t, id);
                    db.exec(op, &st.appointment_customer_delete, values).await
                }
            }
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    pub(super) async fn appointment_cql(
        &self,
        company: CompanyId,
        id: Uuid,
    ) -> Out<Option<Appointment>> {
        let row = self
            .appointment_row("appointment", false, company.0, id)
            .await?;
        Ok(row.map(|(a, _)| a))
    }

    /// By uid or key: the lookup's owner, if its row carries the value.
    pub(super) async fn appointment_by_lookup(
        &self,
        op: &'static str,
        uid: bool,
        company: CompanyId,
        value: &str,
    ) -> Out<Option<Appointment>> {
        let which = if uid { Lookup::Uid } else { Lookup::Key };
        let owner = self.owner(op, false, which, company.0, value).await?;
        Ok(owner.and_then(|o| o.live).map(|(a, _)| a))
    }

    /// All of a tenant's appointments, oldest first (the four status partitions merged).
    pub(super) async fn appointments_cql(&self, company: CompanyId) -> Out<Vec<Appointment>> {
        let mut all = Vec::new();
        for status in STATUSES {
            all.extend(
                self.appointments_by_status_cql(company, status, usize::MAX)
                    .await?,
            );
        }
        all.sort_by_key(|a| (a.created_at, a.id));
        Ok(all)
    }

    /// Oldest first, at most `limit`. Index entries that do not match their row (left by an
    /// interrupted write) are skipped; when that leaves fewer than `limit`, it reads further.
    pub(super) async fn appointments_by_status_cql(
        &self,
        company: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> Out<Vec<Appointment>> {
        const OP: &str = "appointments_by_status";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let st = &self.st().appointment_status_list;
        let mut want = limit;
        loop {
            let mut entries: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
            let mut cut: Option<DateTime<Utc>> = None;
            let mut more = false;
            let visit = |(at, id): (DateTime<Utc>, Uuid)| {
                if cut.is_some_and(|c| c != at) {
                    more = true;
                    return false;
                }
                entries.push((at, id));
                if cut.is_none() && entries.len() >= want {
                    cut = Some(at);
                }
                true
            };
            let values = (company.0, status.as_str());
            self.db()
                .visit(OP, "appointments_by_status", st, values, visit)
                .await?;
            let reads: Vec<_> = entries
                .iter()
                .map(|&(_, id)| self.appointment_row(OP, false, company.0, id))
                .collect();
            let rows: Vec<Option<(Appointment, Uuid)>> = futures::stream::iter(reads)
                .buffered(16)
                .try_collect()
                .await?;
            // An entry counts only if its row is in this status with this created_at.
            let mut found: Vec<Appointment> = entries
                .iter()
                .zip(rows)
                .filter_map(|((at, _), row)| row.filter(|(a, _)| a.created_at == *at))
                .map(|(a, _)| a)
                .filter(|a| a.status == status)
                .collect();
            if found.len() >= limit || !more {
                found.sort_by_key(|a| (a.created_at, a.id));
                found.truncate(limit);
                return Ok(found);
            }
            want = want.saturating_mul(2);
        }
    }
}
