//! Versioned schema migrations, embedded in the binary and applied in order at open.
//!
//! Each database keeps `schema_migrations(version, name, applied_at)`. A migration runs in its
//! own `BEGIN IMMEDIATE` transaction that first re-checks the table, so two processes opening
//! the same file at once (the server and the CLI) never apply one twice.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// One numbered SQL file of `schemas/sql/<db>/`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Migrations of `log.db`, in order.
pub(crate) const LOG: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/sql/log/0001_init.sql"
    )),
}];

/// Migrations of `state.db`, in order.
pub(crate) const STATE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/sql/state/0001_init.sql"
        )),
    },
    Migration {
        version: 2,
        name: "catalog",
        sql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/sql/state/0002_catalog.sql"
        )),
    },
    Migration {
        version: 3,
        name: "contact",
        sql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/sql/state/0003_contact.sql"
        )),
    },
    Migration {
        version: 4,
        name: "retell_llm",
        sql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/sql/state/0004_retell_llm.sql"
        )),
    },
    Migration {
        version: 5,
        name: "api_keys",
        sql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/sql/state/0005_api_keys.sql"
        )),
    },
];

/// Why a database could not be brought to the current schema.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("migration {version} ({name}) failed")]
    Apply {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reading schema_migrations failed")]
    Read(#[source] rusqlite::Error),
    /// Written by a newer build: running older code against it could corrupt data.
    #[error("schema version {found} is newer than this build knows ({known}); upgrade askpro")]
    TooNew { found: u32, known: u32 },
}

impl MigrateError {
    /// The SQLite error underneath, if any (to tell "busy" from a broken migration).
    pub(crate) fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            MigrateError::Apply { source, .. } | MigrateError::Read(source) => Some(source),
            MigrateError::TooNew { .. } => None,
        }
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)";

/// Applies every migration of `set` not applied yet; returns the versions it applied.
pub(crate) fn apply(conn: &mut Connection, set: &[Migration]) -> Result<Vec<u32>, MigrateError> {
    conn.execute(CREATE_TABLE, []).map_err(MigrateError::Read)?;
    let known = set.last().map_or(0, |m| m.version);
    let found: u32 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(MigrateError::Read)?;
    if found > known {
        return Err(MigrateError::TooNew { found, known });
    }
    let mut applied = Vec::new();
    for migration in set {
        if apply_one(conn, migration)? {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied schema migration"
            );
            applied.push(migration.version);
        }
    }
    Ok(applied)
}

/// Runs one migration unless it is recorded already; returns whether it ran.
fn apply_one(conn: &mut Connection, m: &Migration) -> Result<bool, MigrateError> {
    let fail = |source| MigrateError::Apply {
        version: m.version,
        name: m.name,
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let done = tx
        .query_row(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            [m.version],
            |_| Ok(()),
        )
        .optional()
        .map_err(fail)?
        .is_some();
    if done {
        return Ok(false);
    }
    tx.execute_batch(m.sql).map_err(fail)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        params![m.version, m.name, chrono::Utc::now().timestamp_millis()],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(conn: &Connection) -> Vec<u32> {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn numbered_in_order() {
        for set in [LOG, STATE] {
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{} out of order", m.name);
            }
        }
    }

    #[test]
    fn idempotent_on_reapply() {
        for set in [LOG, STATE] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.db");
            let mut conn = Connection::open(&path).unwrap();
            assert_eq!(apply(&mut conn, set).unwrap().len(), set.len());
            drop(conn);
            let mut conn = Connection::open(&path).unwrap();
            assert!(apply(&mut conn, set).unwrap().is_empty());
            let expected: Vec<u32> = set.iter().map(|m| m.version).collect();
            assert_eq!(versions(&conn), expected);
        }
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, STATE).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (999, 'future', 0)",
            [],
        )
        .unwrap();
        let err = apply(&mut conn, STATE).unwrap_err();
        assert!(
            matches!(err, MigrateError::TooNew { found: 999, .. }),
            "{err}"
        );
    }
}
