//! `askpro topics alter`: add partitions to one topic or to all of AskPro's topics.

use std::sync::Arc;

use rdkafka::admin::NewPartitions;
use serde::Serialize;

use super::{
    admin_client, admin_options, await_metadata, check_partition_count, close, partition_counts,
    spec_for, topic_specs, Admin, KafkaAdminError, TopicRole, REPARTITION_NOTE,
};
use crate::config::Config;

/// One topic of `askpro topics alter`.
#[derive(Clone, Debug, Serialize)]
pub struct AlteredTopic {
    pub topic: String,
    pub role: TopicRole,
    pub before: usize,
    pub after: usize,
    pub changed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlterReport {
    pub brokers: String,
    pub partitions: u32,
    pub topics: Vec<AlteredTopic>,
    pub note: &'static str,
}

/// Grows `topic` (default: the webhook topic) to `new_total` partitions; refuses fewer or
/// as many as it has. The retry and dead-letter topics should be altered to match
/// ([`alter_all_partitions`]). See [`REPARTITION_NOTE`] for what it means for tenants.
pub async fn alter_partitions(
    config: &Config,
    topic: Option<&str>,
    new_total: u32,
) -> Result<AlterReport, KafkaAdminError> {
    let topic = topic.unwrap_or(&config.kafka.topic).to_owned();
    alter(config, vec![topic], new_total, false).await
}

/// Grows the webhook, retry and dead-letter topics to `new_total` partitions. Topics that
/// already have exactly that many are left as they are; one with more refuses the whole
/// command before anything changes.
pub async fn alter_all_partitions(
    config: &Config,
    new_total: u32,
) -> Result<AlterReport, KafkaAdminError> {
    let topics = topic_specs(config).into_iter().map(|s| s.topic).collect();
    alter(config, topics, new_total, true).await
}

async fn alter(
    config: &Config,
    topics: Vec<String>,
    new_total: u32,
    skip_equal: bool,
) -> Result<AlterReport, KafkaAdminError> {
    check_partition_count(new_total)?;
    let admin = admin_client(config)?;
    let result = alter_with(&admin, config, topics, new_total, skip_equal).await;
    close(admin).await;
    result
}

async fn alter_with(
    admin: &Arc<Admin>,
    config: &Config,
    topics: Vec<String>,
    new_total: u32,
    skip_equal: bool,
) -> Result<AlterReport, KafkaAdminError> {
    let brokers = &config.kafka.brokers;
    let counts = partition_counts(admin, brokers).await?;
    let mut rows = Vec::new();
    for topic in topics {
        let Some(&current) = counts.get(&topic) else {
            let brokers = brokers.clone();
            return Err(KafkaAdminError::MissingTopic { topic, brokers });
        };
        let grow = current < new_total as usize;
        if !(grow || skip_equal && current == new_total as usize) {
            let requested = new_total;
            return Err(KafkaAdminError::NotAnIncrease {
                topic,
                current,
                requested,
            });
        }
        rows.push(AlteredTopic {
            role: spec_for(config, &topic).role,
            topic,
            before: current,
            after: new_total as usize,
            changed: grow,
        });
    }
    if rows.iter().all(|r| !r.changed) {
        return Err(KafkaAdminError::NothingToAlter { count: new_total });
    }
    let changed = rows.iter().filter(|r| r.changed);
    let requests: Vec<NewPartitions<'_>> = changed
        .map(|r| NewPartitions::new(&r.topic, new_total as usize))
        .collect();
    let results = admin.create_partitions(&requests, &admin_options()).await;
    let results = results.map_err(|source| KafkaAdminError::Request {
        operation: "add partitions",
        brokers: brokers.clone(),
        source: Box::new(source),
    })?;
    for result in results {
        match result {
            Ok(topic) => {
                let before = rows
                    .iter()
                    .find(|r| r.topic == topic)
                    .map_or(0, |r| r.before);
                tracing::info!(topic = %topic, before, after = new_total, "added kafka partitions");
            }
            Err((topic, source)) => {
                let brokers = brokers.clone();
                let partitions = new_total;
                return Err(KafkaAdminError::AddPartitions {
                    topic,
                    brokers,
                    partitions,
                    source,
                });
            }
        }
    }
    let expect = rows
        .iter()
        .filter(|r| r.changed)
        .map(|r| (r.topic.clone(), r.after));
    await_metadata(admin, brokers, expect.collect()).await;
    Ok(AlterReport {
        brokers: brokers.clone(),
        partitions: new_total,
        topics: rows,
        note: REPARTITION_NOTE,
    })
}
