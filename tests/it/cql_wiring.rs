//! The CQL store selected through configuration, against a real Cassandra (or ScyllaDB) at
//! `ASKPRO_TEST_CQL_CONTACT_POINTS` (`scripts/services up cassandra`: 127.0.0.1:19042):
//! `askpro migrate`, admin commands of the real binary with `ASKPRO_STORE__BACKEND=cql`, and
//! an in-process `serve` whose pipeline records into the CQL store.
//!
//! Every test works in a keyspace of its own (`askpro_it_<unix seconds>_<pid>_<random>`,
//! so the conformance suite's sweep of stale `askpro_it_<secs>_…` keyspaces also catches one
//! left behind by a killed run), dropped at the end, whether the test passed or not.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use askpro::app::RunOptions;
use askpro::config::{Config, StoreBackend};
use askpro::cql::{CqlSettings, CqlStore};
use askpro_actors::domain::EventStatus;
use askpro_actors::{CompanyId, EventId, StateStore};
use serde_json::Value;

use crate::harness::*;
use crate::kafka_cql::{test_contact_points, Keyspace};

/// One test's keyspace on the test cluster.
#[derive(Clone, Debug)]
struct Cql {
    contact_points: String,
    keyspace: String,
}

impl Cql {
    fn fresh() -> Self {
        let Keyspace {
            contact_points,
            name,
        } = Keyspace::fresh(test_contact_points());
        Cql {
            contact_points,
            keyspace: name,
        }
    }

    /// Store settings for this keyspace; the test opens its own store beside the server.
    fn settings(&self, migrate_on_start: bool) -> CqlSettings {
        let keyspace = Keyspace {
            contact_points: self.contact_points.clone(),
            name: self.keyspace.clone(),
        };
        CqlSettings {
            migrate_on_start,
            ..keyspace.settings(Duration::from_secs(20))
        }
    }

    /// Points a config at this keyspace (the way `ASKPRO_STORE__BACKEND` / `ASKPRO_CQL__*`
    /// would).
    fn configure(&self, config: &mut Config) {
        config.store.backend = StoreBackend::Cql;
        config.cql.contact_points = self.contact_points.clone();
        config.cql.keyspace = self.keyspace.clone();
        config.cql.request_timeout_ms = 20_000;
        config.cql.migrate_on_start = true;
    }

    /// The real binary with the CQL store of this keyspace. Migrating at open is off, so the
    /// admin commands work only because `askpro migrate` ran.
    fn askpro(&self, dir: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_askpro"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .current_dir(dir);
        // No config of the developer's shell may leak in.
        for (name, _) in std::env::vars() {
            if name == "ASKPRO_CONFIG"
                || name.starts_with("ASKPRO_STORE__")
                || name.starts_with("ASKPRO_CQL__")
            {
                command.env_remove(name);
            }
        }
        command
            .env("ASKPRO_STORE__BACKEND", "cql")
            .env("ASKPRO_CQL__CONTACT_POINTS", &self.contact_points)
            .env("ASKPRO_CQL__KEYSPACE", &self.keyspace)
            .env("ASKPRO_CQL__MIGRATE_ON_START", "false")
            .env("ASKPRO_CQL__REQUEST_TIMEOUT_MS", "20000")
            .env("RUST_LOG", "error")
            .output()
            .expect("run askpro")
    }

    /// Runs a command that must succeed and print one JSON document.
    fn json(&self, dir: &Path, args: &[&str]) -> Value {
        let out = self.askpro(dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "askpro {args:?} failed: {stderr}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("askpro {args:?} printed no JSON ({e}): {stderr}"))
    }
}

/// Runs `test` with a fresh keyspace and drops the keyspace afterwards (best effort), also
/// when the test panicked; the panic is then passed on.
async fn with_keyspace<F, Fut>(test: F)
where
    F: FnOnce(Cql) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cql = Cql::fresh();
    let settings = cql.settings(false);
    crate::kafka_cql::run_then_drop(settings, test(cql)).await;
}

fn versions(report: &Value) -> Vec<u64> {
    report["applied"]
        .as_array()
        .unwrap_or_else(|| panic!("no applied list in {report}"))
        .iter()
        .map(|m| m["version"].as_u64().expect("version"))
        .collect()
}

#[tokio::test]
async fn cql_wiring_migrate_then_admin_commands_use_the_keyspace() {
    with_keyspace(|cql| async move {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();

        let first = cql.json(dir, &["migrate", "--json"]);
        assert_eq!(first["backend"], "cql", "{first}");
        assert_eq!(first["keyspace"], cql.keyspace.as_str(), "{first}");
        assert_eq!(versions(&first), vec![1, 2, 3, 4, 5], "{first}");
        assert_eq!(first["up_to_date"], false, "{first}");
        assert_eq!(first["latest"], 5, "{first}");

        let second = cql.json(dir, &["migrate", "--json"]);
        assert_eq!(versions(&second), Vec::<u64>::new(), "{second}");
        assert_eq!(second["up_to_date"], true, "{second}");
        let text = cql.askpro(dir, &["migrate"]);
        assert!(text.status.success());
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("up to date"), "{text}");

        let company = cql.json(dir, &["company", "create", "--name", "CQL Salon", "--json"]);
        let id = company["id"].as_str().expect("company id").to_owned();
        let listed = cql.json(dir, &["company", "list", "--json"]);
        let names: Vec<(&str, &str)> = listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| (c["id"].as_str().unwrap(), c["name"].as_str().unwrap()))
            .collect();
        assert_eq!(names, vec![(id.as_str(), "CQL Salon")]);

        // The company is in the CQL keyspace, not in the embedded store under --data-dir.
        let store = CqlStore::open(&cql.settings(false))
            .await
            .expect("open the migrated keyspace");
        let id: CompanyId = id.parse().unwrap();
        let stored = store.company(id).await.unwrap().expect("company in cql");
        assert_eq!(stored.name, "CQL Salon");
        assert!(
            !dir.join("state.db").exists(),
            "the embedded store must not be opened"
        );
    })
    .await;
}

#[tokio::test]
async fn cql_wiring_migrate_on_the_embedded_store_has_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(["migrate", "--json", "--data-dir"])
        .arg(tmp.path())
        .current_dir(tmp.path())
        .env_remove("ASKPRO_CONFIG")
        .env("ASKPRO_STORE__BACKEND", "embedded")
        .output()
        .expect("run askpro");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["backend"], "embedded", "{report}");
    assert_eq!(versions(&report), Vec::<u64>::new());
    assert!(
        report["note"].as_str().unwrap().contains("migrates itself"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_wiring_serve_processes_a_signed_webhook_into_the_cql_store() {
    with_keyspace(|cql| async move {
        // The server opens (and, migrate_on_start, migrates) the fresh keyspace itself.
        let server =
            TestServer::start_with(|config| cql.configure(config), RunOptions::default()).await;
        let store = CqlStore::open(&cql.settings(false))
            .await
            .expect("open the keyspace the server migrated");
        let phone = format!("+49302{:06}", rand::random::<u32>() % 1_000_000);
        let t = tenant(&store, "cql", &phone).await;

        let body = retell_body("call_ended", "call_cql_wiring", &phone);
        let (status, reply) =
            json_body(server.post_retell(t.company, &body, &t.retell_secret).await).await;
        assert_eq!(status, 202, "{reply}");
        let event_id: EventId = reply["event_id"].as_str().unwrap().parse().unwrap();

        let events = settled_events(&store, t.company, 1).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].id, event_id);
        assert_eq!(
            events[0].status,
            EventStatus::Processed,
            "{:?}",
            events[0].error
        );
        let call = store
            .call(t.company, "call_cql_wiring")
            .await
            .unwrap()
            .expect("call stored in cql");
        assert_eq!(call.branch_id, Some(t.branch));
        // Nothing went to the embedded store beside the server.
        assert!(server
            .store
            .event(t.company, event_id)
            .await
            .unwrap()
            .is_none());
        server.stop().await.0.unwrap();
    })
    .await;
}
