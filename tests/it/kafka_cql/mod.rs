//! The scale-out backends together: the Kafka log (`ASKPRO_KAFKA__BROKERS`) and the CQL state
//! store on a real Cassandra (`ASKPRO_TEST_CQL_CONTACT_POINTS`), through the real binary
//! (`serve`, `ingress`, `worker`) configured the way an operator would
//! (`ASKPRO_LOG__BACKEND=kafka`, `ASKPRO_STORE__BACKEND=cql`, `ASKPRO_CQL__*`).
//!
//! Every test has its own topics and consumer group ([`KafkaNames`]) and its own keyspace
//! (`askpro_it_<unix seconds>_<pid>_<random>`, so the conformance suite's sweep of stale
//! `askpro_it_<secs>_…` keyspaces also catches one left behind by a killed run), dropped at
//! the end whether the test passed or not. The store-outage test runs a private Cassandra of
//! its own (`scripts/services up cassandra` in a run dir and on ports of its own).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askpro::calcom::fake::{FakeCalcom, FakeConfig};
use askpro::cql::{CqlSettings, CqlStore};
use askpro_actors::domain::{AppointmentStatus, EventRow, EventStatus};
use askpro_actors::{CompanyId, EventId, StateStore};
use serde_json::Value;

use crate::booking::{analyzed, connect_calcom};
use crate::harness::{retell_body, Tenant};
use crate::kafka::{
    by_status, calcom_created, http, ledger, post_calcom, post_retell, services_script, slot,
    tenants, wait_healthy, wait_processed, wait_until, Acked, KafkaSetup, Node, TIERS,
};
use crate::kafka_stream::{
    assert_exactly_once, booking_tenants, bookings_per_call, wait_owns_all, wait_split, webhook,
    MakeWebhook, Stream,
};
use crate::kafka_topics::KafkaNames;

mod e2e;
mod outage;
mod worker_loss;

const CONTACT_POINTS_VAR: &str = "ASKPRO_TEST_CQL_CONTACT_POINTS";

// ---------------------------------------------------------------------------------------------
// keyspaces

/// The test Cassandra's contact points. Panics (fails the test) when unset: these tests never
/// pass silently without a database.
pub(crate) fn test_contact_points() -> String {
    match std::env::var(CONTACT_POINTS_VAR) {
        Ok(points) if !points.trim().is_empty() => points.trim().to_owned(),
        _ => panic!(
            "{CONTACT_POINTS_VAR} is not set: these tests need a real Cassandra or ScyllaDB. \
             Start one with `scripts/services up cassandra` and export \
             {CONTACT_POINTS_VAR}=127.0.0.1:19042 (host:port, comma-separated for several nodes)"
        ),
    }
}

/// One test's keyspace on a cluster.
#[derive(Clone, Debug)]
pub(crate) struct Keyspace {
    pub(crate) contact_points: String,
    pub(crate) name: String,
}

impl Keyspace {
    pub(crate) fn fresh(contact_points: String) -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!(
            "askpro_it_{secs}_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            contact_points,
            name,
        }
    }

    /// Settings of the test's own store beside the processes (it migrates the keyspace).
    pub(crate) fn settings(&self, request_timeout: Duration) -> CqlSettings {
        CqlSettings {
            contact_points: self
                .contact_points
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            keyspace: self.name.clone(),
            request_timeout,
            migrate_on_start: true,
            ..CqlSettings::default()
        }
    }

    /// Opens (creating and migrating) the keyspace.
    async fn open(&self) -> Arc<dyn StateStore> {
        let settings = self.settings(Duration::from_secs(20));
        let started = Instant::now();
        let store = CqlStore::open(&settings).await.unwrap_or_else(|e| {
            panic!(
                "open keyspace {} on {}: {e}",
                self.name, self.contact_points
            )
        });
        eprintln!(
            "cql: keyspace {} migrated and opened in {:?}",
            self.name,
            started.elapsed()
        );
        Arc::new(store)
    }

    /// The `ASKPRO_*` settings that put a process's state store on this keyspace.
    fn env(&self, request_timeout_ms: u64) -> Vec<(&'static str, String)> {
        vec![
            ("ASKPRO_STORE__BACKEND", "cql".to_owned()),
            ("ASKPRO_CQL__CONTACT_POINTS", self.contact_points.clone()),
            ("ASKPRO_CQL__KEYSPACE", self.name.clone()),
            ("ASKPRO_CQL__MIGRATE_ON_START", "true".to_owned()),
            (
                "ASKPRO_CQL__REQUEST_TIMEOUT_MS",
                request_timeout_ms.to_string(),
            ),
        ]
    }
}

/// `setup` with the CQL store of `keyspace`.
fn on_cql<'a>(
    mut setup: KafkaSetup<'a>,
    keyspace: &Keyspace,
    request_timeout_ms: u64,
) -> KafkaSetup<'a> {
    setup.env.extend(keyspace.env(request_timeout_ms));
    setup
}

/// Runs `test` with a fresh keyspace on `contact_points` and drops the keyspace afterwards
/// (best effort), also when the test panicked; the panic is then passed on.
async fn with_keyspace<F, Fut>(contact_points: String, test: F)
where
    F: FnOnce(Keyspace) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let keyspace = Keyspace::fresh(contact_points);
    let settings = keyspace.settings(Duration::from_secs(20));
    run_then_drop(settings, test(keyspace)).await;
}

/// Runs `test` on its own task, then drops the keyspace of `settings` (best effort), also
/// when the test panicked; the panic is then passed on.
pub async fn run_then_drop(settings: CqlSettings, test: impl Future<Output = ()> + Send + 'static) {
    let outcome = tokio::spawn(test).await;
    drop_keyspace(&settings).await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

async fn drop_keyspace(settings: &CqlSettings) {
    let session =
        match tokio::time::timeout(Duration::from_secs(30), askpro::cql::connect(settings)).await {
            Ok(Ok(session)) => session,
            _ => {
                eprintln!(
                    "cql: could not connect to drop keyspace {}",
                    settings.keyspace
                );
                return;
            }
        };
    // DDL takes no bind markers; the name is ours and checked.
    if askpro::cql::check_keyspace(&settings.keyspace).is_ok() {
        let drop = format!("DROP KEYSPACE IF EXISTS {}", settings.keyspace);
        if let Err(e) = session.query_unpaged(drop, ()).await {
            eprintln!("cql: could not drop keyspace {}: {e}", settings.keyspace);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// shared checks

/// `askpro events list --company ID --json` of the real binary on the keyspace.
fn events_cli(dir: &Path, keyspace: &Keyspace, company: CompanyId) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args([
            "events",
            "list",
            "--json",
            "--company",
            &company.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .envs(keyspace.env(20_000))
        .env("RUST_LOG", "error")
        .output()
        .expect("run askpro events list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "events list failed: {stderr}");
    let listed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("events list printed no JSON ({e}): {stderr}"));
    listed
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a list: {listed}"))
}
