//! The CQL layer's error, and how it maps onto the store contract's [`StoreError`]:
//! unreachable, timed out, overloaded or contended → `Unavailable` (transient, retry with
//! backoff); values the store cannot decode or statements the server finds invalid (a schema
//! that does not match this binary) → `Corrupt` (permanent). Uniqueness refusals
//! (`Conflict`) and missing references (`NotFound`) are decided by the store's own logic from
//! LWT outcomes and reads, never from a driver error.

use std::error::Error as StdError;
use std::time::Duration;

use askpro_actors::error::StoreError;
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextPageError, NextRowError, PagerExecutionError,
    PrepareError, RequestAttemptError, RequestError, UseKeyspaceError,
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Everything that can go wrong in the CQL store, with the coordinates to find it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CqlError {
    /// A setting is unusable (bad keyspace name, empty contact points, ...).
    #[error("invalid CQL setting: {0}")]
    Setting(String),
    /// No session could be opened.
    #[error("cannot connect to the CQL cluster at {}", contact_points.join(", "))]
    Connect {
        contact_points: Vec<String>,
        #[source]
        source: Box<NewSessionError>,
    },
    /// The keyspace is missing (not migrated?) or the switch failed.
    #[error("cannot use keyspace {keyspace} (has `askpro migrate` run?)")]
    UseKeyspace {
        keyspace: String,
        #[source]
        source: Box<UseKeyspaceError>,
    },
    /// A statement could not be prepared (schema older than this binary?).
    #[error("cannot prepare statement {name} (is the schema migrated?)")]
    Prepare {
        name: &'static str,
        #[source]
        source: Box<PrepareError>,
    },
    /// A request failed.
    #[error("{operation}: request failed")]
    Execute {
        operation: &'static str,
        #[source]
        source: Box<ExecutionError>,
    },
    /// A paged read failed to start.
    #[error("{operation}: paged read failed")]
    Pager {
        operation: &'static str,
        #[source]
        source: Box<PagerExecutionError>,
    },
    /// A paged read failed midway (fetching or decoding a row).
    #[error("{operation}: reading rows failed")]
    NextRow {
        operation: &'static str,
        #[source]
        source: Box<NextRowError>,
    },
    /// A result did not have the shape or the types this binary expects.
    #[error("{operation}: unexpected result from {table}")]
    Decode {
        operation: &'static str,
        table: &'static str,
        #[source]
        source: BoxError,
    },
    /// A stored value is out of range or unparseable.
    #[error("corrupt value in {table}: {problem}")]
    Corrupt {
        table: &'static str,
        problem: String,
    },
    /// Compare-and-set kept losing to concurrent writers, or a claim is held by a writer
    /// that is still in flight; retrying later succeeds.
    #[error("{operation}: {what} (gave up after {attempts} attempts)")]
    Contention {
        operation: &'static str,
        what: String,
        attempts: u32,
    },
    /// A migration statement failed.
    #[error("migration {version} ({name}), statement {index}: {head}")]
    Migration {
        version: u32,
        name: &'static str,
        index: usize,
        head: String,
        #[source]
        source: Box<ExecutionError>,
    },
    /// A migration that is recorded as applied differs from the file in this binary.
    #[error(
        "migration {version} ({name}) was applied with checksum {applied}, but this binary's \
         file has {current}: migrations must not change once released (add a new one)"
    )]
    MigrationChanged {
        version: u32,
        name: &'static str,
        applied: String,
        current: String,
    },
    /// The keyspace holds migrations newer than this binary knows.
    #[error("keyspace is at schema version {found}, newer than this binary's {known}")]
    SchemaTooNew { found: u32, known: u32 },
    /// The keyspace lacks migrations this binary needs.
    #[error(
        "keyspace is missing schema migrations {}: run `askpro migrate`",
        missing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    SchemaBehind { missing: Vec<u32> },
    /// Another migrator holds the schema lock.
    #[error(
        "schema lock held by {holder} for over {} s (a migrator still running?)",
        waited.as_secs()
    )]
    LockTimeout { holder: String, waited: Duration },
}

impl CqlError {
    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CqlError::Connect { .. } | CqlError::Contention { .. } => true,
            CqlError::LockTimeout { .. } => true,
            CqlError::Execute { source, .. } => execution_transient(source),
            CqlError::Pager { source, .. } => match &**source {
                PagerExecutionError::NextPageError(e) => next_page_transient(e),
                PagerExecutionError::PrepareError(_) => true,
                _ => false,
            },
            CqlError::NextRow { source, .. } => match &**source {
                NextRowError::NextPageError(e) => next_page_transient(e),
                _ => false,
            },
            CqlError::Prepare { source, .. } => !matches!(
                &**source,
                PrepareError::AllAttemptsFailed { first_attempt }
                    if !attempt_transient(first_attempt)
            ),
            CqlError::Migration { source, .. } => execution_transient(source),
            CqlError::UseKeyspace { .. }
            | CqlError::Setting(_)
            | CqlError::Decode { .. }
            | CqlError::Corrupt { .. }
            | CqlError::MigrationChanged { .. }
            | CqlError::SchemaTooNew { .. }
            | CqlError::SchemaBehind { .. } => false,
        }
    }

    /// The store contract's view of this error, for `operation` on `table`.
    pub fn into_store(self, operation: &'static str, table: &'static str) -> StoreError {
        if let CqlError::Corrupt { table, problem } = self {
            return StoreError::Corrupt { table, problem };
        }
        if self.is_transient() {
            return StoreError::Unavailable {
                operation,
                source: Box::new(self),
            };
        }
        StoreError::Corrupt {
            table,
            problem: error_chain(&self),
        }
    }
}

/// `e: cause: cause ...` in one line (a permanent error's whole story for the log).
fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn execution_transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_)
        | ExecutionError::PrepareError(_) => true,
        ExecutionError::LastAttemptError(attempt) => attempt_transient(attempt),
        _ => false,
    }
}

fn next_page_transient(e: &NextPageError) -> bool {
    match e {
        NextPageError::RequestFailure(r) => match r {
            RequestError::LastAttemptError(attempt) => attempt_transient(attempt),
            _ => true,
        },
        _ => false,
    }
}

/// Server and connection failures that may pass; a server that calls the statement invalid,
/// or a response we cannot parse, will say the same next time.
fn attempt_transient(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => !matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::AlreadyExists { .. }
                | DbError::FunctionFailure { .. }
                | DbError::ProtocolError
        ),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_)
        | RequestAttemptError::CqlResultParseError(_)
        | RequestAttemptError::CqlErrorParseError(_)
        | RequestAttemptError::BodyExtensionsParseError(_)
        | RequestAttemptError::UnexpectedResponse(_)
        | RequestAttemptError::RepreparedIdChanged { .. } => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_transient_and_invalid_statements_are_not() {
        let timeout = CqlError::Execute {
            operation: "x",
            source: Box::new(ExecutionError::RequestTimeout(Duration::from_secs(1))),
        };
        assert!(timeout.into_store("x", "t").is_transient());
        let overloaded = CqlError::Execute {
            operation: "x",
            source: Box::new(ExecutionError::LastAttemptError(
                RequestAttemptError::DbError(DbError::Overloaded, "busy".into()),
            )),
        };
        assert!(overloaded.is_transient());
        let invalid = CqlError::Execute {
            operation: "x",
            source: Box::new(ExecutionError::LastAttemptError(
                RequestAttemptError::DbError(DbError::Invalid, "unconfigured table calls".into()),
            )),
        };
        let store = invalid.into_store("x", "calls");
        assert!(!store.is_transient());
        let StoreError::Corrupt { problem, .. } = store else {
            panic!("{store:?}")
        };
        assert!(problem.contains("unconfigured table"), "{problem}");
    }
}
