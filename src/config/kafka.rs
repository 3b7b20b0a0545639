//! The `[kafka]` section: brokers, topic names, producer batching and consumer-group timing.
//! Used when `log.backend = "kafka"`; the embedded backend ignores it.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub retry_topic_prefix: String,
    pub dead_letter_topic: String,
    pub create_topics: bool,
    pub replication_factor: i32,
    pub linger_ms: u64,
    pub batch_size: u64,
    pub compression: String,
    pub delivery_timeout_ms: u64,
    pub session_timeout_ms: u64,
    pub metadata_refresh_ms: u64,
}

impl KafkaConfig {
    /// The topic of retry tier `tier` (1-based).
    pub fn retry_topic(&self, tier: usize) -> String {
        format!("{}{tier}", self.retry_topic_prefix)
    }

    /// `drain_timeout_ms` is the pipeline's: a revoke must finish well within the session
    /// timeout, or the group coordinator evicts the member while it is still draining.
    pub fn validate(&self, drain_timeout_ms: u64) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if self.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one host:port".into());
        }
        let topics = [
            ("kafka.topic", &self.topic),
            ("kafka.retry_topic_prefix", &self.retry_topic_prefix),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ];
        for (key, name) in topics {
            if name.is_empty()
                || name.len() > 200
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return invalid(
                    key,
                    format!("{name:?} is not a Kafka topic name (1-200 of a-z A-Z 0-9 . _ -)"),
                );
            }
        }
        if !(1..=32).contains(&self.replication_factor) {
            return invalid(
                "kafka.replication_factor",
                format!("must be 1..=32, got {}", self.replication_factor),
            );
        }
        if self.linger_ms > 1000 {
            return invalid(
                "kafka.linger_ms",
                format!("must be at most 1000, got {}", self.linger_ms),
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.batch_size) {
            return invalid(
                "kafka.batch_size",
                format!("must be between 1 KiB and 64 MiB, got {}", self.batch_size),
            );
        }
        if !matches!(self.compression.as_str(), "none" | "gzip" | "zstd") {
            return invalid(
                "kafka.compression",
                format!("{:?} must be none, gzip or zstd", self.compression),
            );
        }
        if !(100..=300_000).contains(&self.delivery_timeout_ms) {
            return invalid(
                "kafka.delivery_timeout_ms",
                format!("must be 100..=300000, got {}", self.delivery_timeout_ms),
            );
        }
        if !(6_000..=300_000).contains(&self.session_timeout_ms) {
            return invalid(
                "kafka.session_timeout_ms",
                format!("must be 6000..=300000, got {}", self.session_timeout_ms),
            );
        }
        if drain_timeout_ms >= self.session_timeout_ms {
            return invalid(
                "pipeline.drain_timeout_ms",
                format!(
                    "({drain_timeout_ms}) must be shorter than kafka.session_timeout_ms ({})",
                    self.session_timeout_ms
                ),
            );
        }
        if !(1_000..=3_600_000).contains(&self.metadata_refresh_ms) {
            return invalid(
                "kafka.metadata_refresh_ms",
                format!("must be 1000..=3600000, got {}", self.metadata_refresh_ms),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};
    use figment::Figment;

    use crate::config::{Config, LogBackend, DEFAULTS};

    fn kafka_config() -> Config {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.log.backend = LogBackend::Kafka;
        config
    }

    #[test]
    fn defaults_are_valid_for_kafka() {
        let config = kafka_config();
        config.validate().unwrap();
        assert_eq!(config.kafka.retry_topic(2), "askpro.webhooks.retry-2");
    }

    #[test]
    fn drain_must_fit_in_the_session_timeout() {
        let mut config = kafka_config();
        config.pipeline.drain_timeout_ms = config.kafka.session_timeout_ms;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("pipeline.drain_timeout_ms"), "{err}");
    }

    #[test]
    fn delivery_must_fit_in_the_durability_timeout() {
        let mut config = kafka_config();
        config.kafka.delivery_timeout_ms = config.ingress.durability_timeout_ms + 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.delivery_timeout_ms"), "{err}");
    }

    #[test]
    fn bad_topic_names_and_compression_are_refused_by_key() {
        let mut config = kafka_config();
        config.kafka.topic = "web hooks".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.topic"), "{err}");
        let mut config = kafka_config();
        config.kafka.compression = "lz4".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.compression"), "{err}");
    }

    #[test]
    fn the_embedded_backend_ignores_the_kafka_section() {
        let mut config = kafka_config();
        config.log.backend = LogBackend::Embedded;
        config.kafka.brokers = String::new();
        config.validate().unwrap();
    }
}
