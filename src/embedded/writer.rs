//! The state store's single writer: one OS thread owns the write side of `state.db` and
//! group-commits whatever writes are queued.
//!
//! Why a thread and not `spawn_blocking` + a mutex per call: every pipeline event makes about
//! five small writes, issued concurrently by many tenant tasks. Handing each one to the
//! blocking pool and then queueing on the writer mutex cost more in context switches and lock
//! contention than SQLite spent writing. Here a caller only pushes a job onto a channel and
//! awaits a oneshot; the thread takes everything queued (up to [`MAX_BATCH`]), runs it in ONE
//! transaction, commits once and answers everyone.
//!
//! Each job runs inside its own SAVEPOINT, so a job that fails (a conflict, a missing row)
//! rolls back only its own changes and gets its own error while the rest of the batch commits.
//! Answers are sent only after the COMMIT: a caller never sees a write that could still be
//! rolled back.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use askpro_actors::error::StoreError;
use askpro_actors::store::StoreResult;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::disk::DiskReserve;
use super::sqlite::{Db, Synchronous};
use super::store_rows::Res;

/// Most jobs committed by one transaction: bounds how long the write lock is held (the CLI
/// may be waiting for it) and how much work one failing COMMIT takes down with it.
pub(super) const MAX_BATCH: usize = 256;

/// Why a whole batch did not commit. Shared by every job of the batch.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("state write batch not committed")]
    Sql(#[source] rusqlite::Error),
    /// SQLite itself rolled the transaction back (I/O error, full disk, ...) while a job ran.
    #[error("state write batch rolled back by sqlite after a job failed")]
    Aborted,
    /// The log released the disk reserve (the disk filled up): state writes wait, so the
    /// space goes to the log, until the reserve fits again.
    #[error(
        "disk low: state writes wait until the disk reserve fits again (the log has priority)"
    )]
    DiskLow,
}

/// The answer a caller awaits; `Err` carries a panic of its job, re-raised in the caller
/// (as `spawn_blocking` did), so a bug does not turn into a retried "unavailable".
type Answer<T> = Result<StoreResult<T>, Box<dyn Any + Send>>;

/// One queued write, type-erased so jobs with different results share the channel.
trait Job: Send {
    /// Whether the batch holding this job must be committed with `synchronous=FULL`.
    fn barrier(&self) -> bool;
    /// Runs the work on the writer connection, inside the batch transaction and the job's
    /// savepoint. Returns false if it failed, so the savepoint is rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller; `lost` is set when the batch did not commit.
    fn finish(self: Box<Self>, lost: Option<&Arc<Lost>>);
}

struct Typed<T, F> {
    operation: &'static str,
    table: &'static str,
    barrier: bool,
    work: Option<F>,
    outcome: Option<Answer<T>>,
    reply: oneshot::Sender<Answer<T>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Res<T> + Send + 'static,
{
    fn barrier(&self) -> bool {
        self.barrier
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // The connection is only touched through SQLite, whose state the savepoint rollback
        // restores; nothing half-updated on the Rust side survives the unwind.
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(fail)) => Ok(Err(fail.into_store(self.operation, self.table))),
            Err(payload) => Err(payload),
        };
        let ok = matches!(outcome, Ok(Ok(_)));
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, lost: Option<&Arc<Lost>>) {
        let unavailable = |lost: &Arc<Lost>| {
            Ok(Err(StoreError::Unavailable {
                operation: self.operation,
                source: Box::new(Arc::clone(lost)),
            }))
        };
        let answer = match (self.outcome, lost) {
            // A job that failed on its own keeps its own error: nothing of it was written
            // either way.
            (Some(Ok(Err(e))), _) => Ok(Err(e)),
            (Some(Err(payload)), _) => Err(payload),
            (Some(Ok(Ok(value))), None) => Ok(Ok(value)),
            (_, Some(lost)) => unavailable(lost),
            (None, None) => unavailable(&Arc::new(Lost::Aborted)),
        };
        // The caller may have stopped waiting (its future was dropped); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// The handle callers submit writes through. Dropping it (with the last store handle) lets
/// the thread write the jobs already queued, then stop and close the writer connection.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed (tests check that concurrent writes share one).
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread on `db`'s writer connection.
    /// With a `reserve`, a batch is refused while the reserve is not in place.
    pub(super) fn start(db: Arc<Db>, reserve: Option<DiskReserve>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || serve(&db, reserve.as_ref(), &queue, &counter))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            commits,
        })
    }

    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `work` for the next group commit and waits until that batch has committed.
    /// `barrier` makes the batch commit with `synchronous=FULL` (see [`super::store_sql::sync`]).
    pub(super) async fn submit<T, F>(
        &self,
        operation: &'static str,
        table: &'static str,
        barrier: bool,
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Res<T> + Send + 'static,
    {
        let stopped = || StoreError::Unavailable {
            operation,
            source: "the state writer thread has stopped".into(),
        };
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            operation,
            table,
            barrier,
            work: Some(work),
            outcome: None,
            reply,
        });
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).map_err(|_| stopped())?;
        // A dead thread drops the queued jobs and with them their reply senders, so this
        // resolves instead of hanging.
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(_) => Err(stopped()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the queue is empty.
        drop(self.jobs.take());
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Join so the connection is closed when the store is gone (a reopen or the CLI then
        // finds the file as after a clean shutdown). Never join ourselves.
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::error!("state writer thread panicked");
        }
        let commits = self.commits.load(Ordering::Relaxed);
        tracing::debug!(commits, "state writer stopped");
    }
}

/// The thread body: block for a job, take whatever else is queued, commit it as one batch.
fn serve(
    db: &Db,
    reserve: Option<&DiskReserve>,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    commits: &AtomicU64,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let jobs = batch.len();
        // One stat per batch: the reserve may be released by another process (the ingress).
        let lost = match reserve.is_some_and(|r| !r.is_held()) {
            true => Some(Arc::new(Lost::DiskLow)),
            false => commit_batch(&db.writer(), &mut batch).err(),
        };
        if let Some(lost) = &lost {
            tracing::warn!(jobs, error = %lost, "state write batch failed");
        } else {
            commits.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(
                jobs,
                elapsed_us = started.elapsed().as_micros() as u64,
                "state group commit"
            );
        }
        for job in batch.drain(..) {
            job.finish(lost.as_ref());
        }
    }
}

/// Runs `batch` in one transaction, each job in its own savepoint. A durability barrier in
/// the batch makes the COMMIT fsync the WAL; the writer goes back to NORMAL afterwards.
fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Arc<Lost>> {
    // A transaction left open (only a bug could) would swallow this batch into it.
    if !conn.is_autocommit() {
        tracing::warn!("state writer found an open transaction; rolling it back");
        rollback(conn);
    }
    let durable = batch.iter().any(|job| job.barrier());
    // SQLite refuses to change the safety level inside a transaction, so before BEGIN.
    if durable {
        set_synchronous(conn, Synchronous::Full).map_err(lost)?;
    }
    let result = run_batch(conn, batch);
    if durable {
        // Every later batch would pay an fsync if this failed; the batch itself committed.
        if let Err(e) = set_synchronous(conn, Synchronous::Normal) {
            tracing::warn!(error = %e, "state writer could not restore synchronous=normal");
        }
    }
    result
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Arc<Lost>> {
    // IMMEDIATE takes SQLite's write lock up front: a concurrent writer (the CLI) makes us
    // wait (busy_timeout) instead of failing a read-then-write with SQLITE_BUSY_SNAPSHOT.
    exec(conn, "BEGIN IMMEDIATE").map_err(lost)?;
    for job in batch.iter_mut() {
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            rollback(conn);
            return Err(lost(e));
        }
        let closed = if job.run(conn) {
            exec(conn, "RELEASE job")
        } else if conn.is_autocommit() {
            // The earlier jobs' changes are gone with the transaction; they must not be
            // acknowledged.
            return Err(Arc::new(Lost::Aborted));
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        if let Err(e) = closed {
            rollback(conn);
            return Err(lost(e));
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        rollback(conn);
        return Err(lost(e));
    }
    Ok(())
}

/// A transaction-control statement, prepared once per connection like every other one.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn rollback(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        tracing::warn!(error = %e, "state writer rollback failed");
    }
}

fn set_synchronous(conn: &Connection, level: Synchronous) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", level.as_str())
}

fn lost(e: rusqlite::Error) -> Arc<Lost> {
    Arc::new(Lost::Sql(e))
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
