//! The Kafka backend when things break, against real brokers: a worker lost mid-stream
//! (SIGTERM and SIGKILL) with a second worker taking over its partitions, and a broker outage
//! (a private broker of this test, stopped and started again with `scripts/services`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use askpro_actors::domain::EventStatus;
use askpro_actors::{CompanyId, EventId};

use crate::harness::retell_body;
use crate::kafka::{
    by_status, group_committed, health, http, ledger, open_store, post_retell, services_script,
    tenants, wait_healthy, wait_processed, Acked, KafkaSetup, TIERS,
};
use crate::kafka_stream::{
    assert_exactly_once, booking_tenants, wait_owns_all, wait_split, webhook, MakeWebhook, Stream,
};
use crate::kafka_topics::KafkaNames;

const PARTITIONS: u32 = 8;

/// Issue requirement 2: ingress + two workers on 8 partitions; one worker is stopped with
/// `signal` while webhooks stream in. Every acknowledged webhook is processed exactly once
/// (one `processed` ledger row per acknowledged event, none failed, one call row, one booking
/// at the fake Cal.com per booking call) and the survivor owns all 8 partitions.
async fn worker_loss(signal: &'static str) {
    const TENANTS: usize = 50;
    const WEBHOOKS: usize = 2000;
    const SENDERS: usize = 12;
    let names = KafkaNames::new(&format!("it-kafka-loss-{}", signal.to_lowercase()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_store(dir);
    let (fake, tenants, companies) = booking_tenants(store.as_ref(), 21, TENANTS).await;

    let setup =
        KafkaSetup::new(&names, PARTITIONS).with("ASKPRO_BOOKING__RATE_LIMIT_PER_MIN", "6000");
    // The ingress first: it creates the topics, so the workers' group starts on 8 partitions.
    let ingress = setup.spawn("ingress", dir);
    let client = http();
    wait_healthy(&client, &ingress).await;
    let mut doomed = setup.spawn("worker", dir);
    let survivor = setup.spawn("worker", dir);
    let doomed_had = wait_split(&client, &doomed, &survivor, PARTITIONS).await;

    // Senders stream webhooks; the doomed worker is stopped once a third are acknowledged.
    let make: MakeWebhook = |i, t| webhook("loss", i, t);
    let stream = Stream::start(&client, &ingress, tenants, WEBHOOKS, SENDERS, make);
    let at_kill = stream.wait_acked(WEBHOOKS / 3).await;
    let processed_at_kill = ledger(store.as_ref(), &companies)
        .await
        .iter()
        .filter(|r| r.status == EventStatus::Processed)
        .count();
    let committed_at_kill = group_committed(&names.brokers, &names.group, &names.topic).await;
    doomed.signal(signal);
    eprintln!(
        "SIG{signal} to the worker owning {doomed_had:?} after {at_kill} acks, \
         {processed_at_kill} processed by then; committed {committed_at_kill:?}"
    );
    let exit = doomed.wait_exit(Duration::from_secs(30)).await;
    if signal == "TERM" {
        assert_eq!(
            exit,
            Some(0),
            "a worker stopped with SIGTERM exits 0 after draining"
        );
    }
    let acked = stream.finish().await;

    // The survivor takes over the lost partitions (SIGKILL: after the 6 s session timeout).
    wait_owns_all(&client, &survivor, PARTITIONS, &format!("{doomed_had:?}")).await;
    wait_processed(store.as_ref(), &acked, Duration::from_secs(120)).await;
    // Let anything still in flight land before checking that nothing else appears.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
    drop((doomed, survivor, ingress));
    names.delete_topics(TIERS).await;
}

#[tokio::test]
async fn kafka_worker_sigterm_mid_stream_survivor_processes_every_ack_exactly_once() {
    worker_loss("TERM").await;
}

#[tokio::test]
async fn kafka_worker_sigkill_mid_stream_survivor_processes_every_ack_exactly_once() {
    worker_loss("KILL").await;
}

// ---------------------------------------------------------------------------------------------
// broker outage

/// A Kafka broker of this test only (`scripts/services up kafka` in a run dir of its own, on
/// free ports). Stopped when dropped, also when the test fails.
struct PrivateBroker {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
}

impl PrivateBroker {
    fn new() -> Self {
        let (port, controller_port) = crate::crash::free_port_pair();
        Self {
            dir: crate::crash::scratch_dir("it-kafka-outage-"),
            port,
            controller_port,
        }
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn services(&self, action: &str) -> std::io::Result<std::process::Output> {
        services(self.dir.path(), self.port, self.controller_port, action)
    }

    async fn run(&self, action: &'static str) {
        let (dir, port, controller_port) =
            (self.dir.path().to_owned(), self.port, self.controller_port);
        let output =
            tokio::task::spawn_blocking(move || services(&dir, port, controller_port, action))
                .await
                .unwrap()
                .expect("run scripts/services");
        assert!(
            output.status.success(),
            "scripts/services {action} kafka (port {port}) failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if action == "up" {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                stdout.contains(&format!("ASKPRO_KAFKA__BROKERS={}", self.brokers())),
                "up prints the private broker's address: {stdout}"
            );
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        match self.services("down") {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stopping the private broker on port {} failed: {}",
                self.port,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("stopping the private broker on port {}: {e}", self.port),
        }
    }
}

/// `scripts/services ACTION kafka` for the broker of run dir `dir`.
fn services(
    dir: &Path,
    port: u16,
    controller_port: u16,
    action: &str,
) -> std::io::Result<std::process::Output> {
    Command::new(services_script())
        .args([action, "kafka"])
        .env("ASKPRO_SERVICES_DIR", dir)
        .env("ASKPRO_KAFKA_PORT", port.to_string())
        .env("ASKPRO_KAFKA_CONTROLLER_PORT", controller_port.to_string())
        .output()
}

/// Issue requirement 4: with the broker down the ingress answers 503, never 2xx; once it is
/// back, webhooks are acknowledged again, every acknowledged webhook (also those acknowledged
/// just before the outage) is processed, and a webhook answered 503 is never processed unless
/// it was sent again.
#[tokio::test]
async fn kafka_broker_outage_answers_503_then_recovers_without_losing_acks() {
    // Fails first without ASKPRO_KAFKA__BROKERS, like every Kafka test (no broker started).
    let mut names = KafkaNames::new("it-kafka-outage");
    let broker = PrivateBroker::new();
    broker.run("up").await;
    names.brokers = broker.brokers();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_store(dir);
    let tenants = tenants(store.as_ref(), 31, 4).await;
    let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
    let setup = KafkaSetup::new(&names, 2)
        .with("ASKPRO_KAFKA__DELIVERY_TIMEOUT_MS", "2000")
        .with("ASKPRO_INGRESS__DURABILITY_TIMEOUT_MS", "3000");
    let serve = setup.spawn("serve", dir);
    let client = http();
    wait_healthy(&client, &serve).await;

    let mut n = 0;
    let mut next = || {
        n += 1;
        let t = &tenants[n % tenants.len()];
        let call_id = format!("call_outage_{n}");
        (
            t,
            call_id.clone(),
            retell_body("call_ended", &call_id, &t.phone),
        )
    };
    // Before: acknowledged, and the broker is stopped right away (some not yet consumed).
    let mut acked = Vec::new();
    for _ in 0..10 {
        let (t, call_id, body) = next();
        let answer = post_retell(&client, &serve, t, &body, None).await.unwrap();
        assert_eq!(answer.status, 202, "before the outage: {:?}", answer.body);
        acked.push(Acked {
            event_id: answer.event_id.unwrap(),
            company: t.company,
            call_id,
            books: false,
        });
    }
    broker.run("down").await;

    // During: every webhook is refused with 503 (the record could not be made durable).
    let mut unacked: Vec<(usize, String, String)> = Vec::new();
    let during: Vec<_> = (0..6).map(|_| next()).collect();
    let refused_since = Instant::now();
    let answers = futures::future::join_all(
        during
            .iter()
            .map(|(t, _, body)| post_retell(&client, &serve, t, body, None)),
    )
    .await;
    for ((t, call_id, body), answer) in during.iter().zip(answers) {
        let answer = answer.expect("the ingress answers while the broker is down");
        assert_eq!(
            answer.status, 503,
            "{call_id} while the broker is down: {:?}",
            answer.body
        );
        let index = tenants.iter().position(|x| x.company == t.company).unwrap();
        unacked.push((index, call_id.clone(), body.clone()));
    }
    eprintln!(
        "broker down: 6 webhooks answered 503 after {:?}",
        refused_since.elapsed()
    );
    let body = health(&client, &serve).await.unwrap();
    assert_eq!(
        body["checks"]["log"]["status"], "unhealthy",
        "/health reports the log unreachable: {body}"
    );

    // After: the same broker (same data) is started again; the ingress recovers.
    broker.run("up").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let first = loop {
        let (t, call_id, body) = next();
        let answer = post_retell(&client, &serve, t, &body, None).await;
        match answer {
            Ok(answer) if answer.status == 202 => {
                break Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books: false,
                }
            }
            Ok(answer) if answer.status == 503 => {
                let index = tenants.iter().position(|x| x.company == t.company).unwrap();
                unacked.push((index, call_id, body));
            }
            other => panic!("{call_id} after the restart: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no webhook acknowledged within 90 s of the broker's restart ({} answered 503)",
            unacked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "broker back: first 202 after {} webhooks answered 503 since the restart",
        unacked.len() - 6
    );
    acked.push(first);
    for _ in 0..10 {
        let (t, call_id, body) = next();
        let answer = post_retell(&client, &serve, t, &body, None).await.unwrap();
        assert_eq!(answer.status, 202, "after the outage: {:?}", answer.body);
        acked.push(Acked {
            event_id: answer.event_id.unwrap(),
            company: t.company,
            call_id,
            books: false,
        });
    }
    // Two of the refused webhooks are sent again (as Retell would) and are accepted now.
    let resent: Vec<(usize, String, String)> = unacked.drain(..2).collect();
    for (index, call_id, body) in &resent {
        let t = &tenants[*index];
        let answer = post_retell(&client, &serve, t, body, None).await.unwrap();
        assert_eq!(answer.status, 202, "re-sent {call_id}: {:?}", answer.body);
        acked.push(Acked {
            event_id: answer.event_id.unwrap(),
            company: t.company,
            call_id: call_id.clone(),
            books: false,
        });
    }

    let rows = wait_processed(store.as_ref(), &acked, Duration::from_secs(90)).await;
    // Let anything still in flight settle before checking that nothing else appears.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows_now = ledger(store.as_ref(), &companies).await;
    assert_eq!(
        rows_now.len(),
        rows.len(),
        "no late rows: {:?}",
        by_status(&rows_now)
    );
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    for row in &rows_now {
        assert!(
            wanted.contains(&row.id),
            "a ledger row for an event never acknowledged: {} {:?} {}",
            row.dedup_key,
            row.status,
            row.id
        );
        assert_eq!(row.status, EventStatus::Processed, "{}", row.dedup_key);
    }
    for (_, call_id, _) in &unacked {
        let key = format!("retell:call_ended:{call_id}");
        let found: Vec<_> = rows_now.iter().filter(|r| r.dedup_key == key).collect();
        assert!(
            found.is_empty(),
            "{call_id} was answered 503 and never re-sent, yet it is in the ledger: {found:?}"
        );
    }
    for (_, call_id, _) in &resent {
        let key = format!("retell:call_ended:{call_id}");
        let found = rows_now.iter().filter(|r| r.dedup_key == key).count();
        assert_eq!(found, 1, "{call_id} re-sent after a 503: processed once");
    }
    drop(serve);
    names.delete_topics(TIERS).await;
}
