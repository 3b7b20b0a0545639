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

use crate::domain::EventStatus;
use crate::error::LogError;
use crate::ids::CompanyId;
use crate::log::EventLog;
use crate::pipeline::{received_row, Pipeline};
use crate::record::StoredRecord;
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
    drain: Option<RpcReplyPort<PartitionStatus>>,
}

pub struct PartitionConsumer;

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
            partition: args.partition,
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
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, error) => Err(format!(
                "tenant supervisor of partition {} failed: {error}",
                state.args.partition
            )
            .into()),
            SupervisionEvent::ActorTerminated(..) if state.drain.is_none() => {
                myself.stop(Some("tenant supervisor stopped".into()));
                Ok(())
            }
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
        self.next_fetch = last.offset + 1;
        if !self.record_received(&records).await {
            return Ok(()); // shutting down while the store was unavailable
        }
        self.backlog.extend(records.into_iter().map(Arc::new));
        self.dispatch_backlog(myself)?;
        Ok(())
    }

    /// Writes `received` ledger rows for a fetched batch, retrying while the store is down.
    async fn record_received(&self, records: &[StoredRecord]) -> bool {
        let pipeline = &self.args.pipeline;
        let now = pipeline.clock.now();
        let rows: Vec<_> = records.iter().map(|r| received_row(r, now)).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            match pipeline.store.record_events(&rows).await {
                Ok(()) => return true,
                Err(error) => {
                    pipeline.metrics.store_retries.inc();
                    tracing::warn!(partition = self.args.partition, error = %error, "store unavailable; retrying ledger write");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.args.shutdown.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(pipeline.settings.store_retry_max_backoff);
                }
            }
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
                return Ok(()); // paused until this tenant finishes something
            }
            let record = self.backlog.pop_front().expect("front exists");
            self.in_flight.insert(record.offset, false);
            *self.per_tenant.entry(company_id).or_insert(0) += 1;
            self.supervisor.cast(SupervisorMsg::Dispatch(record))?;
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
        if let Ok(end) = log.end_offset(self.args.partition).await {
            let lag = end.saturating_sub(self.committed) as i64;
            pipeline
                .metrics
                .consumer_lag
                .with_label_values(&[&self.args.partition.to_string()])
                .set(lag);
        }
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
