//! Disk full: a reserve file under the data dir that keeps room for the log.
//!
//! Every webhook must reach `log.db` before it is answered, so the log matters more than the
//! state store: an unprocessed webhook waits safely in the log, a refused one depends on the
//! provider's retries. When an append hits a full disk (SQLITE_FULL), the log deletes
//! `DATA_DIR/disk.reserve` and retries. From then until the reserve can be written again,
//! state-store writes wait (the store reports them as unavailable and its callers back off),
//! so the space the reserve freed, and whatever an operator frees next, goes to the log
//! instead of the state WAL. A keeper thread re-creates the reserve every few seconds; once
//! the whole reserve fits again, state writes resume.
//!
//! The reserve's presence is the signal, so separate `askpro ingress` and `askpro worker`
//! processes on one data dir agree on it without talking to each other.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

/// File name of the reserve inside the data dir.
pub const RESERVE_FILE: &str = "disk.reserve";
/// How often the keeper tries to re-create a released reserve.
const KEEPER_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes the health probe writes into `log.db` (and deletes again) to learn whether a
/// webhook would fit again after the disk was full.
const PROBE_BYTES: i64 = 64 * 1024;
/// Bytes written per call while filling the reserve.
const CHUNK: usize = 1024 * 1024;

/// Whether SQLite refused a write because the disk (or the database's page cap) is full.
/// SQLite maps ENOSPC to SQLITE_FULL ("database or disk is full").
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull)
}

/// Writes and then deletes a webhook-sized row in `log.db`, each in its own transaction,
/// so the probe needs real room in the WAL and the file (a rolled-back insert would not).
pub(crate) fn probe_log(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO log_meta (key, value) VALUES ('disk_probe', zeroblob(?1))",
    )?
    .execute([PROBE_BYTES])?;
    conn.prepare_cached("DELETE FROM log_meta WHERE key = 'disk_probe'")?
        .execute([])?;
    Ok(())
}

/// The reserve file of one data dir.
#[derive(Clone, Debug)]
pub struct DiskReserve {
    path: PathBuf,
    bytes: u64,
}

impl DiskReserve {
    /// The reserve of `dir`, or `None` when `bytes` is 0 (the mechanism is off).
    pub fn new(dir: &Path, bytes: u64) -> Option<Self> {
        (bytes > 0).then(|| Self {
            path: dir.join(RESERVE_FILE),
            bytes,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the reserve is in place; while it is not, state writes wait.
    pub fn is_held(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Deletes the reserve so the log can use its space. True when it was there.
    pub fn release(&self) -> io::Result<bool> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the reserve when it is missing. `Ok(false)`: it does not fit (yet).
    pub fn ensure(&self) -> io::Result<bool> {
        if self.is_held() {
            return Ok(true);
        }
        // Written aside and renamed, so `is_held` never sees a half-written reserve; the
        // name carries the pid because an ingress and a worker may both try at once.
        let tmp = self
            .path
            .with_extension(format!("reserve.tmp-{}", std::process::id()));
        match self.fill(&tmp) {
            Ok(()) => {
                fs::rename(&tmp, &self.path)?;
                if let Some(dir) = self.path.parent() {
                    // Best effort: the rename survives a crash once the dir is synced.
                    let _ = File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(true)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                match e.kind() {
                    ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Ok(false),
                    _ => Err(e),
                }
            }
        }
    }

    /// Writes `bytes` of incompressible data (a compressing filesystem would not reserve
    /// zeros) and syncs, so the blocks are really allocated.
    fn fill(&self, tmp: &Path) -> io::Result<()> {
        let mut file = File::create(tmp)?;
        let mut chunk = vec![0u8; CHUNK];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ self.bytes;
        for word in chunk.chunks_exact_mut(8) {
            // xorshift64: cheap, and enough to defeat compression.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let mut left = self.bytes;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }
}

/// Re-creates a released reserve every few seconds until dropped.
pub(crate) struct ReserveKeeper {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl ReserveKeeper {
    pub(crate) fn start(reserve: DiskReserve) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("disk-reserve".into())
            .spawn(move || keep(&reserve, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for ReserveKeeper {
    fn drop(&mut self) {
        drop(self.stop.take()); // disconnects the channel: the thread exits
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn keep(reserve: &DiskReserve, stopped: &mpsc::Receiver<()>) {
    let mut held = reserve.is_held();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(KEEPER_INTERVAL) {
        let now = match reserve.ensure() {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(error = %error, "cannot re-create the disk reserve");
                false
            }
        };
        if now && !held {
            tracing::info!(
                reserve_bytes = reserve.bytes,
                "disk reserve re-created; state writes resume"
            );
        }
        held = now;
    }
}

/// Creates the reserve at open, or says why state writes will wait.
pub(crate) fn ensure_at_open(reserve: &DiskReserve) {
    match reserve.ensure() {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            reserve_bytes = reserve.bytes,
            "disk reserve does not fit; state writes wait until there is room for it"
        ),
        Err(error) => tracing::error!(error = %error, "cannot create the disk reserve"),
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
