//! Test doubles and builders for the actors' unit tests: an in-memory log and store, record
//! builders, a probe actor that forwards what it receives, and a bounded polling helper.

pub mod booking;
mod log;
mod store;
mod store_apikeys;
mod store_catalog;
mod store_impl;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, Message};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::clock::ManualClock;
use crate::dedup::retell_key;
use crate::domain::{EventRow, EventStatus};
use crate::ids::{CompanyId, EventId};
use crate::metrics::PipelineMetrics;
use crate::pipeline::{FaultHook, Pipeline};
use crate::record::{Disposition, LogRecord, Provider, RecordMeta, StoredRecord};
use crate::settings::PipelineSettings;

pub use self::log::MemLog;
pub use self::store::MemStore;

/// A fixed start for [`ManualClock`]s.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Settings with short timers, so paused-time tests advance quickly.
pub fn settings() -> PipelineSettings {
    PipelineSettings {
        fetch_wait: Duration::from_millis(50),
        commit_interval: Duration::from_millis(20),
        restart_backoff: Duration::from_millis(10),
        ..PipelineSettings::default()
    }
}

/// A pipeline over `store` with a manual clock and unregistered metrics.
pub fn pipeline(
    store: Arc<MemStore>,
    settings: PipelineSettings,
    fault: Option<Arc<dyn FaultHook>>,
) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        store,
        clock: Arc::new(ManualClock::new(t0())),
        settings,
        metrics: PipelineMetrics::unregistered(),
        fault,
        booker: None,
        retries: None,
    })
}

/// A Retell webhook body the handler accepts.
pub fn retell_body(event: &str, call_id: &str) -> String {
    format!(r#"{{"event":"{event}","call":{{"call_id":"{call_id}"}}}}"#)
}

/// A record with an explicit body, dedup key and disposition.
pub fn record_with(
    company_id: CompanyId,
    body: &str,
    dedup_key: &str,
    disposition: Disposition,
) -> LogRecord {
    LogRecord {
        meta: RecordMeta {
            event_id: EventId::new(),
            provider: Provider::Retell,
            company_id,
            event_type: "call_ended".into(),
            dedup_key: dedup_key.into(),
            received_at: t0(),
            correlation_id: Uuid::now_v7(),
            secret_id: "sec_test".into(),
            disposition,
            retry: None,
        },
        value: Bytes::from(body.to_owned()),
    }
}

/// An accepted Retell `call_ended` of `call_id`.
pub fn call_ended(company_id: CompanyId, call_id: &str) -> LogRecord {
    let body = retell_body("call_ended", call_id);
    let key = retell_key("call_ended", call_id);
    record_with(company_id, &body, &key, Disposition::Accept)
}

/// The record as the log would return it at `partition`/`offset`.
pub fn stored(record: LogRecord, partition: u32, offset: u64) -> StoredRecord {
    StoredRecord {
        partition,
        offset,
        meta: record.meta,
        value: record.value,
    }
}

/// The ledger row a consumer writes before dispatching.
pub fn received(record: &StoredRecord) -> EventRow {
    crate::pipeline::received_row(record, t0())
}

/// Polls `check` (sleeping 5 ms between tries, up to 2000 tries); panics naming `what`.
/// Under paused time every sleep advances the virtual clock, so timers keep firing.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held: {what}");
}

/// Lets other tasks run for `n` scheduler turns without moving time.
pub async fn yield_turns(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// An actor that forwards every message it receives to a channel.
pub struct Probe<M>(PhantomData<fn() -> M>);

impl<M: Message> Actor for Probe<M> {
    type Msg = M;
    type State = mpsc::UnboundedSender<M>;
    type Arguments = mpsc::UnboundedSender<M>;

    async fn pre_start(
        &self,
        _myself: ActorRef<M>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<M>,
        message: M,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(message);
        Ok(())
    }

    /// Keeps running when a child linked to it stops (ractor's default stops the parent).
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<M>,
        _event: ractor::SupervisionEvent,
        _tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Spawns a [`Probe`].
pub async fn probe<M: Message>() -> (ActorRef<M>, mpsc::UnboundedReceiver<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Probe(PhantomData), tx)
        .await
        .expect("probe starts");
    (actor, rx)
}

impl MemStore {
    /// The tenant's ledger rows ordered by log offset (synchronous, for polling).
    pub fn rows(&self, company_id: CompanyId) -> Vec<EventRow> {
        let mut rows = self.rows_unordered(company_id);
        rows.sort_by_key(|r| (r.partition, r.offset));
        rows
    }

    /// The statuses of the tenant's ledger rows, in log order.
    pub fn statuses(&self, company_id: CompanyId) -> Vec<EventStatus> {
        self.rows(company_id).iter().map(|r| r.status).collect()
    }
}
