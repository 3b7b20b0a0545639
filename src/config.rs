//! Layered configuration: embedded defaults → config file → `ASKPRO_*` env → flags,
//! validated once at start with errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use askpro_actors::settings::PipelineSettings;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod booking;
mod kafka;
mod retell;
mod store;
mod tools;
pub use booking::BookingConfig;
pub use kafka::KafkaConfig;
pub use retell::check_base_url;
pub use store::{CqlConfig, StoreBackend, StoreConfig};
pub use tools::ToolsConfig;

/// The commented defaults compiled into the binary.
pub const DEFAULTS: &str = include_str!("../config.default.toml");
/// The config file read when present and no `--config` is given.
pub const DEFAULT_FILE: &str = "askpro.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
    // The figment error is the source: `{:#}` prints it once, after this line.
    #[error("invalid configuration")]
    Parse(#[source] Box<figment::Error>),
    #[error("invalid configuration: {key} {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub data: DataConfig,
    pub log: LogConfig,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub cql: CqlConfig,
    pub ingress: IngressConfig,
    pub inbound: InboundConfig,
    pub pipeline: PipelineConfig,
    pub booking: BookingConfig,
    pub retell: RetellConfig,
    pub phone: PhoneConfig,
    pub telemetry: TelemetryConfig,
    pub tools: ToolsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub keep_alive: bool,
    pub max_connections: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dir: PathBuf,
    pub disk_reserve_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    Embedded,
    Kafka,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub backend: LogBackend,
    pub partitions: u32,
    pub retention_hours: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    pub max_batch: usize,
    pub max_inflight_batches: usize,
    pub max_pending: usize,
    pub max_pending_bytes: usize,
    pub durability_timeout_ms: u64,
    pub signature_tolerance_secs: u64,
    pub dedup_check: bool,
    pub tenant_cache_ttl_ms: u64,
}

/// `call_inbound` routing cache (see `crate::routing`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub cache_ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub version_poll_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub consumer_group: String,
    pub fetch_batch: usize,
    pub fetch_wait_ms: u64,
    pub tenant_queue_capacity: usize,
    pub partition_max_inflight: usize,
    pub idle_timeout_secs: u64,
    pub dedup_window_secs: u64,
    pub dedup_lease_secs: u64,
    pub max_panics_per_event: u32,
    pub restart_backoff_ms: u64,
    pub commit_interval_ms: u64,
    pub drain_timeout_ms: u64,
    pub store_retry_max_backoff_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetellConfig {
    pub global_secret: String,
    /// Retell's management API (`askpro agent`); a tenant's key comes from its `retell-api`
    /// secret.
    pub api_base_url: String,
    /// Where Retell reaches AskPro (tool, webhook and inbound URLs of provisioned agents);
    /// empty: `askpro agent provision` needs --public-url.
    pub public_url: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    pub default_region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Highest-precedence values from command-line flags.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// `ASKPRO_SECTION__KEY` variables. Other `ASKPRO_*` names (`ASKPRO_CONFIG`, and the test
/// tooling's `ASKPRO_PYTHON`, `ASKPRO_CACHE`) are not settings and are left alone; a
/// misspelled section such as `ASKPRO_SERVR__LISTEN` is still refused by name.
fn settings_env() -> Env {
    Env::prefixed("ASKPRO_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

impl Config {
    /// Loads the layers; `file` is `--config` (must exist) or `None` for `./askpro.toml`
    /// (read when present).
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::MissingFile {
                    path: path.to_owned(),
                })
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_FILE).is_file() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_FILE))
            }
            None => {}
        }
        figment = figment.merge(settings_env());
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data.dir", dir));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if !(1..=1024).contains(&self.log.partitions) {
            return invalid(
                "log.partitions",
                format!("must be 1..=1024, got {}", self.log.partitions),
            );
        }
        if self.log.retention_hours > 876_000 {
            return invalid(
                "log.retention_hours",
                format!(
                    "must be at most 876000 (100 years; 0 keeps everything), got {}",
                    self.log.retention_hours
                ),
            );
        }
        let reserve = self.data.disk_reserve_bytes;
        if reserve != 0 && !(64 * 1024..=64 * 1024 * 1024 * 1024).contains(&reserve) {
            return invalid(
                "data.disk_reserve_bytes",
                format!("must be 0 (off) or between 64 KiB and 64 GiB, got {reserve}"),
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            return invalid(
                "server.body_limit_bytes",
                format!(
                    "must be between 1 KiB and 16 MiB, got {}",
                    self.server.body_limit_bytes
                ),
            );
        }
        self.validate_connections()?;
        let positive: [(&'static str, u64); 8] = [
            ("ingress.max_batch", self.ingress.max_batch as u64),
            ("ingress.max_pending", self.ingress.max_pending as u64),
            (
                "ingress.durability_timeout_ms",
                self.ingress.durability_timeout_ms,
            ),
            ("pipeline.fetch_batch", self.pipeline.fetch_batch as u64),
            (
                "pipeline.tenant_queue_capacity",
                self.pipeline.tenant_queue_capacity as u64,
            ),
            (
                "pipeline.partition_max_inflight",
                self.pipeline.partition_max_inflight as u64,
            ),
            (
                "pipeline.commit_interval_ms",
                self.pipeline.commit_interval_ms,
            ),
            (
                "pipeline.max_panics_per_event",
                u64::from(self.pipeline.max_panics_per_event),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0".into());
            }
        }
        if self.pipeline.dedup_window_secs < self.pipeline.dedup_lease_secs {
            return invalid(
                "pipeline.dedup_window_secs",
                format!(
                    "({}) must not be shorter than pipeline.dedup_lease_secs ({})",
                    self.pipeline.dedup_window_secs, self.pipeline.dedup_lease_secs
                ),
            );
        }
        if self.server.request_timeout_ms <= self.ingress.durability_timeout_ms {
            return invalid(
                "server.request_timeout_ms",
                format!(
                    "({}) must exceed ingress.durability_timeout_ms ({})",
                    self.server.request_timeout_ms, self.ingress.durability_timeout_ms
                ),
            );
        }
        self.validate_inbound()?;
        self.tools.validate(self.server.request_timeout_ms)?;
        self.booking.validate()?;
        self.retell.validate()?;
        if self.log.backend == LogBackend::Kafka {
            self.kafka.validate(self.pipeline.drain_timeout_ms)?;
            if self.kafka.delivery_timeout_ms > self.ingress.durability_timeout_ms {
                return invalid(
                    "kafka.delivery_timeout_ms",
                    format!(
                        "({}) must not exceed ingress.durability_timeout_ms ({})",
                        self.kafka.delivery_timeout_ms, self.ingress.durability_timeout_ms
                    ),
                );
            }
        }
        if self.store.backend == StoreBackend::Cql {
            self.cql.validate()?;
        }
        if self.pipeline.consumer_group.trim().is_empty() {
            return invalid("pipeline.consumer_group", "must not be empty".into());
        }
        if askpro_actors::phone::normalize("+49 30 1234567", &self.phone.default_region).is_err()
            || self.phone.default_region.len() != 2
        {
            return invalid(
                "phone.default_region",
                format!(
                    "{:?} is not a two-letter region code such as DE",
                    self.phone.default_region
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return invalid(
                "telemetry.log_level",
                format!(
                    "{:?} is not a tracing filter (try \"info\")",
                    self.telemetry.log_level
                ),
            );
        }
        Ok(())
    }

    /// Connection and memory bounds of the HTTP ingress.
    fn validate_connections(&self) -> Result<(), ConfigError> {
        let (server, ingress) = (&self.server, &self.ingress);
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if !(100..=600_000).contains(&server.header_read_timeout_ms) {
            return invalid(
                "server.header_read_timeout_ms",
                format!(
                    "must be 100..=600000, got {}",
                    server.header_read_timeout_ms
                ),
            );
        }
        if !(1..=100_000).contains(&server.max_connections) {
            return invalid(
                "server.max_connections",
                format!("must be 1..=100000, got {}", server.max_connections),
            );
        }
        // Budget permits are counted in a tokio semaphore (at most usize::MAX >> 3); 1 TiB
        // is far beyond any real budget and keeps the check platform independent.
        let bytes = ingress.max_pending_bytes;
        if bytes < server.body_limit_bytes || bytes > 1 << 40 {
            return invalid(
                "ingress.max_pending_bytes",
                format!(
                    "({bytes}) must be at least server.body_limit_bytes ({}), so one full-size \
                     webhook fits, and at most 1 TiB",
                    server.body_limit_bytes
                ),
            );
        }
        Ok(())
    }

    fn validate_inbound(&self) -> Result<(), ConfigError> {
        let inbound = &self.inbound;
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if !(1..=86_400).contains(&inbound.cache_ttl_secs) {
            return invalid(
                "inbound.cache_ttl_secs",
                format!("must be 1..=86400, got {}", inbound.cache_ttl_secs),
            );
        }
        if inbound.negative_ttl_secs > inbound.cache_ttl_secs {
            return invalid(
                "inbound.negative_ttl_secs",
                format!(
                    "({}) must not exceed inbound.cache_ttl_secs ({}); 0 disables it",
                    inbound.negative_ttl_secs, inbound.cache_ttl_secs
                ),
            );
        }
        if !(10..=3_600_000).contains(&inbound.version_poll_ms) {
            return invalid(
                "inbound.version_poll_ms",
                format!("must be 10..=3600000, got {}", inbound.version_poll_ms),
            );
        }
        Ok(())
    }

    /// The effective configuration with secrets replaced, for `askpro config show`.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        if !shown.retell.global_secret.is_empty() {
            shown.retell.global_secret = "<redacted>".into();
        }
        shown
    }

    /// `ingress.max_inflight_batches`, with 0 resolved for the configured log.
    pub fn ingress_inflight_batches(&self) -> usize {
        match (self.ingress.max_inflight_batches, self.log.backend) {
            (0, LogBackend::Embedded) => 1,
            (0, LogBackend::Kafka) => 8,
            (n, _) => n,
        }
    }

    pub fn pipeline_settings(&self) -> PipelineSettings {
        let p = &self.pipeline;
        PipelineSettings {
            consumer_group: p.consumer_group.clone(),
            fetch_batch: p.fetch_batch,
            fetch_wait: Duration::from_millis(p.fetch_wait_ms),
            tenant_queue_capacity: p.tenant_queue_capacity,
            partition_max_inflight: p.partition_max_inflight,
            idle_timeout: Duration::from_secs(p.idle_timeout_secs),
            dedup_window: Duration::from_secs(p.dedup_window_secs),
            dedup_lease: Duration::from_secs(p.dedup_lease_secs),
            max_panics_per_event: p.max_panics_per_event,
            restart_backoff: Duration::from_millis(p.restart_backoff_ms),
            commit_interval: Duration::from_millis(p.commit_interval_ms),
            store_retry_max_backoff: Duration::from_millis(p.store_retry_max_backoff_ms),
            default_region: self.phone.default_region.clone(),
            book_on_call_ended: self.booking.book_on_call_ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.validate().unwrap();
        assert_eq!(config.log.partitions, 16);
        assert_eq!(config.server.body_limit_bytes, 256 * 1024);
    }

    #[test]
    fn invalid_value_names_its_key() {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.log.partitions = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("log.partitions"), "{err}");
    }

    #[test]
    fn connection_and_byte_bounds_are_validated_by_name() {
        let defaults: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        type Break = fn(&mut Config);
        let cases: [(&str, Break); 4] = [
            ("server.header_read_timeout_ms", |c| {
                c.server.header_read_timeout_ms = 0
            }),
            ("server.max_connections", |c| c.server.max_connections = 0),
            ("ingress.max_pending_bytes", |c| {
                c.ingress.max_pending_bytes = c.server.body_limit_bytes - 1
            }),
            ("ingress.max_pending_bytes", |c| {
                c.ingress.max_pending_bytes = (1 << 40) + 1
            }),
        ];
        for (key, break_it) in cases {
            let mut config = defaults.clone();
            break_it(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[server]\nlisten_addr = \"x\""))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature, not ours
    fn env_layer_reads_section_keys_and_ignores_tooling_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ASKPRO_PYTHON", "/usr/bin/python3");
            jail.set_env("ASKPRO_LOG__PARTITIONS", "8");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.log.partitions, 8);
            jail.set_env("ASKPRO_SERVR__LISTEN", "x");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            // The message says what failed; the figment error naming the key is its source.
            let chain: Vec<String> =
                std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect();
            assert!(chain.join(": ").contains("servr"), "{chain:?}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.retell.global_secret = "key_live_abc".into();
        let shown = toml::to_string(&config.redacted()).unwrap();
        assert!(!shown.contains("key_live_abc"));
        assert!(shown.contains("<redacted>"));
    }
}
