//! One Kafka topic as an [`EventLog`]: appends go through the shared idempotent producer,
//! reads and commits through this process's group member (when it consumes the topic).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use askpro_actors::record::{LogRecord, StoredRecord};
use askpro_actors::{EventLog, LogError, LogPosition};
use async_trait::async_trait;
use rdkafka::message::Header;
use rdkafka::producer::Producer;
use tokio_util::sync::CancellationToken;

use super::consumer::GroupConsumer;
use super::decode::{Fetched, Foreign};
use super::producer::KafkaProducer;

/// Header naming why a record was moved to the dead-letter topic unread.
pub const FOREIGN_REASON_HEADER: &str = "askpro-foreign-reason";
const FOREIGN_SOURCE_HEADER: &str = "askpro-foreign-source";

pub struct KafkaLog {
    topic: String,
    producer: KafkaProducer,
    consumer: Option<Arc<GroupConsumer>>,
    /// Where records that are not ours go (none for the dead-letter topic itself).
    dead_letters: Option<String>,
    partitions: Arc<AtomicU32>,
}

impl KafkaLog {
    /// The topic's log. `partitions` is its current count; [`KafkaLog::watch_partitions`]
    /// keeps it fresh.
    pub fn new(
        topic: &str,
        producer: KafkaProducer,
        consumer: Option<Arc<GroupConsumer>>,
        dead_letters: Option<String>,
        partitions: u32,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            producer,
            consumer,
            dead_letters,
            partitions: Arc::new(AtomicU32::new(partitions)),
        }
    }

    /// Sets the partition count read from the broker.
    pub fn partitions_now(&self, count: u32) {
        self.partitions.store(count, Ordering::Relaxed);
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn consumer(&self) -> Option<&Arc<GroupConsumer>> {
        self.consumer.as_ref()
    }

    /// Re-reads the partition count every `every` until shutdown (SREs add partitions to a
    /// running topic).
    pub fn watch_partitions(self: &Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let log = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => return,
                }
                match log.read_partition_count().await {
                    Ok(count) => {
                        let before = log.partitions.swap(count, Ordering::Relaxed);
                        if before != count {
                            tracing::info!(topic = %log.topic, before, after = count, "partition count changed");
                        }
                    }
                    Err(error) => {
                        tracing::debug!(topic = %log.topic, error = %error, "metadata refresh failed")
                    }
                }
            }
        });
    }

    /// The topic's partition count from the broker.
    pub async fn read_partition_count(&self) -> Result<u32, LogError> {
        let producer = self.producer.client().clone();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(3))
                .map(|m| {
                    m.topics()
                        .first()
                        .map(|t| (t.partitions().len(), t.error()))
                })
        })
        .await
        .map_err(|e| LogError::Unavailable {
            context: "metadata call".into(),
            source: Box::new(e),
        })?
        .map_err(|e| super::unavailable(format!("read metadata of {}", self.topic), e))?;
        match metadata {
            Some((count, None)) if count > 0 => Ok(count as u32),
            _ => Err(LogError::Invalid(format!(
                "topic {} does not exist (create it with `askpro topics create`)",
                self.topic
            ))),
        }
    }

    fn member(&self) -> Result<&Arc<GroupConsumer>, LogError> {
        self.consumer.as_ref().ok_or_else(|| {
            LogError::Invalid(format!(
                "topic {} is not consumed by this process",
                self.topic
            ))
        })
    }

    /// Moves a record without AskPro headers to the dead-letter topic, so it is kept and
    /// visible rather than blocking its partition or vanishing.
    async fn quarantine(&self, foreign: Foreign) -> Result<(), LogError> {
        let source = format!("{}/{}@{}", self.topic, foreign.partition, foreign.offset);
        tracing::error!(topic = %self.topic, partition = foreign.partition, offset = foreign.offset, problem = %foreign.problem, "record without askpro headers; moving it to the dead-letter topic");
        let Some(dead_letters) = &self.dead_letters else {
            return Ok(());
        };
        let headers = foreign
            .headers
            .insert(Header {
                key: FOREIGN_REASON_HEADER,
                value: Some(foreign.problem.as_bytes()),
            })
            .insert(Header {
                key: FOREIGN_SOURCE_HEADER,
                value: Some(source.as_bytes()),
            });
        self.producer
            .send_raw(
                dead_letters,
                foreign.key.as_deref(),
                &foreign.value,
                headers,
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.partitions.load(Ordering::Relaxed)
    }

    async fn append(&self, records: Vec<LogRecord>) -> Result<Vec<LogPosition>, LogError> {
        self.producer.send(&self.topic, &records).await
    }

    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let fetched = self.member()?.fetch(partition, offset, max, wait).await?;
        let mut records = Vec::with_capacity(fetched.len());
        for item in fetched {
            match item {
                Fetched::Record(record) => records.push(record),
                Fetched::Foreign(foreign) => self.quarantine(foreign).await?,
            }
        }
        Ok(records)
    }

    async fn commit(&self, group: &str, partition: u32, next_offset: u64) -> Result<(), LogError> {
        let member = self.member()?;
        if group != member.group() {
            return Err(LogError::Invalid(format!(
                "this process is a member of group {}, not {group}",
                member.group()
            )));
        }
        member.store(partition, next_offset)
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        let member = self.member()?;
        if group != member.group() {
            return Err(LogError::Invalid(format!(
                "this process is a member of group {}, not {group}",
                member.group()
            )));
        }
        member.committed(partition).await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.member()?.end_offset(partition).await
    }

    async fn check(&self) -> Result<(), LogError> {
        self.read_partition_count().await.map(|_| ())
    }

    fn pause(&self, partition: u32) {
        if let Some(member) = &self.consumer {
            member.pause(partition, true);
        }
    }

    fn resume(&self, partition: u32) {
        if let Some(member) = &self.consumer {
            member.pause(partition, false);
        }
    }
}
