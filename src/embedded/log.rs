//! The embedded [`EventLog`]: `log.db` in WAL mode with `synchronous=FULL`.
//!
//! Appends are group-committed: every caller queues its batch, and whoever gets the writer
//! connection first writes everything queued in ONE transaction, so one fsync acknowledges
//! many webhooks. Fetches read on pooled reader connections and wait on a per-partition
//! `watch` of the end offset, re-checking the file every 250 ms because another process (the
//! CLI) may append too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askpro_actors::error::LogError;
use askpro_actors::log::{EventLog, LogPosition};
use askpro_actors::partition::partition_for;
use askpro_actors::record::{LogRecord, StoredRecord};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{oneshot, watch};

use super::disk::{self, DiskReserve};
use super::log_codec::{decode, headers_json};
use super::log_health::{Failure, WriteHealth};
use super::migrate;
use super::retention;
use super::sqlite::{self, Db, OpenError, Synchronous};

/// File name of the log inside the data dir.
pub const LOG_FILE: &str = "log.db";
/// How often a waiting fetch re-reads the file even without a local append.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

type AppendResult = Result<Vec<LogPosition>, Arc<rusqlite::Error>>;

/// The SQLite-backed log. Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    dir: PathBuf,
    partitions: u32,
    /// End offset (next offset to assign) per partition, published after each commit.
    ends: Vec<watch::Sender<u64>>,
    /// Batches waiting for the next group commit.
    queue: Mutex<Vec<Pending>>,
    /// Transactions committed by appends (tests check that a batch is one transaction).
    group_commits: AtomicU64,
    /// The last append's outcome and the disk reserve (see [`super::disk`]).
    health: WriteHealth,
}

struct Pending {
    records: Vec<LogRecord>,
    done: oneshot::Sender<AppendResult>,
}

impl EmbeddedLog {
    /// Opens (or creates) `dir/log.db` with `partitions` partitions. The count is fixed at the
    /// first open: tenants hash onto partitions, so a different count is refused.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, LogError> {
        Self::open_file(dir, LOG_FILE, partitions)
    }

    /// [`EmbeddedLog::open`] with a disk reserve to release when the disk is full (`None`:
    /// no reserve). Creates the reserve now and keeps re-creating it after a release.
    pub fn open_reserved(
        dir: &Path,
        partitions: u32,
        reserve: Option<DiskReserve>,
    ) -> Result<Self, LogError> {
        Self::open_with(dir, LOG_FILE, partitions, reserve)
    }

    /// Opens (or creates) another log in `dir` (a retry tier or the dead-letter log), like a
    /// second Kafka topic: same layout, its own offsets and consumer groups.
    pub fn open_file(dir: &Path, file: &str, partitions: u32) -> Result<Self, LogError> {
        Self::open_with(dir, file, partitions, None)
    }

    fn open_with(
        dir: &Path,
        file: &str,
        partitions: u32,
        reserve: Option<DiskReserve>,
    ) -> Result<Self, LogError> {
        if partitions == 0 {
            return Err(LogError::Invalid(
                "the log needs at least one partition".into(),
            ));
        }
        let db = Db::open(dir, file, Synchronous::Full, migrate::LOG).map_err(open_error)?;
        let ends = {
            let mut conn = db.writer();
            check_partition_count(&mut conn, dir, partitions)?;
            (0..partitions)
                .map(|p| tail(&conn, p).map(|end| watch::channel(end).0))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable(format!(
                    "read end offsets of {}",
                    db.path().display()
                )))?
        };
        let health = WriteHealth::new(reserve)?;
        tracing::info!(dir = %dir.display(), file, partitions, "opened embedded log");
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_owned(),
                partitions,
                ends,
                queue: Mutex::new(Vec::new()),
                group_commits: AtomicU64::new(0),
                health,
            }),
        })
    }

    /// The data dir this log lives in.
    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Caps `log.db` at its current size (`full`) or lifts the cap: an append that needs
    /// another page then fails with SQLITE_FULL exactly as on a full disk. For fault
    /// injection in tests; the cap lives on this process's writer connection only.
    #[doc(hidden)]
    pub fn simulate_full_disk(&self, full: bool) -> Result<(), LogError> {
        let conn = self.inner.db.writer();
        let pages: i64 = match full {
            true => conn.query_row("PRAGMA page_count", [], |r| r.get(0)),
            // SQLite clamps this to its own maximum.
            false => Ok(i64::from(u32::MAX)),
        }
        .map_err(unavailable("read the page count".into()))?;
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(unavailable("cap the page count".into()))
    }

    /// Runs `hook` on the writer right after the reserve is released (a test frees its
    /// simulated disk there).
    #[cfg(test)]
    pub(super) fn on_release(&self, hook: super::log_health::ReleaseHook) {
        *self.inner.health.after_release.lock().unwrap() = Some(hook);
    }

    #[cfg(test)]
    fn group_commits(&self) -> u64 {
        self.inner.group_commits.load(Ordering::Relaxed)
    }

    fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        if partition < self.inner.partitions {
            return Ok(());
        }
        Err(LogError::Invalid(format!(
            "partition {partition} does not exist (the log has {} partitions)",
            self.inner.partitions
        )))
    }

    /// Runs `work` on the blocking pool with a clone of the shared state.
    async fn run<T: Send + 'static>(
        &self,
        context: &'static str,
        work: impl FnOnce(&Inner) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let inner = Arc::clone(&self.inner);
        sqlite::blocking(
            move || work(&inner),
            |e| LogError::Unavailable {
                context: context.to_owned(),
                source: Box::new(e),
            },
        )
        .await
    }
}

fn open_error(e: OpenError) -> LogError {
    match e {
        OpenError::Migrate { path, source } if source.sqlite().is_none() => {
            LogError::Invalid(format!("cannot migrate {}: {source}", path.display()))
        }
        e => LogError::Unavailable {
            context: "open log".into(),
            source: Box::new(e),
        },
    }
}

fn unavailable(context: String) -> impl FnOnce(rusqlite::Error) -> LogError {
    move |e| LogError::Unavailable {
        context,
        source: Box::new(e),
    }
}

/// Stores the partition count at first open and refuses a different one later.
fn check_partition_count(
    conn: &mut Connection,
    dir: &Path,
    partitions: u32,
) -> Result<(), LogError> {
    let fail = unavailable(format!("read the partition count in {}", dir.display()));
    let run = |conn: &mut Connection| -> rusqlite::Result<Option<String>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<String> = tx
            .prepare_cached("SELECT value FROM log_meta WHERE key = 'partitions'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        if stored.is_none() {
            tx.prepare_cached("INSERT INTO log_meta (key, value) VALUES ('partitions', ?1)")?
                .execute([partitions.to_string()])?;
        }
        tx.commit()?;
        Ok(stored)
    };
    let Some(stored) = run(conn).map_err(fail)? else {
        return Ok(());
    };
    if stored == partitions.to_string() {
        return Ok(());
    }
    Err(LogError::Invalid(format!(
        "the log in {} was created with {stored} partitions but {partitions} are configured; \
         tenants are hashed onto partitions, so keep {stored} or start from a new data dir",
        dir.display()
    )))
}

/// The next offset of `partition` as stored in the file.
fn tail(conn: &Connection, partition: u32) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT COALESCE(MAX(offset) + 1, 0) FROM log_records WHERE partition = ?1",
    )?
    .query_row([partition], |r| r.get(0))
}

impl Inner {
    /// Writes every queued batch in one transaction, unless another caller already did.
    fn commit_queued(&self) {
        let mut conn = self.db.writer();
        let batch = std::mem::take(&mut *self.queue.lock().expect("append queue poisoned"));
        if batch.is_empty() {
            return;
        }
        let records: usize = batch.iter().map(|p| p.records.len()).sum();
        let started = std::time::Instant::now();
        let mut written = self.write(&mut conn, &batch);
        if matches!(&written, Err(e) if disk::is_disk_full(e)) && self.health.release(&conn) {
            written = self.write(&mut conn, &batch);
        }
        self.health.note(written.as_ref().err());
        match written {
            Ok(positions) => {
                self.group_commits.fetch_add(1, Ordering::Relaxed);
                self.publish_ends(&positions);
                tracing::debug!(
                    records,
                    batches = batch.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "log group commit"
                );
                for (pending, positions) in batch.into_iter().zip(positions) {
                    let _ = pending.done.send(Ok(positions));
                }
            }
            Err(e) => {
                let path = self.db.path().display();
                tracing::warn!(records, path = %path, error = %e, "log group commit failed");
                let e = Arc::new(e);
                for pending in batch {
                    let _ = pending.done.send(Err(Arc::clone(&e)));
                }
            }
        }
    }

    /// One transaction for all `batch`; positions per pending batch, in input order.
    fn write(
        &self,
        conn: &mut Connection,
        batch: &[Pending],
    ) -> rusqlite::Result<Vec<Vec<LogPosition>>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Offsets come from the file's tail, read under the write lock: another process may
        // have appended since our last commit, and this keeps offsets dense regardless.
        let mut next: Vec<Option<u64>> = vec![None; self.partitions as usize];
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log_records (partition, offset, headers, value, appended_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for pending in batch {
                let mut positions = Vec::with_capacity(pending.records.len());
                for record in &pending.records {
                    let partition = partition_for(record.key().as_bytes(), self.partitions);
                    let slot = &mut next[partition as usize];
                    let offset = match *slot {
                        Some(offset) => offset,
                        None => tail(&tx, partition)?,
                    };
                    *slot = Some(offset + 1);
                    insert.execute(params![
                        partition,
                        offset,
                        headers_json(&record.meta),
                        &record.value[..],
                        now
                    ])?;
                    positions.push(LogPosition { partition, offset });
                }
                out.push(positions);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn publish_ends(&self, positions: &[Vec<LogPosition>]) {
        for pos in positions.iter().flatten() {
            self.ends[pos.partition as usize].send_if_modified(|end| {
                let modified = *end < pos.offset + 1;
                *end = (*end).max(pos.offset + 1);
                modified
            });
        }
    }

    fn read(&self, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredRecord>, LogError> {
        let fail = || unavailable(format!("fetch partition {partition} from offset {offset}"));
        let conn = self.db.reader().map_err(fail())?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT offset, headers, value FROM log_records
                 WHERE partition = ?1 AND offset >= ?2 ORDER BY offset LIMIT ?3",
            )
            .map_err(fail())?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![partition, offset, limit], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(fail())?;
        let mut out = Vec::new();
        for row in rows {
            let (offset, headers, value) = row.map_err(fail())?;
            out.push(decode(partition, offset, &headers, value)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    async fn append(&self, records: Vec<LogRecord>) -> Result<Vec<LogPosition>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (done, result) = oneshot::channel();
        self.inner
            .queue
            .lock()
            .expect("append queue poisoned")
            .push(Pending { records, done });
        // Our batch may be written by this task or by a concurrent one that got the writer
        // first; either way the answer arrives on `result`.
        self.run("append", |inner| {
            inner.commit_queued();
            Ok(())
        })
        .await?;
        match result.await {
            Ok(Ok(positions)) => Ok(positions),
            Ok(Err(e)) => Err(Failure::of(&e).error(Box::new(e))),
            Err(e) => Err(Failure::Other.error(Box::new(e))),
        }
    }

    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>, LogError> {
        self.check_partition(partition)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut end = self.inner.ends[partition as usize].subscribe();
        loop {
            // Mark the current end as seen before reading, so an append that commits between
            // the read and the wait still wakes us.
            end.borrow_and_update();
            let records = self
                .run("fetch", move |inner| inner.read(partition, offset, max))
                .await?;
            let now = tokio::time::Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            let _ = tokio::time::timeout(nap, end.changed()).await;
        }
    }

    async fn commit(&self, group: &str, partition: u32, next_offset: u64) -> Result<(), LogError> {
        self.check_partition(partition)?;
        if group.is_empty() {
            return Err(LogError::Invalid("consumer group name is empty".into()));
        }
        if i64::try_from(next_offset).is_err() {
            return Err(LogError::Invalid(format!(
                "offset {next_offset} is out of range"
            )));
        }
        let group = group.to_owned();
        self.run("commit", move |inner| {
            let fail = unavailable(format!(
                "commit {group} partition {partition} at {next_offset}"
            ));
            inner
                .db
                .writer()
                .prepare_cached(
                    "INSERT INTO consumer_offsets (group_id, partition, next_offset, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (group_id, partition) DO UPDATE
                     SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        group,
                        partition,
                        next_offset,
                        chrono::Utc::now().timestamp_millis()
                    ])
                })
                .map_err(fail)?;
            Ok(())
        })
        .await
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.check_partition(partition)?;
        let group = group.to_owned();
        self.run("committed", move |inner| {
            let fail = || {
                unavailable(format!(
                    "read committed offset of {group} partition {partition}"
                ))
            };
            let conn = inner.db.reader().map_err(fail())?;
            conn.prepare_cached(
                "SELECT next_offset FROM consumer_offsets WHERE group_id = ?1 AND partition = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![group, partition], |r| r.get(0))
                    .optional()
            })
            .map_err(fail())
        })
        .await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.check_partition(partition)?;
        self.run("end_offset", move |inner| {
            let fail = || unavailable(format!("read end offset of partition {partition}"));
            let conn = inner.db.reader().map_err(fail())?;
            tail(&conn, partition).map_err(fail())
        })
        .await
    }

    async fn enforce_retention(&self, older_than: DateTime<Utc>) -> Result<u64, LogError> {
        let cutoff = older_than.timestamp_millis();
        let mut total = 0;
        for partition in 0..self.inner.partitions {
            loop {
                // One partition and one small chunk per writer lock, so appends interleave.
                let deleted = self
                    .run("enforce retention", move |inner| {
                        let conn = inner.db.writer();
                        retention::trim_chunk(&conn, partition, cutoff)
                            .map_err(unavailable("delete records past retention".into()))
                    })
                    .await?;
                total += deleted;
                if deleted == 0 {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn check(&self) -> Result<(), LogError> {
        self.run("check", |inner| {
            let fail = || unavailable("log health check".into());
            let conn = inner.db.reader().map_err(fail())?;
            conn.prepare_cached("SELECT 1")
                .and_then(|mut stmt| stmt.query_row([], |_| Ok(())))
                .map_err(fail())?;
            drop(conn);
            inner.health.recheck(|| inner.db.writer())
        })
        .await
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
