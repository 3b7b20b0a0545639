//! Wiring: backends, actors and the HTTP server, run until the shutdown token fires.
//!
//! Shutdown order (each step waits for the previous one):
//! 1. stop accepting HTTP and finish in-flight requests (each waits for its durable append);
//! 2. stop the ingress actor (nothing is pending any more);
//! 3. revoke every partition: consumers stop fetching, in-flight events finish (bounded by
//!    `pipeline.drain_timeout_ms`), offsets are committed;
//! 4. stop the worker group.

use std::sync::Arc;
use std::time::Duration;

use askpro_actors::group::{GroupArgs, GroupMsg, WorkerGroup};
use askpro_actors::ingress::{IngressActor, IngressArgs, IngressHandle, IngressLimits};
use askpro_actors::metrics::PipelineMetrics;
use askpro_actors::pipeline::{FaultHook, Pipeline};
use askpro_actors::{Clock, EventLog, StateStore, SystemClock};
use prometheus::Registry;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, LogBackend, StoreBackend};
use crate::cql::{CqlError, CqlStore};
use crate::embedded::{DiskReserve, EmbeddedLog, EmbeddedStore};
use crate::http::{self, AppState, HttpMetrics, ServeSettings};
use crate::kafka::{KafkaBackend, KafkaWorker};
use crate::worker;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the log in {dir}")]
    Log {
        dir: String,
        #[source]
        source: askpro_actors::LogError,
    },
    #[error("cannot open the state store in {dir}")]
    Store {
        dir: String,
        #[source]
        source: askpro_actors::StoreError,
    },
    #[error("cannot open the CQL state store at {contact_points} (keyspace {keyspace})")]
    CqlStore {
        contact_points: String,
        keyspace: String,
        #[source]
        source: Box<CqlError>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start actor {name}")]
    Spawn {
        name: &'static str,
        #[source]
        source: ractor::SpawnErr,
    },
    #[error("the worker group stopped before partitions were assigned")]
    GroupGone,
    #[error("another worker already owns {path} (one worker per embedded data dir)")]
    WorkerLocked {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use kafka at {brokers}")]
    Kafka {
        brokers: String,
        #[source]
        source: askpro_actors::LogError,
    },
    #[error("http server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot set up booking: {0}")]
    Booking(String),
}

/// The configured log and state store.
#[derive(Clone)]
pub struct Backends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn StateStore>,
}

/// The disk reserve that keeps room for the embedded log (see `embedded::DiskReserve`);
/// `None` when it is off or the log is not embedded (nothing to keep room for).
pub fn disk_reserve(config: &Config) -> Option<DiskReserve> {
    if config.log.backend != LogBackend::Embedded {
        return None;
    }
    DiskReserve::new(&config.data.dir, config.data.disk_reserve_bytes)
}

/// Opens the configured backends (the producer side only, for the CLI).
pub async fn open_backends(config: &Config) -> Result<Backends, AppError> {
    Ok(open_all(config, false).await?.0)
}

/// Opens the log and the store; with Kafka, `consume` joins the consumer group too.
async fn open_all(
    config: &Config,
    consume: bool,
) -> Result<(Backends, Option<KafkaBackend>), AppError> {
    let dir = &config.data.dir;
    let (log, kafka): (Arc<dyn EventLog>, _) = match config.log.backend {
        LogBackend::Embedded => {
            let reserve = disk_reserve(config);
            let log = EmbeddedLog::open_reserved(dir, config.log.partitions, reserve).map_err(
                |source| AppError::Log {
                    dir: dir.display().to_string(),
                    source,
                },
            )?;
            (Arc::new(log), None)
        }
        LogBackend::Kafka => {
            let kafka = KafkaBackend::open(config, consume)
                .await
                .map_err(|source| AppError::Kafka {
                    brokers: config.kafka.brokers.clone(),
                    source,
                })?;
            (kafka.main.clone(), Some(kafka))
        }
    };
    let store = open_store(config).await?;
    Ok((Backends { log, store }, kafka))
}

/// Opens only the configured state store (admin commands): SQLite under `data.dir`, or the
/// CQL cluster of `[cql]` (migrated first when `cql.migrate_on_start`).
pub async fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, AppError> {
    match config.store.backend {
        StoreBackend::Embedded => {
            let dir = &config.data.dir;
            let store =
                EmbeddedStore::open_reserved(dir, disk_reserve(config)).map_err(|source| {
                    AppError::Store {
                        dir: dir.display().to_string(),
                        source,
                    }
                })?;
            Ok(Arc::new(store))
        }
        StoreBackend::Cql => {
            let settings = config.cql.settings()?;
            let store = CqlStore::open(&settings)
                .await
                .map_err(|source| AppError::CqlStore {
                    contact_points: config.cql.contact_points.clone(),
                    keyspace: config.cql.keyspace.clone(),
                    source: Box::new(source),
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// What one process runs. Ingress nodes are stateless apart from the log; workers own
/// partitions. `serve` runs both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    All,
    Ingress,
    Worker,
}

impl Role {
    pub fn ingress(self) -> bool {
        matches!(self, Role::All | Role::Ingress)
    }

    pub fn workers(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// How to run; tests also use it to reach inside (fault hooks, clocks).
#[derive(Default)]
pub struct RunOptions {
    pub role: Role,
    /// Backends to use instead of opening the configured ones (tests wrap them to inject
    /// faults).
    pub backends: Option<Backends>,
    pub fault: Option<Arc<dyn FaultHook>>,
    pub clock: Option<Arc<dyn Clock>>,
}

/// Runs ingress and workers on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<(), AppError> {
    let config = Arc::new(config);
    let role = options.role;
    let (backends, kafka) = match options.backends {
        Some(backends) => (backends, None),
        None => open_all(&config, role.workers()).await?,
    };
    let (log, store) = (Arc::clone(&backends.log), Arc::clone(&backends.store));
    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let registry = Registry::new_custom(None, None)?;
    let pipeline_metrics = PipelineMetrics::register(&registry)?;
    let http_metrics = HttpMetrics::register(&registry)?;

    let worker_shutdown = CancellationToken::new();
    let ingress = match role.ingress() {
        true => Some(spawn_ingress(&config, &log, &pipeline_metrics).await?),
        false => None,
    };
    // Held for the life of the workers: one worker per embedded data dir. Kafka's consumer
    // group coordinates any number of workers.
    let embedded_log = config.log.backend == LogBackend::Embedded;
    let _worker_lock = (role.workers() && embedded_log)
        .then(|| lock_worker(&config))
        .transpose()?;
    let mut booker = None;
    let mut kafka_worker = None;
    let group = match role.workers() {
        true => {
            let kafka_error = |source| AppError::Kafka {
                brokers: config.kafka.brokers.clone(),
                source,
            };
            let (retries, tier_logs) = match &kafka {
                Some(kafka) => KafkaWorker::retry_topology(&config, kafka).map_err(kafka_error)?,
                None => (worker::open_retry_topology(&config)?, Vec::new()),
            };
            let owns = match &kafka {
                Some(kafka) => Some(KafkaWorker::owns(&kafka.main).map_err(kafka_error)?),
                None => None,
            };
            let booking = worker::booker(&config, &registry, &worker_shutdown)?;
            let tasks = worker::BookingTasks {
                main: &log,
                store: &store,
                clock: &clock,
                booker: &booking,
                retries: &retries,
                owns,
            };
            worker::spawn_booking_tasks(&config, tasks, &worker_shutdown).await?;
            for tier in &retries.tiers {
                spawn_retention(&config, &tier.log, &worker_shutdown);
            }
            spawn_retention(&config, &retries.dead_letters, &worker_shutdown);
            let pipeline = Arc::new(Pipeline {
                store,
                clock: Arc::clone(&clock),
                settings: config.pipeline_settings(),
                metrics: pipeline_metrics,
                fault: options.fault,
                booker: Some(Arc::clone(&booking)),
                retries: Some(retries),
            });
            booker = Some(booking);
            spawn_retention(&config, &log, &worker_shutdown);
            let group = spawn_workers(&config, &log, pipeline, &worker_shutdown).await?;
            match &kafka {
                // The consumer group decides which partitions this worker owns.
                Some(kafka) => {
                    let started = KafkaWorker::start(
                        &config,
                        &kafka.main,
                        group.clone(),
                        &tier_logs,
                        &clock,
                        &worker_shutdown,
                    );
                    kafka_worker = Some(started.map_err(kafka_error)?);
                }
                // The embedded log has a single worker: it owns every partition.
                None => {
                    let all = (0..log.partitions()).collect();
                    group
                        .cast(GroupMsg::Assign(all))
                        .map_err(|_| AppError::GroupGone)?;
                }
            }
            Some(group)
        }
        false => None,
    };

    let mut state = AppState::new(
        Arc::clone(&config),
        backends,
        clock,
        ingress.clone(),
        group.clone(),
        registry,
        http_metrics,
    );
    state.tools = Some(tool_service(&config, &state, booker.clone())?);
    state.booker = booker;
    let state = Arc::new(state);
    // call_inbound routing cache: cleared when another process changes phone routing.
    if role.ingress() {
        let poll = Duration::from_millis(config.inbound.version_poll_ms);
        state.inbound.spawn_version_watch(shutdown.clone(), poll);
    }
    let addr = listener.local_addr().map_err(AppError::Serve)?;
    tracing::info!(%addr, ?role, data_dir = %config.data.dir.display(), partitions = log.partitions(), "askpro listening");
    let settings = ServeSettings::from_config(&config.server);
    let serve = http::serve(listener, http::router(state), settings, shutdown.clone());
    // Every request is bounded by server.request_timeout_ms, a wait for request headers by
    // server.header_read_timeout_ms, and idle connections close when the drain starts. The
    // deadline is defense in depth against anything else holding a connection: past it we
    // stop waiting, and the connection tasks end with the process.
    let grace = Duration::from_millis(config.server.request_timeout_ms) + Duration::from_secs(2);
    let served = tokio::select! {
        served = serve => served,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "http connections still open; no longer waiting for them");
            Ok(())
        }
    };
    tracing::info!("http stopped; draining");
    if let Some(ingress) = ingress {
        let stopped = ingress.actor().stop_and_wait(Some("shutdown".into()), None);
        stopped.await.ok();
    }
    if let Some(group) = group {
        // Only now do retry loops give up: the workers kept working while HTTP drained.
        worker_shutdown.cancel();
        drain_workers(&group, log.partitions(), &config).await;
    }
    if let Some(kafka_worker) = kafka_worker {
        kafka_worker.shutdown().await;
    }
    if let Some(kafka) = &kafka {
        kafka.producer.flush();
    }
    served.map_err(AppError::Serve)
}

/// The embedded log has no consumer-group coordinator, so a second worker on the same data
/// dir would consume every partition twice. An exclusive file lock refuses it up front.
fn lock_worker(config: &Config) -> Result<std::fs::File, AppError> {
    let path = config.data.dir.join("worker.lock");
    let locked = std::fs::File::create(&path).and_then(|file| {
        file.try_lock().map_err(std::io::Error::from)?;
        Ok(file)
    });
    locked.map_err(|source| AppError::WorkerLocked {
        path: path.display().to_string(),
        source,
    })
}

async fn spawn_ingress(
    config: &Config,
    log: &Arc<dyn EventLog>,
    metrics: &PipelineMetrics,
) -> Result<IngressHandle, AppError> {
    let args = IngressArgs {
        log: Arc::clone(log),
        metrics: metrics.clone(),
        max_batch: config.ingress.max_batch,
        max_inflight_batches: config.ingress_inflight_batches(),
    };
    let (actor, _) = Actor::spawn(None, IngressActor, args)
        .await
        .map_err(|source| AppError::Spawn {
            name: "ingress",
            source,
        })?;
    let limits = IngressLimits {
        max_pending: config.ingress.max_pending,
        max_pending_bytes: config.ingress.max_pending_bytes,
        timeout: Duration::from_millis(config.ingress.durability_timeout_ms),
    };
    Ok(IngressHandle::new(actor, limits))
}

async fn spawn_workers(
    config: &Config,
    log: &Arc<dyn EventLog>,
    pipeline: Arc<Pipeline>,
    shutdown: &CancellationToken,
) -> Result<ActorRef<GroupMsg>, AppError> {
    let args = GroupArgs {
        log: Arc::clone(log),
        pipeline,
        shutdown: shutdown.clone(),
        drain_timeout: Duration::from_millis(config.pipeline.drain_timeout_ms),
    };
    let (group, _) = Actor::spawn(None, WorkerGroup, args)
        .await
        .map_err(|source| AppError::Spawn {
            name: "worker group",
            source,
        })?;
    Ok(group)
}

/// Deletes old, committed records now and then, so the log does not grow forever.
fn spawn_retention(config: &Config, log: &Arc<dyn EventLog>, shutdown: &CancellationToken) {
    const EVERY: Duration = Duration::from_secs(600);
    let hours = config.log.retention_hours;
    if hours == 0 {
        return;
    }
    // Validated at start: at most 100 years, so the conversion cannot overflow.
    let retention = chrono::Duration::hours(hours as i64);
    let (log, shutdown) = (Arc::clone(log), shutdown.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match log.enforce_retention(chrono::Utc::now() - retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    deleted,
                    retention_hours = hours,
                    "log records past retention deleted"
                ),
                Err(error) => {
                    tracing::warn!(error = %error, "log retention failed; retrying later")
                }
            }
        }
    });
}

async fn drain_workers(group: &ActorRef<GroupMsg>, partitions: u32, config: &Config) {
    let all: Vec<u32> = (0..partitions).collect();
    let bound = Duration::from_millis(config.pipeline.drain_timeout_ms) + Duration::from_secs(10);
    match group
        .call(|reply| GroupMsg::Revoke(all, reply), Some(bound))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(drained)) => {
            let unfinished: usize = drained.iter().map(|p| p.in_flight).sum();
            tracing::info!(partitions = drained.len(), unfinished, "workers drained");
        }
        _ => {
            tracing::warn!("workers did not drain in time; uncommitted events will be redelivered")
        }
    }
    group
        .stop_and_wait(Some("shutdown".into()), None)
        .await
        .ok();
}

/// The live tool service: the worker's booker when this process has one (its breakers, rate
/// limits and leases), else a client of its own (bookings then wait for a worker).
fn tool_service(
    config: &Config,
    state: &AppState,
    booker: Option<Arc<askpro_actors::booking::Booker>>,
) -> Result<Arc<askpro_actors::tools::ToolService>, AppError> {
    let client = crate::calcom::CalcomClient::new(crate::calcom::ClientOptions {
        connect_timeout: Duration::from_millis(config.booking.connect_timeout_ms),
        request_timeout: Duration::from_millis(config.booking.request_timeout_ms),
    })
    .map_err(|e| AppError::Booking(e.to_string()))?;
    Ok(askpro_actors::tools::ToolService::new(
        Arc::clone(&state.store),
        Arc::new(client),
        booker,
        Arc::clone(&state.clock),
        config.tools.settings(&config.phone.default_region),
    ))
}
