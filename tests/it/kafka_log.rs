//! The Kafka adapter against the real broker: the [`EventLog`] conformance checks that fit a
//! consumer-group member, plus what only Kafka has: offsets stored through the member and
//! committed on revoke, records without AskPro headers moved to the dead-letter topic, and
//! pause/resume losing nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askpro::config::{Config, LogBackend};
use askpro::kafka::{AssignmentListener, KafkaBackend, KafkaLog};
use askpro_actors::ids::CompanyId;
use askpro_actors::partition::partition_for;
use askpro_actors::record::Disposition;
use askpro_actors::EventLog;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use crate::harness::test_config;
use crate::kafka_topics::KafkaNames;
use crate::log_contract;

/// Records what the member was given.
#[derive(Default)]
struct Recorder {
    assigned: Mutex<BTreeSet<u32>>,
}

impl AssignmentListener for Recorder {
    fn assigned(&self, partitions: Vec<u32>) {
        self.assigned.lock().unwrap().extend(partitions);
    }

    fn revoked(&self, partitions: Vec<u32>) {
        let mut assigned = self.assigned.lock().unwrap();
        for p in partitions {
            assigned.remove(&p);
        }
    }
}

struct Member {
    backend: KafkaBackend,
    names: KafkaNames,
    _dir: tempfile::TempDir,
}

impl Member {
    fn log(&self) -> Arc<KafkaLog> {
        Arc::clone(&self.backend.main)
    }
}

fn config(names: &KafkaNames, dir: &std::path::Path, partitions: u32) -> Config {
    let mut config = test_config(dir);
    config.log.backend = LogBackend::Kafka;
    config.log.partitions = partitions;
    config.kafka.brokers = names.brokers.clone();
    config.kafka.topic = names.topic.clone();
    config.kafka.retry_topic_prefix = names.retry_prefix.clone();
    config.kafka.dead_letter_topic = names.dead_letter.clone();
    config.kafka.session_timeout_ms = 6_000;
    config.pipeline.drain_timeout_ms = 3_000;
    config.pipeline.consumer_group = names.group.clone();
    config
}

/// One group member owning every partition of a fresh topic.
async fn member(partitions: u32) -> Member {
    let names = KafkaNames::new("askpro-it-log");
    let dir = tempfile::tempdir().unwrap();
    let config = config(&names, dir.path(), partitions);
    let backend = KafkaBackend::open(&config, true).await.expect("open kafka");
    let recorder = Arc::new(Recorder::default());
    let consumer = backend.main.consumer().expect("consumes").clone();
    consumer.start(recorder.clone()).expect("joins the group");
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.assigned.lock().unwrap().len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "never assigned all {partitions} partitions: {:?}",
            recorder.assigned.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Member {
        backend,
        names,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_passes_the_conformance_checks_a_group_member_can() {
    let m = member(4).await;
    let log = m.log();
    assert_eq!(log.partitions(), 4);
    log_contract::append_places_records_by_partition_for(log.as_ref()).await;
    log_contract::a_tenant_keeps_its_order(log.as_ref()).await;
    log_contract::headers_round_trip_every_disposition(log.as_ref()).await;
    log_contract::fetch_from_an_offset_respects_max(log.as_ref()).await;
    log_contract::fetch_waits_for_an_append(log.as_ref()).await;
    log_contract::end_offset_tracks_appends(log.as_ref()).await;
    m.backend.main.consumer().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_offsets_are_committed_for_the_group() {
    let m = member(2).await;
    let log = m.log();
    let tenant = CompanyId::new();
    let p = partition_for(tenant.to_string().as_bytes(), 2);
    let records = (0..5)
        .map(|i| log_contract::record(tenant, &i.to_string(), Disposition::Accept))
        .collect();
    log.append(records).await.unwrap();
    let group = m.names.group.clone();
    assert_eq!(log.committed(&group, p).await.unwrap(), None);
    let wrong = log.commit("another-group", p, 3).await.unwrap_err();
    assert!(wrong.to_string().contains("another-group"), "{wrong}");
    log.commit(&group, p, 3).await.unwrap();
    // librdkafka commits stored offsets every second; the value must reach the broker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if log.committed(&group, p).await.unwrap() == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "offset 3 never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    m.backend.main.consumer().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_askpro_headers_goes_to_the_dead_letter_topic_and_the_partition_moves_on()
{
    let m = member(1).await;
    let log = m.log();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &m.names.brokers)
        .create()
        .unwrap();
    let foreign = FutureRecord::to(&m.names.topic)
        .key("someone-else")
        .payload("not a webhook");
    producer
        .send(foreign, Duration::from_secs(10))
        .await
        .expect("foreign record written");
    let tenant = CompanyId::new();
    let ours = log_contract::record(tenant, "ours", Disposition::Accept);
    log.append(vec![ours]).await.unwrap();

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.is_empty() {
        assert!(Instant::now() < deadline, "our record never arrived");
        seen = log
            .fetch(0, 0, 10, Duration::from_millis(500))
            .await
            .unwrap();
    }
    assert_eq!(seen.len(), 1, "only our record is delivered");
    assert_eq!(
        seen[0].offset, 1,
        "the foreign record (offset 0) was skipped"
    );
    assert_eq!(&seen[0].value[..], b"ours");

    let dlq = read_one(&m.names.brokers, &m.names.dead_letter).await;
    assert_eq!(dlq.0.as_deref(), Some(&b"not a webhook"[..]));
    let reason = dlq.1.expect("reason header");
    assert!(reason.contains("missing"), "{reason}");
    m.backend.main.consumer().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_partition_loses_nothing_when_resumed() {
    let m = member(1).await;
    let log = m.log();
    let tenant = CompanyId::new();
    let first: Vec<_> = (0..3)
        .map(|i| log_contract::record(tenant, &format!("a{i}"), Disposition::Accept))
        .collect();
    log.append(first).await.unwrap();
    let got = log.fetch(0, 0, 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    log.pause(0);
    let more: Vec<_> = (0..3)
        .map(|i| log_contract::record(tenant, &format!("b{i}"), Disposition::Accept))
        .collect();
    log.append(more).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    log.resume(0);
    let mut bodies = Vec::new();
    let mut next = 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 5 {
        assert!(Instant::now() < deadline, "only got {bodies:?}");
        for r in log
            .fetch(0, next, 10, Duration::from_millis(500))
            .await
            .unwrap()
        {
            next = r.offset + 1;
            bodies.push(String::from_utf8(r.value.to_vec()).unwrap());
        }
    }
    assert_eq!(bodies, ["a1", "a2", "b0", "b1", "b2"]);
    m.backend.main.consumer().unwrap().shutdown().await;
}

/// The first record of `topic` (value, askpro-foreign-reason header), read independently.
async fn read_one(brokers: &str, topic: &str) -> (Option<Vec<u8>>, Option<String>) {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic}-reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let found = loop {
            assert!(Instant::now() < deadline, "nothing on {topic}");
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                use rdkafka::message::Headers;
                let reason = message.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "askpro-foreign-reason")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                break (message.payload().map(<[u8]>::to_vec), reason);
            }
        };
        drop(consumer);
        found
    })
    .await
    .unwrap()
}
