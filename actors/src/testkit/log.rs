//! [`MemLog`]: an in-memory [`EventLog`] with knobs for tests.
//!
//! Records are placed with [`partition_for`] like every real backend, offsets are dense per
//! partition, `fetch` long-polls on a [`Notify`] and committed offsets are kept per group.
//! Knobs: a gate that holds appends until permits are released (to observe group commit), an
//! append failure switch, a one-shot panic in `commit` (to fail the calling actor), and
//! counters of calls and batch sizes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use crate::error::LogError;
use crate::log::{EventLog, LogPosition};
use crate::partition::partition_for;
use crate::record::{LogRecord, StoredRecord};

#[derive(Default)]
struct Data {
    partitions: Vec<Vec<StoredRecord>>,
    committed: HashMap<(String, u32), u64>,
}

/// An in-memory, partitioned, append-only log.
pub struct MemLog {
    partitions: u32,
    data: Mutex<Data>,
    appended: Notify,
    gate: Mutex<Option<Arc<Semaphore>>>,
    fail_appends: AtomicBool,
    panic_appends: AtomicBool,
    panic_next_commit: AtomicBool,
    batch_sizes: Mutex<Vec<usize>>,
    appends_in_flight: AtomicUsize,
    fetch_calls: AtomicUsize,
    commit_calls: AtomicUsize,
}

impl MemLog {
    pub fn new(partitions: u32) -> Self {
        assert!(partitions > 0);
        Self {
            partitions,
            data: Mutex::new(Data {
                partitions: vec![Vec::new(); partitions as usize],
                committed: HashMap::new(),
            }),
            appended: Notify::new(),
            gate: Mutex::new(None),
            fail_appends: AtomicBool::new(false),
            panic_appends: AtomicBool::new(false),
            panic_next_commit: AtomicBool::new(false),
            batch_sizes: Mutex::new(Vec::new()),
            appends_in_flight: AtomicUsize::new(0),
            fetch_calls: AtomicUsize::new(0),
            commit_calls: AtomicUsize::new(0),
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().expect("memlog lock poisoned")
    }

    // ---- knobs ---------------------------------------------------------------------------

    /// From now on every append waits for a permit given by [`MemLog::release_appends`].
    pub fn hold_appends(&self) {
        *self.gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` held (or future held) appends complete.
    pub fn release_appends(&self, n: usize) {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.add_permits(n);
        }
    }

    /// Makes appends fail (after the gate) with [`LogError::Unavailable`].
    /// While set, appends panic (a backend bug).
    pub fn set_panic_appends(&self, panic: bool) {
        self.panic_appends.store(panic, Ordering::SeqCst);
    }

    pub fn set_fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::SeqCst);
    }

    /// The next `commit` call panics (the calling actor fails).
    pub fn panic_next_commit(&self) {
        self.panic_next_commit.store(true, Ordering::SeqCst);
    }

    // ---- observations --------------------------------------------------------------------

    /// Sizes of every append call, in call order (recorded when the call starts).
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().unwrap().clone()
    }

    pub fn append_calls(&self) -> usize {
        self.batch_sizes.lock().unwrap().len()
    }

    /// Append calls started and not yet returned (e.g. waiting at the gate).
    pub fn appends_in_flight(&self) -> usize {
        self.appends_in_flight.load(Ordering::SeqCst)
    }

    pub fn fetch_calls(&self) -> usize {
        self.fetch_calls.load(Ordering::SeqCst)
    }

    pub fn commit_calls(&self) -> usize {
        self.commit_calls.load(Ordering::SeqCst)
    }

    /// The stored record at a position.
    pub fn record(&self, position: LogPosition) -> Option<StoredRecord> {
        let data = self.data();
        data.partitions
            .get(position.partition as usize)?
            .get(position.offset as usize)
            .cloned()
    }

    /// The committed next offset, without going through the async trait.
    pub fn committed_offset(&self, group: &str, partition: u32) -> Option<u64> {
        self.data()
            .committed
            .get(&(group.to_owned(), partition))
            .copied()
    }

    fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        if partition < self.partitions {
            Ok(())
        } else {
            Err(LogError::Invalid(format!(
                "partition {partition} does not exist (have {})",
                self.partitions
            )))
        }
    }

    fn read(&self, partition: u32, offset: u64, max: usize) -> Vec<StoredRecord> {
        let data = self.data();
        let records = &data.partitions[partition as usize];
        let start = (offset as usize).min(records.len());
        let end = start.saturating_add(max).min(records.len());
        records[start..end].to_vec()
    }
}

/// Decrements the in-flight counter however `append` returns (including cancellation).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventLog for MemLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<LogRecord>) -> Result<Vec<LogPosition>, LogError> {
        self.batch_sizes.lock().unwrap().push(records.len());
        self.appends_in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.appends_in_flight);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate never closes").forget();
        }
        if self.panic_appends.load(Ordering::SeqCst) {
            panic!("memlog append panicked (injected)");
        }
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(LogError::Unavailable {
                context: "memlog append (injected failure)".into(),
                source: Box::new(std::io::Error::other("injected")),
            });
        }
        let positions = {
            let mut data = self.data();
            records
                .into_iter()
                .map(|record| {
                    let partition = partition_for(record.key().as_bytes(), self.partitions);
                    let stored = &mut data.partitions[partition as usize];
                    let offset = stored.len() as u64;
                    stored.push(StoredRecord {
                        partition,
                        offset,
                        meta: record.meta,
                        value: record.value,
                    });
                    LogPosition { partition, offset }
                })
                .collect()
        };
        self.appended.notify_waiters();
        Ok(positions)
    }

    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>, LogError> {
        self.check_partition(partition)?;
        self.fetch_calls.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before reading, so an append in between still wakes us.
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let records = self.read(partition, offset, max);
            if !records.is_empty() || max == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(records);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    async fn commit(&self, group: &str, partition: u32, next_offset: u64) -> Result<(), LogError> {
        self.check_partition(partition)?;
        self.commit_calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_next_commit.swap(false, Ordering::SeqCst) {
            panic!("memlog: injected panic in commit");
        }
        self.data()
            .committed
            .insert((group.to_owned(), partition), next_offset);
        Ok(())
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.check_partition(partition)?;
        Ok(self.committed_offset(group, partition))
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.check_partition(partition)?;
        Ok(self.data().partitions[partition as usize].len() as u64)
    }

    async fn check(&self) -> Result<(), LogError> {
        Ok(())
    }
}
