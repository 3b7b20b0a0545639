//! `askpro topics create|describe|alter` of the real binary against the real Kafka broker of
//! `scripts/services up kafka`, with unique topic and group names per test. Also the shared
//! helpers of the Kafka tests: [`kafka_brokers`], [`unique_name`], [`KafkaNames`].

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The brokers of the test Kafka, from `ASKPRO_KAFKA__BROKERS`. Panics (fails the test) when
/// unset: Kafka tests never pass silently without a broker.
pub fn kafka_brokers() -> String {
    match std::env::var("ASKPRO_KAFKA__BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => brokers,
        _ => panic!(
            "ASKPRO_KAFKA__BROKERS is not set: this test needs a real Kafka broker. Start one \
             with `eval \"$(scripts/services up kafka)\"` (it exports ASKPRO_KAFKA__BROKERS), \
             or run the suite through scripts/test"
        ),
    }
}

/// `prefix` plus a fresh random suffix: topic and group names no other run shares.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A unique set of AskPro topic and consumer-group names, and the environment that makes the
/// binary use them.
pub struct KafkaNames {
    pub brokers: String,
    pub topic: String,
    pub retry_prefix: String,
    pub dead_letter: String,
    pub group: String,
}

impl KafkaNames {
    pub fn new(prefix: &str) -> Self {
        let base = unique_name(prefix);
        Self {
            brokers: kafka_brokers(),
            topic: format!("{base}.webhooks"),
            retry_prefix: format!("{base}.webhooks.retry-"),
            dead_letter: format!("{base}.webhooks.dlq"),
            group: base,
        }
    }

    pub fn retry_topic(&self, tier: usize) -> String {
        format!("{}{tier}", self.retry_prefix)
    }

    /// `ASKPRO_*` settings for the binary (or for `figment::Jail`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ASKPRO_KAFKA__BROKERS", self.brokers.clone()),
            ("ASKPRO_KAFKA__TOPIC", self.topic.clone()),
            (
                "ASKPRO_KAFKA__RETRY_TOPIC_PREFIX",
                self.retry_prefix.clone(),
            ),
            ("ASKPRO_KAFKA__DEAD_LETTER_TOPIC", self.dead_letter.clone()),
            ("ASKPRO_PIPELINE__CONSUMER_GROUP", self.group.clone()),
        ]
    }

    /// Deletes the topics (best effort; for the end of a test).
    pub async fn delete_topics(&self, tiers: usize) {
        let mut topics = vec![self.topic.clone(), self.dead_letter.clone()];
        topics.extend((1..=tiers).map(|tier| self.retry_topic(tier)));
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let admin: AdminClient<DefaultClientContext> = client(&self.brokers).create().unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = admin.delete_topics(&names, &options).await;
        let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
    }
}

fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// The retry tiers the tests configure (`booking.retry_delays_ms`).
const TIERS: usize = 2;

fn askpro(dir: &Path, names: &KafkaNames, partitions: u32, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .envs(names.env())
        .env("ASKPRO_LOG__PARTITIONS", partitions.to_string())
        .env("ASKPRO_BOOKING__RETRY_DELAYS_MS", "[1000, 5000]")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run askpro")
}

/// Runs a command that must succeed and print one JSON document.
fn json(dir: &Path, names: &KafkaNames, partitions: u32, args: &[&str]) -> Value {
    let out = askpro(dir, names, partitions, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "askpro {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("askpro {args:?} printed no JSON ({e}): {stderr}"))
}

/// Runs a command that must fail; returns its stderr.
fn refused(dir: &Path, names: &KafkaNames, partitions: u32, args: &[&str]) -> String {
    let out = askpro(dir, names, partitions, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "askpro {args:?} should fail: {stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The topic named `name` of a `describe --json` or `create --json` report.
fn topic<'a>(report: &'a Value, name: &str) -> &'a Value {
    let topics = report["topics"].as_array().expect("topics array");
    let found = topics.iter().find(|t| t["topic"] == name);
    found.unwrap_or_else(|| panic!("{name} missing in {report}"))
}

/// One field of every partition of `name`, in partition order.
fn column(report: &Value, name: &str, field: &str) -> Vec<Value> {
    let partitions = topic(report, name)["partitions"].as_array().unwrap();
    partitions.iter().map(|p| p[field].clone()).collect()
}

#[tokio::test]
async fn topics_create_makes_every_topic_once_with_the_partition_count() {
    let names = KafkaNames::new("it-topics-create");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = [
        names.topic.clone(),
        names.retry_topic(1),
        names.retry_topic(2),
        names.dead_letter.clone(),
    ];

    let created = json(dir, &names, 3, &["topics", "create", "--json"]);
    assert_eq!(
        created["topics"].as_array().unwrap().len(),
        all.len(),
        "{created}"
    );
    for name in &all {
        assert_eq!(topic(&created, name)["created"], true, "{created}");
        assert_eq!(topic(&created, name)["partitions"], 3, "{created}");
    }

    let described = json(dir, &names, 3, &["topics", "describe", "--json"]);
    for name in &all {
        let t = topic(&described, name);
        assert_eq!(t["exists"], true, "{t}");
        assert_eq!(t["partition_count"], 3, "{t}");
        assert_eq!(column(&described, name, "partition"), [0, 1, 2], "{t}");
        assert_eq!(column(&described, name, "end"), [0, 0, 0], "{t}");
        assert!(t["partitions"][0]["leader"].is_i64(), "no leader: {t}");
    }
    let retry_group = format!("{}-retry-forwarder", names.group);
    assert_eq!(
        topic(&described, &names.topic)["consumer_group"],
        *names.group
    );
    assert_eq!(
        topic(&described, &names.retry_topic(2))["consumer_group"],
        *retry_group
    );
    assert_eq!(
        topic(&described, &names.dead_letter)["consumer_group"],
        Value::Null
    );
    assert_eq!(topic(&described, &names.retry_topic(1))["role"], "retry");

    // Idempotent: nothing is created again, nothing changes, even with another count.
    let again = json(
        dir,
        &names,
        3,
        &["topics", "create", "--partitions", "5", "--json"],
    );
    for name in &all {
        assert_eq!(topic(&again, name)["created"], false, "{again}");
        assert_eq!(topic(&again, name)["partitions"], 3, "{again}");
    }
    let text = askpro(dir, &names, 3, &["topics", "create"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(stdout.contains("0 created, 4 already existed"), "{stdout}");
    names.delete_topics(TIERS).await;
}

#[tokio::test]
async fn topics_alter_adds_partitions_and_refuses_to_shrink() {
    let names = KafkaNames::new("it-topics-alter");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    json(dir, &names, 2, &["topics", "create", "--json"]);

    let altered = json(
        dir,
        &names,
        2,
        &["topics", "alter", "--partitions", "4", "--json"],
    );
    let main = topic(&altered, &names.topic);
    assert_eq!(main["before"], 2, "{altered}");
    assert_eq!(main["after"], 4, "{altered}");
    assert_eq!(altered["topics"].as_array().unwrap().len(), 1, "{altered}");
    assert!(altered["note"]
        .as_str()
        .unwrap()
        .contains("murmur2(company_id)"));
    let described = json(dir, &names, 2, &["topics", "describe", "--json"]);
    assert_eq!(
        topic(&described, &names.topic)["partition_count"],
        4,
        "{described}"
    );
    assert_eq!(column(&described, &names.topic, "partition"), [0, 1, 2, 3]);
    assert_eq!(
        topic(&described, &names.retry_topic(1))["partition_count"],
        2
    );
    assert_eq!(topic(&described, &names.dead_letter)["partition_count"], 2);

    let fewer = refused(dir, &names, 2, &["topics", "alter", "--partitions", "3"]);
    assert!(fewer.contains("already has 4 partitions"), "{fewer}");
    assert!(fewer.contains(&names.topic), "{fewer}");
    let same = refused(dir, &names, 2, &["topics", "alter", "--partitions", "4"]);
    assert!(same.contains("already has 4 partitions"), "{same}");
    let missing = refused(
        dir,
        &names,
        2,
        &[
            "topics",
            "alter",
            "--partitions",
            "9",
            "--topic",
            "it-no-such-topic-x",
        ],
    );
    assert!(missing.contains("does not exist"), "{missing}");

    // --all brings the retry and dead-letter topics along; the webhook topic has 4 already.
    let all = json(
        dir,
        &names,
        2,
        &["topics", "alter", "--all", "--partitions", "4", "--json"],
    );
    assert_eq!(topic(&all, &names.topic)["changed"], false, "{all}");
    assert_eq!(topic(&all, &names.retry_topic(2))["changed"], true, "{all}");
    assert_eq!(topic(&all, &names.dead_letter)["after"], 4, "{all}");
    let described = json(dir, &names, 2, &["topics", "describe", "--json"]);
    for t in described["topics"].as_array().unwrap() {
        assert_eq!(t["partition_count"], 4, "{t}");
    }

    // The readable output states what the change means for tenants.
    let out = askpro(
        dir,
        &names,
        2,
        &["topics", "alter", "--all", "--partitions", "6"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{}  4 -> 6 partitions", names.topic)),
        "{stdout}"
    );
    assert!(stdout.contains("murmur2(company_id)"), "{stdout}");
    assert!(stdout.contains("drain the lag first"), "{stdout}");
    names.delete_topics(TIERS).await;
}

#[tokio::test]
async fn topics_describe_reports_end_offsets_committed_offsets_and_lag() {
    let names = KafkaNames::new("it-topics-describe");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    json(dir, &names, 2, &["topics", "create", "--json"]);
    let producer: FutureProducer = client(&names.brokers).create().unwrap();
    let sends = [(&names.topic, 0, 5), (&names.topic, 1, 3)];
    let retry = names.retry_topic(1);
    let sends = sends
        .into_iter()
        .chain([(&retry, 1, 2), (&names.dead_letter, 0, 1)]);
    for (topic, partition, count) in sends {
        for i in 0..count {
            let key = format!("company-{i}");
            let record = FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload("{}");
            producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("produce");
        }
    }
    drop(producer);

    let described = json(dir, &names, 2, &["topics", "describe", "--json"]);
    let main = &names.topic;
    assert_eq!(column(&described, main, "low"), [0, 0], "{described}");
    assert_eq!(column(&described, main, "end"), [5, 3], "{described}");
    assert_eq!(
        column(&described, main, "committed"),
        [Value::Null, Value::Null]
    );
    assert_eq!(
        column(&described, main, "lag"),
        [5, 3],
        "nothing committed: lag = end"
    );
    assert_eq!(topic(&described, main)["lag_total"], 8);
    assert_eq!(topic(&described, main)["records"], 8);
    assert_eq!(column(&described, &retry, "lag"), [0, 2], "{described}");
    assert_eq!(column(&described, &names.dead_letter, "end"), [1, 0]);
    assert_eq!(
        column(&described, &names.dead_letter, "lag"),
        [Value::Null, Value::Null]
    );

    commit(&names.brokers, &names.group, main, 0, 2).await;
    let described = json(
        dir,
        &names,
        2,
        &["topics", "describe", "--topic", main, "--json"],
    );
    assert_eq!(
        described["topics"].as_array().unwrap().len(),
        1,
        "{described}"
    );
    assert_eq!(
        column(&described, main, "committed"),
        [Value::from(2), Value::Null]
    );
    assert_eq!(column(&described, main, "lag"), [3, 3], "{described}");
    assert_eq!(topic(&described, main)["lag_total"], 6);
    // The retry forwarder's group is another group: the main group's commit is not its.
    let described = json(
        dir,
        &names,
        2,
        &["topics", "describe", "--topic", &retry, "--json"],
    );
    assert_eq!(
        column(&described, &retry, "committed"),
        [Value::Null, Value::Null]
    );

    let out = askpro(dir, &names, 2, &["topics", "describe"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("partition"))
        .unwrap_or_default();
    for name in ["leader", "low", "end", "committed", "lag"] {
        assert!(header.contains(name), "{name} missing in {stdout}");
    }
    assert!(
        stdout.contains(&format!("{main}  2 partitions, 8 records stored")),
        "{stdout}"
    );
    let total = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "8", "6"],
        "{stdout}"
    );
    names.delete_topics(TIERS).await;
}

/// Commits `offset` for `group` on one partition, as a worker of that group would.
async fn commit(brokers: &str, group: &str, topic: &str, partition: i32, offset: i64) {
    let mut config = client(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let (topic, group) = (topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .unwrap();
        consumer
            .commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit for {group}: {e}"));
        drop(tpl);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn topics_fail_fast_and_clearly_when_kafka_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let names = KafkaNames {
        brokers: "127.0.0.1:1".into(),
        topic: "unreachable.webhooks".into(),
        retry_prefix: "unreachable.webhooks.retry-".into(),
        dead_letter: "unreachable.webhooks.dlq".into(),
        group: "unreachable".into(),
    };
    let started = Instant::now();
    let stderr = refused(tmp.path(), &names, 2, &["topics", "describe"]);
    assert!(
        stderr.contains("cannot reach kafka at 127.0.0.1:1 within 10s"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
