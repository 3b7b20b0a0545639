//! Worker-side wiring of the booking path: the Cal.com client and booker, the retry tiers
//! with their forwarders, the dead-letter log and the reconciler.

use std::sync::Arc;

use askpro_actors::booking::{Booker, BookingMetrics};
use askpro_actors::reconciler::{Owns, ReconcilerActor, ReconcilerArgs};
use askpro_actors::retry_tier::{self, RetryTier, RetryTopology};
use askpro_actors::{Clock, EventLog, StateStore};
use prometheus::Registry;
use ractor::Actor;
use tokio_util::sync::CancellationToken;

use crate::app::AppError;
use crate::calcom::{CalcomClient, ClientOptions};
use crate::config::{Config, LogBackend};
use crate::embedded::EmbeddedLog;

/// The embedded file of retry tier `n` (1-based) and of the dead-letter log.
pub fn retry_file(tier: usize) -> String {
    format!("retry-{tier}.db")
}
pub const DEAD_LETTER_FILE: &str = "dead-letters.db";

/// Opens the retry tiers and the dead-letter log of the configured backend.
pub fn open_retry_topology(config: &Config) -> Result<RetryTopology, AppError> {
    let dir = &config.data.dir;
    let open = |file: &str| -> Result<Arc<dyn EventLog>, AppError> {
        match config.log.backend {
            LogBackend::Kafka => Err(AppError::Booking(
                "kafka retry topics are opened by KafkaWorker::retry_topology".into(),
            )),
            LogBackend::Embedded => Ok(Arc::new(
                EmbeddedLog::open_file(dir, file, config.log.partitions).map_err(|source| {
                    AppError::Log {
                        dir: format!("{} ({file})", dir.display()),
                        source,
                    }
                })?,
            )),
        }
    };
    let tiers = config
        .booking
        .retry_delays()
        .into_iter()
        .enumerate()
        .map(|(i, delay)| {
            Ok(RetryTier {
                delay,
                log: open(&retry_file(i + 1))?,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(RetryTopology {
        tiers,
        dead_letters: open(DEAD_LETTER_FILE)?,
    })
}

/// The booker over the real Cal.com client.
pub fn booker(
    config: &Config,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<Arc<Booker>, AppError> {
    let client = CalcomClient::new(ClientOptions {
        connect_timeout: std::time::Duration::from_millis(config.booking.connect_timeout_ms),
        request_timeout: std::time::Duration::from_millis(config.booking.request_timeout_ms),
    })
    .map_err(|e| AppError::Booking(e.to_string()))?;
    let metrics = BookingMetrics::register(registry)?;
    Ok(Arc::new(Booker::new(
        Arc::new(client),
        config.booking.settings(),
        metrics,
        shutdown.clone(),
    )))
}

/// What the booking tasks work with.
pub struct BookingTasks<'a> {
    pub main: &'a Arc<dyn EventLog>,
    pub store: &'a Arc<dyn StateStore>,
    pub clock: &'a Arc<dyn Clock>,
    pub booker: &'a Arc<Booker>,
    pub retries: &'a RetryTopology,
    /// The tenants this worker owns when partitions move between workers (Kafka); the
    /// retry forwarders then follow the tier topics' assignments instead of starting here.
    pub owns: Option<Owns>,
}

/// Starts the retry forwarders (embedded log) and the reconciler; both stop with `shutdown`.
pub async fn spawn_booking_tasks(
    config: &Config,
    tasks: BookingTasks<'_>,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    let group = format!("{}-retry-forwarder", config.pipeline.consumer_group);
    if tasks.owns.is_none() {
        for (i, tier) in tasks.retries.tiers.iter().enumerate() {
            tokio::spawn(retry_tier::forward(
                i + 1,
                tier.clone(),
                Arc::clone(tasks.main),
                group.clone(),
                Arc::clone(tasks.clock),
                shutdown.clone(),
            ));
        }
    }
    let args = ReconcilerArgs {
        store: Arc::clone(tasks.store),
        clock: Arc::clone(tasks.clock),
        booker: Arc::clone(tasks.booker),
        settings: config.booking.reconcile(),
        // The embedded log has one worker, which owns every tenant.
        owns: tasks.owns.unwrap_or_else(|| Arc::new(|_| true)),
        shutdown: shutdown.clone(),
    };
    let (reconciler, _) = Actor::spawn(None, ReconcilerActor, args)
        .await
        .map_err(|source| AppError::Spawn {
            name: "reconciler",
            source,
        })?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        reconciler.stop(Some("shutdown".into()));
    });
    Ok(())
}
