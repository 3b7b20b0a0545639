//! IngressActor: appends verified webhooks to the log with group commit.
//!
//! HTTP handlers hand each record over and wait. While one batch is being made durable, new
//! records accumulate; when the flush completes, everything that arrived meanwhile goes out as
//! the next batch. Under load one fsync (or one Kafka acknowledgement round) covers many
//! webhooks; when idle a lone webhook is flushed at once, with no linger delay.
//!
//! The mailbox of a ractor actor is unbounded, so [`IngressHandle`] bounds it with a
//! semaphore: when `max_pending` records wait, callers get [`IngressError::Overloaded`]
//! (HTTP 503, and the provider retries) instead of memory growing.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::LogError;
use crate::log::{EventLog, LogPosition};
use crate::metrics::PipelineMetrics;
use crate::record::LogRecord;

/// Why a record was not acknowledged. Every variant maps to 503: the provider retries.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("ingress overloaded: {pending} webhooks already waiting for the log")]
    Overloaded { pending: usize },
    #[error("log did not confirm durability within {0:?}")]
    Timeout(Duration),
    #[error("log append failed: {0}")]
    Log(String),
    #[error("ingress is shutting down")]
    Closed,
}

type Reply = oneshot::Sender<Result<LogPosition, IngressError>>;

pub enum IngressMsg {
    Append(LogRecord, Reply),
    Flushed(Result<Vec<LogPosition>, String>, Vec<Reply>),
}

pub struct IngressArgs {
    pub log: Arc<dyn EventLog>,
    pub metrics: PipelineMetrics,
    /// Records per append call.
    pub max_batch: usize,
    /// Batches being made durable at once (1 for SQLite's single writer; more for Kafka).
    pub max_inflight_batches: usize,
}

pub struct IngressState {
    args: IngressArgs,
    pending: Vec<(LogRecord, Reply)>,
    inflight_batches: usize,
}

pub struct IngressActor;

impl Actor for IngressActor {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = IngressArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(IngressState {
            args,
            pending: Vec::new(),
            inflight_batches: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngressMsg::Append(record, reply) => state.pending.push((record, reply)),
            IngressMsg::Flushed(result, replies) => {
                state.inflight_batches -= 1;
                answer(result, replies);
            }
        }
        state.flush(&myself);
        Ok(())
    }
}

impl IngressState {
    fn flush(&mut self, myself: &ActorRef<IngressMsg>) {
        while !self.pending.is_empty() && self.inflight_batches < self.args.max_inflight_batches {
            let take = self.pending.len().min(self.args.max_batch);
            let (records, replies): (Vec<_>, Vec<_>) = self.pending.drain(..take).unzip();
            self.args
                .metrics
                .ingress_batch_size
                .observe(records.len() as f64);
            self.inflight_batches += 1;
            let log = Arc::clone(&self.args.log);
            let me = myself.clone();
            tokio::spawn(async move {
                let result = log
                    .append(records)
                    .await
                    .map_err(|e: LogError| e.to_string());
                // If the actor is gone, answer directly so no caller hangs.
                if let Err(ractor::MessagingErr::SendErr(IngressMsg::Flushed(result, replies))) =
                    me.cast(IngressMsg::Flushed(result, replies))
                {
                    answer(result, replies);
                }
            });
        }
    }
}

fn answer(result: Result<Vec<LogPosition>, String>, replies: Vec<Reply>) {
    match result {
        Ok(positions) => {
            for (reply, position) in replies.into_iter().zip(positions) {
                let _ = reply.send(Ok(position));
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, batch = replies.len(), "log append failed");
            for reply in replies {
                let _ = reply.send(Err(IngressError::Log(error.clone())));
            }
        }
    }
}

/// The HTTP side's handle: bounded, with a durability timeout.
#[derive(Clone)]
pub struct IngressHandle {
    actor: ActorRef<IngressMsg>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    timeout: Duration,
}

impl IngressHandle {
    pub fn new(actor: ActorRef<IngressMsg>, max_pending: usize, timeout: Duration) -> Self {
        Self {
            actor,
            permits: Arc::new(Semaphore::new(max_pending)),
            max_pending,
            timeout,
        }
    }

    /// Appends one record and returns once it is durable.
    pub async fn append(&self, record: LogRecord) -> Result<LogPosition, IngressError> {
        let permit: OwnedSemaphorePermit =
            Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
                IngressError::Overloaded {
                    pending: self.max_pending,
                }
            })?;
        let (tx, rx) = oneshot::channel();
        self.actor
            .cast(IngressMsg::Append(record, tx))
            .map_err(|_| IngressError::Closed)?;
        let result = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(IngressError::Closed),
            Err(_) => Err(IngressError::Timeout(self.timeout)),
        };
        drop(permit);
        result
    }

    pub fn actor(&self) -> &ActorRef<IngressMsg> {
        &self.actor
    }
}
