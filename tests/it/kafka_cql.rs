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

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askpro::calcom::fake::{FakeCalcom, FakeConfig};
use askpro::cql::{CqlSettings, CqlStore};
use askpro_actors::domain::{AppointmentStatus, EventRow, EventStatus};
use askpro_actors::{CompanyId, EventId, StateStore};
use futures::StreamExt;
use serde_json::Value;

use crate::booking::{analyzed, connect_calcom};
use crate::crash::free_port;
use crate::harness::{retell_body, Tenant};
use crate::kafka::{
    assigned, by_status, calcom_created, http, ledger, post_calcom, post_retell, services_script,
    slot, tenants, wait_every, wait_healthy, wait_processed, wait_until, Acked, KafkaSetup, Node,
    HEALTH_POLL, TIERS,
};
use crate::kafka_topics::KafkaNames;

const CONTACT_POINTS_VAR: &str = "ASKPRO_TEST_CQL_CONTACT_POINTS";

// ---------------------------------------------------------------------------------------------
// keyspaces

/// The test Cassandra's contact points. Panics (fails the test) when unset: these tests never
/// pass silently without a database.
fn test_contact_points() -> String {
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
struct Keyspace {
    contact_points: String,
    name: String,
}

impl Keyspace {
    fn fresh(contact_points: String) -> Self {
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
    fn settings(&self, request_timeout: Duration) -> CqlSettings {
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
    let outcome = tokio::spawn(test(keyspace)).await;
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

/// The Cal.com bookings of the fake per idempotency key (`retell-call:<call id>`).
fn bookings_per_call(fake: &FakeCalcom) -> HashMap<String, usize> {
    let mut per_call = HashMap::new();
    for booking in fake.bookings() {
        let key = booking
            .metadata
            .get("askpro_key")
            .cloned()
            .unwrap_or_default();
        *per_call.entry(key).or_default() += 1;
    }
    per_call
}

/// Exactly once: one ledger row per acknowledged event and nothing else, all `processed`,
/// one row per dedup key, a call row per call, one booking (and one scheduled appointment) per
/// booking call.
async fn assert_exactly_once(
    store: &dyn StateStore,
    fake: &FakeCalcom,
    acked: &[Acked],
    companies: &[CompanyId],
) {
    let rows = ledger(store, companies).await;
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    let mut per_id: HashMap<EventId, usize> = HashMap::new();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_id.entry(row.id).or_default() += 1;
        *per_key.entry(row.dedup_key.as_str()).or_default() += 1;
        assert!(
            wanted.contains(&row.id),
            "a ledger row of an event never acknowledged: {} {:?}",
            row.dedup_key,
            row.status
        );
        assert_eq!(
            row.status,
            EventStatus::Processed,
            "{}: {:?}",
            row.dedup_key,
            row.error
        );
    }
    assert_eq!(
        rows.len(),
        wanted.len(),
        "one ledger row per acknowledged webhook: {:?}",
        by_status(&rows)
    );
    assert!(
        per_id.values().all(|n| *n == 1),
        "an event id has several rows"
    );
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "dedup keys processed twice: {twice:?}");
    for a in acked {
        let call = store.call(a.company, &a.call_id).await.unwrap();
        assert!(
            call.is_some(),
            "call {} recorded in the CQL store",
            a.call_id
        );
    }
    let per_call = bookings_per_call(fake);
    let booking_calls: Vec<&Acked> = acked.iter().filter(|a| a.books).collect();
    for a in &booking_calls {
        let key = format!("retell-call:{}", a.call_id);
        assert_eq!(
            per_call.get(&key).copied().unwrap_or(0),
            1,
            "exactly one Cal.com booking for {}",
            a.call_id
        );
    }
    assert_eq!(
        per_call.values().sum::<usize>(),
        booking_calls.len(),
        "no other bookings: {per_call:?}"
    );
    let mut scheduled = 0;
    for company in companies {
        let appointments = store.appointments(*company).await.unwrap();
        assert!(
            appointments
                .iter()
                .all(|a| a.status == AppointmentStatus::Scheduled),
            "{appointments:?}"
        );
        scheduled += appointments.len();
    }
    assert_eq!(
        scheduled,
        booking_calls.len(),
        "one appointment per booking call"
    );
}

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

// ---------------------------------------------------------------------------------------------
// 1. end to end

/// Issue test "the foundation and pipeline end-to-end scenarios, run on Kafka plus CQL":
/// `askpro serve` with log = kafka and store = cql (migrating its keyspace at start). Signed
/// webhooks of four tenants (call_started, call_ended, a Cal.com BOOKING_CREATED and a
/// call_analyzed that books at the fake Cal.com) are answered 202, every event ends `processed`
/// in the CQL store (also as `askpro events list` shows it), each booking call is booked
/// exactly once; a re-delivery after completion is answered 200 duplicate, and two deliveries
/// sent back to back (both in the log) still book once.
#[tokio::test]
async fn kafka_cql_serve_end_to_end_books_once_and_records_every_event() {
    with_keyspace(test_contact_points(), |keyspace| async move {
        const TENANTS: usize = 4;
        let names = KafkaNames::new("it-kcql-e2e");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
        let tenants = tenants(store.as_ref(), 41, TENANTS).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(KafkaSetup::new(&names, 4), &keyspace, 10_000);
        let serve = setup.spawn("serve", dir);
        let client = http();
        wait_healthy(&client, &serve).await;

        let mut acked = Vec::new();
        for (i, t) in tenants.iter().enumerate() {
            let call_id = format!("call_kcql_{i}");
            for (event, body, books) in [
                (
                    "call_started",
                    retell_body("call_started", &call_id, &t.phone),
                    false,
                ),
                (
                    "call_ended",
                    retell_body("call_ended", &call_id, &t.phone),
                    false,
                ),
                (
                    "call_analyzed",
                    analyzed(&call_id, &t.phone, &slot(i)),
                    true,
                ),
            ] {
                let answer = post_retell(&client, &serve, t, &body, None).await.unwrap();
                assert_eq!(
                    answer.status, 202,
                    "{event} of tenant {i}: {:?}",
                    answer.body
                );
                acked.push(Acked {
                    event_id: answer.event_id.expect("202 names the event id"),
                    company: t.company,
                    call_id: call_id.clone(),
                    books,
                });
            }
            let body = calcom_created(&format!("uid_kcql_{i}"), "2028-02-01T09:00:00Z");
            let answer = post_calcom(&client, &serve, t, &body).await.unwrap();
            assert_eq!(answer.status, 202, "cal.com webhook: {:?}", answer.body);
            acked.push(Acked {
                event_id: answer.event_id.expect("202 names the event id"),
                company: t.company,
                // Not a Retell call: checked through the ledger only.
                call_id: String::new(),
                books: false,
            });
        }
        wait_processed(store.as_ref(), &acked, Duration::from_secs(90)).await;
        let retell: Vec<Acked> = acked
            .iter()
            .filter(|a| !a.call_id.is_empty())
            .cloned()
            .collect();
        let calcom_ids: BTreeSet<EventId> = acked
            .iter()
            .filter(|a| a.call_id.is_empty())
            .map(|a| a.event_id)
            .collect();
        let rows = ledger(store.as_ref(), &companies).await;
        for row in rows.iter().filter(|r| calcom_ids.contains(&r.id)) {
            assert_eq!(row.event_type, "BOOKING_CREATED", "{row:?}");
        }
        // Exactly once (the Cal.com events are the only rows besides the Retell ones).
        assert_eq!(rows.len(), acked.len(), "{:?}", by_status(&rows));
        assert_exactly_once_retell(store.as_ref(), &fake, &retell, &rows, TENANTS).await;

        // The operator's view: `askpro events list` on the same keyspace.
        let listed = events_cli(dir, &keyspace, tenants[0].company);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(
            listed.iter().all(|e| e["status"] == "processed"),
            "events list: {listed:?}"
        );

        // A re-delivery of a completed call_analyzed: the ingress's dedup check answers
        // 200 duplicate, nothing is booked again.
        let t = &tenants[0];
        let body = analyzed("call_kcql_0", &t.phone, &slot(0));
        let again = post_retell(&client, &serve, t, &body, None).await.unwrap();
        assert_eq!(again.status, 200, "re-delivery: {:?}", again.body);
        assert_eq!(again.body["duplicate"], true, "{:?}", again.body);

        // Two deliveries back to back, before the first is processed: both go into the log,
        // the pipeline's dedup (LWT claim in CQL) lets one book.
        let t = &tenants[1];
        let call_id = "call_kcql_burst";
        let body = analyzed(call_id, &t.phone, &slot(20));
        let (a, b) = futures::join!(
            post_retell(&client, &serve, t, &body, None),
            post_retell(&client, &serve, t, &body, None)
        );
        let mut burst = Vec::new();
        for answer in [a.unwrap(), b.unwrap()] {
            assert!(
                answer.status == 202 || answer.status == 200,
                "{:?}",
                answer.body
            );
            if answer.status == 202 {
                burst.push(answer.event_id.unwrap());
            }
        }
        assert!(!burst.is_empty(), "at least the first delivery is accepted");
        let burst_rows = wait_until(
            "the burst deliveries settle",
            Duration::from_secs(60),
            || async {
                let mut rows = Vec::new();
                for id in &burst {
                    match store
                        .event(t.company, *id)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Some(row) if row.status.is_final() => rows.push(row),
                        other => return Err(format!("{:?}", other.map(|r| r.status))),
                    }
                }
                Ok(rows)
            },
        )
        .await;
        let processed = burst_rows
            .iter()
            .filter(|r| r.status == EventStatus::Processed)
            .count();
        assert_eq!(
            processed,
            1,
            "one of the deliveries is processed, the other is a duplicate: {:?}",
            burst_rows
                .iter()
                .map(|r| (r.status, &r.error))
                .collect::<Vec<_>>()
        );
        assert!(
            burst_rows
                .iter()
                .all(|r| matches!(r.status, EventStatus::Processed | EventStatus::Duplicate)),
            "{burst_rows:?}"
        );
        // Let a wrongly repeated booking show up before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per_call = bookings_per_call(&fake);
        assert_eq!(
            per_call.get("retell-call:call_kcql_0"),
            Some(&1),
            "{per_call:?}"
        );
        assert_eq!(
            per_call.get(&format!("retell-call:{call_id}")),
            Some(&1),
            "the burst booked once: {per_call:?} ({} deliveries accepted)",
            burst.len()
        );
        assert_eq!(
            per_call.values().sum::<usize>(),
            TENANTS + 1,
            "{per_call:?}"
        );
        eprintln!(
            "e2e: {} webhooks processed; burst: {} of 2 deliveries accepted into the log",
            acked.len(),
            burst.len()
        );
        drop(serve);
        names.delete_topics(TIERS).await;
    })
    .await;
}

/// [`assert_exactly_once`] for the Retell events of a ledger that also holds other rows.
async fn assert_exactly_once_retell(
    store: &dyn StateStore,
    fake: &FakeCalcom,
    acked: &[Acked],
    rows: &[EventRow],
    calcom_bookings: usize,
) {
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    let mine: Vec<&EventRow> = rows.iter().filter(|r| wanted.contains(&r.id)).collect();
    assert_eq!(
        mine.len(),
        wanted.len(),
        "one row per acknowledged Retell webhook"
    );
    assert!(
        mine.iter().all(|r| r.status == EventStatus::Processed),
        "{:?}",
        mine.iter()
            .map(|r| (r.status, &r.error))
            .collect::<Vec<_>>()
    );
    let keys: BTreeSet<&str> = mine.iter().map(|r| r.dedup_key.as_str()).collect();
    assert_eq!(keys.len(), mine.len(), "one row per dedup key");
    let companies: Vec<CompanyId> = acked
        .iter()
        .map(|a| a.company)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for a in acked {
        let call = store.call(a.company, &a.call_id).await.unwrap();
        assert!(
            call.is_some(),
            "call {} recorded in the CQL store",
            a.call_id
        );
    }
    let per_call = bookings_per_call(fake);
    let booking_calls: Vec<&Acked> = acked.iter().filter(|a| a.books).collect();
    for a in &booking_calls {
        assert_eq!(
            per_call.get(&format!("retell-call:{}", a.call_id)).copied(),
            Some(1),
            "exactly one Cal.com booking for {}: {per_call:?}",
            a.call_id
        );
    }
    assert_eq!(per_call.values().sum::<usize>(), booking_calls.len());
    // Ours (booked from a call: an idempotency key) and Cal.com's (BOOKING_CREATED: its uid).
    let (mut ours, mut theirs) = (0, 0);
    for company in &companies {
        for a in store.appointments(*company).await.unwrap() {
            assert_eq!(a.status, AppointmentStatus::Scheduled, "{a:?}");
            match &a.idempotency_key {
                Some(key) => {
                    assert!(key.starts_with("retell-call:"), "{a:?}");
                    ours += 1;
                }
                None => {
                    let uid = a.calcom_uid.as_deref().unwrap_or_default();
                    assert!(uid.starts_with("uid_kcql_"), "{a:?}");
                    theirs += 1;
                }
            }
        }
    }
    assert_eq!(
        ours,
        booking_calls.len(),
        "one appointment per booking call"
    );
    assert_eq!(
        theirs, calcom_bookings,
        "one appointment per Cal.com BOOKING_CREATED"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. worker loss

/// One webhook of a stream: every fifth is a `call_analyzed` that books.
fn webhook(prefix: &str, i: usize, t: &Tenant) -> (String, String, bool) {
    let call_id = format!("call_{prefix}_{i}");
    match i.is_multiple_of(5) {
        true => {
            let body = analyzed(&call_id, &t.phone, &slot(i / 5));
            (call_id, body, true)
        }
        false => (
            call_id.clone(),
            retell_body("call_ended", &call_id, &t.phone),
            false,
        ),
    }
}

/// Issue test "worker loss" on Kafka plus CQL: an ingress and two workers sharing one keyspace
/// (no shared data dir: each process has its own), 8 partitions; webhooks (a fifth of them
/// bookings) stream in and one worker is SIGKILLed once a third are acknowledged. The survivor
/// takes over all 8 partitions; every acknowledged webhook is processed exactly once (the CQL
/// ledger) and each booking call is booked exactly once at the fake Cal.com.
#[tokio::test]
async fn kafka_cql_worker_sigkill_mid_stream_every_ack_processed_exactly_once() {
    with_keyspace(test_contact_points(), |keyspace| async move {
        const PARTITIONS: u32 = 8;
        const TENANTS: usize = 16;
        const WEBHOOKS: usize = 300;
        const SENDERS: usize = 8;
        let names = KafkaNames::new("it-kcql-loss");
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig {
            rate_limit_per_min: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let tenants = tenants(store.as_ref(), 42, TENANTS).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(
            KafkaSetup::new(&names, PARTITIONS).with("ASKPRO_BOOKING__RATE_LIMIT_PER_MIN", "6000"),
            &keyspace,
            10_000,
        );
        // A data dir per process: they share only Kafka and the keyspace.
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let ingress = setup.spawn("ingress", dirs[0].path());
        let client = http();
        wait_healthy(&client, &ingress).await;
        let mut doomed = setup.spawn("worker", dirs[1].path());
        let survivor = setup.spawn("worker", dirs[2].path());
        wait_every(
            "the two workers split the 8 partitions",
            Duration::from_secs(60),
            HEALTH_POLL,
            || async {
                let a = assigned(&client, &doomed).await?;
                let b = assigned(&client, &survivor).await?;
                let union: BTreeSet<u32> = a.union(&b).copied().collect();
                match !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && union.len() == 8 {
                    true => Ok(()),
                    false => Err(format!("doomed {a:?}, survivor {b:?}")),
                }
            },
        )
        .await;
        let doomed_had = assigned(&client, &doomed).await.unwrap();

        let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
        let refused = Arc::new(Mutex::new(Vec::<String>::new()));
        let tenants = Arc::new(tenants);
        let sending = {
            let (client, acked, refused, tenants) = (
                client.clone(),
                acked.clone(),
                refused.clone(),
                tenants.clone(),
            );
            let base = ingress.url("");
            tokio::spawn(async move {
                futures::stream::iter(0..WEBHOOKS)
                    .for_each_concurrent(SENDERS, |i| {
                        let (client, acked, refused, tenants) = (
                            client.clone(),
                            acked.clone(),
                            refused.clone(),
                            tenants.clone(),
                        );
                        let base = base.clone();
                        async move {
                            let t = &tenants[i % tenants.len()];
                            let (call_id, body, books) = webhook("kcql_loss", i, t);
                            match post_to(&client, &base, t, &body).await {
                                Ok((202, Some(event_id))) => acked.lock().unwrap().push(Acked {
                                    event_id,
                                    company: t.company,
                                    call_id,
                                    books,
                                }),
                                other => refused
                                    .lock()
                                    .unwrap()
                                    .push(format!("{call_id}: {other:?}")),
                            }
                        }
                    })
                    .await
            })
        };
        wait_until(
            "a third of the stream acknowledged",
            Duration::from_secs(90),
            || async {
                let n = acked.lock().unwrap().len();
                match n >= WEBHOOKS / 3 {
                    true => Ok(()),
                    false => Err(format!("{n} acknowledged")),
                }
            },
        )
        .await;
        let at_kill = acked.lock().unwrap().len();
        let processed_at_kill = ledger(store.as_ref(), &companies)
            .await
            .iter()
            .filter(|r| r.status == EventStatus::Processed)
            .count();
        doomed.signal("KILL");
        doomed.wait_exit(Duration::from_secs(30)).await;
        eprintln!(
            "SIGKILL to the worker owning {doomed_had:?} after {at_kill} acks, \
             {processed_at_kill} processed by then"
        );
        tokio::time::timeout(Duration::from_secs(120), sending)
            .await
            .expect("the stream is sent within 120 s")
            .unwrap();
        let refused = refused.lock().unwrap().clone();
        assert!(
            refused.is_empty(),
            "the ingress acknowledges every webhook while a worker dies: {} refused, e.g. {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len(), WEBHOOKS);
        assert!(
            processed_at_kill < WEBHOOKS,
            "the worker died mid-stream, not after it"
        );

        wait_every(
            "the survivor owns all 8 partitions",
            Duration::from_secs(60),
            HEALTH_POLL,
            || async {
                let now = assigned(&client, &survivor).await?;
                match now == (0..PARTITIONS).collect() {
                    true => Ok(()),
                    false => Err(format!("survivor owns {now:?}")),
                }
            },
        )
        .await;
        wait_processed(store.as_ref(), &acked, Duration::from_secs(120)).await;
        // Let anything still in flight land before checking that nothing else appears.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
        drop((doomed, survivor, ingress));
        names.delete_topics(TIERS).await;
    })
    .await;
}

async fn post_to(
    client: &reqwest::Client,
    base: &str,
    t: &Tenant,
    body: &str,
) -> Result<(u16, Option<EventId>), String> {
    let signature =
        askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), crate::harness::now_ms());
    let response = client
        .post(format!("{base}/webhooks/retell/{}", t.company))
        .header("content-type", "application/json")
        .header("x-retell-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    Ok((
        status,
        body["event_id"].as_str().and_then(|s| s.parse().ok()),
    ))
}

// ---------------------------------------------------------------------------------------------
// 3. store outage

/// A Cassandra of this test only (`scripts/services up cassandra` in a run dir of its own, on
/// free ports). Stopped when dropped, also when the test fails.
struct PrivateCassandra {
    dir: tempfile::TempDir,
    cql_port: u16,
    storage_port: u16,
}

impl PrivateCassandra {
    fn new() -> Self {
        // scripts/test hands tests a scratch dir whose leftovers it stops at the end.
        let base = std::env::var_os("ASKPRO_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("it-cql-outage-")
            .tempdir_in(base)
            .unwrap();
        let cql_port = free_port();
        let mut storage_port = free_port();
        while storage_port == cql_port {
            storage_port = free_port();
        }
        Self {
            dir,
            cql_port,
            storage_port,
        }
    }

    fn contact_points(&self) -> String {
        format!("127.0.0.1:{}", self.cql_port)
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(services_script());
        command
            .args([action, "cassandra"])
            .env("ASKPRO_SERVICES_DIR", self.dir.path())
            .env("ASKPRO_CQL_PORT", self.cql_port.to_string())
            .env(
                "ASKPRO_CASSANDRA_STORAGE_PORT",
                self.storage_port.to_string(),
            );
        command
    }

    async fn run(&self, action: &'static str) {
        let mut command = self.command(action);
        let started = Instant::now();
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("run scripts/services");
        assert!(
            output.status.success(),
            "scripts/services {action} cassandra (port {}) failed: {}{}",
            self.cql_port,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if action == "up" {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                stdout.contains(&format!(
                    "ASKPRO_CQL__CONTACT_POINTS={}",
                    self.contact_points()
                )),
                "up prints the private Cassandra's address: {stdout}"
            );
        }
        eprintln!(
            "private cassandra on {}: {action} took {:?}",
            self.cql_port,
            started.elapsed()
        );
    }
}

impl Drop for PrivateCassandra {
    fn drop(&mut self) {
        match self.command("down").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stopping the private cassandra on port {} failed: {}",
                self.cql_port,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!(
                "stopping the private cassandra on port {}: {e}",
                self.cql_port
            ),
        }
    }
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after "(comm)": state is field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The sum of a counter's lines on a process's `/metrics`.
async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> f64 {
    let text = client
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Issue test "CQL store unreachable", with a private Cassandra stopped and started again
/// (same data dir, so the keyspace survives). While it is down: the ingress keeps answering
/// 202 for tenants in its cache (their webhooks go into the Kafka log) and 503 for a tenant it
/// has not cached; the worker backs off (the store-retry counter grows slowly) without a busy
/// loop (its CPU time over 10 s stays low) and nothing is marked failed. Once Cassandra is back,
/// every acknowledged webhook ends `processed` exactly once and the uncached tenant's re-sent
/// webhook is accepted.
#[tokio::test]
async fn kafka_cql_store_outage_ingress_accepts_workers_back_off_then_recover() {
    let cassandra = PrivateCassandra::new();
    // Fails first without ASKPRO_KAFKA__BROKERS, like every Kafka test (nothing started).
    let names = KafkaNames::new("it-kcql-outage");
    cassandra.run("up").await;
    // The test body holds one reference; this one keeps Cassandra up until the keyspace is
    // dropped, then stops it (also after a failure).
    let cassandra = Arc::new(cassandra);
    let inner = Arc::clone(&cassandra);
    with_keyspace(cassandra.contact_points(), move |keyspace| async move {
        let cassandra = inner;
        const TENANTS: usize = 4;
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
        let tenants = tenants(store.as_ref(), 43, TENANTS + 1).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        // The last tenant never posts before the outage: the ingress has not cached it.
        let (cold, warm) = tenants.split_last().unwrap();
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(
            KafkaSetup::new(&names, 2)
                .with("ASKPRO_INGRESS__TENANT_CACHE_TTL_MS", "600000")
                .with("ASKPRO_PIPELINE__STORE_RETRY_MAX_BACKOFF_MS", "1000"),
            &keyspace,
            2_000,
        );
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let ingress = setup.spawn("ingress", dirs[0].path());
        let client = http();
        wait_healthy(&client, &ingress).await;
        let mut worker = setup.spawn("worker", dirs[1].path());
        wait_healthy(&client, &worker).await;

        let mut n = 0;
        let mut next = |t: &Tenant| {
            n += 1;
            let (call_id, body, books) = webhook("kcql_outage", n, t);
            (call_id, body, books)
        };
        // Before: every warm tenant posts (this also fills the ingress's tenant cache).
        let mut acked = Vec::new();
        for t in warm {
            for _ in 0..3 {
                let (call_id, body, books) = next(t);
                let answer = post_retell(&client, &ingress, t, &body, None)
                    .await
                    .unwrap();
                assert_eq!(answer.status, 202, "before the outage: {:?}", answer.body);
                acked.push(Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books,
                });
            }
        }
        wait_processed(store.as_ref(), &acked, Duration::from_secs(60)).await;

        cassandra.run("down").await;
        let retries_before = metric(&client, &worker, "askproai_store_retries_total").await;
        // During: cached tenants' webhooks are accepted into the log.
        let mut during = Vec::new();
        let started = Instant::now();
        for t in warm {
            for _ in 0..3 {
                let (call_id, body, books) = next(t);
                let sent = Instant::now();
                let answer = post_retell(&client, &ingress, t, &body, None)
                    .await
                    .unwrap();
                assert_eq!(
                    answer.status,
                    202,
                    "{call_id} of a cached tenant while the store is down (after {:?}): {:?}",
                    sent.elapsed(),
                    answer.body
                );
                during.push(Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books,
                });
            }
        }
        eprintln!(
            "store down: {} webhooks of cached tenants answered 202 in {:?}",
            during.len(),
            started.elapsed()
        );
        // A tenant the ingress has not cached cannot be authenticated: 503 (retry later),
        // never a 4xx that would make the provider drop the webhook.
        let (cold_call, cold_body, cold_books) = next(cold);
        let answer = post_retell(&client, &ingress, cold, &cold_body, None)
            .await
            .unwrap();
        eprintln!(
            "store down: uncached tenant answered {} {}",
            answer.status, answer.body
        );
        assert_eq!(
            answer.status, 503,
            "uncached tenant while the store is down: {:?}",
            answer.body
        );

        // No busy loop: the worker's CPU time over 10 s of outage, and its retry rate.
        let ticks = clock_ticks_per_sec();
        let cpu_before = cpu_ticks(worker.pid());
        let window = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let cpu = (cpu_ticks(worker.pid()) - cpu_before) as f64 / ticks as f64;
        let elapsed = window.elapsed().as_secs_f64();
        let retries =
            metric(&client, &worker, "askproai_store_retries_total").await - retries_before;
        eprintln!(
            "store down: worker used {cpu:.2} s CPU in {elapsed:.1} s; {retries} store retries"
        );
        assert!(
            cpu < 0.25 * elapsed,
            "the worker busy-loops while the store is down: {cpu:.2} s CPU in {elapsed:.1} s"
        );
        assert!(
            retries >= 1.0,
            "the worker retries the store while it is down"
        );
        assert!(
            retries < 200.0,
            "the worker retries too often (no backoff): {retries} in ~{:.0} s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            worker.proc.try_wait().unwrap().is_none(),
            "the worker keeps running while the store is down"
        );

        cassandra.run("up").await;
        let restarted = Instant::now();
        acked.extend(during);
        // The uncached tenant's webhook, sent again (as Retell would), is accepted now.
        let cold_ack = wait_until(
            "the uncached tenant is accepted again",
            Duration::from_secs(60),
            || async {
                let answer = post_retell(&client, &ingress, cold, &cold_body, None).await?;
                match answer.status {
                    202 => Ok(answer.event_id.unwrap()),
                    _ => Err(format!("{} {}", answer.status, answer.body)),
                }
            },
        )
        .await;
        acked.push(Acked {
            event_id: cold_ack,
            company: cold.company,
            call_id: cold_call,
            books: cold_books,
        });
        wait_processed(store.as_ref(), &acked, Duration::from_secs(90)).await;
        eprintln!(
            "store back: every acknowledged webhook processed {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
        drop((worker, ingress));
        names.delete_topics(TIERS).await;
    })
    .await;
    drop(cassandra);
}
