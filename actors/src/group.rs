//! WorkerGroup: the root of a worker's supervision tree. It owns one PartitionConsumer per
//! assigned partition. The embedded backend assigns every partition at start; the Kafka
//! backend forwards the consumer group's assign / revoke callbacks here.
//!
//! Supervision decision: a PartitionConsumer that fails is restarted after a short backoff
//! from its committed offset (at-least-once; dedup absorbs the redelivery). One that stops
//! because it was drained is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use crate::log::EventLog;
use crate::partition_consumer::{ConsumerArgs, ConsumerMsg, PartitionConsumer, PartitionStatus};
use crate::pipeline::Pipeline;

/// What `/health` and the CLI see of a worker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupStatus {
    pub assigned: Vec<u32>,
    pub partitions: Vec<PartitionStatus>,
    pub consumer_restarts: u64,
}

pub enum GroupMsg {
    Assign(Vec<u32>),
    /// Drain and stop these partitions' consumers (rebalance or shutdown), then reply.
    Revoke(Vec<u32>, RpcReplyPort<Vec<PartitionStatus>>),
    Status(RpcReplyPort<GroupStatus>),
    Restart(u32),
}

pub struct GroupArgs {
    pub log: Arc<dyn EventLog>,
    pub pipeline: Arc<Pipeline>,
    pub shutdown: CancellationToken,
    /// Bound on waiting for in-flight events when partitions are revoked.
    pub drain_timeout: Duration,
}

pub struct GroupState {
    args: GroupArgs,
    consumers: BTreeMap<u32, ActorRef<ConsumerMsg>>,
    by_actor: HashMap<ActorId, u32>,
    restarts: u64,
}

pub struct WorkerGroup;

impl Actor for WorkerGroup {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(GroupState {
            args,
            consumers: BTreeMap::new(),
            by_actor: HashMap::new(),
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GroupMsg::Assign(partitions) => {
                for partition in partitions {
                    state.start(&myself, partition).await?;
                }
            }
            GroupMsg::Revoke(partitions, reply) => {
                let drained = state.revoke(&partitions).await;
                let _ = reply.send(drained);
            }
            GroupMsg::Status(reply) => {
                let _ = reply.send(state.status().await);
            }
            GroupMsg::Restart(partition) => {
                if !state.args.shutdown.is_cancelled() && !state.consumers.contains_key(&partition)
                {
                    state.start(&myself, partition).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(partition) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.consumers.remove(&partition);
                state.restarts += 1;
                tracing::error!(partition, error = %error, "partition consumer failed; restarting");
                myself.send_after(Duration::from_millis(500), move || {
                    GroupMsg::Restart(partition)
                });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(partition) = state.by_actor.remove(&cell.get_id()) {
                    state.consumers.remove(&partition);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl GroupState {
    async fn start(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        partition: u32,
    ) -> Result<(), ActorProcessingErr> {
        if self.consumers.contains_key(&partition) {
            return Ok(());
        }
        let args = ConsumerArgs {
            partition,
            log: Arc::clone(&self.args.log),
            pipeline: Arc::clone(&self.args.pipeline),
            shutdown: self.args.shutdown.clone(),
        };
        match Actor::spawn_linked(None, PartitionConsumer, args, myself.get_cell()).await {
            Ok((consumer, _)) => {
                self.by_actor.insert(consumer.get_id(), partition);
                self.consumers.insert(partition, consumer);
            }
            Err(error) => {
                // Typically the log was unreachable while reading the committed offset.
                tracing::warn!(partition, error = %error, "partition consumer did not start; retrying");
                myself.send_after(Duration::from_secs(1), move || GroupMsg::Restart(partition));
            }
        }
        Ok(())
    }

    /// Drains the given partitions concurrently, each bounded by the drain timeout.
    async fn revoke(&mut self, partitions: &[u32]) -> Vec<PartitionStatus> {
        let timeout = self.args.drain_timeout;
        let drains = partitions
            .iter()
            .filter_map(|p| self.consumers.remove(p))
            .map(|consumer| async move {
                let result = consumer
                    .call(
                        |reply| ConsumerMsg::Drain(timeout, reply),
                        Some(timeout + Duration::from_secs(5)),
                    )
                    .await;
                match result {
                    Ok(ractor::rpc::CallResult::Success(status)) => Some(status),
                    _ => {
                        consumer.stop(Some("drain did not answer".into()));
                        None
                    }
                }
            });
        futures::future::join_all(drains)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn status(&self) -> GroupStatus {
        let mut partitions = Vec::with_capacity(self.consumers.len());
        for consumer in self.consumers.values() {
            let result = consumer
                .call(ConsumerMsg::Status, Some(Duration::from_secs(2)))
                .await;
            if let Ok(ractor::rpc::CallResult::Success(status)) = result {
                partitions.push(status);
            }
        }
        GroupStatus {
            assigned: self.consumers.keys().copied().collect(),
            partitions,
            consumer_restarts: self.restarts,
        }
    }
}
