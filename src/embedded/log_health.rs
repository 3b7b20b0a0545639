//! Whether the log can write: the last append's outcome, the disk reserve it releases when
//! the disk is full, and the probe `/health` runs to notice that space is back.

use std::sync::{Mutex, MutexGuard};

use askpro_actors::error::LogError;
use rusqlite::Connection;

use super::disk::{self, DiskReserve, ReserveKeeper};

/// Why the last append failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    DiskFull,
    Other,
}

impl Failure {
    pub(super) fn of(e: &rusqlite::Error) -> Self {
        match disk::is_disk_full(e) {
            true => Failure::DiskFull,
            false => Failure::Other,
        }
    }

    /// The error callers (and through them HTTP clients) see: no file names.
    pub(super) fn error(self, source: Box<dyn std::error::Error + Send + Sync>) -> LogError {
        match self {
            Failure::DiskFull => LogError::DiskFull {
                context: "no space left to append to the log".into(),
            },
            Failure::Other => LogError::Unavailable {
                context: "append".into(),
                source,
            },
        }
    }
}

/// A hook run right after the reserve is released (tests free their simulated disk there).
#[cfg(test)]
pub(super) type ReleaseHook = Box<dyn Fn(&Connection) + Send>;

pub(super) struct WriteHealth {
    /// Released when an append finds the disk full (see [`super::disk`]).
    reserve: Option<DiskReserve>,
    /// Why the last append failed, until one succeeds (or the probe does).
    failed: Mutex<Option<Failure>>,
    _keeper: Option<ReserveKeeper>,
    #[cfg(test)]
    pub(super) after_release: Mutex<Option<ReleaseHook>>,
}

impl WriteHealth {
    /// Creates the reserve (when there is one) and starts its keeper.
    pub(super) fn new(reserve: Option<DiskReserve>) -> Result<Self, LogError> {
        let keeper = match &reserve {
            Some(reserve) => {
                disk::ensure_at_open(reserve);
                let keeper =
                    ReserveKeeper::start(reserve.clone()).map_err(|e| LogError::Unavailable {
                        context: "start the disk reserve keeper".into(),
                        source: Box::new(e),
                    })?;
                Some(keeper)
            }
            None => None,
        };
        Ok(Self {
            reserve,
            failed: Mutex::new(None),
            _keeper: keeper,
            #[cfg(test)]
            after_release: Mutex::new(None),
        })
    }

    /// Frees the reserve for the log after a full disk; `conn` is the log's writer, held
    /// by the caller. True when there was a reserve to free (the append is worth retrying).
    pub(super) fn release(&self, conn: &Connection) -> bool {
        let Some(reserve) = &self.reserve else {
            return false;
        };
        match reserve.release() {
            Ok(true) => {
                tracing::warn!(
                    reserve_bytes = reserve.bytes(),
                    "disk full: released the disk reserve for the log; state writes wait until it fits again"
                );
                #[cfg(test)]
                if let Some(hook) = &*self.after_release.lock().expect("hook poisoned") {
                    hook(conn);
                }
                let _ = conn;
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::error!(error = %error, "cannot release the disk reserve");
                false
            }
        }
    }

    /// Records an append's outcome (`None`: it succeeded).
    pub(super) fn note(&self, error: Option<&rusqlite::Error>) {
        let mut failed = self.failed.lock().expect("failure state poisoned");
        let now = error.map(Failure::of);
        if now == Some(Failure::DiskFull) && *failed != now {
            tracing::error!("disk full: the log refuses webhooks until space is freed");
        } else if now.is_none() && failed.is_some() {
            tracing::info!("log appends succeed again");
        }
        *failed = now;
    }

    /// After a failed append: whether a webhook would fit now, by writing a probe on the
    /// writer `writer` returns. Keeps `/health` unhealthy while the disk stays full, and
    /// makes it healthy again once it is not, even when no webhook arrives to find out.
    pub(super) fn recheck<'a>(
        &self,
        writer: impl FnOnce() -> MutexGuard<'a, Connection>,
    ) -> Result<(), LogError> {
        if self
            .failed
            .lock()
            .expect("failure state poisoned")
            .is_none()
        {
            return Ok(());
        }
        let conn = writer();
        let probed = disk::probe_log(&conn);
        self.note(probed.as_ref().err());
        probed.map_err(|e| Failure::of(&e).error(Box::new(e)))
    }
}
