//! `askpro topics describe`: partitions, leaders, watermarks, committed offsets and lag.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{
    blocking, client_config, consumer, exists, spec_for, topic_specs, unreachable, KafkaAdminError,
    TopicRole, TopicSpec, OP_TIMEOUT,
};
use crate::config::Config;

/// One partition in [`describe`].
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// Broker id of the leader; `None` while there is none.
    pub leader: Option<i32>,
    /// Low watermark: the oldest offset still stored.
    pub low: i64,
    /// High watermark: the offset the next record gets.
    pub end: i64,
    /// The consumer group's committed offset (the next record it will read), if any.
    pub committed: Option<i64>,
    /// `end - committed`, or `end - low` without a commit; `None` without a consumer group.
    pub lag: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TopicReport {
    pub topic: String,
    pub role: TopicRole,
    pub retry_tier: Option<usize>,
    pub exists: bool,
    pub consumer_group: Option<String>,
    pub partition_count: usize,
    /// Records stored: the sum of `end - low`.
    pub records: i64,
    pub end_total: i64,
    pub lag_total: Option<i64>,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TopicsReport {
    pub brokers: String,
    pub topics: Vec<TopicReport>,
}

/// Partitions, leaders, watermarks, committed offsets and lag of every topic of
/// [`topic_specs`], or of `topic` alone. Missing topics are reported with `exists: false`.
pub async fn describe(
    config: &Config,
    topic: Option<&str>,
) -> Result<TopicsReport, KafkaAdminError> {
    let specs = match topic {
        Some(topic) => vec![spec_for(config, topic)],
        None => topic_specs(config),
    };
    let base = client_config(config);
    let brokers = config.kafka.brokers.clone();
    let probe_group = config.pipeline.consumer_group.clone();
    let topics = blocking(move || describe_blocking(&base, &brokers, &probe_group, specs));
    Ok(TopicsReport {
        brokers: config.kafka.brokers.clone(),
        topics: topics.await?,
    })
}

fn describe_blocking(
    base: &ClientConfig,
    brokers: &str,
    probe_group: &str,
    specs: Vec<TopicSpec>,
) -> Result<Vec<TopicReport>, KafkaAdminError> {
    // Declared first, so dropped last: after the metadata and every list they returned.
    let mut consumers: HashMap<String, BaseConsumer> = HashMap::new();
    consumers.insert(
        probe_group.to_owned(),
        consumer(base, brokers, probe_group)?,
    );
    let metadata = consumers[probe_group].fetch_metadata(None, OP_TIMEOUT);
    let metadata = metadata.map_err(|source| unreachable(brokers, source))?;
    let mut reports = Vec::new();
    for spec in specs {
        let topics = metadata.topics().iter();
        let found = topics
            .filter(|t| exists(t))
            .find(|t| t.name() == spec.topic);
        let mut partitions: Vec<(i32, Option<i32>)> = found.map_or(Vec::new(), |t| {
            let ids = t.partitions().iter();
            ids.map(|p| (p.id(), (p.leader() >= 0).then_some(p.leader())))
                .collect()
        });
        partitions.sort_unstable();
        let committed = match (&spec.consumer_group, found) {
            (Some(group), Some(_)) => {
                if !consumers.contains_key(group) {
                    consumers.insert(group.clone(), consumer(base, brokers, group)?);
                }
                let ids: Vec<i32> = partitions.iter().map(|p| p.0).collect();
                committed_offsets(&consumers[group], brokers, &spec.topic, &ids)?
            }
            _ => HashMap::new(),
        };
        let mut rows = Vec::new();
        for (partition, leader) in partitions {
            let (low, end) = watermarks(&consumers[probe_group], brokers, &spec.topic, partition)?;
            let committed = committed.get(&partition).copied();
            let lag = spec.consumer_group.as_ref().map(|_| {
                let from = committed.map_or(low, |c| c.max(low));
                (end - from).max(0)
            });
            rows.push(PartitionReport {
                partition,
                leader,
                low,
                end,
                committed,
                lag,
            });
        }
        reports.push(TopicReport {
            exists: found.is_some(),
            partition_count: rows.len(),
            records: rows.iter().map(|p| p.end - p.low).sum(),
            end_total: rows.iter().map(|p| p.end).sum(),
            lag_total: spec.consumer_group.as_ref().map(|_| {
                let lags = rows.iter().filter_map(|p| p.lag);
                lags.sum()
            }),
            partitions: rows,
            topic: spec.topic,
            role: spec.role,
            retry_tier: spec.retry_tier,
            consumer_group: spec.consumer_group,
        });
    }
    drop(metadata);
    drop(consumers);
    Ok(reports)
}

fn committed_offsets(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, KafkaAdminError> {
    let mut wanted = TopicPartitionList::new();
    for partition in partitions {
        wanted.add_partition(topic, *partition);
    }
    let got = consumer.committed_offsets(wanted, OP_TIMEOUT);
    let got = got.map_err(|source| KafkaAdminError::Offsets {
        what: "committed offsets",
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
        source: Box::new(source),
    })?;
    let elements = got.elements_for_topic(topic);
    let offsets = elements.iter().filter_map(|e| match e.offset() {
        Offset::Offset(offset) => Some((e.partition(), offset)),
        _ => None,
    });
    let offsets = offsets.collect();
    drop(elements);
    // A list the consumer returned must go before the consumer: librdkafka's destroy hangs.
    drop(got);
    Ok(offsets)
}

/// (low, high); retries briefly while a new topic or partition has no leader yet.
fn watermarks(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), KafkaAdminError> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        match consumer.fetch_watermarks(topic, partition, OP_TIMEOUT) {
            Ok(marks) => return Ok(marks),
            Err(e) if transient(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(KafkaAdminError::Offsets {
                    what: "watermarks",
                    topic: topic.to_owned(),
                    brokers: brokers.to_owned(),
                    source: Box::new(source),
                })
            }
        }
    }
}

fn transient(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}
