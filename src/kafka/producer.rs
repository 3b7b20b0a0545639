//! The idempotent producer shared by every topic of one process.
//!
//! `acks=all` plus `enable.idempotence`: a record counts as written once every in-sync
//! replica has it, and librdkafka's internal retries cannot duplicate or reorder it. The
//! partitioner is `murmur2_random`, Java's default for keyed records, so a tenant lands on
//! the same partition as with the embedded log ([`askpro_actors::partition::partition_for`])
//! and with Java tools.

use std::time::Duration;

use askpro_actors::record::LogRecord;
use askpro_actors::{LogError, LogPosition};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{client_config, unavailable};
use crate::config::KafkaConfig;

#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    delivery_timeout: Duration,
}

impl KafkaProducer {
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self, LogError> {
        let producer = client_config(kafka, client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", kafka.linger_ms.to_string())
            .set("batch.size", kafka.batch_size.to_string())
            .set("compression.type", &kafka.compression)
            .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string())
            // Far above what the ingress lets wait (ingress.max_pending): a full local queue
            // would make `send` retry one record while later ones of its tenant go ahead.
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(|e| unavailable(format!("create a producer for {}", kafka.brokers), e))?;
        Ok(Self {
            producer,
            delivery_timeout: Duration::from_millis(kafka.delivery_timeout_ms),
        })
    }

    /// Sends the records to `topic` and waits for every delivery report. Positions are in
    /// input order; any failure fails the whole call (the caller acknowledges nothing).
    pub async fn send(
        &self,
        topic: &str,
        records: &[LogRecord],
    ) -> Result<Vec<LogPosition>, LogError> {
        let keys: Vec<String> = records.iter().map(LogRecord::key).collect();
        let mut deliveries = Vec::with_capacity(records.len());
        for (record, key) in records.iter().zip(&keys) {
            let message = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(record.value.as_ref())
                .headers(headers(record));
            // A full local queue waits up to the delivery bound, then fails like a timeout.
            let delivery = self
                .producer
                .send(message, Timeout::After(self.delivery_timeout));
            deliveries.push(delivery);
        }
        let mut positions = Vec::with_capacity(records.len());
        for result in join_all(deliveries).await {
            let delivery = result
                .map_err(|(error, _)| unavailable(format!("deliver to topic {topic}"), error))?;
            positions.push(LogPosition {
                partition: delivery.partition as u32,
                offset: delivery.offset as u64,
            });
        }
        Ok(positions)
    }

    /// Sends one record as-is (key, value and headers already built), e.g. a foreign record
    /// moved to the dead-letter topic.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<LogPosition, LogError> {
        let mut message = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(value)
            .headers(headers);
        if let Some(key) = key {
            message = message.key(key);
        }
        let delivery = self
            .producer
            .send(message, Timeout::After(self.delivery_timeout))
            .await
            .map_err(|(error, _)| unavailable(format!("deliver to topic {topic}"), error))?;
        Ok(LogPosition {
            partition: delivery.partition as u32,
            offset: delivery.offset as u64,
        })
    }

    /// Waits for queued records on shutdown (bounded by the delivery timeout).
    pub fn flush(&self) {
        if let Err(error) = self.producer.flush(self.delivery_timeout) {
            tracing::warn!(error = %error, "kafka producer flush did not finish");
        }
    }

    pub fn client(&self) -> &FutureProducer {
        &self.producer
    }
}

fn headers(record: &LogRecord) -> OwnedHeaders {
    record
        .meta
        .to_headers()
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}
