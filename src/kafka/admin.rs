//! Topic administration for the Kafka backend, behind `askpro topics`: create the webhook,
//! retry-tier and dead-letter topics, describe their partitions, offsets and consumer lag, and
//! add partitions.
//!
//! Always talks to `kafka.brokers`, whatever `log.backend` says. Blocking librdkafka calls
//! (metadata, watermarks, committed offsets, dropping a client) run in `spawn_blocking`.
//! rdkafka 0.39 has no admin API for consumer-group offsets, so committed offsets come from a
//! `BaseConsumer` with that `group.id` that never subscribes: it joins no group, consumes and
//! commits nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::MetadataTopic;
use serde::Serialize;

use crate::config::Config;

mod alter;
mod describe;
pub use alter::{alter_all_partitions, alter_partitions, AlterReport, AlteredTopic};
pub use describe::{describe, PartitionReport, TopicReport, TopicsReport};

/// How long one Kafka request may take before the command gives up.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most partitions a topic may have here (the bound of `log.partitions`).
pub const MAX_PARTITIONS: u32 = 1024;

/// What adding partitions means for tenants; printed by `askpro topics alter`.
pub const REPARTITION_NOTE: &str = "\
Adding partitions remaps tenants: a record's partition is murmur2(company_id) % partitions, so
a tenant's new events may land on a different partition than its older, still-unconsumed ones
and be handled before them. AskPro's handlers are order-tolerant (versioned upserts, dedup
keys, bookings converge on the call's idempotency key), so this is safe. For strict per-tenant
order across the change, drain the lag first (`askpro topics describe` shows lag 0) or briefly
stop ingress. Running producers switch at their next metadata refresh
(kafka.metadata_refresh_ms). Alter the retry and dead-letter topics to match (--all) and set
log.partitions to the new count, so topics created later agree.";

type Admin = AdminClient<DefaultClientContext>;

#[derive(Debug, thiserror::Error)]
pub enum KafkaAdminError {
    #[error("invalid kafka client settings for {brokers}")]
    Client {
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("cannot reach kafka at {brokers} within {}s", OP_TIMEOUT.as_secs())]
    Unreachable {
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("kafka at {brokers} failed to {operation}")]
    Request {
        operation: &'static str,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error(
        "kafka at {brokers} refused to create topic {topic} \
         ({partitions} partitions, replication factor {replication_factor})"
    )]
    CreateTopic {
        topic: String,
        brokers: String,
        partitions: u32,
        replication_factor: i32,
        #[source]
        source: RDKafkaErrorCode,
    },
    #[error("kafka at {brokers} refused to grow topic {topic} to {partitions} partitions")]
    AddPartitions {
        topic: String,
        brokers: String,
        partitions: u32,
        #[source]
        source: RDKafkaErrorCode,
    },
    #[error("cannot read the {what} of topic {topic} from kafka at {brokers}")]
    Offsets {
        what: &'static str,
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("topic {topic} does not exist on kafka at {brokers}; run `askpro topics create`")]
    MissingTopic { topic: String, brokers: String },
    #[error(
        "topic {topic} already has {current} partitions; kafka can only add partitions, \
         so ask for more than {current} (got {requested})"
    )]
    NotAnIncrease {
        topic: String,
        current: usize,
        requested: u32,
    },
    #[error("every topic already has {count} partitions; nothing to alter")]
    NothingToAlter { count: u32 },
    #[error("partitions must be 1..={MAX_PARTITIONS}, got {requested}")]
    PartitionCount { requested: u32 },
    #[error("kafka admin task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What a topic is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicRole {
    Webhooks,
    Retry,
    DeadLetter,
    Other,
}

/// A topic AskPro uses and the consumer group that reads it.
#[derive(Clone, Debug, Serialize)]
pub struct TopicSpec {
    pub topic: String,
    pub role: TopicRole,
    pub retry_tier: Option<usize>,
    pub consumer_group: Option<String>,
}

/// The group that forwards due records from the retry tier topics.
pub fn retry_forwarder_group(config: &Config) -> String {
    format!("{}-retry-forwarder", config.pipeline.consumer_group)
}

/// The webhook topic, one retry topic per `booking.retry_delays_ms` tier, the dead letters.
pub fn topic_specs(config: &Config) -> Vec<TopicSpec> {
    let tiers = config.booking.retry_delays_ms.len();
    let mut specs = vec![spec(config, TopicRole::Webhooks, None)];
    specs.extend((1..=tiers).map(|tier| spec(config, TopicRole::Retry, Some(tier))));
    specs.push(spec(config, TopicRole::DeadLetter, None));
    specs
}

/// Classifies `topic`: one of [`topic_specs`], or `Other` without a consumer group.
pub fn spec_for(config: &Config, topic: &str) -> TopicSpec {
    topic_specs(config)
        .into_iter()
        .find(|s| s.topic == topic)
        .unwrap_or_else(|| TopicSpec {
            topic: topic.to_owned(),
            role: TopicRole::Other,
            retry_tier: None,
            consumer_group: None,
        })
}

fn spec(config: &Config, role: TopicRole, retry_tier: Option<usize>) -> TopicSpec {
    let kafka = &config.kafka;
    let (topic, consumer_group) = match (role, retry_tier) {
        (TopicRole::Retry, Some(tier)) => (kafka.retry_topic(tier), retry_forwarder_group(config)),
        (TopicRole::DeadLetter, _) => (kafka.dead_letter_topic.clone(), String::new()),
        _ => (kafka.topic.clone(), config.pipeline.consumer_group.clone()),
    };
    let consumer_group = (!consumer_group.is_empty()).then_some(consumer_group);
    TopicSpec {
        topic,
        role,
        retry_tier,
        consumer_group,
    }
}

/// One topic of `askpro topics create`.
#[derive(Clone, Debug, Serialize)]
pub struct CreatedTopic {
    pub topic: String,
    pub role: TopicRole,
    /// False: it existed already (left as it is).
    pub created: bool,
    /// As created, or as found; `None` when another client created it concurrently.
    pub partitions: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    pub brokers: String,
    pub replication_factor: i32,
    pub topics: Vec<CreatedTopic>,
}

impl CreateReport {
    pub fn created(&self) -> Vec<String> {
        let created = self.topics.iter().filter(|t| t.created);
        created.map(|t| t.topic.clone()).collect()
    }
}

/// Creates the missing topics of [`topic_specs`] with `log.partitions` partitions and
/// `kafka.replication_factor`; returns the names of those it created. Existing topics are
/// left alone ("already exists" is not an error).
pub async fn ensure_topics(config: &Config) -> Result<Vec<String>, KafkaAdminError> {
    Ok(create_topics(config, config.log.partitions)
        .await?
        .created())
}

/// Like [`ensure_topics`] with `partitions` for a missing webhook topic. Missing retry and
/// dead-letter topics get the webhook topic's partition count (as found, or as created).
pub async fn create_topics(
    config: &Config,
    partitions: u32,
) -> Result<CreateReport, KafkaAdminError> {
    check_partition_count(partitions)?;
    let admin = admin_client(config)?;
    let result = create_with(&admin, config, partitions).await;
    close(admin).await;
    result
}

async fn create_with(
    admin: &Arc<Admin>,
    config: &Config,
    partitions: u32,
) -> Result<CreateReport, KafkaAdminError> {
    let brokers = &config.kafka.brokers;
    let replication_factor = config.kafka.replication_factor;
    let existing = partition_counts(admin, brokers).await?;
    let main = existing.get(&config.kafka.topic).copied();
    if let Some(found) = main.filter(|n| *n != partitions as usize) {
        tracing::warn!(
            topic = %config.kafka.topic,
            partitions = found,
            wanted = partitions,
            "kafka topic has another partition count; kept as it is"
        );
    }
    let mut rows = Vec::new();
    let mut wanted = Vec::new();
    for spec in topic_specs(config) {
        let found = existing.get(&spec.topic).copied();
        if found.is_none() {
            let count = match spec.role {
                TopicRole::Webhooks => partitions,
                _ => main.map_or(partitions, |n| n as u32),
            };
            wanted.push((spec.topic.clone(), count));
        }
        rows.push(CreatedTopic {
            topic: spec.topic,
            role: spec.role,
            created: false,
            partitions: found,
        });
    }
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, count)| {
            let replication = TopicReplication::Fixed(replication_factor);
            NewTopic::new(name, *count as i32, replication)
        })
        .collect();
    let results = match new_topics.is_empty() {
        true => Vec::new(),
        false => admin
            .create_topics(&new_topics, &admin_options())
            .await
            .map_err(|source| KafkaAdminError::Request {
                operation: "create topics",
                brokers: brokers.clone(),
                source: Box::new(source),
            })?,
    };
    let mut failure = None;
    for result in results {
        let (topic, outcome) = match result {
            Ok(topic) => (topic, Ok(())),
            Err((topic, code)) => (topic, Err(code)),
        };
        let count = wanted.iter().find(|w| w.0 == topic).map_or(0, |w| w.1);
        let Some(row) = rows.iter_mut().find(|r| r.topic == topic) else {
            continue;
        };
        match outcome {
            Ok(()) => {
                let partitions = count;
                tracing::info!(%topic, partitions, replication_factor, "created kafka topic");
                row.created = true;
                row.partitions = Some(count as usize);
            }
            Err(RDKafkaErrorCode::TopicAlreadyExists) => {
                tracing::info!(topic = %topic, "kafka topic created concurrently elsewhere");
            }
            Err(source) => {
                failure.get_or_insert(KafkaAdminError::CreateTopic {
                    topic,
                    brokers: brokers.clone(),
                    partitions: count,
                    replication_factor,
                    source,
                });
            }
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let created = rows.iter().filter(|r| r.created);
    let expect = created.map(|r| (r.topic.clone(), r.partitions.unwrap_or(0)));
    await_metadata(admin, brokers, expect.collect()).await;
    Ok(CreateReport {
        brokers: brokers.clone(),
        replication_factor,
        topics: rows,
    })
}

fn check_partition_count(requested: u32) -> Result<(), KafkaAdminError> {
    match (1..=MAX_PARTITIONS).contains(&requested) {
        true => Ok(()),
        false => Err(KafkaAdminError::PartitionCount { requested }),
    }
}

/// `bootstrap.servers` and short timeouts, so a missing broker fails within [`OP_TIMEOUT`].
fn client_config(config: &Config) -> ClientConfig {
    let timeout = OP_TIMEOUT.as_millis().to_string();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("client.id", "askpro-admin")
        .set("socket.timeout.ms", &timeout)
        .set("socket.connection.setup.timeout.ms", &timeout)
        .set("reconnect.backoff.max.ms", "1000");
    client
}

fn admin_client(config: &Config) -> Result<Arc<Admin>, KafkaAdminError> {
    let created = client_config(config).create::<Admin>();
    created
        .map(Arc::new)
        .map_err(|source| KafkaAdminError::Client {
            brokers: config.kafka.brokers.clone(),
            source: Box::new(source),
        })
}

/// A consumer that never subscribes: for metadata, watermarks and `group`'s commits.
fn consumer(
    base: &ClientConfig,
    brokers: &str,
    group: &str,
) -> Result<BaseConsumer, KafkaAdminError> {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config.create().map_err(|source| KafkaAdminError::Client {
        brokers: brokers.to_owned(),
        source: Box::new(source),
    })
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT))
}

fn unreachable(brokers: &str, source: KafkaError) -> KafkaAdminError {
    let brokers = brokers.to_owned();
    let source = Box::new(source);
    KafkaAdminError::Unreachable { brokers, source }
}

/// Partition count of every topic in the cluster (all topics: asking for one by name could
/// make a broker with auto-creation create it).
async fn partition_counts(
    admin: &Arc<Admin>,
    brokers: &str,
) -> Result<HashMap<String, usize>, KafkaAdminError> {
    let (admin, brokers) = (admin.clone(), brokers.to_owned());
    blocking(move || {
        let metadata = admin.inner().fetch_metadata(None, OP_TIMEOUT);
        let metadata = metadata.map_err(|source| unreachable(&brokers, source))?;
        let topics = metadata.topics().iter().filter(|t| exists(t));
        Ok(topics
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect())
    })
    .await
}

/// False for a topic the metadata names only to say it is unknown.
fn exists(topic: &MetadataTopic) -> bool {
    let error = topic.error().map(RDKafkaErrorCode::from);
    error != Some(RDKafkaErrorCode::UnknownTopicOrPartition)
}

/// Waits (up to [`OP_TIMEOUT`]) until the broker's metadata shows `expect`, so a `describe`
/// right after `create` or `alter` sees the result. Gives up quietly: the change is made.
async fn await_metadata(admin: &Arc<Admin>, brokers: &str, expect: Vec<(String, usize)>) {
    let deadline = Instant::now() + OP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(counts) = partition_counts(admin, brokers).await {
            if expect.iter().all(|(t, n)| counts.get(t) == Some(n)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(brokers, "kafka metadata does not show the change yet");
}

/// Drops the admin client off the runtime: it joins its polling thread.
async fn close(admin: Arc<Admin>) {
    let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
}

async fn blocking<T, F>(f: F) -> Result<T, KafkaAdminError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KafkaAdminError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(KafkaAdminError::Task)?
}
