//! TenantActor: runs one tenant's events strictly in log order, one at a time.
//!
//! Supervision: a panic fails this actor; its TenantSupervisor restarts it and redelivers the
//! tenant's unfinished events (see `tenant_supervisor.rs`). An unavailable store is not a
//! panic: the actor retries the same event with capped exponential backoff, so the tenant
//! waits, nothing is skipped and nothing spins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::ids::CompanyId;
use crate::pipeline::{Finished, Pipeline};
use crate::record::StoredRecord;
use crate::tenant_supervisor::SupervisorMsg;

/// One event handed to a tenant actor.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub record: Arc<StoredRecord>,
    /// 1 for the first run, +1 per redelivery after a panic.
    pub attempt: u32,
}

pub enum TenantMsg {
    Process(Delivery),
}

pub struct TenantArgs {
    pub company_id: CompanyId,
    pub pipeline: Arc<Pipeline>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub shutdown: CancellationToken,
}

pub struct TenantActor;

impl Actor for TenantActor {
    type Msg = TenantMsg;
    type State = TenantArgs;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let TenantMsg::Process(delivery) = message;
        if let Some(fault) = &state.pipeline.fault {
            fault.before_process(&delivery.record);
        }
        let started = Instant::now();
        let Some(finished) = run_until_final(state, &delivery).await else {
            return Ok(()); // shutting down: the record stays uncommitted and is redelivered
        };
        state
            .pipeline
            .metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        let record = &delivery.record;
        tracing::debug!(
            company_id = %state.company_id,
            event_id = %record.meta.event_id,
            correlation_id = %record.meta.correlation_id,
            offset = record.offset,
            status = %finished.status,
            "event finished"
        );
        state.supervisor.cast(SupervisorMsg::Done {
            company_id: state.company_id,
            offset: record.offset,
            finished,
        })?;
        Ok(())
    }
}

/// Processes until a final status, retrying while the store is unavailable. `None` when
/// shutdown interrupted the wait.
async fn run_until_final(state: &TenantArgs, delivery: &Delivery) -> Option<Finished> {
    let pipeline = &state.pipeline;
    let mut backoff = Duration::from_millis(50);
    loop {
        match pipeline.process(&delivery.record, delivery.attempt).await {
            Ok(finished) => return Some(finished),
            Err(error) => {
                pipeline.metrics.store_retries.inc();
                tracing::warn!(
                    company_id = %state.company_id,
                    event_id = %delivery.record.meta.event_id,
                    error = %error,
                    backoff_ms = backoff.as_millis() as u64,
                    "store unavailable; retrying event"
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = state.shutdown.cancelled() => return None,
                }
                backoff = (backoff * 2).min(pipeline.settings.store_retry_max_backoff);
            }
        }
    }
}
