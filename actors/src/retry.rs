//! One place for "the store is unavailable: wait and try again". Used by tenant actors (an
//! event) and partition consumers (a ledger batch), so both back off the same way: start at
//! 50 ms, double, cap at `store_retry_max_backoff`, stop waiting on shutdown. Only transient
//! errors are retried; a permanent one is returned at once.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::metrics::PipelineMetrics;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Runs `op` until it succeeds or fails permanently. `None` when shutdown interrupted a
/// backoff: the caller leaves its work unfinished (uncommitted, so redelivered later).
pub async fn while_unavailable<T, F, Fut>(
    what: &'static str,
    metrics: &PipelineMetrics,
    max_backoff: Duration,
    shutdown: &CancellationToken,
    mut op: F,
) -> Option<Result<T, StoreError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match op().await {
            Err(error) if error.is_transient() => {
                metrics.store_retries.inc();
                tracing::warn!(
                    what,
                    error = %error,
                    backoff_ms = backoff.as_millis() as u64,
                    "store unavailable; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return None,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
            done => return Some(done),
        }
    }
}
