//! One consumer-group member on one topic.
//!
//! Each assigned partition gets its own queue (`split_partition_queue`), read by that
//! partition's consumer actor through [`GroupConsumer::fetch`]. The main queue is polled on a
//! dedicated thread, because rebalance callbacks run there and a revoke must block until the
//! revoked partitions are drained (in-flight tenant work finished, offsets stored); it then
//! commits synchronously, while this member still owns them.
//!
//! Offsets: `enable.auto.offset.store=false`; only [`GroupConsumer::store`] stores, and the
//! partition actor calls it with the contiguous finished prefix. librdkafka commits stored
//! offsets every second, and on every revoke and at shutdown we commit synchronously.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use askpro_actors::LogError;
use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::decode::{decode, Fetched};
use super::{client_config, unavailable};
use crate::config::KafkaConfig;

/// Told about partitions gained and lost, on the poll thread.
pub trait AssignmentListener: Send + Sync + 'static {
    /// The partitions' queues exist; start consuming them.
    fn assigned(&self, partitions: Vec<u32>);
    /// Stop feeding these partitions and return once their in-flight work is drained and
    /// their offsets are stored (bounded by the drain timeout).
    fn revoked(&self, partitions: Vec<u32>);
}

type Queue = StreamPartitionQueue<Ctx>;

struct Reader {
    queue: Queue,
    /// Where the previous fetch left off; a fetch from anywhere else (or the first one)
    /// seeks first.
    resume_from: Option<u64>,
}

struct Shared {
    topic: String,
    consumer: OnceLock<Weak<StreamConsumer<Ctx>>>,
    listener: OnceLock<Arc<dyn AssignmentListener>>,
    readers: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Reader>>>>,
    assigned: RwLock<BTreeSet<u32>>,
    closing: AtomicBool,
}

pub struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.0.topic, error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.revoke(base, partitions_of(list, &self.0.topic)),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(topic = %self.0.topic, error = %error, "kafka rebalance error")
            }
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.assign(partitions_of(list, &self.0.topic));
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(topic = %self.0.topic, error = %error, "offset commit failed")
            }
        }
    }
}

impl Ctx {
    fn assign(&self, partitions: Vec<u32>) {
        let shared = &self.0;
        let Some(consumer) = shared.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut split = Vec::with_capacity(partitions.len());
        for partition in partitions {
            match consumer.split_partition_queue(&shared.topic, partition as i32) {
                Some(queue) => {
                    let reader = Reader {
                        queue,
                        resume_from: None,
                    };
                    let reader = Arc::new(tokio::sync::Mutex::new(reader));
                    shared.readers.lock().unwrap().insert(partition, reader);
                    split.push(partition);
                }
                None => {
                    tracing::error!(topic = %shared.topic, partition, "cannot split the partition queue")
                }
            }
        }
        shared.assigned.write().unwrap().extend(&split);
        tracing::info!(topic = %shared.topic, partitions = ?split, "partitions assigned");
        if let Some(listener) = shared.listener.get() {
            listener.assigned(split);
        }
    }

    fn revoke(&self, base: &BaseConsumer<Self>, partitions: Vec<u32>) {
        let shared = &self.0;
        tracing::info!(topic = %shared.topic, partitions = ?partitions, "partitions revoked; draining");
        if !shared.closing.load(Ordering::SeqCst) {
            if let Some(listener) = shared.listener.get() {
                listener.revoked(partitions.clone());
            }
        }
        {
            let mut readers = shared.readers.lock().unwrap();
            let mut assigned = shared.assigned.write().unwrap();
            for partition in &partitions {
                readers.remove(partition);
                assigned.remove(partition);
            }
        }
        // Still the owner: what the drain stored is committed before anyone else reads.
        match base.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(topic = %shared.topic, error = %error, "commit on revoke failed; the next owner repeats some events")
            }
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    list.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition() as u32)
        .collect()
}

/// A member of `group` consuming `topic`.
pub struct GroupConsumer {
    shared: Arc<Shared>,
    group: String,
    consumer: Mutex<Option<Arc<StreamConsumer<Ctx>>>>,
    stop: Mutex<Option<futures::channel::oneshot::Sender<()>>>,
    poll_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl GroupConsumer {
    /// Creates the member; it joins the group in [`GroupConsumer::start`]. Call inside tokio.
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        group: &str,
        client_id: &str,
        fetch_wait_ms: u32,
    ) -> Result<Arc<Self>, LogError> {
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            consumer: OnceLock::new(),
            listener: OnceLock::new(),
            readers: Mutex::new(HashMap::new()),
            assigned: RwLock::new(BTreeSet::new()),
            closing: AtomicBool::new(false),
        });
        let heartbeat = (kafka.session_timeout_ms / 10).max(100);
        let consumer: StreamConsumer<Ctx> = client_config(kafka, client_id)
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", heartbeat.to_string())
            // How long the broker holds an empty fetch: short for webhooks (latency), long
            // for retry tiers, whose records wait seconds anyway (idle fetches cost the broker).
            .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
            // Under steady load the broker answers a fetch once 64 KiB are there (or the wait
            // is over), instead of once per produced batch.
            .set("fetch.min.bytes", "65536")
            // Prefetch per partition stays small: a paused partition holds at most this.
            .set("queued.max.messages.kbytes", "8192")
            .create_with_context(Ctx(Arc::clone(&shared)))
            .map_err(|e| {
                unavailable(
                    format!("create a consumer of {topic} for {}", kafka.brokers),
                    e,
                )
            })?;
        let consumer = Arc::new(consumer);
        let _ = shared.consumer.set(Arc::downgrade(&consumer));
        Ok(Arc::new(Self {
            shared,
            group: group.to_owned(),
            consumer: Mutex::new(Some(consumer)),
            stop: Mutex::new(None),
            poll_thread: Mutex::new(None),
        }))
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Joins the group; assignments from now on go to `listener`.
    pub fn start(&self, listener: Arc<dyn AssignmentListener>) -> Result<(), LogError> {
        if self.shared.listener.set(listener).is_err() {
            return Err(LogError::Invalid("consumer already started".into()));
        }
        let consumer = self.consumer()?;
        let topic = self.shared.topic.clone();
        consumer
            .subscribe(&[&topic])
            .map_err(|e| unavailable(format!("subscribe to {topic}"), e))?;
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("askpro-kafka-poll".into())
            .spawn(move || poll_main_queue(consumer, stopped))
            .map_err(|e| LogError::Unavailable {
                context: format!("start the poll thread of {topic}"),
                source: Box::new(e),
            })?;
        *self.stop.lock().unwrap() = Some(stop);
        *self.poll_thread.lock().unwrap() = Some(thread);
        Ok(())
    }

    /// The partitions this member owns right now.
    pub fn assigned(&self) -> BTreeSet<u32> {
        self.shared.assigned.read().unwrap().clone()
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer<Ctx>>, LogError> {
        self.consumer.lock().unwrap().clone().ok_or_else(|| {
            LogError::Invalid(format!("the consumer of {} is closed", self.shared.topic))
        })
    }

    fn reader(&self, partition: u32) -> Result<Arc<tokio::sync::Mutex<Reader>>, LogError> {
        let readers = self.shared.readers.lock().unwrap();
        readers.get(&partition).cloned().ok_or_else(|| {
            LogError::Invalid(format!(
                "partition {partition} of {} is not assigned to this worker",
                self.shared.topic
            ))
        })
    }

    /// Up to `max` records of `partition` from `offset`, waiting up to `wait` for the first.
    pub async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Fetched>, LogError> {
        let reader = self.reader(partition)?;
        let mut reader = reader.lock().await;
        // A fresh queue starts at the committed offset; the caller may want another one.
        if reader.resume_from != Some(offset) {
            self.seek(partition, offset).await?;
            reader.resume_from = Some(offset);
        }
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, reader.queue.recv()).await {
            Err(_) => {
                reader.resume_from = Some(offset);
                return Ok(out);
            }
            Ok(first) => first,
        };
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                // Anything before the seek target was queued before the seek.
                Ok(message) if message.offset() < offset as i64 => {}
                Ok(message) => out.push(decode(&message)),
                Err(error) => {
                    tracing::warn!(topic = %self.shared.topic, partition, error = %error, "kafka fetch error");
                    break;
                }
            }
            if out.len() >= max {
                break;
            }
            next = reader.queue.recv().now_or_never();
        }
        let end = out.last().map(|f| f.offset() + 1).unwrap_or(offset);
        reader.resume_from = Some(end);
        Ok(out)
    }

    async fn seek(&self, partition: u32, offset: u64) -> Result<(), LogError> {
        let consumer = self.consumer()?;
        let topic = self.shared.topic.clone();
        tracing::info!(%topic, partition, offset, "seeking");
        blocking(move || {
            consumer
                .seek(
                    &topic,
                    partition as i32,
                    Offset::Offset(offset as i64),
                    BROKER_CALL_TIMEOUT,
                )
                .map_err(|e| unavailable(format!("seek {topic}/{partition} to {offset}"), e))
        })
        .await
    }

    /// Stores `next_offset` (the first unprocessed offset) for the next commit.
    pub fn store(&self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        let topic = &self.shared.topic;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition as i32, Offset::Offset(next_offset as i64))
            .map_err(|e| unavailable(format!("store offset of {topic}/{partition}"), e))?;
        self.consumer()?.store_offsets(&list).map_err(|e| {
            unavailable(
                format!("store offset {next_offset} of {topic}/{partition}"),
                e,
            )
        })
    }

    /// The group's committed next offset of `partition`.
    pub async fn committed(&self, partition: u32) -> Result<Option<u64>, LogError> {
        let consumer = self.consumer()?;
        let topic = self.shared.topic.clone();
        blocking(move || {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition as i32);
            let committed = consumer
                .committed_offsets(list, BROKER_CALL_TIMEOUT)
                .map_err(|e| {
                    unavailable(format!("read committed offset of {topic}/{partition}"), e)
                })?;
            let offset = committed
                .find_partition(&topic, partition as i32)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o as u64),
                    _ => None,
                });
            Ok(offset)
        })
        .await
    }

    /// The partition's end offset (one round trip to its leader).
    ///
    /// A leadership move (a new topic, an added partition, a broker restart) makes the
    /// broker answer "not leader" until the client's metadata catches up; that is retried
    /// within [`BROKER_CALL_TIMEOUT`] rather than reported as an outage.
    pub async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        let consumer = self.consumer()?;
        let topic = self.shared.topic.clone();
        let (_, high) = blocking(move || {
            let deadline = Instant::now() + BROKER_CALL_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = left.max(Duration::from_millis(500));
                match consumer.fetch_watermarks(&topic, partition as i32, wait) {
                    Ok(marks) => return Ok(marks),
                    Err(e) if leadership_moving(&e) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        let context = format!("read end offset of {topic}/{partition}");
                        return Err(unavailable(context, e));
                    }
                }
            }
        })
        .await?;
        Ok(high.max(0) as u64)
    }

    /// Stops fetching `partition` (its consumer is backed up); [`GroupConsumer::resume`] undoes it.
    pub fn pause(&self, partition: u32, pause: bool) {
        let Ok(consumer) = self.consumer() else {
            return;
        };
        let topic = &self.shared.topic;
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition as i32);
        let result = match pause {
            true => consumer.pause(&list),
            false => consumer.resume(&list),
        };
        if let Err(error) = result {
            tracing::warn!(%topic, partition, pause, error = %error, "kafka pause/resume failed");
        }
    }

    /// Leaves the group: stops the poll thread, commits what is stored and closes.
    /// The listener must already have drained its partitions.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        let thread = self.poll_thread.lock().unwrap().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.shared.readers.lock().unwrap().clear();
        self.shared.assigned.write().unwrap().clear();
        let Some(consumer) = self.consumer.lock().unwrap().take() else {
            return;
        };
        // In-flight fetches hold the queue (and with it the consumer) for at most a fetch wait.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Arc::strong_count(&consumer) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let topic = self.shared.topic.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                if !matches!(
                    error,
                    KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)
                ) {
                    tracing::warn!(%topic, error = %error, "final offset commit failed");
                }
            }
            drop(consumer); // leaves the group (blocks while librdkafka closes)
            tracing::info!(%topic, "kafka consumer closed");
        })
        .await;
    }
}

/// Serves rebalance callbacks until told to stop. Every partition has its own queue, so
/// a message here means one was fetched before its queue was split: it is read again.
fn poll_main_queue(
    consumer: Arc<StreamConsumer<Ctx>>,
    mut stopped: futures::channel::oneshot::Receiver<()>,
) {
    futures::executor::block_on(async {
        loop {
            let received = futures::select! {
                received = consumer.recv().fuse() => received,
                _ = stopped => return,
            };
            match received {
                Ok(message) => {
                    let (topic, partition, offset) = (
                        message.topic().to_owned(),
                        message.partition(),
                        message.offset(),
                    );
                    drop(message);
                    tracing::warn!(%topic, partition, offset, "message on the main queue; seeking back to it");
                    if let Err(error) = consumer.seek(
                        &topic,
                        partition,
                        Offset::Offset(offset),
                        BROKER_CALL_TIMEOUT,
                    ) {
                        tracing::error!(%topic, partition, offset, error = %error, "seek back failed");
                    }
                }
                Err(error) => tracing::warn!(error = %error, "kafka consumer error"),
            }
        }
    });
}

/// Errors that clear once the client refreshes its metadata.
fn leadership_moving(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::NotLeaderForPartition
                | Code::LeaderNotAvailable
                | Code::UnknownTopicOrPartition
                | Code::UnknownPartition
                | Code::FencedLeaderEpoch
                | Code::UnknownLeaderEpoch
        )
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LogError::Unavailable {
            context: "kafka call on the blocking pool".into(),
            source: Box::new(e),
        })?
}
