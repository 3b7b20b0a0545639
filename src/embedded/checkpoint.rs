//! Background WAL checkpoints.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so one
//! unlucky webhook (or pipeline batch) pays for copying the WAL into the database file and
//! the fsyncs that go with it. This thread copies frames early with `PASSIVE` (which never
//! blocks writers or readers), so that checkpoint finds little left to copy.
//!
//! It cannot replace the writer's checkpoint: the WAL only restarts from its beginning when a
//! writer finds it fully copied, and under steady writes a background checkpoint is never
//! complete at that moment. Without the writer's threshold the WAL grows without bound
//! (measured: 2 GiB for 120k webhooks).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back into the database file.
const INTERVAL: Duration = Duration::from_millis(250);

/// Runs checkpoints until dropped.
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let path = path.to_owned();
        let handle = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || run(&path, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take()); // disconnects the channel: the thread exits
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run(path: &PathBuf, stopped: &mpsc::Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(path = %path.display(), error = %error, "wal checkpointer cannot open database");
            return;
        }
    };
    // Anything but a timeout (a message, or the handle dropped) means stop.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
        checkpoint(&conn, path);
    }
    checkpoint(&conn, path); // leave a short WAL behind on a clean stop
}

fn checkpoint(conn: &Connection, path: &Path) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match result {
        Ok((wal_pages, copied)) => {
            tracing::trace!(path = %path.display(), wal_pages, copied, "wal checkpoint");
        }
        Err(error) => {
            tracing::debug!(path = %path.display(), error = %error, "wal checkpoint skipped")
        }
    }
}
