//! The conformance suite against the CQL store on a real Cassandra (or ScyllaDB) at
//! `ASKPRO_TEST_CQL_CONTACT_POINTS` (`scripts/services up cassandra`: 127.0.0.1:19042), plus a
//! few checks of CQL-only parts (migrations, the calls-by-status index).
//!
//! Creating a keyspace and its tables takes seconds on Cassandra, so the whole test run
//! shares one keyspace (`askpro_it_<unix seconds>_<pid>`), migrated once. Keyspaces of
//! earlier runs older than 15 minutes are dropped in the background. Each `#[tokio::test]` has
//! its own runtime, which ends with the test; the session lives on a runtime of its own so
//! its connections outlive every test.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askpro::cql::{CqlSettings, CqlStore};
use askpro_actors::domain::Call;
use askpro_actors::store::StateStore;
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

#[allow(unused_imports)]
use super::*;

const CONTACT_POINTS_VAR: &str = "ASKPRO_TEST_CQL_CONTACT_POINTS";
const KEYSPACE_PREFIX: &str = "askpro_it_";
/// Test keyspaces of other runs older than this are dropped (each holds ~30 tables, which
/// cost the small test node memory).
const STALE_AFTER_SECS: u64 = 900;

/// The runtime that owns the shared session's connection tasks.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cql-test")
            .enable_all()
            .build()
            .expect("cql test runtime")
    })
}

fn settings() -> CqlSettings {
    let points = std::env::var(CONTACT_POINTS_VAR).unwrap_or_default();
    let contact_points: Vec<String> = points
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !contact_points.is_empty(),
        "{CONTACT_POINTS_VAR} is not set: the CQL store checks need a real Cassandra or ScyllaDB. \
         Start one with `scripts/services up cassandra` and export \
         {CONTACT_POINTS_VAR}=127.0.0.1:19042 (host:port, comma-separated for several nodes)"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    CqlSettings {
        contact_points,
        keyspace: format!("{KEYSPACE_PREFIX}{}_{}", now.as_secs(), std::process::id()),
        request_timeout: Duration::from_secs(20),
        migrate_on_start: true,
        ..CqlSettings::default()
    }
}

/// The store shared by every CQL check of this run (opened and migrated by the first).
async fn shared() -> CqlStore {
    static STORE: OnceCell<CqlStore> = OnceCell::const_new();
    STORE
        .get_or_init(|| async {
            let settings = settings();
            let opened = runtime().spawn(async move {
                let started = std::time::Instant::now();
                let store = CqlStore::open(&settings).await;
                eprintln!(
                    "cql: keyspace {} migrated and opened in {:?}",
                    settings.keyspace,
                    started.elapsed()
                );
                if let Ok(store) = &store {
                    let session_store = store.clone();
                    tokio::spawn(async move { drop_stale_keyspaces(&session_store).await });
                }
                store
            });
            opened
                .await
                .expect("open task")
                .unwrap_or_else(|e| panic!("cannot open the CQL store: {e:?}"))
        })
        .await
        .clone()
}

/// Drops test keyspaces of earlier runs (named with their start time) older than
/// [`STALE_AFTER_SECS`].
async fn drop_stale_keyspaces(store: &CqlStore) {
    let session = store.session();
    let Ok(result) = session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await
    else {
        return;
    };
    let Ok(rows) = result.into_rows_result() else {
        return;
    };
    let names: Vec<String> = match rows.rows::<(String,)>() {
        Ok(it) => it.filter_map(Result::ok).map(|(n,)| n).collect(),
        Err(_) => return,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for name in names {
        let started = name
            .strip_prefix(KEYSPACE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let stale = started.is_some_and(|s| now.saturating_sub(s) > STALE_AFTER_SECS);
        if stale && name != store.keyspace() && askpro::cql::check_keyspace(&name).is_ok() {
            // DDL takes no bind markers; the name was checked above.
            let _ = session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {name}"), ())
                .await;
        }
    }
}

async fn open_cql() -> ((), CqlStore) {
    ((), shared().await)
}

store_conformance!(cql, open_cql().await);

#[tokio::test]
async fn cql_migrations_are_idempotent() {
    let store = shared().await;
    let mut settings = settings();
    settings.keyspace = store.keyspace().to_owned();
    let again = runtime()
        .spawn(async move { askpro::cql::migrate(store.session(), &settings).await })
        .await
        .expect("migrate task")
        .expect("migrate again");
    assert!(again.is_empty(), "nothing left to apply, got {again:?}");
}

#[tokio::test]
async fn cql_calls_by_status_index_follows_updates() {
    let store = shared().await;
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let ongoing = Call {
        status: "ongoing".into(),
        ..call(a.id, "call_idx", 1)
    };
    assert!(store.upsert_call(&ongoing).await.unwrap());
    let other = Call {
        status: "ongoing".into(),
        ..call(a.id, "call_other", 1)
    };
    assert!(store.upsert_call(&other).await.unwrap());
    let listed = store.calls_in_status(a.id, "ongoing", 10).await.unwrap();
    assert_eq!(listed, vec![ongoing.clone(), other.clone()]);
    assert_eq!(
        store.calls_in_status(a.id, "ongoing", 1).await.unwrap(),
        vec![ongoing.clone()]
    );

    let ended = Call {
        status: "ended".into(),
        ..call(a.id, "call_idx", 2)
    };
    assert!(store.upsert_call(&ended).await.unwrap());
    assert_eq!(
        store.calls_in_status(a.id, "ongoing", 10).await.unwrap(),
        vec![other]
    );
    assert_eq!(
        store.calls_in_status(a.id, "ended", 10).await.unwrap(),
        vec![ended.clone()]
    );
    // An older event does not move it back.
    assert!(!store.upsert_call(&ongoing).await.unwrap());
    assert_eq!(
        store.calls_in_status(a.id, "ended", 10).await.unwrap(),
        vec![ended]
    );
}

#[tokio::test]
async fn cql_concurrent_dedup_claims_have_one_winner() {
    let store = shared().await;
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let holders: Vec<EventId> = (0..12).map(|_| EventId::new()).collect();
    let claims = futures::future::join_all(
        holders
            .iter()
            .map(|h| store.dedup_claim(claim(a.id, "k", *h, 0))),
    )
    .await;
    let winners: Vec<EventId> = holders
        .iter()
        .zip(&claims)
        .filter(|(_, c)| matches!(c, Ok(DedupClaim::Claimed)))
        .map(|(h, _)| *h)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    for c in &claims {
        match c {
            Ok(DedupClaim::Claimed) => {}
            Ok(DedupClaim::InFlight { holder, .. }) => assert_eq!(*holder, winners[0]),
            other => panic!("unexpected claim outcome {other:?}"),
        }
    }
    let entry = store.dedup_entry(a.id, "k", at(1)).await.unwrap().unwrap();
    assert_eq!(entry.holder, winners[0]);
}

#[tokio::test]
async fn cql_concurrent_versioned_upserts_keep_the_newest() {
    let store = shared().await;
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let versions: Vec<Call> = (1..=8).rev().map(|v| call(a.id, "race", v)).collect();
    let results = futures::future::join_all(versions.iter().map(|c| store.upsert_call(c))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stored = store.call(a.id, "race").await.unwrap().unwrap();
    assert_eq!(stored, versions[0], "version 8 wins");
    let indexed = store.calls_in_status(a.id, "status v8", 10).await.unwrap();
    assert_eq!(indexed, vec![stored]);
    for v in 1..8 {
        let stale = store
            .calls_in_status(a.id, &format!("status v{v}"), 10)
            .await
            .unwrap();
        assert!(stale.is_empty(), "v{v}: {stale:?}");
    }
}

#[tokio::test]
async fn cql_unreachable_cluster_is_a_transient_error() {
    let settings = CqlSettings {
        contact_points: vec!["127.0.0.1:1".into()],
        request_timeout: Duration::from_secs(2),
        ..CqlSettings::default()
    };
    let err = CqlStore::open(&settings).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let store_err = err.into_store("open", "companies");
    assert!(store_err.is_transient(), "{store_err:?}");
}

/// A worker that died between claiming an appointment's idempotency key and writing its row
/// leaves a claim with no row. Another writer of that key gets a transient error (it backs
/// off and retries) rather than a conflict (which would fail its event), and takes the claim
/// over once it is stale.
#[tokio::test]
async fn cql_a_key_claimed_by_an_unwritten_row_is_transient_until_stale() {
    let store = shared().await;
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let key = format!("retell-call:{}", uuid::Uuid::now_v7());
    let claim = "INSERT INTO appointment_keys (company_id, idempotency_key, appointment_id, \
                 claimed_at) VALUES (?, ?, ?, ?)";
    let dead = uuid::Uuid::now_v7();
    let fresh = chrono::Utc::now();
    store
        .session()
        .query_unpaged(claim, (a.id.0, key.as_str(), dead, fresh))
        .await
        .unwrap();
    let mut mine = appointment(a.id, None, 1);
    mine.idempotency_key = Some(key.clone());

    let err = store.upsert_appointment(&mine).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(format!("{err:?}").contains("not written yet"), "{err:?}");

    let stale = fresh - chrono::Duration::minutes(5);
    store
        .session()
        .query_unpaged(claim, (a.id.0, key.as_str(), dead, stale))
        .await
        .unwrap();
    assert!(store.upsert_appointment(&mine).await.unwrap());
    let found = store.appointment_by_key(a.id, &key).await.unwrap();
    assert_eq!(found.map(|f| f.id), Some(mine.id));
}
