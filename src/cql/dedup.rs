//! Dedup keys: one row per (tenant, key), claimed with `INSERT ... IF NOT EXISTS USING TTL`,
//! taken over, renewed and completed with compare-and-set `UPDATE ... IF` on the state read,
//! released with a conditional `DELETE`.
//!
//! Where CQL differs from the SQLite store:
//! - Expiry: `expires_at` is compared with the caller's `now`, exactly as in SQLite (a key
//!   past its window counts as absent and is overwritten by the next claim). The row also
//!   carries a TTL of the window plus [`TTL_SLACK_SECS`], which only reclaims the space;
//!   there is no purge job.
//! - A claim that finds the row is a read at serial consistency followed by a
//!   compare-and-set on every column read; when a concurrent writer wins, the claim reads
//!   again and decides again (bounded attempts), which is what SQLite's one transaction does.
//! - `dedup_complete` has no `now`: it keeps the row's remaining TTL.

use askpro_actors::domain::{DedupClaim, DedupEntry};
use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::store::ClaimRequest;
use chrono::{DateTime, Utc};
use scylla::DeserializeRow;
use uuid::Uuid;

use super::claims::{self, MAX_ATTEMPTS};
use super::{CqlError, CqlStore, Out};

/// Seconds a dedup row outlives its window before Cassandra drops it.
const TTL_SLACK_SECS: i64 = 300;
/// Cassandra's (and ScyllaDB's) maximum TTL: 20 years.
const MAX_TTL_SECS: i64 = 630_720_000;

const T: &str = "dedup";

#[derive(DeserializeRow)]
struct DedupRow {
    holder: Uuid,
    completed: bool,
    lease_until: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// Seconds until the row's cells expire (`TTL(holder)`); null without a TTL.
    remaining: Option<i32>,
}

/// The TTL that keeps a key until `expires_at` as seen from `now`, plus the slack.
fn ttl_secs(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> i32 {
    let window_ms = expires_at
        .signed_duration_since(now)
        .num_milliseconds()
        .max(0);
    let secs = (window_ms + 999) / 1000 + TTL_SLACK_SECS;
    i32::try_from(secs.clamp(1, MAX_TTL_SECS)).unwrap_or(i32::MAX)
}

impl CqlStore {
    /// The key's row, read at the serial consistency (the state a compare-and-set sees)
    /// or at the statement consistency (LOCAL_QUORUM by default: no Paxos round).
    async fn dedup_row(
        &self,
        op: &'static str,
        serial: bool,
        company: CompanyId,
        key: &str,
    ) -> Out<Option<DedupRow>> {
        let (st, values) = (&self.st().dedup_get, (company.0, key));
        Ok(match serial {
            true => self.db().one_serial(op, T, st, values).await?,
            false => self.db().one(op, T, st, values).await?,
        })
    }

    /// Compare-and-set: writes the new state if the row still holds `seen`.
    #[allow(clippy::too_many_arguments)]
    async fn dedup_set(
        &self,
        op: &'static str,
        company: CompanyId,
        key: &str,
        ttl: i32,
        holder: Uuid,
        completed: bool,
        lease_until: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        seen: &DedupRow,
    ) -> Out<bool> {
        let st = &self.st().dedup_set;
        let values = (
            ttl,
            holder,
            completed,
            lease_until,
            expires_at,
            company.0,
            key,
            seen.holder,
            seen.completed,
            seen.lease_until,
            seen.expires_at,
        );
        Ok(self.db().lwt(op, T, st, values).await?)
    }

    pub(super) async fn dedup_claim_cql(&self, req: &ClaimRequest<'_>) -> Out<DedupClaim> {
        const OP: &str = "dedup_claim";
        let (company, key, holder) = (req.company_id, req.key, req.holder.0);
        for attempt in 0..MAX_ATTEMPTS {
            let st = &self.st().dedup_insert;
            let ttl = ttl_secs(req.now, req.expires_at);
            let values = (company.0, key, holder, req.lease_until, req.expires_at, ttl);
            if self.db().lwt(OP, T, st, values).await? {
                return Ok(DedupClaim::Claimed);
            }
            let Some(seen) = self.dedup_row(OP, true, company, key).await? else {
                continue; // expired or released meanwhile: insert again
            };
            let expires_at = if seen.expires_at <= req.now {
                // Past its window: the key is absent for this claim.
                req.expires_at
            } else if seen.completed {
                return Ok(DedupClaim::Completed {
                    holder: EventId(seen.holder),
                });
            } else if seen.holder == holder || seen.lease_until <= req.now {
                // Our own earlier claim (a redelivery) or a dead holder's lease: take it over,
                // keeping the later expiry so a leased key is never forgotten.
                seen.expires_at.max(req.expires_at)
            } else {
                return Ok(DedupClaim::InFlight {
                    holder: EventId(seen.holder),
                    lease_until: seen.lease_until,
                });
            };
            let ttl = ttl_secs(req.now, expires_at);
            let lease = req.lease_until;
            if self
                .dedup_set(
                    OP, company, key, ttl, holder, false, lease, expires_at, &seen,
                )
                .await?
            {
                return Ok(DedupClaim::Claimed);
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!("dedup key {key:?} of company {company} kept changing"),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Marks the key completed by `holder`, also if another holder took it over meanwhile
    /// (the work is done; that holder sees `Completed` next). A key already gone stays gone.
    pub(super) async fn dedup_complete_cql(
        &self,
        company: CompanyId,
        key: &str,
        holder: EventId,
    ) -> Out<()> {
        const OP: &str = "dedup_complete";
        for attempt in 0..MAX_ATTEMPTS {
            // The first try reads at LOCAL_QUORUM, not SERIAL: the usual case is our own
            // fresh claim, and a serial read is a Paxos round of its own. The compare-and-set
            // below checks every column read, so a stale read only makes it fail, and every
            // later try (and a row not seen at all) reads at SERIAL.
            let quorum = match attempt {
                0 => self.dedup_row(OP, false, company, key).await?,
                _ => None,
            };
            let seen = match quorum {
                Some(row) => Some(row),
                None => self.dedup_row(OP, true, company, key).await?,
            };
            let Some(seen) = seen else {
                tracing::debug!(company_id = %company, key, holder = %holder, "dedup key gone before completion");
                return Ok(());
            };
            if seen.completed && seen.holder == holder.0 {
                return Ok(());
            }
            let ttl = seen.remaining.unwrap_or(TTL_SLACK_SECS as i32).max(1);
            let (lease, expires) = (seen.lease_until, seen.expires_at);
            if self
                .dedup_set(OP, company, key, ttl, holder.0, true, lease, expires, &seen)
                .await?
            {
                if seen.holder != holder.0 {
                    tracing::warn!(company_id = %company, key, holder = %holder, current_holder = %seen.holder, "dedup key completed by a holder whose lease was taken over");
                }
                return Ok(());
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!("dedup key {key:?} of company {company} kept changing"),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Drops the key if `holder` holds it and it is not completed.
    pub(super) async fn dedup_release_cql(
        &self,
        company: CompanyId,
        key: &str,
        holder: EventId,
    ) -> Out<()> {
        let st = &self.st().dedup_release;
        let values = (company.0, key, holder.0);
        self.db().lwt("dedup_release", T, st, values).await?;
        Ok(())
    }

    pub(super) async fn dedup_entry_cql(
        &self,
        company: CompanyId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Out<Option<DedupEntry>> {
        let row = self.dedup_row("dedup_entry", false, company, key).await?;
        Ok(row.filter(|r| r.expires_at > now).map(|r| DedupEntry {
            holder: EventId(r.holder),
            completed: r.completed,
            lease_until: r.lease_until,
            expires_at: r.expires_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_covers_the_window_plus_slack() {
        let now = Utc::now();
        let ten = now + chrono::Duration::milliseconds(10_001);
        assert_eq!(ttl_secs(now, ten), 11 + 300);
        assert_eq!(ttl_secs(now, now - chrono::Duration::seconds(5)), 300);
        let far = now + chrono::Duration::days(365 * 100);
        assert_eq!(i64::from(ttl_secs(now, far)), MAX_TTL_SECS);
    }
}
