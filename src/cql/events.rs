//! The event ledger: `events` (one partition per event), the global `event_pointers`, and
//! the per-day listing tables `event_days` / `events_by_day`.
//!
//! Where CQL differs from the SQLite store:
//! - `record_events` cannot insert-if-absent without an LWT per row. It writes the initial
//!   rows at write timestamp 1 instead: every status change is written later with a current
//!   timestamp and wins cell by cell, so a redelivery re-writes the same immutable values and
//!   loses on the mutable ones (status, attempts, error, updated_at). The four tables are
//!   written concurrently and idempotently, not atomically: the call fails if one write
//!   fails, and the caller's retry (a redelivery) completes the rest.
//! - `set_event_status` reads the row first (the trait wants `NotFound` for a missing event,
//!   and the day listing is keyed by `received_at`), then updates `events` and
//!   `events_by_day` in one logged batch.
//! - `events` walks the tenant's days newest first and stops reading once it has `limit`
//!   rows; ties on `received_at` are ordered by id bytes like the embedded store.

use askpro_actors::domain::{EventRow, EventStatus};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{CompanyId, EventId};
use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use scylla::statement::batch::{Batch, BatchType};
use uuid::Uuid;

use super::rows::{int, utc_day, EventRowCql};
use super::{CqlStore, Out};

/// Events written (or read back for a listing) at once.
const CONCURRENCY: usize = 32;

type DayEntry = (DateTime<Utc>, Uuid, Option<String>);

impl CqlStore {
    pub(super) async fn record_events_cql(&self, rows: &[EventRow]) -> Out<()> {
        // Collected first: a lazy `map` over borrowed rows is not `Send` enough for the
        // boxed futures of `async_trait`.
        let writes: Vec<_> = rows.iter().map(|e| self.record_event(e)).collect();
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn record_event(&self, e: &EventRow) -> Out<()> {
        const OP: &str = "record_events";
        let (company, id, day) = (e.company_id.0, e.id.0, utc_day(e.received_at));
        let st = self.st();
        let row = (
            company,
            id,
            e.provider.as_str(),
            &e.event_type,
            &e.dedup_key,
            e.status.as_str(),
            int(e.attempts)?,
            e.error.as_deref(),
            e.correlation_id,
            &e.secret_id,
            int(e.partition)?,
            i64::try_from(e.offset).unwrap_or(i64::MAX),
            e.received_at,
            e.updated_at,
            &e.payload[..],
        );
        let by_day = (company, day, e.received_at, id, e.status.as_str());
        tokio::try_join!(
            self.db().exec(OP, &st.event_insert, row),
            self.db().exec(OP, &st.event_pointer_insert, (id, company)),
            self.db().exec(OP, &st.event_day_insert, (company, day)),
            self.db().exec(OP, &st.event_by_day_insert, by_day),
        )?;
        Ok(())
    }

    pub(super) async fn set_event_status_cql(
        &self,
        company: CompanyId,
        id: EventId,
        status: EventStatus,
        attempts: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Out<()> {
        const OP: &str = "set_event_status";
        let st = self.st();
        let key = (company.0, id.0);
        let received: Option<(DateTime<Utc>,)> =
            self.db().one(OP, "events", &st.event_received, key).await?;
        let Some((received_at,)) = received else {
            return Err(StoreError::NotFound(format!("event {id} of company {company}")).into());
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(st.event_status_update.clone());
        batch.append_statement(st.event_by_day_status.clone());
        let values = (
            (status.as_str(), int(attempts)?, error, now, company.0, id.0),
            (
                status.as_str(),
                company.0,
                utc_day(received_at),
                received_at,
                id.0,
            ),
        );
        self.db().batch(OP, &batch, values).await?;
        Ok(())
    }

    pub(super) async fn event_cql(&self, company: CompanyId, id: EventId) -> Out<Option<EventRow>> {
        self.event_row("event", company.0, id.0).await
    }

    async fn event_row(
        &self,
        operation: &'static str,
        company: Uuid,
        id: Uuid,
    ) -> Out<Option<EventRow>> {
        let st = &self.st().event_get;
        let row: Option<EventRowCql> = self
            .db()
            .one(operation, "events", st, (company, id))
            .await?;
        Ok(row.map(EventRowCql::into_domain).transpose()?)
    }

    pub(super) async fn find_event_cql(&self, id: EventId) -> Out<Option<EventRow>> {
        const OP: &str = "find_event";
        let st = &self.st().event_pointer_get;
        let pointer: Option<(Uuid,)> = self.db().one(OP, "event_pointers", st, (id.0,)).await?;
        match pointer {
            Some((company,)) => self.event_row(OP, company, id.0).await,
            None => Ok(None),
        }
    }

    /// Newest first, at most `limit`, optionally in one status.
    pub(super) async fn events_cql(
        &self,
        company: CompanyId,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Out<Vec<EventRow>> {
        const OP: &str = "events";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let st = self.st();
        let days: Vec<(NaiveDate,)> = self
            .db()
            .all(OP, "event_days", &st.event_days_list, (company.0,))
            .await?;
        let wanted = status.map(EventStatus::as_str);
        let mut picked: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
        // Once `limit` rows are picked, keep only the ties of the last one's received_at.
        let mut cut: Option<DateTime<Utc>> = None;
        for (day,) in days {
            let mut past_cut = false;
            let values = (company.0, day);
            let visit = |(at, id, row_status): DayEntry| {
                if cut.is_some_and(|c| c != at) {
                    past_cut = true;
                    return false;
                }
                if wanted.is_none_or(|w| row_status.as_deref() == Some(w)) {
                    picked.push((at, id));
                    if cut.is_none() && picked.len() >= limit {
                        cut = Some(at);
                    }
                }
                true
            };
            self.db()
                .visit(OP, "events_by_day", &st.events_of_day, values, visit)
                .await?;
            if past_cut {
                break;
            }
        }
        picked.sort_by(|x, y| y.cmp(x));
        picked.truncate(limit);
        let rows: Vec<Option<EventRow>> = futures::stream::iter(
            picked
                .into_iter()
                .map(|(_, id)| self.event_row(OP, company.0, id)),
        )
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
        // `events` is the truth: a listing entry whose row is missing or (after a partial
        // failure) in another status is left out.
        Ok(rows
            .into_iter()
            .flatten()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .collect())
    }
}
