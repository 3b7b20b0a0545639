//! Versioned CQL migrations (`schemas/cql/NNNN_name.cql`, embedded in the binary).
//!
//! [`migrate`] creates the keyspace if it is missing (with the configured replication),
//! takes a schema lock (an LWT row with a TTL, so a crashed migrator frees it by itself),
//! applies every migration not yet recorded in `schema_migrations` statement by statement
//! (each is `IF NOT EXISTS`, or an `ALTER TABLE .. ADD` skipped when `system_schema` already
//! lists the column, so a migration interrupted halfway is simply run again) and
//! records it with the checksum of its file. A recorded migration whose file changed is an
//! error, as is a keyspace that holds migrations newer than the binary.
//!
//! DDL is the one place where CQL text is assembled at run time: a keyspace name and a
//! replication map cannot be bind markers. Both are checked by
//! [`CqlSettings::validate`] first; the migration files themselves are static text.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{CqlError, CqlSettings};

/// One numbered file of `schemas/cql/`.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        cql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cql/0001_init.cql"
        )),
    },
    Migration {
        version: 2,
        name: "catalog",
        cql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cql/0002_catalog.cql"
        )),
    },
    Migration {
        version: 3,
        name: "contact",
        cql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cql/0003_contact.cql"
        )),
    },
    Migration {
        version: 4,
        name: "retell_llm",
        cql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cql/0004_retell_llm.cql"
        )),
    },
    Migration {
        version: 5,
        name: "api_keys",
        cql: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cql/0005_api_keys.cql"
        )),
    },
];

/// How long the schema lock lives if its holder dies.
const LOCK_TTL_SECS: i32 = 300;
/// How long a migrator waits for another one to finish.
const LOCK_WAIT: Duration = Duration::from_secs(330);

const BOOKKEEPING: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, \
     checksum text, applied_at timestamp)",
    "CREATE TABLE IF NOT EXISTS schema_lock (id int PRIMARY KEY, holder uuid, \
     taken_at timestamp)",
];

impl Migration {
    /// The file's statements: `--` comments dropped, split at `;`.
    pub fn statements(&self) -> Vec<String> {
        let text: String = self
            .cql
            .lines()
            .map(|line| line.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Hex SHA-256 of the file.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.cql.as_bytes()))
    }
}

async fn ddl(session: &Session, operation: &'static str, cql: String) -> Result<(), CqlError> {
    session
        .query_unpaged(cql, ())
        .await
        .map(drop)
        .map_err(|source| CqlError::Execute {
            operation,
            source: Box::new(source),
        })
}

async fn prepare(
    session: &Session,
    name: &'static str,
    cql: &str,
) -> Result<PreparedStatement, CqlError> {
    session
        .prepare(cql)
        .await
        .map_err(|source| CqlError::Prepare {
            name,
            source: Box::new(source),
        })
}

/// Whether the cluster is ScyllaDB (it has `system.scylla_local`; Cassandra does not).
async fn is_scylla(session: &Session) -> Result<bool, CqlError> {
    const OP: &str = "detect ScyllaDB";
    let probe = "SELECT table_name FROM system_schema.tables \
                 WHERE keyspace_name = 'system' AND table_name = 'scylla_local'";
    let st = prepare(session, "scylla_probe", probe).await?;
    let result = session
        .execute_unpaged(&st, ())
        .await
        .map_err(|source| CqlError::Execute {
            operation: OP,
            source: Box::new(source),
        })?;
    let rows = result.into_rows_result().map_err(|e| CqlError::Decode {
        operation: OP,
        table: "system_schema.tables",
        source: Box::new(e),
    })?;
    Ok(rows.rows_num() > 0)
}

/// Versions recorded in `schema_migrations`, with their checksums.
async fn applied(session: &Session) -> Result<Vec<(u32, String)>, CqlError> {
    const OP: &str = "read schema_migrations";
    let st = prepare(
        session,
        "schema_migrations_list",
        "SELECT version, checksum FROM schema_migrations",
    )
    .await?;
    let result = session
        .execute_unpaged(&st, ())
        .await
        .map_err(|source| CqlError::Execute {
            operation: OP,
            source: Box::new(source),
        })?;
    let rows = result.into_rows_result().map_err(|e| CqlError::Decode {
        operation: OP,
        table: "schema_migrations",
        source: Box::new(e),
    })?;
    let decode = |e: scylla::errors::RowsError| CqlError::Decode {
        operation: OP,
        table: "schema_migrations",
        source: Box::new(e),
    };
    let mut versions = Vec::new();
    for row in rows.rows::<(i32, Option<String>)>().map_err(decode)? {
        let (version, checksum) = row.map_err(|e| CqlError::Decode {
            operation: OP,
            table: "schema_migrations",
            source: Box::new(e),
        })?;
        let version = u32::try_from(version).map_err(|_| CqlError::Corrupt {
            table: "schema_migrations",
            problem: format!("negative version {version}"),
        })?;
        versions.push((version, checksum.unwrap_or_default()));
    }
    versions.sort();
    Ok(versions)
}

/// Brings the keyspace up to date; returns the versions applied now (empty: nothing to do).
pub async fn migrate(session: &Session, settings: &CqlSettings) -> Result<Vec<u32>, CqlError> {
    settings.validate()?;
    let keyspace = &settings.keyspace;
    // ScyllaDB creates tablets keyspaces by default, and (up to 2025.x at least) supports
    // neither LWT nor counters in them: ask for vnodes. Cassandra does not know the option.
    let tablets = if is_scylla(session).await? {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    let create = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}{tablets}",
        settings.replication
    );
    ddl(session, "create keyspace", create).await?;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(|source| CqlError::UseKeyspace {
            keyspace: keyspace.clone(),
            source: Box::new(source),
        })?;
    for statement in BOOKKEEPING {
        ddl(session, "create schema bookkeeping", statement.to_owned()).await?;
    }
    let holder = Uuid::now_v7();
    lock(session, holder).await?;
    let result = apply(session, keyspace).await;
    let unlock = prepare(
        session,
        "schema_unlock",
        "DELETE FROM schema_lock WHERE id = 0 IF holder = ?",
    )
    .await;
    match unlock {
        Ok(st) => {
            if let Err(e) = session.execute_unpaged(&st, (holder,)).await {
                tracing::warn!(error = %e, "could not release the schema lock (it expires by itself)");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not release the schema lock (it expires by itself)")
        }
    }
    let done = result?;
    if !done.is_empty() {
        tracing::info!(keyspace = %keyspace, versions = ?done, "applied CQL migrations");
    }
    Ok(done)
}

async fn lock(session: &Session, holder: Uuid) -> Result<(), CqlError> {
    const OP: &str = "take the schema lock";
    let take = prepare(
        session,
        "schema_lock",
        "INSERT INTO schema_lock (id, holder, taken_at) VALUES (0, ?, ?) IF NOT EXISTS USING TTL ?",
    )
    .await?;
    let started = Instant::now();
    loop {
        let result = session
            .execute_unpaged(&take, (holder, Utc::now(), LOCK_TTL_SECS))
            .await
            .map_err(|source| CqlError::Execute {
                operation: OP,
                source: Box::new(source),
            })?;
        let rows = result.into_rows_result().map_err(|e| CqlError::Decode {
            operation: OP,
            table: "schema_lock",
            source: Box::new(e),
        })?;
        let row = rows
            .rows::<scylla::value::Row>()
            .ok()
            .and_then(|mut it| it.next())
            .and_then(Result::ok);
        let applied = matches!(
            row.as_ref().and_then(|r| r.columns.first()),
            Some(Some(scylla::value::CqlValue::Boolean(true)))
        );
        if applied {
            return Ok(());
        }
        let other = row
            .as_ref()
            .and_then(|r| r.columns.get(2))
            .and_then(|v| v.as_ref()?.as_text().cloned())
            .unwrap_or_else(|| "another migrator".to_owned());
        if started.elapsed() >= LOCK_WAIT {
            return Err(CqlError::LockTimeout {
                holder: other,
                waited: started.elapsed(),
            });
        }
        tracing::info!(holder = %other, "waiting for another migrator's schema lock");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn apply(session: &Session, keyspace: &str) -> Result<Vec<u32>, CqlError> {
    let recorded = applied(session).await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some((found, _)) = recorded.iter().rfind(|(v, _)| *v > known) {
        return Err(CqlError::SchemaTooNew {
            found: *found,
            known,
        });
    }
    let record = prepare(
        session,
        "schema_migrations_insert",
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
    )
    .await?;
    let mut done = Vec::new();
    for m in MIGRATIONS {
        let current = m.checksum();
        if let Some((_, applied)) = recorded.iter().find(|(v, _)| *v == m.version) {
            if *applied != current {
                return Err(CqlError::MigrationChanged {
                    version: m.version,
                    name: m.name,
                    applied: applied.clone(),
                    current,
                });
            }
            continue;
        }
        for (index, statement) in m.statements().into_iter().enumerate() {
            let head: String = statement
                .split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" ");
            if let Some((table, column)) = added_column(&statement) {
                if column_exists(session, keyspace, table, column).await? {
                    continue;
                }
            }
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|source| CqlError::Migration {
                    version: m.version,
                    name: m.name,
                    index,
                    head,
                    source: Box::new(source),
                })?;
        }
        let version = i32::try_from(m.version).unwrap_or(i32::MAX);
        let now: DateTime<Utc> = Utc::now();
        session
            .execute_unpaged(&record, (version, m.name, &current, now))
            .await
            .map_err(|source| CqlError::Execute {
                operation: "record a migration",
                source: Box::new(source),
            })?;
        done.push(m.version);
    }
    Ok(done)
}

/// `ALTER TABLE <table> ADD <column> <type>`: its table and column. ScyllaDB has no
/// `ADD IF NOT EXISTS` (Cassandra only since 5.0), so a rerun asks `system_schema` instead.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    match words.as_slice() {
        [alter, kw, table, add, column, _type, ..]
            if alter.eq_ignore_ascii_case("ALTER")
                && kw.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD") =>
        {
            Some((table, column))
        }
        _ => None,
    }
}

/// Whether `system_schema` lists the column (an earlier, interrupted run added it).
async fn column_exists(
    session: &Session,
    keyspace: &str,
    table: &str,
    column: &str,
) -> Result<bool, CqlError> {
    const OP: &str = "read system_schema.columns";
    let st = prepare(
        session,
        "schema_column_probe",
        "SELECT column_name FROM system_schema.columns \
         WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
    )
    .await?;
    let result = session
        .execute_unpaged(&st, (keyspace, table, column))
        .await
        .map_err(|source| CqlError::Execute {
            operation: OP,
            source: Box::new(source),
        })?;
    let rows = result.into_rows_result().map_err(|e| CqlError::Decode {
        operation: OP,
        table: "system_schema.columns",
        source: Box::new(e),
    })?;
    Ok(rows.rows_num() > 0)
}

/// Fails unless every migration of this binary is recorded in the session's keyspace (what
/// [`super::CqlStore::open`] checks when it does not migrate itself).
pub async fn check_schema(session: &Session) -> Result<(), CqlError> {
    let recorded = applied(session).await?;
    let missing: Vec<u32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !recorded.iter().any(|(r, _)| r == v))
        .collect();
    if !missing.is_empty() {
        return Err(CqlError::SchemaBehind { missing });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_split_into_statements() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            let statements = m.statements();
            assert!(!statements.is_empty());
            for s in &statements {
                let rerunnable =
                    s.starts_with("CREATE TABLE IF NOT EXISTS") || added_column(s).is_some();
                assert!(rerunnable, "{s}");
                assert!(!s.contains("--"), "{s}");
            }
            assert_eq!(m.checksum().len(), 64);
        }
    }

    #[test]
    fn every_tenant_table_is_keyed_by_company_first() {
        // Global pointers: a phone, an event id or an API key (hash or id) names its tenant.
        const GLOBAL: [&str; 5] = [
            "phone_routes",
            "routing_version",
            "event_pointers",
            "api_keys",
            "api_key_ids",
        ];
        for m in MIGRATIONS {
            for s in m.statements().iter().filter(|s| added_column(s).is_none()) {
                let table = s.split_whitespace().nth(5).unwrap_or_default();
                let table = table.trim_end_matches('(');
                if GLOBAL.contains(&table) {
                    continue;
                }
                let keyed = s.contains("PRIMARY KEY ((company_id")
                    || s.contains("company_id uuid PRIMARY KEY");
                assert!(keyed, "{table} is not partitioned by company_id first");
            }
        }
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE branches ADD fallback_email text"),
            Some(("branches", "fallback_email"))
        );
        assert_eq!(
            added_column("ALTER TABLE branches ADD fallback_email"),
            None
        );
        assert_eq!(added_column("ALTER TABLE branches DROP x text"), None);
        assert_eq!(added_column("CREATE TABLE IF NOT EXISTS x (a int)"), None);
    }
}
