//! Calls: keyed by (tenant, Retell call id), with the `calls_by_status` index.
//!
//! The versioned upsert ("unless the stored one has a higher version") is a read followed by
//! a compare-and-set on the row's `write_id` (a fresh id on every write): `INSERT ... IF NOT
//! EXISTS` when there is no row, `UPDATE ... IF write_id = <read>` when there is one. A
//! concurrent writer makes the compare-and-set fail; the upsert then reads again (at serial
//! consistency) and decides again. This is what SQLite's single conditional statement does.
//!
//! Index rule (also for the appointment indexes): the entry of the new state is written
//! before the row, the entry of the replaced state is deleted after it, with a write
//! timestamp taken before the compare-and-set. So the index is never missing an entry (a
//! crash in between leaves an extra one) and readers drop entries that do not match the row.

use askpro_actors::domain::Call;
use askpro_actors::ids::CompanyId;
use askpro_actors::store::StoreResult;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use super::claims::{self, write_timestamp, MAX_ATTEMPTS};
use super::rows_calls::{CallBody, CallInsert, CallRow, CallUpdate};
use super::{CqlError, CqlStore, Out};

const T: &str = "calls";

impl CqlStore {
    async fn call_row(
        &self,
        op: &'static str,
        serial: bool,
        company: CompanyId,
        id: &str,
    ) -> Out<Option<CallRow>> {
        let st = &self.st().call_get;
        let key = (company.0, id);
        Ok(if serial {
            self.db().one_serial(op, T, st, key).await?
        } else {
            self.db().one(op, T, st, key).await?
        })
    }

    pub(super) async fn upsert_call_cql(&self, c: &Call) -> Out<bool> {
        const OP: &str = "upsert_call";
        let company = c.company_id.0;
        for attempt in 0..MAX_ATTEMPTS {
            let seen = self
                .call_row(OP, attempt > 0, c.company_id, &c.call_id)
                .await?;
            if seen.as_ref().is_some_and(|s| s.version() > c.version) {
                return Ok(false);
            }
            let ts = write_timestamp();
            let write_id = Uuid::now_v7();
            let body = CallBody::of(c, write_id);
            let old_status = seen.as_ref().map(|s| s.status().to_owned());
            if old_status.as_deref() != Some(c.status.as_str()) {
                let st = &self.st().call_status_insert;
                let entry = (company, c.status.as_str(), c.call_id.as_str());
                self.db().exec(OP, st, entry).await?;
            }
            let applied = match &seen {
                None => {
                    let st = &self.st().call_insert;
                    let values = CallInsert {
                        company_id: company,
                        call_id: &c.call_id,
                        body,
                    };
                    self.db().lwt(OP, T, st, values).await?
                }
                Some(s) => {
                    let st = &self.st().call_update;
                    let values = CallUpdate {
                        body,
                        company_id: company,
                        call_id: &c.call_id,
                        seen_write_id: s.write_id,
                    };
                    self.db().lwt(OP, T, st, values).await?
                }
            };
            if applied {
                if let Some(old) = old_status.filter(|s| *s != c.status) {
                    let st = &self.st().call_status_delete;
                    let entry = (ts, company, old.as_str(), c.call_id.as_str());
                    self.db().exec(OP, st, entry).await?;
                }
                return Ok(true);
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!(
                "call {} of company {} kept changing",
                c.call_id, c.company_id
            ),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    pub(super) async fn call_cql(&self, company: CompanyId, id: &str) -> Out<Option<Call>> {
        Ok(self
            .call_row("call", false, company, id)
            .await?
            .map(CallRow::into_domain))
    }

    /// A tenant's calls in one status (Retell's `ongoing`, `ended`, ...), by call id, at most
    /// `limit`: the `calls_by_status` access path, which the `StateStore` trait does not
    /// need (yet). Entries left by an interrupted write are checked against `calls`.
    pub async fn calls_in_status(
        &self,
        company: CompanyId,
        status: &str,
        limit: usize,
    ) -> StoreResult<Vec<Call>> {
        const OP: &str = "calls_in_status";
        let result: Out<Vec<Call>> = async {
            let st = &self.st().call_status_list;
            let mut ids = Vec::new();
            let mut want = limit;
            let mut found = Vec::new();
            while found.len() < limit {
                ids.clear();
                let mut more = false;
                let visit = |(id,): (String,)| {
                    if ids.len() == want {
                        more = true;
                        return false;
                    }
                    ids.push(id);
                    true
                };
                self.db()
                    .visit(OP, "calls_by_status", st, (company.0, status), visit)
                    .await?;
                let rows: Vec<Option<CallRow>> = futures::stream::iter(
                    ids.iter().map(|id| self.call_row(OP, false, company, id)),
                )
                .buffered(16)
                .try_collect()
                .await?;
                found = rows
                    .into_iter()
                    .flatten()
                    .filter(|r| r.status() == status)
                    .map(CallRow::into_domain)
                    .collect();
                if !more {
                    break;
                }
                want = want.saturating_mul(2);
            }
            found.truncate(limit);
            Ok(found)
        }
        .await;
        result.map_err(|e| e.into_store(OP, "calls_by_status"))
    }
}
