//! `askpro bench-producer`: how fast the Kafka producer makes the ingress's records durable,
//! with what delivery latency, and whether every tenant's order survives.
//!
//! The records are the ones the ingress appends for signed Retell `call_ended` webhooks: a
//! body of loadgen's size and shape, the AskPro headers of [`RecordMeta::to_headers`],
//! keyed by company id, round robin over `--tenants` tenants. They go to `--topic` (created
//! with `--partitions` when missing) over one producer with [`KafkaProducer`]'s settings
//! (idempotent, acks=all, murmur2_random, `kafka.linger_ms`, `batch_size`, `compression`):
//!
//! - `producer`: through [`KafkaProducer::send`] in batches of `--batch` records, `--batches`
//!   calls outstanding at once, as the ingress's group commit calls it;
//! - `raw`: one `FutureProducer::send_result` per record, up to `--in-flight` deliveries
//!   outstanding, nothing of ours in between: the ceiling.
//!
//! Every record's call id carries a run-wide sequence number (`call_bp_<seq>`, 32 digits as
//! loadgen's call ids have 32 hex digits, so the body is byte for byte as long), which is in
//! the body and in the dedup-key header. After sending, the topic is read back from where this
//! run started: each tenant must be on one partition (the one [`partition_for`] names), its
//! sequence numbers strictly increasing in offset order, and no record missing or repeated.
//! `--check-only` reads a topic someone else wrote (the ingress's) from the start and checks
//! the partition rule, duplicates and the count.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use askpro_actors::partition::partition_for;
use askpro_actors::record::{header, Disposition, LogRecord, Provider, RecordMeta};
use askpro_actors::{CompanyId, EventId};
use bytes::Bytes;
use chrono::Utc;
use clap::builder::RangedU64ValueParser;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client_config;
use super::producer::KafkaProducer;
use crate::config::Config;
use crate::loadgen::LatencySummary;

/// Stands in for the call id while a tenant's body template is serialised.
const PLACEHOLDER: &str = "__bench_call_id__";
/// Call ids are `call_bp_<seq>`; the sequence number is read back from the dedup key.
const CALL_PREFIX: &str = "call_bp_";
/// Bound on metadata, watermark and admin requests.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading the topic back.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(180);

/// Which sender(s) `askpro bench-producer` times.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `producer`, then `raw`, on the same topic.
    Both,
    /// `KafkaProducer::send` in batches (the ingress's path).
    Producer,
    /// A bare `FutureProducer::send_result` loop (the ceiling).
    Raw,
}

/// Flags of `askpro bench-producer`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchProducerArgs {
    /// Topic to write; created with --partitions when missing. Use a fresh name per run.
    #[arg(long)]
    pub topic: String,
    /// Records each sender sends (timed; one untimed warm-up record per tenant comes first).
    #[arg(long, default_value_t = 40_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    pub count: u64,
    /// Tenants (company ids, the record keys) the records are spread over, round robin.
    #[arg(long, default_value_t = 50, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub tenants: usize,
    /// Partitions of the topic when this creates it (default: log.partitions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: Option<u32>,
    /// `raw`: deliveries outstanding at once.
    #[arg(long, default_value_t = 8_192, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub in_flight: usize,
    /// `producer`: records per `KafkaProducer::send` call.
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub batch: usize,
    /// `producer`: calls outstanding at once (the ingress's default for Kafka is 8).
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub batches: usize,
    /// Which sender(s) to time.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Do not read the topic back (no ordering check).
    #[arg(long)]
    pub no_verify: bool,
    /// Send nothing: read --topic from the start and check that each tenant (askpro-company-id
    /// header) is on one partition and no dedup key repeats.
    #[arg(long)]
    pub check_only: bool,
    /// With --check-only: the number of records the topic must hold.
    #[arg(long)]
    pub expect: Option<u64>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The producer settings in effect (those of [`KafkaProducer`]).
#[derive(Debug, Serialize)]
pub struct ProducerSettings {
    pub acks: &'static str,
    pub idempotence: bool,
    pub partitioner: &'static str,
    pub linger_ms: u64,
    pub batch_size: u64,
    pub compression: String,
}

/// One sender's run.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub sender: &'static str,
    /// `--batch`×`--batches` or `--in-flight`.
    pub window: String,
    pub delivered: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    /// Per record, from handing it to the producer to its delivery report (for `producer`:
    /// the whole `send` call, as an ingress caller waits for it).
    pub latency_us: LatencySummary,
}

/// What reading the topic back found.
#[derive(Debug, Serialize)]
pub struct OrderingReport {
    /// `ok`, `violated` or `incomplete` (fewer records than expected within the time bound).
    pub status: &'static str,
    pub records_read: u64,
    pub expected: Option<u64>,
    pub tenants: usize,
    pub partitions_used: usize,
    /// Records whose dedup key was seen before on this topic (since the start offsets).
    pub duplicates: u64,
    /// Records without AskPro headers.
    pub foreign: u64,
    /// Checked only for this tool's own records (`call_bp_<seq>` call ids).
    pub sequence_checked: bool,
    pub first_violation: Option<String>,
    pub read_secs: f64,
    pub read_per_sec: f64,
}

/// The result of `askpro bench-producer`.
#[derive(Debug, Serialize)]
pub struct BenchProducerReport {
    pub brokers: String,
    pub topic: String,
    pub partitions: u32,
    pub tenants: usize,
    pub body_bytes: usize,
    pub settings: ProducerSettings,
    pub producer: Option<PhaseReport>,
    pub raw: Option<PhaseReport>,
    /// `producer` records/s divided by `raw` records/s.
    pub producer_to_raw: Option<f64>,
    pub ordering: Option<OrderingReport>,
}

impl BenchProducerReport {
    pub fn render_text(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "kafka producer at {}: topic {} ({} partitions), {} tenants, {} B bodies\n  \
             acks={} idempotence={} partitioner={} linger.ms={} batch.size={} compression={}\n",
            self.brokers,
            self.topic,
            self.partitions,
            self.tenants,
            self.body_bytes,
            s.acks,
            s.idempotence,
            s.partitioner,
            s.linger_ms,
            s.batch_size,
            s.compression,
        );
        for phase in [&self.producer, &self.raw].into_iter().flatten() {
            let l = &phase.latency_us;
            out.push_str(&format!(
                "  {:<8} {:>7} delivered, {} failed in {:.2} s = {:.0} records/s  \
                 (window {})\n           latency p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  \
                 p99.9 {:.2} ms  max {:.2} ms\n",
                phase.sender,
                phase.delivered,
                phase.failed,
                phase.elapsed_secs,
                phase.records_per_sec,
                phase.window,
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
            ));
            if let Some(error) = &phase.first_error {
                out.push_str(&format!("           first error: {error}\n"));
            }
        }
        if let Some(ratio) = self.producer_to_raw {
            out.push_str(&format!("  producer/raw {:.0} %\n", ratio * 100.0));
        }
        if let Some(o) = &self.ordering {
            out.push_str(&format!(
                "  ordering: {}  ({} records read in {:.2} s = {:.0}/s; {} tenants on {} \
                 partitions; {} duplicates; sequence {})\n",
                o.status,
                o.records_read,
                o.read_secs,
                o.read_per_sec,
                o.tenants,
                o.partitions_used,
                o.duplicates,
                if o.sequence_checked {
                    "checked"
                } else {
                    "not checked"
                },
            ));
            if let Some(v) = &o.first_violation {
                out.push_str(&format!("  first violation: {v}\n"));
            }
        }
        out.trim_end().to_owned()
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs `askpro bench-producer` and prints its report.
pub async fn run(config: &Config, args: BenchProducerArgs) -> Result<()> {
    let report = bench_producer(config, &args).await?;
    match args.json {
        true => crate::cli::print_line(serde_json::to_string_pretty(&report)?)?,
        false => crate::cli::print_line(report.render_text())?,
    }
    let ordering_ok = report.ordering.as_ref().is_none_or(|o| o.status == "ok");
    let failed: u64 = [&report.producer, &report.raw]
        .into_iter()
        .flatten()
        .map(|p| p.failed)
        .sum();
    if !ordering_ok || failed > 0 {
        bail!("bench-producer found failed deliveries or an ordering violation (see the report)");
    }
    Ok(())
}

/// Sends (unless `--check-only`), reads back (unless `--no-verify`) and reports.
pub async fn bench_producer(
    config: &Config,
    args: &BenchProducerArgs,
) -> Result<BenchProducerReport> {
    let kafka = &config.kafka;
    let wanted = args.partitions.unwrap_or(config.log.partitions);
    if !args.check_only {
        ensure_topic(config, &args.topic, wanted).await?;
    }
    let partitions = partition_count(config, &args.topic).await?;
    let starts = watermarks(config, &args.topic, partitions, !args.check_only).await?;
    let corpus = Corpus::new(args.tenants);
    let mut report = BenchProducerReport {
        brokers: kafka.brokers.clone(),
        topic: args.topic.clone(),
        partitions,
        tenants: args.tenants,
        body_bytes: corpus.record(0).value.len(),
        settings: ProducerSettings {
            acks: "all",
            idempotence: true,
            partitioner: "murmur2_random",
            linger_ms: kafka.linger_ms,
            batch_size: kafka.batch_size,
            compression: kafka.compression.clone(),
        },
        producer: None,
        raw: None,
        producer_to_raw: None,
        ordering: None,
    };
    let mut sent = 0_u64;
    if !args.check_only {
        let producer = KafkaProducer::new(kafka, "askpro-bench-producer")?;
        // Untimed: the producer id, metadata and connections are set up by the first sends.
        let warmup: Vec<LogRecord> = (0..args.tenants as u64).map(|s| corpus.record(s)).collect();
        producer
            .send(&args.topic, &warmup)
            .await
            .context("warm-up send")?;
        sent = warmup.len() as u64;
        if matches!(args.mode, Mode::Both | Mode::Producer) {
            let records = (sent..sent + args.count)
                .map(|s| corpus.record(s))
                .collect();
            sent += args.count;
            report.producer = Some(send_batched(&producer, &args.topic, records, args).await);
        }
        if matches!(args.mode, Mode::Both | Mode::Raw) {
            let records = (sent..sent + args.count)
                .map(|s| RawRecord::new(corpus.record(s)))
                .collect();
            sent += args.count;
            report.raw = Some(send_raw(producer.client(), &args.topic, records, args).await);
        }
        producer.flush();
    }
    if let (Some(p), Some(r)) = (&report.producer, &report.raw) {
        report.producer_to_raw = Some(p.records_per_sec / r.records_per_sec.max(1e-9));
    }
    if !args.no_verify {
        let expected = match args.check_only {
            true => args.expect,
            false => Some(sent),
        };
        let ends = watermarks(config, &args.topic, partitions, true).await?;
        let ranges: Vec<(i32, i64, i64)> = (0..partitions as i32)
            .map(|p| (p, starts[p as usize], ends[p as usize]))
            .collect();
        report.ordering = Some(verify(config, &args.topic, ranges, expected, args.quiet).await?);
    }
    Ok(report)
}

/// The tenants and their body templates.
struct Corpus {
    tenants: Vec<(CompanyId, Vec<u8>, Vec<u8>)>,
    secret_id: String,
}

impl Corpus {
    fn new(tenants: usize) -> Self {
        let now_ms = Utc::now().timestamp_millis();
        let tenants = (0..tenants)
            .map(|i| {
                let (head, tail) = body_template(i, now_ms);
                (CompanyId::new(), head, tail)
            })
            .collect();
        Self {
            tenants,
            secret_id: format!("sec_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// Record number `seq` (run-wide), for tenant `seq % tenants`, as the ingress builds it.
    fn record(&self, seq: u64) -> LogRecord {
        let (company_id, head, tail) = &self.tenants[(seq % self.tenants.len() as u64) as usize];
        let call_id = format!("{CALL_PREFIX}{seq:032}");
        let mut body = Vec::with_capacity(head.len() + call_id.len() + tail.len());
        body.extend_from_slice(head);
        body.extend_from_slice(call_id.as_bytes());
        body.extend_from_slice(tail);
        LogRecord {
            meta: RecordMeta {
                event_id: EventId::new(),
                provider: Provider::Retell,
                company_id: *company_id,
                event_type: "call_ended".to_owned(),
                dedup_key: format!("retell:call_ended:{call_id}"),
                received_at: Utc::now(),
                correlation_id: uuid::Uuid::now_v7(),
                secret_id: self.secret_id.clone(),
                disposition: Disposition::Accept,
                retry: None,
            },
            value: Bytes::from(body),
        }
    }
}

/// A Retell `call_ended` body like loadgen's (same fields, transcript and size), split
/// around the call id.
fn body_template(tenant: usize, now_ms: i64) -> (Vec<u8>, Vec<u8>) {
    const TRANSCRIPT: [(&str, &str); 6] = [
        ("agent", "Guten Tag! Wie kann ich Ihnen helfen? Möchten Sie einen neuen Termin buchen oder einen bestehenden Termin ändern?"),
        ("user", "Ja, ich hätte gern einen Herrenhaarschnitt für morgen."),
        ("agent", "Gern. Zu welcher Uhrzeit passt es Ihnen?"),
        ("user", "Sechzehn Uhr, bitte. Mein Name ist Hans Robert."),
        ("agent", "Einen Moment bitte, ich prüfe die Verfügbarkeit für Sie..."),
        ("agent", "Ihr Termin morgen um 16 Uhr ist gebucht. Auf Wiederhören!"),
    ];
    let transcript: String = TRANSCRIPT
        .iter()
        .map(|(role, text)| {
            let role = if *role == "agent" { "Agent" } else { "User" };
            format!("{role}: {text}\n")
        })
        .collect();
    let utterances: Vec<_> = TRANSCRIPT
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let (start, end) = (now_ms - 95_000, now_ms - 2_000);
    let body = json!({
        "event": "call_ended",
        "call": {
            "call_id": PLACEHOLDER,
            "call_type": "phone_call",
            "agent_id": format!("agent_bp_{tenant:026x}"),
            "agent_version": 42,
            "agent_name": "Loadgen Agent Friseur",
            "retell_llm_dynamic_variables": {
                "twilio-callsid": "CA1d3fb8cf78c5bf74a1188ab480ad4265",
                "twilio-accountsid": "AC008891bccf7c7e2f363eba6ae63d3f00"
            },
            "collected_dynamic_variables": {
                "previous_node": "Termin buchen",
                "current_node": "Ende"
            },
            "call_status": "ended",
            "start_timestamp": start,
            "end_timestamp": end,
            "duration_ms": end - start,
            "transcript": transcript,
            "transcript_object": utterances,
            "disconnection_reason": "user_hangup",
            "opt_out_sensitive_data_storage": false,
            "from_number": format!("+49151{:08}", 10_000_000 + tenant % 10_000_000),
            "to_number": format!("+4930{:08}", 30_000_000 + tenant % 10_000_000),
            "direction": "inbound"
        }
    });
    let json = serde_json::to_vec(&body).expect("a json value serialises");
    let hole = PLACEHOLDER.as_bytes();
    let at = json
        .windows(hole.len())
        .position(|w| w == hole)
        .expect("the template holds the placeholder");
    (json[..at].to_vec(), json[at + hole.len()..].to_vec())
}

/// Delivered and failed counts, read by the progress printer.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Tallies one sender's outcomes.
struct Tally {
    histogram: Histogram<u64>,
    progress: Arc<Progress>,
    first_error: Option<String>,
}

impl Tally {
    fn new(progress: Arc<Progress>) -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            progress,
            first_error: None,
        }
    }

    fn delivered(&mut self, latency: Duration, records: u64) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.histogram.record_n(us.min(600_000_000), records);
        self.progress
            .delivered
            .fetch_add(records, Ordering::Relaxed);
    }

    fn failed(&mut self, error: String, records: u64) {
        self.first_error.get_or_insert(error);
        self.progress.failed.fetch_add(records, Ordering::Relaxed);
    }

    fn finish(self, sender: &'static str, window: String, elapsed: Duration) -> PhaseReport {
        let h = &self.histogram;
        let delivered = self.progress.delivered.load(Ordering::Relaxed);
        let elapsed_secs = elapsed.as_secs_f64().max(1e-9);
        PhaseReport {
            sender,
            window,
            delivered,
            failed: self.progress.failed.load(Ordering::Relaxed),
            first_error: self.first_error,
            elapsed_secs,
            records_per_sec: delivered as f64 / elapsed_secs,
            latency_us: match h.is_empty() {
                true => LatencySummary::default(),
                false => LatencySummary {
                    p50: h.value_at_quantile(0.50),
                    p95: h.value_at_quantile(0.95),
                    p99: h.value_at_quantile(0.99),
                    p999: h.value_at_quantile(0.999),
                    max: h.max(),
                    mean: h.mean(),
                },
            },
        }
    }
}

/// Prints delivered records/s on stderr every second until `stop`.
fn spawn_progress(sender: &'static str, progress: Arc<Progress>, stop: CancellationToken) {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let delivered = progress.delivered.load(Ordering::Relaxed);
            let failed = progress.failed.load(Ordering::Relaxed);
            eprintln!(
                "bench-producer {sender}: {:>5.1} s  delivered {delivered} ({}/s)  failed {failed}",
                started.elapsed().as_secs_f64(),
                delivered - last,
            );
            last = delivered;
        }
    });
}

/// `KafkaProducer::send` in batches, `--batches` calls outstanding.
async fn send_batched(
    producer: &KafkaProducer,
    topic: &str,
    records: Vec<LogRecord>,
    args: &BenchProducerArgs,
) -> PhaseReport {
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    if !args.quiet {
        spawn_progress("producer", Arc::clone(&progress), stop.clone());
    }
    let mut tally = Tally::new(progress);
    let mut outstanding = FuturesUnordered::new();
    let mut records = records.into_iter();
    let started = Instant::now();
    loop {
        let batch: Vec<LogRecord> = records.by_ref().take(args.batch).collect();
        if batch.is_empty() {
            break;
        }
        let (producer, topic) = (producer.clone(), topic.to_owned());
        let mut send = Box::pin(async move {
            let sent = Instant::now();
            let result = producer.send(&topic, &batch).await;
            (result.map(|_| ()), sent.elapsed(), batch.len() as u64)
        });
        // The first poll hands every record of the batch to librdkafka, so batches are
        // queued in sequence order (the order check relies on it).
        match futures::poll!(send.as_mut()) {
            Poll::Ready(done) => tally_batch(&mut tally, done),
            Poll::Pending => outstanding.push(send),
        }
        while outstanding.len() >= args.batches {
            if let Some(done) = outstanding.next().await {
                tally_batch(&mut tally, done);
            }
        }
    }
    while let Some(done) = outstanding.next().await {
        tally_batch(&mut tally, done);
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let window = format!("{} x {} records", args.batches, args.batch);
    tally.finish("producer", window, elapsed)
}

fn tally_batch(
    tally: &mut Tally,
    (result, latency, records): (Result<(), askpro_actors::LogError>, Duration, u64),
) {
    match result {
        Ok(()) => tally.delivered(latency, records),
        Err(error) => tally.failed(format!("{error:#}"), records),
    }
}

/// A record ready for `send_result`: headers encoded up front, outside the timed loop.
struct RawRecord {
    key: String,
    value: Bytes,
    headers: OwnedHeaders,
}

impl RawRecord {
    fn new(record: LogRecord) -> Self {
        let headers = record.meta.to_headers().into_iter().fold(
            OwnedHeaders::new(),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        );
        Self {
            key: record.key(),
            value: record.value,
            headers,
        }
    }
}

/// One `send_result` per record, `--in-flight` deliveries outstanding.
async fn send_raw(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<RawRecord>,
    args: &BenchProducerArgs,
) -> PhaseReport {
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    if !args.quiet {
        spawn_progress("raw", Arc::clone(&progress), stop.clone());
    }
    let mut tally = Tally::new(progress);
    let mut outstanding = FuturesUnordered::new();
    let started = Instant::now();
    'records: for RawRecord {
        key,
        value,
        headers,
    } in records
    {
        let mut message = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_ref())
            .headers(headers);
        loop {
            let sent = Instant::now();
            match producer.send_result(message) {
                Ok(delivery) => {
                    outstanding.push(async move { (delivery.await, sent) });
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full: wait for a delivery, then retry.
                    message = back;
                    match outstanding.next().await {
                        Some(done) => tally_raw(&mut tally, done),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((error, _)) => {
                    tally.failed(format!("enqueue: {error}"), 1);
                    break 'records;
                }
            }
        }
        while outstanding.len() >= args.in_flight {
            if let Some(done) = outstanding.next().await {
                tally_raw(&mut tally, done);
            }
        }
    }
    while let Some(done) = outstanding.next().await {
        tally_raw(&mut tally, done);
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let window = format!("{} deliveries", args.in_flight);
    tally.finish("raw", window, elapsed)
}

type RawOutcome = (
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    Instant,
);

fn tally_raw(tally: &mut Tally, (outcome, sent): RawOutcome) {
    match outcome {
        Ok(Ok(_)) => tally.delivered(sent.elapsed(), 1),
        Ok(Err((error, _))) => tally.failed(error.to_string(), 1),
        Err(_) => tally.failed("delivery report dropped".to_owned(), 1),
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
async fn ensure_topic(config: &Config, topic: &str, partitions: u32) -> Result<()> {
    let kafka = &config.kafka;
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, "askpro-bench-admin")
        .create()
        .with_context(|| format!("create an admin client for {}", kafka.brokers))?;
    let new = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(kafka.replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .with_context(|| format!("create topic {topic} on {}", kafka.brokers))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("kafka refused to create topic {name}: {code}"),
        }
    }
    tokio::task::spawn_blocking(move || drop(admin)).await?;
    Ok(())
}

fn reader(config: &Config, name: &str) -> Result<BaseConsumer> {
    let kafka = &config.kafka;
    client_config(kafka, name)
        .set(
            "group.id",
            format!("askpro-bench-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .with_context(|| format!("create a consumer for {}", kafka.brokers))
}

/// The topic's partition count, once every partition has a leader (a fresh topic needs a
/// moment).
async fn partition_count(config: &Config, topic: &str) -> Result<u32> {
    let consumer = reader(config, "askpro-bench-metadata")?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            let metadata = consumer.fetch_metadata(Some(&topic), OP_TIMEOUT)?;
            let ready = metadata.topics().first().and_then(|t| {
                let parts = t.partitions();
                (t.error().is_none() && !parts.is_empty() && parts.iter().all(|p| p.leader() >= 0))
                    .then_some(parts.len() as u32)
            });
            match ready {
                Some(count) => return Ok(count),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                None => bail!("topic {topic} does not exist or has no leaders"),
            }
        }
    })
    .await?
}

/// Each partition's high (`high = true`) or low watermark.
async fn watermarks(config: &Config, topic: &str, partitions: u32, high: bool) -> Result<Vec<i64>> {
    let consumer = reader(config, "askpro-bench-offsets")?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        (0..partitions as i32)
            .map(|p| {
                let (low, hi) = consumer
                    .fetch_watermarks(&topic, p, OP_TIMEOUT)
                    .with_context(|| format!("read the offsets of {topic}/{p}"))?;
                Ok(if high { hi } else { low })
            })
            .collect()
    })
    .await?
}

/// Per tenant while reading back.
struct TenantSeen {
    partition: i32,
    last_seq: Option<u64>,
}

/// Reads `(partition, from, to)` ranges and checks the per-tenant rules.
async fn verify(
    config: &Config,
    topic: &str,
    ranges: Vec<(i32, i64, i64)>,
    expected: Option<u64>,
    quiet: bool,
) -> Result<OrderingReport> {
    let consumer = reader(config, "askpro-bench-verify")?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        verify_blocking(&consumer, &topic, &ranges, expected, quiet)
    })
    .await?
}

fn verify_blocking(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    expected: Option<u64>,
    quiet: bool,
) -> Result<OrderingReport> {
    let partitions = ranges.len() as u32;
    let mut assignment = TopicPartitionList::new();
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for &(p, from, to) in ranges {
        if to > from {
            assignment.add_partition_offset(topic, p, Offset::Offset(from))?;
            pending.insert(p, to);
        }
    }
    consumer.assign(&assignment)?;
    let mut tenants: HashMap<String, TenantSeen> = HashMap::new();
    let mut keys: HashSet<String> = HashSet::new();
    let (mut read, mut duplicates, mut foreign) = (0_u64, 0_u64, 0_u64);
    let mut sequence_checked = false;
    let mut violation: Option<String> = None;
    let started = Instant::now();
    let mut next_progress = started + Duration::from_secs(1);
    while !pending.is_empty() && started.elapsed() < VERIFY_TIMEOUT {
        if !quiet && Instant::now() >= next_progress {
            eprintln!("bench-producer verify: {read} records read");
            next_progress += Duration::from_secs(1);
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("read {topic}"))?;
        let (p, offset) = (message.partition(), message.offset());
        if let Some(&end) = pending.get(&p) {
            if offset + 1 >= end {
                pending.remove(&p);
            }
            if offset >= end {
                continue;
            }
        } else {
            continue;
        }
        read += 1;
        let (mut company, mut dedup) = (None, None);
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                match h.key {
                    header::COMPANY_ID => {
                        company = h.value.and_then(|v| std::str::from_utf8(v).ok())
                    }
                    header::DEDUP_KEY => dedup = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                    _ => {}
                }
            }
        }
        let (Some(company), Some(dedup)) = (company, dedup) else {
            foreign += 1;
            continue;
        };
        if !keys.insert(dedup.to_owned()) {
            duplicates += 1;
            violation.get_or_insert_with(|| {
                format!("dedup key {dedup} repeated at {topic}/{p}@{offset}")
            });
        }
        let home = partition_for(company.as_bytes(), partitions) as i32;
        if home != p {
            violation.get_or_insert_with(|| {
                format!("tenant {company} at {topic}/{p}@{offset}, murmur2 names partition {home}")
            });
        }
        let seq = dedup
            .rsplit_once(CALL_PREFIX)
            .and_then(|(_, s)| s.parse::<u64>().ok());
        let seen = tenants.entry(company.to_owned()).or_insert(TenantSeen {
            partition: p,
            last_seq: None,
        });
        if seen.partition != p {
            violation.get_or_insert_with(|| {
                format!(
                    "tenant {company} on partitions {} and {p} (offset {offset})",
                    seen.partition
                )
            });
        }
        if let Some(seq) = seq {
            sequence_checked = true;
            if let Some(last) = seen.last_seq.filter(|last| seq <= *last) {
                violation.get_or_insert_with(|| {
                    format!("tenant {company}: sequence {seq} at {topic}/{p}@{offset} after {last}")
                });
            }
            seen.last_seq = Some(seq);
        }
    }
    let read_secs = started.elapsed().as_secs_f64();
    let complete = pending.is_empty() && expected.is_none_or(|n| n == read);
    let status = match (&violation, complete) {
        (Some(_), _) => "violated",
        (None, true) => "ok",
        (None, false) => "incomplete",
    };
    if !complete {
        violation.get_or_insert_with(|| {
            format!(
                "read {read} records, expected {} (partitions not finished: {:?})",
                expected.map_or("-".to_owned(), |n| n.to_string()),
                pending.keys().collect::<Vec<_>>()
            )
        });
    }
    let partitions_used = tenants
        .values()
        .map(|t| t.partition)
        .collect::<HashSet<_>>()
        .len();
    Ok(OrderingReport {
        status,
        records_read: read,
        expected,
        tenants: tenants.len(),
        partitions_used,
        duplicates,
        foreign,
        sequence_checked,
        first_violation: violation,
        read_secs,
        read_per_sec: read as f64 / read_secs.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_call_ended_bodies_of_loadgen_size_with_ingress_headers() {
        let corpus = Corpus::new(3);
        let record = corpus.record(7);
        assert!(
            (1_500..3_000).contains(&record.value.len()),
            "body is {} bytes",
            record.value.len()
        );
        let body: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(body["event"], "call_ended");
        assert_eq!(
            body["call"]["call_id"],
            "call_bp_00000000000000000000000000000007"
        );
        assert_eq!(
            record.meta.dedup_key,
            "retell:call_ended:call_bp_00000000000000000000000000000007"
        );
        assert_eq!(record.meta.company_id, corpus.record(1).meta.company_id);
        assert_ne!(record.meta.company_id, corpus.record(8).meta.company_id);
        let headers = record.meta.to_headers();
        let back =
            RecordMeta::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
        // The headers carry received_at in milliseconds; everything else round-trips.
        assert_eq!(back.dedup_key, record.meta.dedup_key);
        assert_eq!(back.company_id, record.meta.company_id);
        assert_eq!(back.event_id, record.meta.event_id);
    }

    #[test]
    fn text_report_names_both_senders_and_the_ordering() {
        let phase = |sender| PhaseReport {
            sender,
            window: "8 x 64 records".into(),
            delivered: 10,
            failed: 0,
            first_error: None,
            elapsed_secs: 1.0,
            records_per_sec: 10.0,
            latency_us: LatencySummary::default(),
        };
        let report = BenchProducerReport {
            brokers: "127.0.0.1:19092".into(),
            topic: "t".into(),
            partitions: 16,
            tenants: 50,
            body_bytes: 2000,
            settings: ProducerSettings {
                acks: "all",
                idempotence: true,
                partitioner: "murmur2_random",
                linger_ms: 2,
                batch_size: 1 << 20,
                compression: "none".into(),
            },
            producer: Some(phase("producer")),
            raw: Some(phase("raw")),
            producer_to_raw: Some(1.0),
            ordering: None,
        };
        let text = report.render_text();
        assert!(text.contains("producer") && text.contains("raw") && text.contains("p99"));
        assert!(text.contains("producer/raw 100 %"));
    }
}
