//! Puts the Kafka pieces together for `askpro serve|ingress|worker`: the producer and the
//! webhook topic's log, and on workers the group members of the webhook topic (feeding the
//! worker group) and of each retry tier (running that tier's forwarders).

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use askpro_actors::group::GroupMsg;
use askpro_actors::partition::partition_for;
use askpro_actors::reconciler::Owns;
use askpro_actors::retry_tier::{forward_partition, Forwarder, RetryTier, RetryTopology};
use askpro_actors::{Clock, EventLog, LogError};
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;

use super::consumer::{AssignmentListener, GroupConsumer};
use super::log::KafkaLog;
use super::producer::KafkaProducer;
use crate::config::Config;

/// The producer side, plus (on workers) the webhook topic's group member.
pub struct KafkaBackend {
    pub producer: KafkaProducer,
    pub main: Arc<KafkaLog>,
}

impl KafkaBackend {
    /// Creates missing topics (when `kafka.create_topics`), the producer, and the webhook
    /// topic's log; `consume` makes this process a member of the consumer group.
    pub async fn open(config: &Config, consume: bool) -> Result<Self, LogError> {
        let kafka = &config.kafka;
        if kafka.create_topics {
            let created =
                super::admin::ensure_topics(config)
                    .await
                    .map_err(|e| LogError::Unavailable {
                        context: format!("create the topics on {}", kafka.brokers),
                        source: Box::new(e),
                    })?;
            if !created.is_empty() {
                tracing::info!(topics = ?created, "kafka topics created");
            }
        }
        let producer = KafkaProducer::new(kafka, "askpro")?;
        let consumer = match consume {
            true => Some(GroupConsumer::new(
                kafka,
                &kafka.topic,
                &config.pipeline.consumer_group,
                "askpro-worker",
                100,
            )?),
            false => None,
        };
        let main = KafkaLog::new(
            &kafka.topic,
            producer.clone(),
            consumer,
            Some(kafka.dead_letter_topic.clone()),
            config.log.partitions,
        );
        let count = main.read_partition_count().await?;
        let main = Arc::new(main);
        main.partitions_now(count);
        Ok(Self { producer, main })
    }
}

/// The consuming half of a Kafka worker.
pub struct KafkaWorker {
    members: Vec<Arc<GroupConsumer>>,
}

impl KafkaWorker {
    /// The retry tier topics (each consumed by the forwarder group) and the dead-letter topic.
    pub fn retry_topology(
        config: &Config,
        backend: &KafkaBackend,
    ) -> Result<(RetryTopology, Vec<Arc<KafkaLog>>), LogError> {
        let kafka = &config.kafka;
        let group = forwarder_group(config);
        let mut tiers = Vec::new();
        let mut logs = Vec::new();
        for (i, delay) in config.booking.retry_delays().into_iter().enumerate() {
            let topic = kafka.retry_topic(i + 1);
            let member = GroupConsumer::new(kafka, &topic, &group, "askpro-retry", 1000)?;
            let log = Arc::new(KafkaLog::new(
                &topic,
                backend.producer.clone(),
                Some(member),
                Some(kafka.dead_letter_topic.clone()),
                config.log.partitions,
            ));
            logs.push(Arc::clone(&log));
            tiers.push(RetryTier { delay, log });
        }
        let dead_letters = Arc::new(KafkaLog::new(
            &kafka.dead_letter_topic,
            backend.producer.clone(),
            None,
            None,
            config.log.partitions,
        ));
        Ok((
            RetryTopology {
                tiers,
                dead_letters,
            },
            logs,
        ))
    }

    /// Joins the groups: the webhook topic feeds `group`, each tier runs its forwarders.
    pub fn start(
        config: &Config,
        main: &Arc<KafkaLog>,
        group: ActorRef<GroupMsg>,
        tiers: &[Arc<KafkaLog>],
        clock: &Arc<dyn Clock>,
        shutdown: &CancellationToken,
    ) -> Result<Self, LogError> {
        let mut members = Vec::new();
        let main_member = member_of(main)?;
        main_member.start(Arc::new(GroupListener { group }))?;
        members.push(main_member);
        for (i, tier) in tiers.iter().enumerate() {
            let member = member_of(tier)?;
            let main_log: Arc<dyn EventLog> = main.clone();
            member.start(Arc::new(TierListener {
                tier_no: i + 1,
                tier: tier.clone(),
                main: main_log,
                group: forwarder_group(config),
                clock: Arc::clone(clock),
                shutdown: shutdown.clone(),
                runtime: tokio::runtime::Handle::current(),
                running: Mutex::new(HashMap::new()),
            }))?;
            members.push(member);
        }
        let every = Duration::from_millis(config.kafka.metadata_refresh_ms);
        main.watch_partitions(every, shutdown.clone());
        Ok(Self { members })
    }

    /// The tenants whose webhook partitions this worker owns (the reconciler's filter).
    pub fn owns(main: &Arc<KafkaLog>) -> Result<Owns, LogError> {
        let member = member_of(main)?;
        let log = Arc::clone(main);
        Ok(Arc::new(move |company| {
            let partition = partition_for(company.to_string().as_bytes(), log.partitions());
            member.assigned().contains(&partition)
        }))
    }

    /// Leaves every group (after the worker group has drained).
    pub async fn shutdown(&self) {
        futures::future::join_all(self.members.iter().map(|m| m.shutdown())).await;
    }
}

fn forwarder_group(config: &Config) -> String {
    format!("{}-retry-forwarder", config.pipeline.consumer_group)
}

fn member_of(log: &Arc<KafkaLog>) -> Result<Arc<GroupConsumer>, LogError> {
    log.consumer()
        .cloned()
        .ok_or_else(|| LogError::Invalid(format!("topic {} has no consumer here", log.topic())))
}

/// Webhook topic: assignments become the worker group's partition consumers.
struct GroupListener {
    group: ActorRef<GroupMsg>,
}

impl AssignmentListener for GroupListener {
    fn assigned(&self, partitions: Vec<u32>) {
        if self.group.cast(GroupMsg::Assign(partitions)).is_err() {
            tracing::warn!("worker group is gone; assignment ignored");
        }
    }

    fn revoked(&self, partitions: Vec<u32>) {
        let (reply, drained) = tokio::sync::oneshot::channel();
        if self
            .group
            .cast(GroupMsg::Revoke(partitions, reply.into()))
            .is_err()
        {
            return; // stopped: it drained everything on its way out
        }
        // The group bounds every drain (drain timeout plus a margin), so this returns.
        match drained.blocking_recv() {
            Ok(statuses) => {
                let unfinished: usize = statuses.iter().map(|s| s.in_flight).sum();
                tracing::info!(
                    partitions = statuses.len(),
                    unfinished,
                    "revoked partitions drained"
                );
            }
            Err(_) => tracing::warn!("worker group stopped while draining"),
        }
    }
}

/// Retry tier topic: one forwarder per assigned partition.
struct TierListener {
    tier_no: usize,
    tier: Arc<KafkaLog>,
    main: Arc<dyn EventLog>,
    group: String,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
    running: Mutex<HashMap<u32, (CancellationToken, mpsc::Receiver<()>)>>,
}

impl AssignmentListener for TierListener {
    fn assigned(&self, partitions: Vec<u32>) {
        let mut running = self.running.lock().unwrap();
        for partition in partitions {
            let stop = self.shutdown.child_token();
            let stop_here = stop.clone();
            let forwarder = Forwarder {
                tier_no: self.tier_no,
                partition,
                tier: self.tier.clone(),
                main: Arc::clone(&self.main),
                group: self.group.clone(),
                clock: Arc::clone(&self.clock),
            };
            // Dropped when the forwarder returns: revoke waits on it from the poll thread,
            // which is no place to poll a future.
            let (done, finished) = mpsc::channel::<()>();
            self.runtime.spawn(async move {
                forward_partition(forwarder, stop_here).await;
                drop(done);
            });
            running.insert(partition, (stop, finished));
        }
    }

    fn revoked(&self, partitions: Vec<u32>) {
        let stopped: Vec<_> = {
            let mut running = self.running.lock().unwrap();
            partitions
                .iter()
                .filter_map(|p| running.remove(p))
                .collect()
        };
        for (stop, finished) in stopped {
            stop.cancel();
            // A forwarder stops at its next await; it commits each record as it goes.
            let _ = finished.recv_timeout(Duration::from_secs(10));
        }
    }
}
