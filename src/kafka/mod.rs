//! The Kafka backend (`log.backend = "kafka"`): each topic as an [`EventLog`], the consumer
//! group that assigns partitions to workers, the retry and dead-letter topics, and the admin
//! commands behind `askpro topics`.
//!
//! [`EventLog`]: askpro_actors::EventLog

pub mod admin;
pub mod bench;
mod consumer;
mod decode;
mod log;
mod producer;
mod wiring;

pub use consumer::{AssignmentListener, GroupConsumer};
pub use log::KafkaLog;
pub use producer::KafkaProducer;
pub use wiring::{KafkaBackend, KafkaWorker};

use askpro_actors::LogError;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings every client shares.
fn client_config(kafka: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        .set(
            "topic.metadata.refresh.interval.ms",
            kafka.metadata_refresh_ms.to_string(),
        )
        // Latency matters more than packet count: every webhook answer waits on a round trip.
        .set("socket.nagle.disable", "true")
        // librdkafka logs through its own callback; broker churn is reported by our code.
        .set("log_level", "4");
    config
}

fn unavailable(context: impl Into<String>, source: rdkafka::error::KafkaError) -> LogError {
    LogError::Unavailable {
        context: context.into(),
        source: Box::new(source),
    }
}
