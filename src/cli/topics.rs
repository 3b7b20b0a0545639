//! `askpro topics`: create, describe and grow the Kafka topics. Always talks to
//! `kafka.brokers`, whatever `log.backend` says, so topics can be prepared before the first
//! Kafka-backed ingress or worker starts.

use anyhow::Result;
use clap::Subcommand;

use super::output::emit;
use crate::config::Config;
use crate::kafka::admin::{self, AlterReport, CreateReport, TopicReport, TopicsReport};

#[derive(Subcommand, Debug)]
pub enum TopicsCmd {
    /// Create the missing webhook, retry-tier and dead-letter topics (idempotent).
    ///
    /// The topics are kafka.topic, kafka.retry_topic_prefix plus 1..=N (one per
    /// booking.retry_delays_ms tier) and kafka.dead_letter_topic, with
    /// kafka.replication_factor replicas. Existing topics are left as they are; missing retry
    /// and dead-letter topics get the webhook topic's partition count.
    Create {
        /// Partitions of a new webhook topic (default: log.partitions).
        #[arg(long, value_name = "N")]
        partitions: Option<u32>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show partitions, leaders, offsets and consumer lag of the topics.
    ///
    /// Per partition: the leader broker, the low watermark (oldest stored offset), the end
    /// offset (high watermark), the consumer group's committed offset and the lag (end minus
    /// committed; end minus low when the group has committed nothing). The webhook topic is
    /// read by pipeline.consumer_group, the retry topics by "<consumer_group>-retry-forwarder";
    /// the dead-letter topic has no consumer group.
    Describe {
        /// Only this topic (default: every AskPro topic).
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add partitions to the webhook topic (or --topic, or --all); Kafka cannot remove any.
    ///
    /// Adding partitions remaps tenants: a record's partition is murmur2(company_id) % N, so
    /// a tenant's new events may land on a different partition than its older, still
    /// unconsumed ones and be handled before them. AskPro's handlers are order-tolerant
    /// (versioned upserts, dedup keys, bookings converge on the call's idempotency key), so
    /// this is safe. For strict per-tenant order across the change, drain the lag first
    /// (`askpro topics describe` shows lag 0) or briefly stop ingress.
    ///
    /// The retry and dead-letter topics should be altered to match: --all grows the webhook,
    /// retry and dead-letter topics together (topics that already have N are left alone).
    /// Then set log.partitions to N, so topics created later agree.
    Alter {
        /// The new total number of partitions; must be more than the topic has.
        #[arg(long, value_name = "N")]
        partitions: u32,
        /// The topic to grow (default: kafka.topic, the webhook topic).
        #[arg(long, value_name = "TOPIC", conflicts_with = "all")]
        topic: Option<String>,
        /// Grow the webhook, retry and dead-letter topics together.
        #[arg(long)]
        all: bool,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: TopicsCmd) -> Result<()> {
    // Config::load checks [kafka] only for log.backend = "kafka"; these commands always use it.
    config.kafka.validate(config.pipeline.drain_timeout_ms)?;
    match cmd {
        TopicsCmd::Create { partitions, json } => {
            let partitions = partitions.unwrap_or(config.log.partitions);
            let report = admin::create_topics(config, partitions).await?;
            emit(json, &report, render_create)
        }
        TopicsCmd::Describe { topic, json } => {
            let report = admin::describe(config, topic.as_deref()).await?;
            emit(json, &report, render_describe)
        }
        TopicsCmd::Alter {
            partitions,
            topic,
            all,
            json,
        } => {
            let report = match all {
                true => admin::alter_all_partitions(config, partitions).await?,
                false => admin::alter_partitions(config, topic.as_deref(), partitions).await?,
            };
            emit(json, &report, render_alter)
        }
    }
}

fn render_create(report: &CreateReport) -> String {
    let mut out = format!(
        "kafka at {} (replication factor {})",
        report.brokers, report.replication_factor
    );
    for t in &report.topics {
        let partitions = t.partitions.map_or("?".to_owned(), |n| n.to_string());
        let state = if t.created { "created" } else { "exists " };
        out.push_str(&format!(
            "\n  {state}  {}  {partitions} partitions",
            t.topic
        ));
    }
    let created = report.created().len();
    out.push_str(&format!(
        "\n{created} created, {} already existed",
        report.topics.len() - created
    ));
    out
}

fn render_describe(report: &TopicsReport) -> String {
    let mut out = format!("kafka at {}", report.brokers);
    for topic in &report.topics {
        out.push_str("\n\n");
        out.push_str(&render_topic(topic));
    }
    out
}

fn render_topic(t: &TopicReport) -> String {
    let group = t.consumer_group.as_deref().unwrap_or("none");
    if !t.exists {
        return format!("{}  missing (run `askpro topics create`)", t.topic);
    }
    let mut out = format!(
        "{}  {} partitions, {} records stored, consumer group {group}",
        t.topic, t.partition_count, t.records
    );
    let row = |cells: [String; 6]| {
        let [a, b, c, d, e, f] = cells;
        format!("\n  {a:>9}  {b:>6}  {c:>10}  {d:>10}  {e:>10}  {f:>10}")
    };
    let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    let header = ["partition", "leader", "low", "end", "committed", "lag"];
    out.push_str(&row(header.map(str::to_owned)));
    for p in &t.partitions {
        out.push_str(&row([
            p.partition.to_string(),
            p.leader.map_or("none".to_owned(), |l| l.to_string()),
            p.low.to_string(),
            p.end.to_string(),
            opt(p.committed),
            opt(p.lag),
        ]));
    }
    let blank = String::new;
    out.push_str(&row([
        "total".to_owned(),
        blank(),
        blank(),
        t.end_total.to_string(),
        blank(),
        opt(t.lag_total),
    ]));
    out
}

fn render_alter(report: &AlterReport) -> String {
    let mut out = format!("kafka at {}", report.brokers);
    for t in &report.topics {
        let line = match t.changed {
            true => format!(
                "\n  altered    {}  {} -> {} partitions",
                t.topic, t.before, t.after
            ),
            false => format!("\n  unchanged  {}  {} partitions", t.topic, t.after),
        };
        out.push_str(&line);
    }
    out.push_str("\n\n");
    out.push_str(report.note);
    out
}
