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
use uuid::Uuid;

use crate::app::AppError;
use crate::calcom::{CalcomClient, ClientOptions};
use crate::config::{Config, LogBackend};
use crate::embedded::EmbeddedLog;

/// The embedded file of retry tier `n` (1-based) and of the dead-letter log.
pub fn retry_file(tier: usize) -> String {
    format!("retry-{tier}.db")
}
pub const DEAD_LETTER_FILE: &str = "dead-letters.db";
/// The embedded worker's identity (a UUID in text), next to its `worker.lock`.
pub const WORKER_ID_FILE: &str = "worker.id";

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
    let mut settings = config.booking.settings();
    settings.worker_id = worker_id(config)?;
    Ok(Arc::new(Booker::new(
        Arc::new(client),
        settings,
        metrics,
        shutdown.clone(),
    )))
}

/// This worker's identity, from which its booking sync leases derive: a worker that finds
/// leases of its own identity (left by a crash) takes them over at once. With the embedded
/// log exactly one worker runs per data dir (`worker.lock`, held before this is called), so
/// the identity kept in the data dir can only be this process's or a dead predecessor's.
/// Kafka workers have nothing that proves them alone (with the embedded store they even share
/// the data dir), so each process gets a fresh identity and waits out a crashed one's leases
/// (without holding up its tenants; see `askpro_actors::booking::parked`).
fn worker_id(config: &Config) -> Result<Uuid, AppError> {
    if config.log.backend == LogBackend::Kafka {
        return Ok(Uuid::now_v7());
    }
    let path = config.data.dir.join(WORKER_ID_FILE);
    let failed = |e: std::io::Error| {
        AppError::Booking(format!(
            "cannot keep the worker identity in {}: {e}",
            path.display()
        ))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<Uuid>() {
            Ok(id) => return Ok(id),
            // Only costs the takeover of an earlier incarnation's leases: they run out.
            Err(_) => {
                tracing::warn!(path = %path.display(), "worker identity unreadable; starting a new one")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let id = Uuid::now_v7();
    write_durably(&path, &id.to_string()).map_err(failed)?;
    tracing::info!(worker_id = %id, path = %path.display(), "new worker identity");
    Ok(id)
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash leaves the old
/// content or the new one, never a torn file.
fn write_durably(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(dir: &std::path::Path, backend: LogBackend) -> Config {
        let overrides = Overrides {
            listen: None,
            data_dir: Some(dir.to_owned()),
        };
        let mut config = Config::load(None, &overrides).expect("defaults load");
        config.log.backend = backend;
        config
    }

    #[test]
    fn the_embedded_worker_keeps_its_identity_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), LogBackend::Embedded);
        let first = worker_id(&config).unwrap();
        assert_eq!(
            worker_id(&config).unwrap(),
            first,
            "a restart is the same worker"
        );

        // A file that cannot be read as an id only costs the takeover: a new identity.
        std::fs::write(dir.path().join(WORKER_ID_FILE), "garbage").unwrap();
        let replaced = worker_id(&config).unwrap();
        assert_ne!(replaced, first);
        assert_eq!(worker_id(&config).unwrap(), replaced);
    }

    #[test]
    fn a_kafka_worker_gets_a_fresh_identity_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), LogBackend::Kafka);
        assert_ne!(worker_id(&config).unwrap(), worker_id(&config).unwrap());
        assert!(!dir.path().join(WORKER_ID_FILE).exists());
    }
}
