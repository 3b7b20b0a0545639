//! `askpro migrate`: brings the CQL keyspace up to date with `schemas/cql/` (idempotent; safe
//! to run from several processes at once, they take turns on a schema lock). The embedded
//! store migrates itself whenever it opens, so there is nothing to do for it.

use anyhow::{Context, Result};
use serde::Serialize;

use super::output::emit;
use crate::config::{Config, StoreBackend};
use crate::cql::{self, MIGRATIONS};

#[derive(Debug, Serialize)]
pub struct MigrateReport {
    /// `embedded` or `cql`.
    pub backend: StoreBackend,
    /// CQL only: where, and in which keyspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_points: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    /// Versions applied by this run, in order (empty: it was up to date).
    pub applied: Vec<MigrationReport>,
    /// The newest migration this binary knows (CQL) — the keyspace's version afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<u32>,
    pub up_to_date: bool,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct MigrationReport {
    pub version: u32,
    pub name: &'static str,
}

pub async fn run(config: &Config, json: bool) -> Result<()> {
    let report = match config.store.backend {
        StoreBackend::Embedded => MigrateReport {
            backend: StoreBackend::Embedded,
            contact_points: None,
            keyspace: None,
            applied: Vec::new(),
            latest: None,
            up_to_date: true,
            note: "the embedded store migrates itself when it opens; nothing to do \
                   (set store.backend = \"cql\" to migrate the CQL keyspace)"
                .into(),
        },
        StoreBackend::Cql => migrate_cql(config).await?,
    };
    emit(json, &report, render)
}

async fn migrate_cql(config: &Config) -> Result<MigrateReport> {
    let settings = config.cql.settings()?;
    let at = || {
        format!(
            "cannot migrate keyspace {} at {}",
            settings.keyspace, config.cql.contact_points
        )
    };
    let session = cql::connect(&settings).await.with_context(at)?;
    let applied = cql::migrate(&session, &settings).await.with_context(at)?;
    let applied: Vec<MigrationReport> = applied
        .into_iter()
        .map(|version| MigrationReport {
            version,
            name: MIGRATIONS
                .iter()
                .find(|m| m.version == version)
                .map_or("?", |m| m.name),
        })
        .collect();
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let up_to_date = applied.is_empty();
    let note = match up_to_date {
        true => format!("up to date (version {latest})"),
        false => format!("migrated to version {latest}"),
    };
    Ok(MigrateReport {
        backend: StoreBackend::Cql,
        contact_points: Some(settings.contact_points.clone()),
        keyspace: Some(settings.keyspace.clone()),
        applied,
        latest: Some(latest),
        up_to_date,
        note,
    })
}

fn render(report: &MigrateReport) -> String {
    let (Some(keyspace), Some(points)) = (&report.keyspace, &report.contact_points) else {
        return report.note.clone();
    };
    let mut out = format!("keyspace {keyspace} at {}", points.join(","));
    for m in &report.applied {
        out.push_str(&format!("\n  applied  {:04}_{}", m.version, m.name));
    }
    out.push_str(&format!("\n{}", report.note));
    out
}
