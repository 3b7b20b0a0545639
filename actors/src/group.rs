//! WorkerGroup: the root of a worker's supervision tree. It owns one PartitionConsumer per
//! assigned partition. The embedded backend assigns every partition at start; the Kafka
//! backend forwards the consumer group's assign / revoke callbacks here.
//!
//! Supervision decision: a PartitionConsumer that fails is restarted after a backoff
//! (500 ms, doubling per consecutive failure, at most 30 s) from its committed offset (at-least-once; dedup absorbs the redelivery). One that stops
//! because it was drained is forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::log::EventLog;
use crate::partition_consumer::{ConsumerArgs, ConsumerMsg, PartitionConsumer, PartitionStatus};
use crate::pipeline::Pipeline;

/// What `/health` and the CLI see of a worker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupStatus {
    /// Partitions this worker owns (all of them with the embedded log; the consumer
    /// group's share with Kafka), whether or not their consumer is running right now.
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
    /// Assigned and not revoked since: a scheduled `Restart` only applies to these.
    assigned: BTreeSet<u32>,
    /// Per partition: consecutive consumer failures and when the last one happened.
    failures: HashMap<u32, (u32, Instant)>,
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
            failures: HashMap::new(),
            assigned: BTreeSet::new(),
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
                    state.assigned.insert(partition);
                    state.start(&myself, partition).await?;
                }
            }
            GroupMsg::Revoke(partitions, reply) => {
                for partition in &partitions {
                    state.assigned.remove(partition);
                }
                let drained = state.revoke(&partitions).await;
                let _ = reply.send(drained);
            }
            GroupMsg::Status(reply) => {
                let _ = reply.send(state.status().await);
            }
            GroupMsg::Restart(partition) => {
                // A partition revoked during the restart backoff belongs to someone else now.
                if !state.args.shutdown.is_cancelled()
                    && state.assigned.contains(&partition)
                    && !state.consumers.contains_key(&partition)
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
                let delay = state.restart_delay(partition);
                tracing::error!(
                    partition,
                    error = %error,
                    delay_ms = delay.as_millis() as u64,
                    "partition consumer failed; restarting"
                );
                myself.send_after(delay, move || GroupMsg::Restart(partition));
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

/// First restart delay of a failed consumer; doubles per consecutive failure up to the cap,
/// so a persistent fault (a store refusing a ledger batch) backs off instead of spinning.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A consumer that ran this long without failing starts its count afresh.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// The delay before restarting after `failures` consecutive failures (1 = the first).
fn backoff_after(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(10);
    (RESTART_BACKOFF * 2u32.pow(exponent)).min(RESTART_BACKOFF_MAX)
}

impl GroupState {
    fn restart_delay(&mut self, partition: u32) -> Duration {
        let now = Instant::now();
        let entry = self.failures.entry(partition).or_insert((0, now));
        if now.duration_since(entry.1) > FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        backoff_after(entry.0)
    }

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
            assigned: self.assigned.iter().copied().collect(),
            partitions,
            consumer_restarts: self.restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::rpc::CallResult;

    use super::*;
    use crate::domain::EventStatus;
    use crate::ids::CompanyId;
    use crate::partition::partition_for;
    use crate::testkit::{self, call_ended, eventually, MemLog, MemStore};

    const PARTITIONS: u32 = 4;

    struct Fixture {
        log: Arc<MemLog>,
        store: Arc<MemStore>,
        pipeline: Arc<Pipeline>,
        group: ActorRef<GroupMsg>,
    }

    async fn fixture() -> Fixture {
        let log = Arc::new(MemLog::new(PARTITIONS));
        let store = Arc::new(MemStore::new());
        let pipeline = testkit::pipeline(Arc::clone(&store), testkit::settings(), None);
        let args = GroupArgs {
            log: Arc::clone(&log) as Arc<dyn EventLog>,
            pipeline: Arc::clone(&pipeline),
            shutdown: CancellationToken::new(),
            drain_timeout: Duration::from_secs(10),
        };
        let (group, _) = Actor::spawn(None, WorkerGroup, args).await.unwrap();
        Fixture {
            log,
            store,
            pipeline,
            group,
        }
    }

    /// A tenant whose records land on `partition`.
    fn tenant_on(partition: u32) -> CompanyId {
        (0..10_000)
            .map(|_| CompanyId::new())
            .find(|c| partition_for(c.to_string().as_bytes(), PARTITIONS) == partition)
            .expect("some tenant hashes onto every partition")
    }

    impl Fixture {
        async fn status(&self) -> GroupStatus {
            match self.group.call(GroupMsg::Status, None).await.unwrap() {
                CallResult::Success(status) => status,
                other => panic!("status call: {other:?}"),
            }
        }

        async fn revoke(&self, partitions: Vec<u32>) -> Vec<PartitionStatus> {
            let reply = self
                .group
                .call(|r| GroupMsg::Revoke(partitions, r), None)
                .await
                .unwrap();
            match reply {
                CallResult::Success(statuses) => statuses,
                other => panic!("revoke call: {other:?}"),
            }
        }

        async fn wait_status(&self, what: &str, check: impl Fn(&GroupStatus) -> bool) {
            for _ in 0..2000 {
                if check(&self.status().await) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("group status never showed: {what}");
        }

        async fn event(&self, company: CompanyId, call_id: &str) {
            self.log
                .append(vec![call_ended(company, call_id)])
                .await
                .unwrap();
        }

        fn processed(&self, company: CompanyId, n: usize) -> bool {
            self.store.statuses(company) == vec![EventStatus::Processed; n]
        }
    }

    #[test]
    fn restart_backoff_doubles_up_to_its_cap() {
        let delays: Vec<u64> = (1..=8)
            .map(|n| backoff_after(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn assign_starts_a_consumer_per_partition() {
        let f = fixture().await;
        let (on0, on1, on2) = (tenant_on(0), tenant_on(1), tenant_on(2));

        f.group.cast(GroupMsg::Assign(vec![0, 2])).unwrap();
        f.event(on0, "c0").await;
        f.event(on1, "c1").await;
        f.event(on2, "c2").await;

        eventually("assigned partitions consumed", || {
            f.processed(on0, 1) && f.processed(on2, 1)
        })
        .await;
        let status = f.status().await;
        assert_eq!(status.assigned, vec![0, 2]);
        let listed: Vec<_> = status.partitions.iter().map(|p| p.partition).collect();
        assert_eq!(listed, vec![0, 2]);
        assert_eq!(status.consumer_restarts, 0);
        assert_eq!(f.store.statuses(on1), vec![], "partition 1 is not ours");

        // Assigning a partition again does not start a second consumer.
        f.group.cast(GroupMsg::Assign(vec![2])).unwrap();
        assert_eq!(f.status().await.assigned, vec![0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn revoke_drains_and_removes_the_consumers_and_replies_with_their_status() {
        let f = fixture().await;
        let (on0, on2) = (tenant_on(0), tenant_on(2));
        f.group.cast(GroupMsg::Assign(vec![0, 2])).unwrap();
        f.event(on0, "c0").await;
        f.event(on2, "c2").await;
        eventually("processed", || f.processed(on0, 1) && f.processed(on2, 1)).await;

        let drained = f.revoke(vec![0, 3]).await;

        assert_eq!(drained.len(), 1, "partition 3 was never assigned");
        assert_eq!((drained[0].partition, drained[0].committed), (0, 1));
        assert_eq!(f.log.committed_offset("askpro", 0), Some(1));
        let status = f.status().await;
        assert_eq!(status.assigned, vec![2]);
        assert_eq!(
            status.consumer_restarts, 0,
            "a drained consumer is not restarted"
        );

        // Partition 0 is no longer consumed; partition 2 still is.
        f.event(on0, "c0b").await;
        f.event(on2, "c2b").await;
        eventually("partition 2 consumed", || f.processed(on2, 2)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(f.store.statuses(on0), vec![EventStatus::Processed]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_consumer_is_restarted_from_its_committed_offset() {
        let f = fixture().await;
        let on1 = tenant_on(1);
        f.group.cast(GroupMsg::Assign(vec![1])).unwrap();
        f.event(on1, "c0").await;
        eventually("committed", || {
            f.log.committed_offset("askpro", 1) == Some(1)
        })
        .await;
        assert_eq!(f.pipeline.metrics.tenant_actors.get(), 1);

        f.log.panic_next_commit(); // committing c1 panics inside the consumer
        f.event(on1, "c1").await;
        f.wait_status("consumer restarted", |s| {
            s.consumer_restarts == 1 && s.assigned == [1] && s.partitions.len() == 1
        })
        .await;

        eventually("processed after restart", || f.processed(on1, 2)).await;
        eventually("committed after restart", || {
            f.log.committed_offset("askpro", 1) == Some(2)
        })
        .await;
        let rows = f.store.rows(on1);
        assert_eq!(
            rows[0].attempts, 1,
            "the committed event was not redelivered"
        );
        assert_eq!(
            f.pipeline.metrics.tenant_actors.get(),
            1,
            "the failed consumer's tenant actors left the gauge"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_revoked_while_its_consumer_awaits_restart_stays_revoked() {
        let f = fixture().await;
        f.group.cast(GroupMsg::Assign(vec![1])).unwrap();
        f.wait_status("consumer up", |s| s.assigned == [1]).await;

        f.log.panic_next_commit();
        f.event(tenant_on(1), "x").await;
        // Failed, waiting out its restart backoff: still assigned, no consumer running.
        f.wait_status("consumer failed", |s| {
            s.consumer_restarts == 1 && s.assigned == [1] && s.partitions.is_empty()
        })
        .await;
        // The rebalance takes the partition away during the restart backoff.
        assert!(f.revoke(vec![1]).await.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;

        let status = f.status().await;
        assert!(
            status.assigned.is_empty(),
            "a revoked partition is not assigned"
        );
        assert!(
            status.partitions.is_empty(),
            "restarted a revoked partition"
        );
    }
}
