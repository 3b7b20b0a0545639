//! The Kafka log backend end to end, against a real broker (`ASKPRO_KAFKA__BROKERS`): the real
//! binary (`serve`, `ingress`, `worker`) with `log.backend = "kafka"`, signed webhooks over
//! loopback, the `events` ledger of the shared state store, and the topics read back with
//! Kafka's own Java console consumer (an independent client). Also the helpers of
//! `kafka_faults.rs` (worker loss, broker outage).
//!
//! Every test has its own topics and consumer group (random suffix, see
//! [`KafkaNames`]) and its own data dir; short session (6 s) and drain (3 s) timeouts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use askpro::calcom::fake::{FakeCalcom, FakeConfig, FaultUpdate};
use askpro::embedded::EmbeddedStore;
use askpro::signature::{sign_calcom, sign_retell};
use askpro_actors::domain::{AppointmentStatus, EventRow, EventStatus};
use askpro_actors::partition::partition_for;
use askpro_actors::record::{header, RecordMeta};
use askpro_actors::{CompanyId, EventId, Provider, StateStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::booking::{analyzed, connect_calcom};
use crate::crash::{free_port, Proc};
use crate::harness::{now_ms, retell_body, tenant, Tenant};
use crate::kafka_topics::KafkaNames;

/// Retry tiers every test here configures (`booking.retry_delays_ms` has two delays).
pub const TIERS: usize = 2;

// ---------------------------------------------------------------------------------------------
// processes

/// One `askpro` process of a test: killed on drop; its log is printed when the test fails.
pub struct Node {
    pub role: &'static str,
    pub port: u16,
    pub log: PathBuf,
    pub proc: Proc,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Sends `signal` (`TERM`, `KILL`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} ({}) failed",
            self.pid(),
            self.role
        );
    }

    /// Waits (bounded) for the process to exit after a signal; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} (pid {}) still running {limit:?} after the signal; log:\n{}",
                self.role,
                self.pid(),
                tail(&self.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // ASKPRO_IT_KAFKA_LOGS=N prints the last N lines after passing tests too (with
        // --nocapture); a failing test prints the last 150.
        let lines = std::env::var("ASKPRO_IT_KAFKA_LOGS")
            .ok()
            .and_then(|n| n.parse().ok());
        if std::thread::panicking() || lines.is_some() {
            eprintln!(
                "---- {} on port {} (pid {}), last lines of {}:\n{}",
                self.role,
                self.port,
                self.proc.id(),
                self.log.display(),
                tail(&self.log, lines.unwrap_or(150))
            );
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How the binary is configured for Kafka in a test.
pub struct KafkaSetup<'a> {
    pub names: &'a KafkaNames,
    /// Partitions of topics created at start.
    pub partitions: u32,
    /// More `ASKPRO_*` settings (they win over the defaults below).
    pub env: Vec<(&'static str, String)>,
}

impl<'a> KafkaSetup<'a> {
    pub fn new(names: &'a KafkaNames, partitions: u32) -> Self {
        Self {
            names,
            partitions,
            env: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    /// Starts `askpro ROLE` on a free port with the data dir `dir`.
    pub fn spawn(&self, role: &'static str, dir: &Path) -> Node {
        let port = free_port();
        let log = dir.join(format!("{role}-{port}.log"));
        let file = std::fs::File::create(&log).expect("create the process log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_askpro"));
        command
            .args([role, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .current_dir(dir)
            .env_remove("ASKPRO_CONFIG")
            .env("ASKPRO_LOG__BACKEND", "kafka")
            .envs(self.names.env())
            .env("ASKPRO_LOG__PARTITIONS", self.partitions.to_string())
            .env("ASKPRO_KAFKA__SESSION_TIMEOUT_MS", "6000")
            .env("ASKPRO_PIPELINE__DRAIN_TIMEOUT_MS", "3000")
            .env("ASKPRO_KAFKA__METADATA_REFRESH_MS", "1000")
            .env("ASKPRO_PIPELINE__COMMIT_INTERVAL_MS", "100")
            .env("ASKPRO_PIPELINE__FETCH_WAIT_MS", "100")
            .env("ASKPRO_INGRESS__TENANT_CACHE_TTL_MS", "200")
            .env("ASKPRO_BOOKING__RETRY_DELAYS_MS", "[200, 400]")
            .env("ASKPRO_BOOKING__RECONCILE_INTERVAL_MS", "600000")
            .env("ASKPRO_TELEMETRY__LOG_FORMAT", "text")
            .env(
                "RUST_LOG",
                "warn,askpro::kafka=info,askpro::app=info,askpro_actors::partition_consumer=info",
            )
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(file);
        let child = command.spawn().expect("spawn askpro");
        Node {
            role,
            port,
            log,
            proc: Proc(child),
        }
    }
}

/// A client for webhooks and health checks; every request is bounded.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `GET /health` as JSON (whatever the status code), or why not.
pub async fn health(client: &reqwest::Client, node: &Node) -> Result<Value, String> {
    let response = client
        .get(node.url("/health"))
        .send()
        .await
        .map_err(|e| format!("{} /health: {e}", node.role))?;
    let status = response.status();
    let body = response.json::<Value>().await.map_err(|e| e.to_string())?;
    match status.as_u16() {
        200 | 503 => Ok(body),
        other => Err(format!("/health answered {other}: {body}")),
    }
}

/// How often the tests probe `/health` (as an orchestrator's probe would, not in a tight loop:
/// every probe whose group status call times out leaves a `Status` message queued in the worker
/// group's mailbox, see [`GROUP_SILENT`]).
pub const HEALTH_POLL: Duration = Duration::from_secs(1);

/// What a failure shows when `/health` says "worker group did not answer".
pub const GROUP_SILENT: &str = "SUSPECTED BUG (src, not this test): the worker group did not \
     answer /health's 3 s status call. Partition consumers block on a broker round trip \
     (GroupConsumer::end_offset, src/kafka/consumer.rs) on every commit tick and then miss the \
     group's 2 s per-consumer status calls; status messages of timed-out calls stay queued";

/// The partitions a worker owns, from `checks.consumers.assigned` of its `/health`.
pub async fn assigned(client: &reqwest::Client, node: &Node) -> Result<BTreeSet<u32>, String> {
    let body = health(client, node).await?;
    if body["checks"]["consumers"]["error"] == "worker group did not answer" {
        return Err(format!("{GROUP_SILENT}: {}", body["checks"]["consumers"]));
    }
    let list = body["checks"]["consumers"]["assigned"]
        .as_array()
        .ok_or_else(|| format!("no checks.consumers.assigned in {body}"))?;
    Ok(list
        .iter()
        .filter_map(|p| p.as_u64().map(|p| p as u32))
        .collect())
}

/// Waits until the process answers `/health` with 200.
pub async fn wait_healthy(client: &reqwest::Client, node: &Node) {
    wait_every(
        &format!("{} on port {} healthy", node.role, node.port),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let response = client
                .get(node.url("/health"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match response.status().as_u16() {
                200 => Ok(()),
                other => Err(format!(
                    "{other}: {}",
                    response.text().await.unwrap_or_default()
                )),
            }
        },
    )
    .await
}

/// Polls `probe` every 100 ms until it returns `Ok`, for at most `limit`; then fails the test
/// naming `what` and the last thing observed.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_every(what, limit, Duration::from_millis(100), probe).await
}

/// [`wait_until`] polling every `every`.
pub async fn wait_every<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(observed) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last observed: {observed}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tenants and webhooks

/// The state store of a data dir (SQLite, shared with the processes running on it).
pub fn open_store(dir: &Path) -> Arc<dyn StateStore> {
    Arc::new(EmbeddedStore::open(dir).expect("open the state store"))
}

/// `count` tenants with distinct phone numbers `+49301{seed}{i:04}`.
pub async fn tenants(store: &dyn StateStore, seed: u32, count: usize) -> Vec<Tenant> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let phone = format!("+49301{seed:02}{i:04}");
        out.push(tenant(store, &format!("Kafka Tenant {seed}-{i}"), &phone).await);
    }
    out
}

/// What the ingress answered to one webhook.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub event_id: Option<EventId>,
    pub body: Value,
}

/// Posts a signed Retell webhook to the tenant's URL.
pub async fn post_retell(
    client: &reqwest::Client,
    node: &Node,
    t: &Tenant,
    body: &str,
    correlation: Option<uuid::Uuid>,
) -> Result<Answer, String> {
    let signature = sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
    let mut request = client
        .post(node.url(&format!("/webhooks/retell/{}", t.company)))
        .header("content-type", "application/json")
        .header("x-retell-signature", signature)
        .body(body.to_owned());
    if let Some(id) = correlation {
        request = request.header("x-correlation-id", id.to_string());
    }
    answer(request).await
}

/// Posts a signed Cal.com webhook to the tenant's URL.
pub async fn post_calcom(
    client: &reqwest::Client,
    node: &Node,
    t: &Tenant,
    body: &str,
) -> Result<Answer, String> {
    let signature = sign_calcom(&t.calcom_secret, body.as_bytes());
    let request = client
        .post(node.url(&format!("/webhooks/calcom/{}", t.company)))
        .header("content-type", "application/json")
        .header("x-cal-signature-256", signature)
        .body(body.to_owned());
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    let event_id = body["event_id"].as_str().and_then(|s| s.parse().ok());
    Ok(Answer {
        status,
        event_id,
        body,
    })
}

/// A webhook the ingress acknowledged with 202.
#[derive(Clone, Debug)]
pub struct Acked {
    pub event_id: EventId,
    pub company: CompanyId,
    pub call_id: String,
    /// A `call_analyzed` that books at the fake Cal.com.
    pub books: bool,
}

/// Every ledger row of these tenants.
pub async fn ledger(store: &dyn StateStore, companies: &[CompanyId]) -> Vec<EventRow> {
    try_ledger(store, companies)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`ledger`], with a failed read as an error: a store that just came back is reconnecting.
pub async fn try_ledger(
    store: &dyn StateStore,
    companies: &[CompanyId],
) -> Result<Vec<EventRow>, String> {
    let mut rows = Vec::new();
    for company in companies {
        let page = store.events(*company, None, 100_000).await;
        rows.extend(page.map_err(|e| format!("read the events ledger: {e:?}"))?);
    }
    Ok(rows)
}

/// Rows per status, for failure messages.
pub fn by_status(rows: &[EventRow]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(format!("{:?}", row.status)).or_insert(0) += 1;
    }
    counts
}

/// Waits until every acknowledged event has a row with status `processed`; returns the
/// ledger of the tenants then.
pub async fn wait_processed(
    store: &dyn StateStore,
    acked: &[Acked],
    limit: Duration,
) -> Vec<EventRow> {
    let companies: Vec<CompanyId> = acked
        .iter()
        .map(|a| a.company)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    wait_until(
        &format!("{} acknowledged events processed", wanted.len()),
        limit,
        || async {
            let rows = try_ledger(store, &companies).await?;
            let processed = rows
                .iter()
                .filter(|r| r.status == EventStatus::Processed && wanted.contains(&r.id))
                .count();
            if processed == wanted.len() {
                return Ok(rows);
            }
            let failed: Vec<_> = rows
                .iter()
                .filter(|r| r.status == EventStatus::Failed)
                .take(3)
                .map(|r| (r.dedup_key.clone(), r.error.clone()))
                .collect();
            Err(format!(
                "{processed}/{} processed; ledger by status {:?}; failed e.g. {failed:?}",
                wanted.len(),
                by_status(&rows)
            ))
        },
    )
    .await
}

/// A Cal.com `BOOKING_CREATED` for a booking made directly in Cal.com.
pub fn calcom_created(uid: &str, start: &str) -> String {
    json!({
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "payload": {
            "uid": uid, "title": "Beratung", "startTime": start,
            "endTime": start.replace(":00:00Z", ":30:00Z"),
            "attendees": [{"name": "Walk In", "email": "walk@example.org"}],
            "metadata": {},
        }
    })
    .to_string()
}

/// A distinct, valid, future local slot per `i` (one day each, always 10:00 in Berlin).
pub fn slot(i: usize) -> String {
    let day =
        chrono::NaiveDate::from_ymd_opt(2028, 1, 3).unwrap() + chrono::Duration::days(i as i64);
    format!("{} 10:00", day.format("%Y-%m-%d"))
}

// ---------------------------------------------------------------------------------------------
// reading topics back

/// The scripts/services of this checkout, or of the test run (`ASKPRO_TEST_SERVICES`).
pub fn services_script() -> PathBuf {
    match std::env::var_os("ASKPRO_TEST_SERVICES") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services"),
    }
}

/// The end offset (high watermark) of every partition of `topic`, in partition order.
pub async fn topic_ends(brokers: &str, topic: &str) -> Vec<u64> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set(
                "group.id",
                format!("it-kafka-probe-{}", uuid::Uuid::now_v7()),
            )
            .create()
            .expect("create a probe consumer");
        // Right after partitions are added their leaders may not be known yet
        // (NotLeaderForPartition): ask again for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ends_once(&consumer, &topic) {
                Ok(ends) => return ends,
                Err(error) if Instant::now() >= deadline => {
                    panic!("end offsets of {topic} on {brokers}: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .await
    .unwrap()
}

fn ends_once(consumer: &BaseConsumer, topic: &str) -> Result<Vec<u64>, String> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("metadata: {e}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        return Err("the topic does not exist".into());
    }
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| high.max(0) as u64)
                .map_err(|e| format!("watermarks of partition {p}: {e}"))
        })
        .collect()
}

/// The offsets `group` has committed on each partition of `topic` (`None`: nothing yet),
/// read with an OffsetFetch that does not join the group.
pub async fn group_committed(brokers: &str, group: &str, topic: &str) -> Vec<Option<u64>> {
    let partitions = topic_ends(brokers, topic).await.len();
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create an offset reader");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..partitions as i32 {
            list.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
        (0..partitions as i32)
            .map(
                |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) if o >= 0 => Some(o as u64),
                    _ => None,
                },
            )
            .collect()
    })
    .await
    .unwrap()
}

/// Waits until `group` has committed every partition of `topic` up to its end.
pub async fn wait_committed_to_end(brokers: &str, group: &str, topic: &str, limit: Duration) {
    wait_until(
        &format!("group {group} committed {topic} to its end"),
        limit,
        || async {
            let ends = topic_ends(brokers, topic).await;
            let committed = group_committed(brokers, group, topic).await;
            let done = ends
                .iter()
                .zip(&committed)
                .all(|(end, c)| *end == 0 || *c == Some(*end));
            match done {
                true => Ok(()),
                false => Err(format!("ends {ends:?}, committed {committed:?}")),
            }
        },
    )
    .await
}

/// One record as Kafka's console consumer printed it.
#[derive(Clone, Debug)]
pub struct TopicRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub value: String,
}

impl TopicRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The AskPro metadata, decoded from the headers as printed by the Java tool.
    pub fn meta(&self) -> RecordMeta {
        RecordMeta::from_headers(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
            .unwrap_or_else(|e| panic!("record {self:?} has no valid askpro headers: {e}"))
    }
}

const FIELD: &str = "<~F~>";
const HEADERS: &str = "<~H~>";
const RECORD_END: &str = "<~END~>\n";

/// Every record of `topic`, read from the beginning with Kafka's Java console consumer
/// (`scripts/services kafka-tool console-consumer`). Reads exactly as many records as the
/// partitions' end offsets add up to, so a missing or an extra record fails the test.
pub async fn read_topic(brokers: &str, topic: &str) -> Vec<TopicRecord> {
    let total: u64 = topic_ends(brokers, topic).await.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut command = Command::new(services_script());
    command
        .args([
            "kafka-tool",
            "console-consumer",
            "--bootstrap-server",
            brokers,
        ])
        .args(["--topic", topic, "--from-beginning"])
        .args([
            "--max-messages",
            &total.to_string(),
            "--timeout-ms",
            "30000",
        ]);
    for property in [
        "print.key=true".to_owned(),
        "print.headers=true".to_owned(),
        "print.partition=true".to_owned(),
        "print.offset=true".to_owned(),
        format!("key.separator={FIELD}"),
        format!("headers.separator={HEADERS}"),
        format!("line.separator={RECORD_END}"),
    ] {
        command.args(["--formatter-property", &property]);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the kafka console consumer");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let records: Vec<TopicRecord> = stdout
        .split(RECORD_END)
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| parse_printed(chunk).unwrap_or_else(|| panic!("unreadable record {chunk:?}")))
        .collect();
    assert_eq!(
        records.len() as u64,
        total,
        "console consumer read {} of the {total} records of {topic} (exit {:?}); stderr:\n{stderr}",
        records.len(),
        output.status.code()
    );
    records
}

/// `Partition:P<F>Offset:O<F>h1:v1<H>h2:v2<F>KEY<F>VALUE`
fn parse_printed(chunk: &str) -> Option<TopicRecord> {
    let mut fields = chunk.splitn(5, FIELD);
    let partition = fields.next()?.strip_prefix("Partition:")?.parse().ok()?;
    let offset = fields.next()?.strip_prefix("Offset:")?.parse().ok()?;
    let headers = fields.next()?;
    let headers = match headers {
        "NO_HEADERS" => Vec::new(),
        _ => headers
            .split(HEADERS)
            .map(|h| {
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
    };
    let key = fields.next()?.to_owned();
    let value = fields.next()?.to_owned();
    Some(TopicRecord {
        partition,
        offset,
        key,
        headers,
        value,
    })
}

// ---------------------------------------------------------------------------------------------
// tests

/// Issue requirement 1: signed webhooks through `askpro serve` on Kafka are acknowledged, every
/// event is processed, and the topic (read by Kafka's own console consumer) holds exactly the
/// acknowledged records: keyed by company id, the askpro-* headers, the raw body as the value,
/// each tenant on the partition of Java's murmur2 partitioner.
#[tokio::test]
async fn kafka_end_to_end_records_are_keyed_by_tenant_with_headers_and_raw_bodies() {
    const PARTITIONS: u32 = 4;
    let names = KafkaNames::new("it-kafka-e2e");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_store(dir);
    let tenants = tenants(store.as_ref(), 11, 8).await;
    let setup = KafkaSetup::new(&names, PARTITIONS);
    let serve = setup.spawn("serve", dir);
    let client = http();
    wait_healthy(&client, &serve).await;

    // Per tenant: call_started, call_ended (Retell) and a direct booking (Cal.com).
    let mut sent: HashMap<EventId, (CompanyId, String, Option<uuid::Uuid>)> = HashMap::new();
    let mut acked = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        for event in ["call_started", "call_ended"] {
            let call_id = format!("call_e2e_{i}");
            let body = retell_body(event, &call_id, &t.phone);
            let correlation = uuid::Uuid::now_v7();
            let answer = post_retell(&client, &serve, t, &body, Some(correlation))
                .await
                .expect("webhook reaches the ingress");
            assert_eq!(
                answer.status, 202,
                "{event} for tenant {i}: {:?}",
                answer.body
            );
            let id = answer.event_id.expect("202 names the event id");
            sent.insert(id, (t.company, body, Some(correlation)));
            acked.push(Acked {
                event_id: id,
                company: t.company,
                call_id,
                books: false,
            });
        }
        let body = calcom_created(&format!("uid_e2e_{i}"), "2028-02-01T09:00:00Z");
        let answer = post_calcom(&client, &serve, t, &body).await.unwrap();
        assert_eq!(answer.status, 202, "cal.com webhook: {:?}", answer.body);
        let id = answer.event_id.expect("202 names the event id");
        sent.insert(id, (t.company, body, None));
        acked.push(Acked {
            event_id: id,
            company: t.company,
            call_id: format!("uid_e2e_{i}"),
            books: false,
        });
    }

    let rows = wait_processed(store.as_ref(), &acked, Duration::from_secs(60)).await;
    assert_eq!(
        rows.len(),
        acked.len(),
        "one ledger row per acknowledged webhook: {:?}",
        by_status(&rows)
    );
    let rows: HashMap<EventId, EventRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    for (i, t) in tenants.iter().enumerate() {
        let call = store
            .call(t.company, &format!("call_e2e_{i}"))
            .await
            .unwrap();
        assert!(call.is_some(), "call of tenant {i} recorded");
    }

    let records = read_topic(&names.brokers, &names.topic).await;
    assert_eq!(
        records.len(),
        acked.len(),
        "the topic holds exactly the acknowledged records"
    );
    let mut partitions_of: HashMap<CompanyId, BTreeSet<u32>> = HashMap::new();
    for record in &records {
        let meta = record.meta();
        let (company, body, correlation) = sent
            .get(&meta.event_id)
            .unwrap_or_else(|| panic!("record of an event never acknowledged: {record:?}"));
        assert_eq!(record.key, company.to_string(), "keyed by company id");
        assert_eq!(meta.company_id, *company);
        assert_eq!(&record.value, body, "the value is the exact raw body");
        for name in [
            header::EVENT_ID,
            header::PROVIDER,
            header::COMPANY_ID,
            header::EVENT_TYPE,
            header::DEDUP_KEY,
            header::RECEIVED_AT,
            header::CORRELATION_ID,
            header::SECRET_ID,
            header::DISPOSITION,
        ] {
            assert!(record.header(name).is_some(), "{name} missing: {record:?}");
        }
        assert_eq!(record.header(header::DISPOSITION), Some("accept"));
        assert_eq!(record.header(header::ATTEMPT), None, "a first delivery");
        let row = &rows[&meta.event_id];
        assert_eq!(meta.provider, row.provider);
        assert_eq!(meta.event_type, row.event_type);
        assert_eq!(meta.dedup_key, row.dedup_key);
        assert_eq!(meta.correlation_id, row.correlation_id);
        assert_eq!(meta.secret_id, row.secret_id);
        assert_eq!(
            (row.partition, row.offset),
            (record.partition, record.offset),
            "the ledger names the record's Kafka coordinates"
        );
        match meta.provider {
            Provider::Retell => {
                assert_eq!(meta.secret_id, "sec_retell_1");
                assert_eq!(Some(meta.correlation_id), *correlation);
                let call_id = serde_json::from_str::<Value>(body).unwrap()["call"]["call_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(
                    meta.dedup_key,
                    format!("retell:{}:{call_id}", meta.event_type)
                );
            }
            Provider::Calcom => {
                assert_eq!(meta.secret_id, "sec_calcom_1");
                assert_eq!(meta.event_type, "BOOKING_CREATED");
            }
            Provider::RetellApi => panic!("retell-api sends no webhooks"),
        }
        partitions_of
            .entry(*company)
            .or_default()
            .insert(record.partition);
    }
    let mut used = BTreeSet::new();
    for t in &tenants {
        let expected = partition_for(t.company.to_string().as_bytes(), PARTITIONS);
        let seen = &partitions_of[&t.company];
        assert_eq!(
            seen,
            &BTreeSet::from([expected]),
            "all records of {} on partition murmur2(company_id) % {PARTITIONS}",
            t.company
        );
        used.insert(expected);
    }
    assert!(used.len() > 1, "8 tenants spread over several partitions");
    // Processed records are committed: the group's offsets reach the end of every partition.
    wait_committed_to_end(
        &names.brokers,
        &names.group,
        &names.topic,
        Duration::from_secs(30),
    )
    .await;
    drop(serve);
    names.delete_topics(TIERS).await;
}

/// Issue requirement 3: partitions added to the topics of a running worker
/// (`askpro topics alter --all`) are assigned to it within the metadata refresh, new records
/// of tenants that now map to them land there, and they are processed.
#[tokio::test]
async fn kafka_partitions_added_while_running_are_consumed() {
    const BEFORE: u32 = 2;
    const AFTER: u32 = 6;
    let names = KafkaNames::new("it-kafka-scale");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_store(dir);
    let tenants = tenants(store.as_ref(), 12, 24).await;
    let moved = tenants
        .iter()
        .filter(|t| partition_for(t.company.to_string().as_bytes(), AFTER) >= BEFORE)
        .count();
    assert!(
        moved > 0,
        "some tenant maps to a new partition (24 random ids)"
    );
    let setup = KafkaSetup::new(&names, BEFORE);
    let serve = setup.spawn("serve", dir);
    let client = http();
    wait_healthy(&client, &serve).await;
    wait_every(
        "serve owns the 2 partitions",
        Duration::from_secs(60),
        HEALTH_POLL,
        || async {
            let now = assigned(&client, &serve).await?;
            match now == (0..BEFORE).collect() {
                true => Ok(()),
                false => Err(format!("assigned {now:?}")),
            }
        },
    )
    .await;

    let post_round = |round: &'static str| {
        let (client, serve, tenants) = (&client, &serve, &tenants);
        async move {
            let mut acked = Vec::new();
            for (i, t) in tenants.iter().enumerate() {
                let call_id = format!("call_{round}_{i}");
                let body = retell_body("call_ended", &call_id, &t.phone);
                let answer = post_retell(client, serve, t, &body, None).await.unwrap();
                assert_eq!(answer.status, 202, "{round} {i}: {:?}", answer.body);
                acked.push(Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books: false,
                });
            }
            acked
        }
    };
    let before = post_round("before").await;
    wait_processed(store.as_ref(), &before, Duration::from_secs(60)).await;

    let out = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args([
            "topics",
            "alter",
            "--all",
            "--partitions",
            &AFTER.to_string(),
            "--json",
        ])
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .envs(names.env())
        .env("ASKPRO_LOG__PARTITIONS", BEFORE.to_string())
        .env("ASKPRO_BOOKING__RETRY_DELAYS_MS", "[200, 400]")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run askpro topics alter");
    assert!(
        out.status.success(),
        "topics alter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for topic in [
        names.topic.clone(),
        names.retry_topic(1),
        names.retry_topic(2),
        names.dead_letter.clone(),
    ] {
        let ends = topic_ends(&names.brokers, &topic).await;
        assert_eq!(ends.len(), AFTER as usize, "{topic} grown by --all");
    }

    // The running worker notices within its metadata refresh (1 s) and is assigned them.
    wait_every(
        "serve owns all 6 partitions",
        Duration::from_secs(60),
        HEALTH_POLL,
        || async {
            let body = health(&client, &serve).await?;
            let consumers = &body["checks"]["consumers"];
            let now: BTreeSet<u64> = consumers["assigned"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            match now == (0..AFTER as u64).collect() && consumers["status"] == "healthy" {
                true => Ok(()),
                false => Err(format!("consumers {consumers}")),
            }
        },
    )
    .await;
    // The ingress's producer refreshes its metadata on the same 1 s interval: probe with a
    // tenant that moves until its record lands on its new partition.
    let mover = tenants
        .iter()
        .find(|t| partition_for(t.company.to_string().as_bytes(), AFTER) >= BEFORE)
        .unwrap();
    let target = partition_for(mover.company.to_string().as_bytes(), AFTER);
    let mut probes = 0;
    wait_until(
        "the producer routes by the new partition count",
        Duration::from_secs(30),
        || {
            probes += 1;
            let call_id = format!("call_probe_{probes}");
            let (client, serve, store) = (&client, &serve, &store);
            async move {
                let body = retell_body("call_ended", &call_id, &mover.phone);
                let answer = post_retell(client, serve, mover, &body, None).await?;
                let id = answer.event_id.ok_or(format!("{answer:?}"))?;
                let probe = Acked {
                    event_id: id,
                    company: mover.company,
                    call_id,
                    books: false,
                };
                wait_processed(store.as_ref(), &[probe], Duration::from_secs(30)).await;
                let row = store.event(mover.company, id).await.unwrap().unwrap();
                match row.partition == target {
                    true => Ok(()),
                    false => Err(format!(
                        "probe on partition {}, not {target}",
                        row.partition
                    )),
                }
            }
        },
    )
    .await;

    let after = post_round("after").await;
    let rows = wait_processed(store.as_ref(), &after, Duration::from_secs(60)).await;
    let rows: HashMap<EventId, &EventRow> = rows.iter().map(|r| (r.id, r)).collect();
    let mut new_partitions = BTreeSet::new();
    for a in &after {
        let row = rows[&a.event_id];
        let expected = partition_for(a.company.to_string().as_bytes(), AFTER);
        assert_eq!(
            row.partition, expected,
            "{} after the change: murmur2 % {AFTER}",
            a.call_id
        );
        if row.partition >= BEFORE {
            new_partitions.insert(row.partition);
        }
    }
    for a in &before {
        let row = rows.get(&a.event_id).copied();
        let expected = partition_for(a.company.to_string().as_bytes(), BEFORE);
        if let Some(row) = row {
            assert_eq!(row.partition, expected, "{} before the change", a.call_id);
        }
    }
    assert!(
        !new_partitions.is_empty(),
        "records landed on and were consumed from the added partitions"
    );
    // The records are on the added partitions of the topic itself, too.
    let ends = topic_ends(&names.brokers, &names.topic).await;
    let on_new: u64 = ends[BEFORE as usize..].iter().sum();
    assert_eq!(
        on_new as usize,
        moved + 1,
        "exactly the moved tenants' new records (and the last probe) are on partitions \
         >= {BEFORE}: {ends:?}"
    );
    drop(serve);
    names.delete_topics(TIERS).await;
}

/// What the retry tests observe about one event.
struct RetryRun {
    names: KafkaNames,
    tenant: Tenant,
    event: EventRow,
    body: String,
    fake: FakeCalcom,
    store: Arc<dyn StateStore>,
    _serve: Node,
    _dir: tempfile::TempDir,
}

/// One `call_analyzed` through `askpro serve` on Kafka, with the fake Cal.com failing as
/// `faults` says; returns once the event has a final status.
async fn retry_run(prefix: &str, faults: FaultUpdate) -> RetryRun {
    let names = KafkaNames::new(prefix);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    fake.set_faults(faults).unwrap();
    let t = tenants(store.as_ref(), 13, 1).await.remove(0);
    connect_calcom(store.as_ref(), &t, &fake, None).await;
    let setup = KafkaSetup::new(&names, 2)
        // Keep the breaker and the reconciler out of it: this is about the retry schedule.
        .with("ASKPRO_BOOKING__BREAKER_FAILURE_THRESHOLD", "1000")
        .with("ASKPRO_BOOKING__REQUEST_TIMEOUT_MS", "2000");
    let serve = setup.spawn("serve", dir.path());
    let client = http();
    wait_healthy(&client, &serve).await;
    let body = analyzed("call_kafka_retry", &t.phone, &slot(0));
    let answer = post_retell(&client, &serve, &t, &body, None).await.unwrap();
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.event_id.unwrap();
    let event = wait_until("the event settles", Duration::from_secs(60), || async {
        let row = store
            .event(t.company, id)
            .await
            .map_err(|e| e.to_string())?;
        match row {
            Some(row) if row.status.is_final() && row.status != EventStatus::Retrying => Ok(row),
            other => Err(format!(
                "{:?}",
                other.map(|r| (r.status, r.attempts, r.error))
            )),
        }
    })
    .await;
    RetryRun {
        names,
        tenant: t,
        event,
        body,
        fake,
        store,
        _serve: serve,
        _dir: dir,
    }
}

/// Checks a copy of the event in a retry tier, the dead-letter topic or the main topic.
fn assert_copy(run: &RetryRun, record: &TopicRecord, attempt: u32, topic: &str) {
    let meta = record.meta();
    assert_eq!(meta.event_id, run.event.id, "{topic}: {record:?}");
    assert_eq!(
        record.key,
        run.tenant.company.to_string(),
        "{topic}: keyed by company"
    );
    assert_eq!(
        record.value, run.body,
        "{topic}: the raw body travels unchanged"
    );
    assert_eq!(
        record.partition,
        partition_for(run.tenant.company.to_string().as_bytes(), 2),
        "{topic}: the tenant's partition"
    );
    assert_eq!(meta.attempt(), attempt, "{topic}: {record:?}");
    if attempt > 1 {
        assert_eq!(
            record.header(header::ATTEMPT),
            Some(attempt.to_string().as_str()),
            "{topic}"
        );
        let retry = meta.retry.as_ref().expect("retry headers");
        assert!(
            record.header(header::DUE_AT).is_some(),
            "{topic}: askpro-due-at"
        );
        assert!(
            retry.due_at > meta.received_at,
            "{topic}: due after receipt: {record:?}"
        );
        assert!(
            retry.last_error.contains("500"),
            "{topic}: askpro-last-error names the failure: {record:?}"
        );
    } else {
        assert_eq!(
            record.header(header::ATTEMPT),
            None,
            "{topic}: first delivery"
        );
    }
}

/// Issue requirement 5a: Cal.com keeps failing: the event goes through retry tier 1
/// (attempt 2) and tier 2 (attempt 3), each forwarded back to the webhook topic, then to the
/// dead-letter topic, and ends `failed`.
#[tokio::test]
async fn kafka_retry_tiers_then_dead_letter_topic_when_calcom_keeps_failing() {
    let run = retry_run(
        "it-kafka-dlq",
        FaultUpdate {
            error_rate: Some(1.0),
            ..Default::default()
        },
    )
    .await;
    let names = &run.names;
    assert_eq!(run.event.status, EventStatus::Failed, "{:?}", run.event);
    assert_eq!(run.event.attempts, 3, "first run plus two retries");
    let error = run.event.error.clone().unwrap_or_default();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(error.contains("500"), "{error}");

    for (tier, attempt) in [(1, 2), (2, 3)] {
        let topic = names.retry_topic(tier);
        let records = read_topic(&names.brokers, &topic).await;
        assert_eq!(records.len(), 1, "{topic}: {records:?}");
        assert_copy(&run, &records[0], attempt, &topic);
    }
    let dead = read_topic(&names.brokers, &names.dead_letter).await;
    assert_eq!(dead.len(), 1, "dead-letter topic: {dead:?}");
    assert_copy(&run, &dead[0], 3, &names.dead_letter);
    // The forwarders put each retry back on the webhook topic: attempts 1, 2 and 3.
    let main = read_topic(&names.brokers, &names.topic).await;
    let attempts: Vec<u32> = main.iter().map(|r| r.meta().attempt()).collect();
    assert_eq!(attempts, [1, 2, 3], "webhook topic: {main:?}");
    for record in &main {
        assert_copy(&run, record, record.meta().attempt(), &names.topic);
    }
    assert!(run.fake.bookings().is_empty());
    let pending = run.store.appointments(run.tenant.company).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .filter(|a| a.status == AppointmentStatus::PendingSync)
            .count(),
        1,
        "the booking is kept for the reconciler: {pending:?}"
    );
    names.delete_topics(TIERS).await;
}

/// Issue requirement 5b: Cal.com fails once and recovers: the event goes through retry tier
/// 1 only, is booked once on attempt 2 and ends `processed`; tier 2 and the dead-letter topic
/// stay empty.
#[tokio::test]
async fn kafka_retry_tier_recovers_when_calcom_comes_back() {
    let run = retry_run(
        "it-kafka-retry",
        FaultUpdate {
            fail_next: Some(1),
            ..Default::default()
        },
    )
    .await;
    let names = &run.names;
    assert_eq!(run.event.status, EventStatus::Processed, "{:?}", run.event);
    assert_eq!(
        run.event.attempts, 2,
        "failed once, then booked: {:?}",
        run.event
    );
    let records = read_topic(&names.brokers, &names.retry_topic(1)).await;
    assert_eq!(records.len(), 1, "retry tier 1: {records:?}");
    assert_copy(&run, &records[0], 2, &names.retry_topic(1));
    let tier2: u64 = topic_ends(&names.brokers, &names.retry_topic(2))
        .await
        .iter()
        .sum();
    assert_eq!(tier2, 0, "nothing reached retry tier 2");
    let dead: u64 = topic_ends(&names.brokers, &names.dead_letter)
        .await
        .iter()
        .sum();
    assert_eq!(dead, 0, "nothing reached the dead-letter topic");
    let main = read_topic(&names.brokers, &names.topic).await;
    let attempts: Vec<u32> = main.iter().map(|r| r.meta().attempt()).collect();
    assert_eq!(attempts, [1, 2], "webhook topic: {main:?}");
    let bookings = run.fake.bookings();
    assert_eq!(bookings.len(), 1, "booked exactly once: {bookings:?}");
    assert_eq!(
        bookings[0].metadata.get("askpro_key").map(String::as_str),
        Some(
            askpro_actors::handlers::call_booking_key(run.tenant.company, "call_kafka_retry")
                .as_str()
        )
    );
    let appointments = run.store.appointments(run.tenant.company).await.unwrap();
    assert_eq!(appointments.len(), 1);
    assert_eq!(appointments[0].status, AppointmentStatus::Scheduled);
    names.delete_topics(TIERS).await;
}
