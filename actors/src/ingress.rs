//! IngressActor: appends verified webhooks to the log with group commit.
//!
//! HTTP handlers hand each record over and wait. While one batch is being made durable, new
//! records accumulate; when the flush completes, everything that arrived meanwhile goes out as
//! the next batch. Under load one fsync (or one Kafka acknowledgement round) covers many
//! webhooks; when idle a lone webhook is flushed at once, with no linger delay.
//!
//! The mailbox of a ractor actor is unbounded, so [`IngressHandle`] bounds it with a
//! semaphore: when `max_pending` records wait, callers get [`IngressError::Overloaded`]
//! (HTTP 503, and the provider retries) instead of memory growing. Counting records is not
//! enough when bodies are large, so the handle also keeps a byte budget: the HTTP side
//! reserves a body's size before reading it ([`IngressHandle::reserve`]) and holds the
//! reservation until the append is answered; past the budget it gets
//! [`IngressError::OverBudget`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
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
    #[error(
        "ingress overloaded: {wanted} more bytes do not fit the {budget} bytes of webhook \
         bodies in flight (ingress.max_pending_bytes)"
    )]
    OverBudget { wanted: usize, budget: usize },
    #[error("log did not confirm durability within {} ms", .0.as_millis())]
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
                // A panicking backend must still answer its callers and free the slot.
                let appended = AssertUnwindSafe(log.append(records)).catch_unwind().await;
                let result = match appended {
                    Ok(result) => result.map_err(|e: LogError| e.to_string()),
                    Err(_) => Err("log append panicked".to_owned()),
                };
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

/// The HTTP side's handle: bounded in records and in bytes, with a durability timeout.
#[derive(Clone)]
pub struct IngressHandle {
    actor: ActorRef<IngressMsg>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    bytes: Arc<Semaphore>,
    max_pending_bytes: usize,
    timeout: Duration,
}

/// Bytes of the budget held for one webhook body; they return to it when this is dropped.
#[derive(Debug)]
pub struct BytesReservation {
    _permit: OwnedSemaphorePermit,
}

/// The bounds of an [`IngressHandle`].
#[derive(Clone, Copy, Debug)]
pub struct IngressLimits {
    /// Records waiting for durability at once.
    pub max_pending: usize,
    /// Bytes of bodies reserved at once (at most `Semaphore::MAX_PERMITS`).
    pub max_pending_bytes: usize,
    /// How long a record may wait for durability.
    pub timeout: Duration,
}

impl IngressHandle {
    pub fn new(actor: ActorRef<IngressMsg>, limits: IngressLimits) -> Self {
        let max_pending_bytes = limits.max_pending_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            actor,
            permits: Arc::new(Semaphore::new(limits.max_pending)),
            max_pending: limits.max_pending,
            bytes: Arc::new(Semaphore::new(max_pending_bytes)),
            max_pending_bytes,
            timeout: limits.timeout,
        }
    }

    /// Reserves `bytes` of the byte budget without waiting: a caller that does not fit is
    /// refused (HTTP 503) rather than queued, so memory stays bounded by the budget.
    pub fn reserve(&self, bytes: usize) -> Result<BytesReservation, IngressError> {
        let over = || IngressError::OverBudget {
            wanted: bytes,
            budget: self.max_pending_bytes,
        };
        let wanted = u32::try_from(bytes).map_err(|_| over())?;
        let permit = Arc::clone(&self.bytes)
            .try_acquire_many_owned(wanted)
            .map_err(|_| over())?;
        Ok(BytesReservation { _permit: permit })
    }

    /// Bytes currently reserved (for `/metrics`).
    pub fn pending_bytes(&self) -> usize {
        self.max_pending_bytes - self.bytes.available_permits()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CompanyId;
    use crate::testkit::{call_ended, eventually, MemLog};

    async fn start(log: &Arc<MemLog>, max_batch: usize) -> ActorRef<IngressMsg> {
        let args = IngressArgs {
            log: Arc::clone(log) as Arc<dyn EventLog>,
            metrics: PipelineMetrics::unregistered(),
            max_batch,
            max_inflight_batches: 1,
        };
        let (actor, _) = Actor::spawn(None, IngressActor, args).await.unwrap();
        actor
    }

    type Answer = oneshot::Receiver<Result<LogPosition, IngressError>>;

    fn limits(max_pending: usize, max_pending_bytes: usize) -> IngressLimits {
        IngressLimits {
            max_pending,
            max_pending_bytes,
            timeout: Duration::from_secs(60),
        }
    }

    fn send(actor: &ActorRef<IngressMsg>, record: LogRecord) -> Answer {
        let (tx, rx) = oneshot::channel();
        actor.cast(IngressMsg::Append(record, tx)).unwrap();
        rx
    }

    #[tokio::test]
    async fn records_arriving_during_a_flush_go_out_together_in_the_next_batch() {
        let log = Arc::new(MemLog::new(1));
        log.hold_appends();
        let ingress = start(&log, 64).await;
        let company = CompanyId::new();
        let records: Vec<_> = (0..6)
            .map(|i| call_ended(company, &format!("call_{i}")))
            .collect();

        let first = send(&ingress, records[0].clone());
        eventually("first batch at the log", || log.appends_in_flight() == 1).await;
        let rest: Vec<_> = records[1..]
            .iter()
            .map(|r| send(&ingress, r.clone()))
            .collect();
        // The actor handles messages in order: all five Appends come before the Flushed that
        // releasing the gate produces, so they are pending when the first flush completes.
        log.release_appends(2);

        let mut answers = vec![first.await.unwrap().unwrap()];
        for rx in rest {
            answers.push(rx.await.unwrap().unwrap());
        }
        assert_eq!(log.batch_sizes(), vec![1, 5]);
        assert_eq!(log.append_calls(), 2, "one append per batch");
        // Each caller got its own position, holding its own record.
        let offsets: Vec<_> = answers.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5]);
        for (position, record) in answers.iter().zip(&records) {
            let stored = log.record(*position).unwrap();
            assert_eq!(stored.meta.event_id, record.meta.event_id);
        }
    }

    #[tokio::test]
    async fn max_batch_splits_pending_records() {
        let log = Arc::new(MemLog::new(1));
        log.hold_appends();
        let ingress = start(&log, 2).await;
        let company = CompanyId::new();
        let first = send(&ingress, call_ended(company, "call_0"));
        eventually("first batch at the log", || log.appends_in_flight() == 1).await;
        let rest: Vec<_> = (1..6)
            .map(|i| send(&ingress, call_ended(company, &format!("call_{i}"))))
            .collect();
        log.release_appends(10);

        first.await.unwrap().unwrap();
        for rx in rest {
            rx.await.unwrap().unwrap();
        }
        assert_eq!(log.batch_sizes(), vec![1, 2, 2, 1]);
    }

    #[tokio::test]
    async fn a_failed_append_answers_every_caller_of_that_batch_with_a_log_error() {
        let log = Arc::new(MemLog::new(1));
        log.hold_appends();
        let ingress = start(&log, 64).await;
        let company = CompanyId::new();
        let first = send(&ingress, call_ended(company, "call_0"));
        eventually("first batch at the log", || log.appends_in_flight() == 1).await;
        let batch: Vec<_> = (1..4)
            .map(|i| send(&ingress, call_ended(company, &format!("call_{i}"))))
            .collect();

        log.release_appends(1);
        assert_eq!(first.await.unwrap().unwrap().offset, 0);
        // The second batch is now waiting at the gate; it fails once let through.
        eventually("second batch at the log", || log.appends_in_flight() == 1).await;
        log.set_fail_appends(true);
        log.release_appends(1);

        for rx in batch {
            match rx.await.unwrap() {
                Err(IngressError::Log(message)) => {
                    assert!(message.contains("injected"), "{message}")
                }
                other => panic!("expected a log error, got {other:?}"),
            }
        }
        assert_eq!(log.batch_sizes(), vec![1, 3]);

        // The actor survives the failure and appends again once the log recovers.
        log.set_fail_appends(false);
        log.release_appends(1);
        let again = send(&ingress, call_ended(company, "call_4"));
        assert_eq!(again.await.unwrap().unwrap().offset, 1);
    }

    #[tokio::test]
    async fn a_panicking_append_answers_its_callers_and_frees_the_flush_slot() {
        let log = Arc::new(MemLog::new(1));
        let ingress = start(&log, 64).await;
        let company = CompanyId::new();
        log.set_panic_appends(true);
        match send(&ingress, call_ended(company, "call_0")).await.unwrap() {
            Err(IngressError::Log(message)) => assert!(message.contains("panicked"), "{message}"),
            other => panic!("expected a log error, got {other:?}"),
        }
        // With max_inflight_batches = 1 a leaked slot would leave this caller hanging.
        log.set_panic_appends(false);
        let again = send(&ingress, call_ended(company, "call_1"));
        assert_eq!(again.await.unwrap().unwrap().offset, 0);
    }

    #[tokio::test]
    async fn handle_answers_overloaded_when_max_pending_records_wait() {
        let log = Arc::new(MemLog::new(1));
        log.hold_appends();
        let ingress = start(&log, 64).await;
        let handle = IngressHandle::new(ingress, limits(2, 1 << 20));
        let company = CompanyId::new();

        let mut a = Box::pin(handle.append(call_ended(company, "call_a")));
        let mut b = Box::pin(handle.append(call_ended(company, "call_b")));
        // One poll each takes a permit and hands the record over; both then wait for the log.
        assert!(futures::poll!(&mut a).is_pending());
        assert!(futures::poll!(&mut b).is_pending());

        match handle.append(call_ended(company, "call_c")).await {
            Err(IngressError::Overloaded { pending }) => assert_eq!(pending, 2),
            other => panic!("expected Overloaded, got {other:?}"),
        }

        log.release_appends(10);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_ne!(a, b);
        // Permits came back with the answers.
        handle.append(call_ended(company, "call_d")).await.unwrap();
        assert_eq!(
            log.batch_sizes().iter().sum::<usize>(),
            3,
            "the refused record was not appended"
        );
    }

    #[tokio::test]
    async fn byte_reservations_over_the_budget_are_refused_until_bytes_come_back() {
        let log = Arc::new(MemLog::new(1));
        let handle = IngressHandle::new(start(&log, 64).await, limits(8, 1000));
        let first = handle.reserve(600).unwrap();
        assert_eq!(handle.pending_bytes(), 600);
        match handle.reserve(401) {
            Err(IngressError::OverBudget { wanted, budget }) => {
                assert_eq!((wanted, budget), (401, 1000))
            }
            other => panic!("expected OverBudget, got {other:?}"),
        }
        let second = handle.reserve(400).unwrap();
        assert_eq!(handle.pending_bytes(), 1000);
        assert!(handle.reserve(1).is_err(), "the budget is used up");
        drop(first);
        assert_eq!(handle.pending_bytes(), 400);
        handle.reserve(600).unwrap();
        drop(second);
        // More than the whole budget can never fit; it is refused, not queued for ever.
        assert!(handle.reserve(1001).is_err());
        assert!(handle.reserve(usize::MAX).is_err());
    }
}
