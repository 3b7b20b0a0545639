//! The driver session and the few ways the store runs a prepared statement: a write, a
//! conditional write (LWT) that says whether it applied, a point read (normal or serial) and
//! a paged scan. Every failure becomes a [`CqlError`] with the operation's name; the store
//! maps it onto `StoreError` at its edge.

use std::sync::Arc;

use futures::TryStreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::query_result::QueryResult;
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use super::{CqlError, CqlSettings};

/// Rows per page of a scan.
pub(super) const PAGE_SIZE: i32 = 500;

/// Opens a session: token-aware load balancing (replicas first; with ScyllaDB the driver also
/// routes to the owning shard), the configured consistencies and request timeout as the
/// default execution profile, the driver's default retry policy (it retries only statements
/// marked idempotent, and LWTs are not) and client-side monotonic timestamps (so two writes
/// of one process are ordered even across coordinators with skewed clocks).
pub async fn connect(settings: &CqlSettings) -> Result<Session, CqlError> {
    settings.validate()?;
    let mut policy = DefaultPolicy::builder()
        .token_aware(true)
        .permit_dc_failover(false);
    if let Some(dc) = &settings.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let policy = policy.build();
    let profile = ExecutionProfile::builder()
        .consistency(settings.consistency)
        .serial_consistency(Some(settings.serial_consistency))
        .request_timeout(Some(settings.request_timeout))
        .load_balancing_policy(policy)
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .build();
    SessionBuilder::new()
        .known_nodes(&settings.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
        .connection_timeout(settings.request_timeout)
        .build()
        .await
        .map_err(|source| CqlError::Connect {
            contact_points: settings.contact_points.clone(),
            source: Box::new(source),
        })
}

/// The consistency of a serial (Paxos) read matching the configured serial consistency.
pub(super) fn serial_read_consistency(serial: SerialConsistency) -> Consistency {
    match serial {
        SerialConsistency::Serial => Consistency::Serial,
        SerialConsistency::LocalSerial => Consistency::LocalSerial,
    }
}

/// A session plus the consistency its serial reads use.
pub(super) struct Db {
    pub session: Session,
    pub serial_read: Consistency,
}

type Res<T> = Result<T, CqlError>;

impl Db {
    /// Runs a statement (a write, or a read whose rows the caller decodes).
    pub async fn exec(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Res<QueryResult> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|source| CqlError::Execute {
                operation,
                source: Box::new(source),
            })
    }

    /// Runs a conditional statement; returns whether it applied (`[applied]`, the first
    /// column: Cassandra returns only it when applied, ScyllaDB always the whole row).
    pub async fn lwt(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Res<bool> {
        let result = self.exec(operation, statement, values).await?;
        let rows = result
            .into_rows_result()
            .map_err(|e| decode(operation, table, e))?;
        let mut iter = rows
            .rows::<scylla::value::Row>()
            .map_err(|e| decode(operation, table, e))?;
        let row = iter
            .next()
            .ok_or_else(|| CqlError::Corrupt {
                table,
                problem: format!("{operation}: a conditional statement returned no row"),
            })?
            .map_err(|e| decode(operation, table, e))?;
        match row.columns.first() {
            Some(Some(scylla::value::CqlValue::Boolean(applied))) => Ok(*applied),
            other => Err(CqlError::Corrupt {
                table,
                problem: format!("{operation}: [applied] column is {other:?}"),
            }),
        }
    }

    /// Runs a batch (no conditions: those would have to share one partition).
    pub async fn batch(
        &self,
        operation: &'static str,
        batch: &Batch,
        values: impl BatchValues,
    ) -> Res<()> {
        self.session
            .batch(batch, values)
            .await
            .map(drop)
            .map_err(|source| CqlError::Execute {
                operation,
                source: Box::new(source),
            })
    }

    /// A point read: the first row, if any.
    pub async fn one<R>(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Res<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.exec(operation, statement, values).await?;
        let rows = result
            .into_rows_result()
            .map_err(|e| decode(operation, table, e))?;
        rows.maybe_first_row::<R>()
            .map_err(|e| decode(operation, table, e))
    }

    /// A point read at serial consistency: it completes any Paxos round in flight first, so
    /// it sees the latest conditional write (what a compare-and-set must compare with).
    pub async fn one_serial<R>(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Res<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let mut serial = statement.clone();
        serial.set_consistency(self.serial_read);
        self.one(operation, table, &serial, values).await
    }

    /// A scan, page by page, decoded into `R`; all rows.
    pub async fn all<R>(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Res<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let mut rows = Vec::new();
        self.visit(operation, table, statement, values, |row: R| {
            rows.push(row);
            true
        })
        .await?;
        Ok(rows)
    }

    /// A scan that hands each row to `visit` as it arrives and stops paging as soon as
    /// `visit` returns false (so callers read only as many pages as they need).
    pub async fn visit<R>(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        mut visit: impl FnMut(R) -> bool,
    ) -> Res<()>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|source| CqlError::Pager {
                operation,
                source: Box::new(source),
            })?;
        let mut stream = pager
            .rows_stream::<R>()
            .map_err(|e| decode(operation, table, e))?;
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|source| CqlError::NextRow {
                operation,
                source: Box::new(source),
            })?
        {
            if !visit(row) {
                break;
            }
        }
        Ok(())
    }
}

fn decode(
    operation: &'static str,
    table: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> CqlError {
    CqlError::Decode {
        operation,
        table,
        source: Box::new(e),
    }
}
