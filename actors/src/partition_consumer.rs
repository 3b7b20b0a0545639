//! PartitionConsumer: reads one partition of the log, feeds the partition's TenantSupervisor
//! and commits the contiguous prefix of finished offsets.
//!
//! Backpressure: a record whose tenant already has `tenant_queue_capacity` events in flight
//! (or a partition at `partition_max_inflight`) stays at the head of the backlog and the
//! partition stops fetching until that tenant finishes something. Memory stays bounded; the
//! log holds the rest.
//!
//! Supervision: the TenantSupervisor is a linked child. If it fails, this consumer stops with
//! an error and the worker group restarts it from the committed offset; the dedup store makes
//! the redelivered events harmless.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::EventStatus;
use crate::error::LogError;
use crate::ids::CompanyId;
use crate::log::EventLog;
use crate::pipeline::{received_row, Pipeline};
use crate::record::StoredRecord;
use crate::retry;
use crate::tenant_supervisor::{SupervisorArgs, SupervisorMsg, TenantSupervisor};

/// A snapshot for `/health` and tests.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub committed: u64,
    pub next_fetch: u64,
    pub in_flight: usize,
    pub backlog: usize,
    pub paused: bool,
}

pub enum ConsumerMsg {
    Poll,
    Fetched(Result<Vec<StoredRecord>, LogError>),
    Finished {
        offset: u64,
        company_id: CompanyId,
        status: EventStatus,
    },
    CommitTick,
    /// Stop taking records, wait for in-flight ones up to the timeout, commit, reply.
    Drain(Duration, RpcReplyPort<PartitionStatus>),
    DrainDeadline,
    Status(RpcReplyPort<PartitionStatus>),
}

pub struct ConsumerArgs {
    pub partition: u32,
    pub log: Arc<dyn EventLog>,
    pub pipeline: Arc<Pipeline>,
    pub shutdown: CancellationToken,
}

pub struct ConsumerState {
    args: ConsumerArgs,
    supervisor: ActorRef<SupervisorMsg>,
    /// The next offset to fetch.
    next_fetch: u64,
    /// The last committed next-offset.
    committed: u64,
    /// Dispatched offsets → finished?
    in_flight: BTreeMap<u64, bool>,
    per_tenant: HashMap<CompanyId, usize>,
    /// Fetched but not yet dispatched (backpressure).
    backlog: VecDeque<Arc<StoredRecord>>,
    fetching: bool,
    /// The backend was asked to pause this partition (see [`EventLog::pause`]).
    paused: bool,
    /// A lag lookup is running, and when the last one started (see `refresh_lag`).
    lag_lookup: Arc<std::sync::atomic::AtomicBool>,
    lag_checked: Option<Instant>,
    drain: Option<RpcReplyPort<PartitionStatus>>,
}

pub struct PartitionConsumer;

/// How often the lag gauge is refreshed.
const LAG_REFRESH: Duration = Duration::from_secs(2);

impl Actor for PartitionConsumer {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let group = &args.pipeline.settings.consumer_group;
        let committed = args
            .log
            .committed(group, args.partition)
            .await?
            .unwrap_or(0);
        let supervisor_args = SupervisorArgs {
            pipeline: Arc::clone(&args.pipeline),
            consumer: myself.clone(),
            shutdown: args.shutdown.clone(),
        };
        let (supervisor, _) =
            Actor::spawn_linked(None, TenantSupervisor, supervisor_args, myself.get_cell()).await?;
        myself.send_interval(args.pipeline.settings.commit_interval, || {
            ConsumerMsg::CommitTick
        });
        myself.cast(ConsumerMsg::Poll)?;
        tracing::info!(
            partition = args.partition,
            committed,
            "partition consumer started"
        );
        Ok(ConsumerState {
            args,
            supervisor,
            next_fetch: committed,
            committed,
            in_flight: BTreeMap::new(),
            per_tenant: HashMap::new(),
            backlog: VecDeque::new(),
            fetching: false,
            paused: false,
            lag_lookup: Arc::default(),
            lag_checked: None,
            drain: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConsumerMsg::Poll => state.poll(&myself),
            ConsumerMsg::Fetched(result) => state.fetched(&myself, result).await?,
            ConsumerMsg::Finished {
                offset,
                company_id,
                status,
            } => state.finished(&myself, offset, company_id, status).await?,
            ConsumerMsg::CommitTick => state.commit().await,
            ConsumerMsg::Drain(timeout, reply) => state.start_drain(&myself, timeout, reply).await,
            ConsumerMsg::DrainDeadline => state.finish_drain(&myself).await,
            ConsumerMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, error) => Err(format!(
                "tenant supervisor of partition {} failed: {error}",
                state.args.partition
            )
            .into()),
            // Outside a drain the supervisor never stops on purpose: escalate, so the worker
            // group restarts this consumer from its committed offset.
            SupervisionEvent::ActorTerminated(..) if state.drain.is_none() => Err(format!(
                "tenant supervisor of partition {} stopped unexpectedly",
                state.args.partition
            )
            .into()),
            _ => Ok(()),
        }
    }
}

impl ConsumerState {
    fn status(&self) -> PartitionStatus {
        PartitionStatus {
            partition: self.args.partition,
            committed: self.committed,
            next_fetch: self.next_fetch,
            in_flight: self.in_flight.len(),
            backlog: self.backlog.len(),
            paused: !self.backlog.is_empty(),
        }
    }

    fn poll(&mut self, myself: &ActorRef<ConsumerMsg>) {
        let settings = &self.args.pipeline.settings;
        let busy = self.fetching || self.drain.is_some() || !self.backlog.is_empty();
        if busy || self.in_flight.len() >= settings.partition_max_inflight {
            return;
        }
        self.fetching = true;
        let log = Arc::clone(&self.args.log);
        let (partition, offset) = (self.args.partition, self.next_fetch);
        let (max, wait) = (settings.fetch_batch, settings.fetch_wait);
        let me = myself.clone();
        tokio::spawn(async move {
            let result = log.fetch(partition, offset, max, wait).await;
            let _ = me.cast(ConsumerMsg::Fetched(result));
        });
    }

    async fn fetched(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        result: Result<Vec<StoredRecord>, LogError>,
    ) -> Result<(), ActorProcessingErr> {
        self.fetching = false;
        if self.drain.is_some() {
            return Ok(()); // not dispatched, not committed: the next owner reads them again
        }
        let records = match result {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(partition = self.args.partition, error = %error, "fetch failed; retrying");
                myself.send_after(Duration::from_millis(500), || ConsumerMsg::Poll);
                return Ok(());
            }
        };
        let Some(last) = records.last() else {
            myself.cast(ConsumerMsg::Poll)?;
            return Ok(());
        };
        let next_fetch = last.offset + 1;
        if !self.record_received(&records).await? {
            // Shutting down while the store was unavailable: the batch is dropped unrecorded,
            // so `next_fetch` (and with it the watermark) must not move past it.
            return Ok(());
        }
        self.next_fetch = next_fetch;
        self.backlog.extend(records.into_iter().map(Arc::new));
        self.dispatch_backlog(myself)?;
        Ok(())
    }

    /// Writes `received` ledger rows for a fetched batch, retrying while the store is down.
    /// `Ok(false)` when shutdown interrupted the wait; `Err` when the store refused for good
    /// (the consumer then fails and is restarted from its committed offset).
    async fn record_received(&self, records: &[StoredRecord]) -> Result<bool, ActorProcessingErr> {
        let pipeline = &self.args.pipeline;
        let now = pipeline.clock.now();
        let rows: Vec<_> = records.iter().map(|r| received_row(r, now)).collect();
        let max_backoff = pipeline.settings.store_retry_max_backoff;
        let outcome = retry::while_unavailable(
            "record received events",
            &pipeline.metrics,
            max_backoff,
            &self.args.shutdown,
            || pipeline.store.record_events(&rows),
        )
        .instrument(tracing::info_span!(
            "ledger",
            partition = self.args.partition
        ))
        .await;
        match outcome {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(error)) => Err(Box::new(error)),
        }
    }

    fn dispatch_backlog(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let settings = &self.args.pipeline.settings;
        while let Some(record) = self.backlog.front() {
            let company_id = record.meta.company_id;
            let tenant_load = self.per_tenant.get(&company_id).copied().unwrap_or(0);
            if tenant_load >= settings.tenant_queue_capacity
                || self.in_flight.len() >= settings.partition_max_inflight
            {
                // Paused until this tenant finishes something; the backend stops prefetching.
                if !self.paused {
                    self.paused = true;
                    self.args.log.pause(self.args.partition);
                }
                return Ok(());
            }
            let record = self.backlog.pop_front().expect("front exists");
            self.in_flight.insert(record.offset, false);
            *self.per_tenant.entry(company_id).or_insert(0) += 1;
            self.supervisor.cast(SupervisorMsg::Dispatch(record))?;
        }
        if self.paused {
            self.paused = false;
            self.args.log.resume(self.args.partition);
        }
        myself.cast(ConsumerMsg::Poll)?;
        Ok(())
    }

    async fn finished(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        offset: u64,
        company_id: CompanyId,
        status: EventStatus,
    ) -> Result<(), ActorProcessingErr> {
        let Some(done) = self.in_flight.get_mut(&offset) else {
            return Ok(()); // already counted (a late duplicate report)
        };
        debug_assert!(status.is_final());
        *done = true;
        if let Some(n) = self.per_tenant.get_mut(&company_id) {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&company_id);
            }
        }
        while let Some(entry) = self.in_flight.first_entry() {
            if !*entry.get() {
                break;
            }
            entry.remove();
        }
        if self.drain.is_some() {
            if self.in_flight.is_empty() {
                self.finish_drain(myself).await;
            }
            return Ok(());
        }
        self.dispatch_backlog(myself)
    }

    /// The first offset not yet finished: everything below it may be committed.
    fn watermark(&self) -> u64 {
        if let Some((&offset, _)) = self.in_flight.first_key_value() {
            return offset;
        }
        self.backlog
            .front()
            .map(|r| r.offset)
            .unwrap_or(self.next_fetch)
    }

    async fn commit(&mut self) {
        let watermark = self.watermark();
        let (log, pipeline) = (&self.args.log, &self.args.pipeline);
        if watermark > self.committed {
            // State first: an offset may only be committed once its effects are durable.
            if let Err(error) = pipeline.store.sync().await {
                tracing::warn!(partition = self.args.partition, error = %error, "store sync failed; commit postponed");
                return;
            }
            let group = &pipeline.settings.consumer_group;
            match log.commit(group, self.args.partition, watermark).await {
                Ok(()) => self.committed = watermark,
                Err(error) => {
                    tracing::warn!(partition = self.args.partition, error = %error, "offset commit failed");
                    return;
                }
            }
        }
        self.refresh_lag();
    }

    /// Updates the lag gauge off the actor: the end offset can be a broker round trip, and
    /// this actor must keep answering (drains, status) meanwhile. One lookup at a time.
    fn refresh_lag(&mut self) {
        // Every few seconds is plenty for a gauge, and each lookup is a request to the broker.
        if self
            .lag_checked
            .is_some_and(|at| at.elapsed() < LAG_REFRESH)
        {
            return;
        }
        if self
            .lag_lookup
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        self.lag_checked = Some(Instant::now());
        let busy = Arc::clone(&self.lag_lookup);
        let log = Arc::clone(&self.args.log);
        let (partition, committed) = (self.args.partition, self.committed);
        let gauge = self
            .args
            .pipeline
            .metrics
            .consumer_lag
            .with_label_values(&[&partition.to_string()]);
        tokio::spawn(async move {
            if let Ok(end) = log.end_offset(partition).await {
                gauge.set(end.saturating_sub(committed) as i64);
            }
            busy.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    async fn start_drain(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        timeout: Duration,
        reply: RpcReplyPort<PartitionStatus>,
    ) {
        tracing::info!(
            partition = self.args.partition,
            in_flight = self.in_flight.len(),
            "draining partition"
        );
        // Undispatched records are given back: fetching resumes (here or on the next owner)
        // from the first of them, and the watermark must not pass them.
        if let Some(front) = self.backlog.front() {
            self.next_fetch = front.offset;
        }
        self.backlog.clear();
        self.drain = Some(reply);
        if self.in_flight.is_empty() {
            self.finish_drain(myself).await;
        } else {
            myself.send_after(timeout, || ConsumerMsg::DrainDeadline);
        }
    }

    async fn finish_drain(&mut self, myself: &ActorRef<ConsumerMsg>) {
        let Some(reply) = self.drain.take() else {
            return;
        };
        let started = Instant::now();
        self.commit().await;
        let status = self.status();
        tracing::info!(
            partition = status.partition,
            committed = status.committed,
            unfinished = status.in_flight,
            commit_ms = started.elapsed().as_millis() as u64,
            "partition drained"
        );
        let _ = reply.send(status);
        self.supervisor.stop(Some("partition drained".into()));
        myself.stop(Some("partition drained".into()));
    }
}

#[cfg(test)]
mod tests {
    use ractor::rpc::CallResult;

    use super::*;
    use crate::ids::CompanyId;
    use crate::settings::PipelineSettings;
    use crate::testkit::{self, call_ended, eventually, MemLog, MemStore};

    struct Fixture {
        log: Arc<MemLog>,
        store: Arc<MemStore>,
        pipeline: Arc<Pipeline>,
        shutdown: CancellationToken,
    }

    fn fixture(settings: PipelineSettings) -> Fixture {
        let store = Arc::new(MemStore::new());
        Fixture {
            log: Arc::new(MemLog::new(1)),
            pipeline: testkit::pipeline(Arc::clone(&store), settings, None),
            store,
            shutdown: CancellationToken::new(),
        }
    }

    impl Fixture {
        async fn append(&self, tenants: &[CompanyId]) {
            let records = tenants
                .iter()
                .enumerate()
                .map(|(i, c)| call_ended(*c, &format!("call_{i}")))
                .collect();
            self.log.append(records).await.unwrap();
        }

        async fn start(&self) -> ActorRef<ConsumerMsg> {
            let args = ConsumerArgs {
                partition: 0,
                log: Arc::clone(&self.log) as Arc<dyn EventLog>,
                pipeline: Arc::clone(&self.pipeline),
                shutdown: self.shutdown.clone(),
            };
            let (consumer, _) = Actor::spawn(None, PartitionConsumer, args).await.unwrap();
            consumer
        }

        fn committed(&self) -> Option<u64> {
            self.log.committed_offset("askpro", 0)
        }

        /// Lets at least `n` commit ticks run (the tests run on paused tokio time).
        async fn ticks(&self, n: usize) {
            let interval = self.pipeline.settings.commit_interval;
            tokio::time::sleep(interval * (n as u32 + 1)).await;
        }
    }

    async fn status(consumer: &ActorRef<ConsumerMsg>) -> PartitionStatus {
        match consumer.call(ConsumerMsg::Status, None).await.unwrap() {
            CallResult::Success(status) => status,
            other => panic!("status call: {other:?}"),
        }
    }

    async fn wait_status(
        consumer: &ActorRef<ConsumerMsg>,
        what: &str,
        check: impl Fn(&PartitionStatus) -> bool,
    ) -> PartitionStatus {
        for _ in 0..2000 {
            let status = status(consumer).await;
            if check(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("partition status never showed: {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn commits_only_the_contiguous_finished_prefix() {
        let f = fixture(testkit::settings());
        let (a, b) = (CompanyId::new(), CompanyId::new());
        f.store.hold_claims(a);
        f.store.hold_claims(b);
        f.append(&[a, b, a, b]).await; // offsets 0..4
        let consumer = f.start().await;
        eventually("A0 and B1 in flight", || {
            f.store.claims_waiting(a) == 1 && f.store.claims_waiting(b) == 1
        })
        .await;

        // B finishes offsets 1 and 3; offset 0 (A) is still running.
        f.store.release_claims(b, 2);
        eventually("B processed", || {
            f.store.statuses(b) == [EventStatus::Processed; 2]
        })
        .await;
        f.ticks(3).await;
        assert_eq!(
            f.committed().unwrap_or(0),
            0,
            "nothing past unfinished offset 0"
        );
        assert_eq!(status(&consumer).await.committed, 0);

        // A finishes offset 0: 0 and 1 are a finished prefix, 2 (A) is still running.
        f.store.release_claims(a, 1);
        eventually("commit of 0..2", || f.committed() == Some(2)).await;
        f.ticks(3).await;
        assert_eq!(f.committed(), Some(2), "offset 3 is finished but 2 is not");

        f.store.release_claims(a, 1);
        eventually("commit of 0..4", || f.committed() == Some(4)).await;
        let s = status(&consumer).await;
        assert_eq!((s.committed, s.in_flight, s.backlog), (4, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn no_commit_until_the_store_sync_succeeds() {
        let f = fixture(testkit::settings());
        let a = CompanyId::new();
        f.store.set_op_failing("sync", true);
        f.append(&[a, a, a]).await;
        let consumer = f.start().await;
        eventually("all processed", || {
            f.store.statuses(a) == [EventStatus::Processed; 3]
        })
        .await;
        // Each tick tries the barrier first (and stops there while it fails).
        let syncs = f.store.calls_of("sync");
        eventually("commit ticks", || f.store.calls_of("sync") >= syncs + 3).await;
        assert_eq!(
            f.committed(),
            None,
            "offsets wait for the durability barrier"
        );
        assert_eq!(f.log.commit_calls(), 0);

        f.store.set_op_failing("sync", false);
        eventually("commit after sync", || f.committed() == Some(3)).await;
        assert_eq!(status(&consumer).await.committed, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_tenant_pauses_the_partition_until_it_finishes_something() {
        let settings = PipelineSettings {
            tenant_queue_capacity: 1,
            ..testkit::settings()
        };
        let f = fixture(settings);
        let (a, b) = (CompanyId::new(), CompanyId::new());
        f.store.hold_claims(a);
        f.append(&[a, a, a, b]).await;
        let consumer = f.start().await;

        let s = wait_status(&consumer, "A0 in flight, rest held back", |s| {
            s.in_flight == 1 && s.backlog == 3
        })
        .await;
        assert!(s.paused);
        assert_eq!(s.next_fetch, 4);
        // While paused nothing is fetched and nothing behind the head is dispatched.
        let fetches = f.log.fetch_calls();
        tokio::time::sleep(Duration::from_secs(1)).await; // 20 fetch waits
        assert_eq!(f.log.fetch_calls(), fetches, "no fetch while paused");
        assert_eq!(f.store.claims_waiting(a), 1);
        assert_eq!(f.store.statuses(b), vec![EventStatus::Received]);

        // A finishes one event: exactly one more is dispatched.
        f.store.release_claims(a, 1);
        let s = wait_status(&consumer, "A1 dispatched", |s| s.backlog == 2).await;
        assert_eq!((s.in_flight, s.paused), (1, true));

        f.store.release_claims(a, 10);
        let s = wait_status(&consumer, "everything finished", |s| {
            s.in_flight == 0 && s.backlog == 0
        })
        .await;
        assert!(!s.paused);
        assert_eq!(f.store.statuses(a), vec![EventStatus::Processed; 3]);
        assert_eq!(f.store.statuses(b), vec![EventStatus::Processed]);
        eventually("all committed", || f.committed() == Some(4)).await;
        eventually("fetching resumed", || f.log.fetch_calls() > fetches).await;
    }

    /// B0 done, A1 in flight (held), A2 and B3 held back by `tenant_queue_capacity = 1`.
    async fn drain_fixture() -> (Fixture, CompanyId, CompanyId, ActorRef<ConsumerMsg>) {
        let settings = PipelineSettings {
            tenant_queue_capacity: 1,
            ..testkit::settings()
        };
        let f = fixture(settings);
        let (a, b) = (CompanyId::new(), CompanyId::new());
        f.store.hold_claims(a);
        f.append(&[b, a, a, b]).await;
        let consumer = f.start().await;
        wait_status(&consumer, "B0 done, A1 in flight", |s| {
            s.in_flight == 1 && s.backlog == 2
        })
        .await;
        eventually("A1 at the store", || f.store.claims_waiting(a) == 1).await;
        (f, a, b, consumer)
    }

    fn drain(
        consumer: &ActorRef<ConsumerMsg>,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<PartitionStatus> {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            let reply = consumer
                .call(|reply| ConsumerMsg::Drain(timeout, reply), None)
                .await
                .unwrap();
            match reply {
                CallResult::Success(status) => status,
                other => panic!("drain call: {other:?}"),
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_in_flight_events_and_does_not_commit_the_backlog() {
        let (f, a, b, consumer) = drain_fixture().await;

        let drained = drain(&consumer, Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drained.is_finished(), "A1 is still in flight");

        f.store.release_claims(a, 10);
        let s = drained.await.unwrap();

        assert_eq!((s.committed, s.in_flight, s.backlog), (2, 0, 0));
        assert_eq!(
            f.committed(),
            Some(2),
            "the watermark: B0 and A1, not A2 or B3"
        );
        assert_eq!(
            f.store.statuses(a),
            vec![EventStatus::Processed, EventStatus::Received]
        );
        assert_eq!(
            f.store.statuses(b),
            vec![EventStatus::Processed, EventStatus::Received]
        );
        eventually("consumer stopped", || {
            consumer.get_status() == ractor::ActorStatus::Stopped
        })
        .await;
        eventually("tenant actors gone", || {
            f.pipeline.metrics.tenant_actors.get() == 0
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn drain_deadline_commits_up_to_the_first_unfinished_offset() {
        let (f, a, _b, consumer) = drain_fixture().await;

        let s = drain(&consumer, Duration::from_secs(10)).await.unwrap();

        assert_eq!((s.committed, s.in_flight), (1, 1));
        assert_eq!(
            f.committed(),
            Some(1),
            "A1 never finished: redelivered to the next owner"
        );
        assert_eq!(f.store.statuses(a)[0], EventStatus::Processing);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_the_ledger_write_is_retried_does_not_skip_the_batch() {
        let f = fixture(testkit::settings());
        let a = CompanyId::new();
        f.store.set_unavailable(true);
        f.append(&[a, a, a]).await;
        let consumer = f.start().await;
        eventually("ledger write retried", || f.store.failures() >= 2).await;

        f.shutdown.cancel();
        f.store.set_unavailable(false);
        f.ticks(2).await;
        let s = drain(&consumer, Duration::from_secs(10)).await.unwrap();

        assert_eq!(f.store.statuses(a), vec![], "the batch was never recorded");
        assert_eq!((s.committed, s.next_fetch), (0, 0));
        assert_eq!(
            f.committed().unwrap_or(0),
            0,
            "unrecorded records are not committed"
        );
    }
}
