//! What both embedded databases share: opening a file with the right pragmas, one writer
//! connection, a small pool of reader connections, running blocking calls off the async
//! runtime, and telling transient SQLite errors from the rest.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::checkpoint::Checkpointer;
use super::migrate::{self, MigrateError, Migration};

/// How long a connection waits for another one (this process or the CLI) to release a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle reader connections kept open per database; busier moments open extra ones.
const MAX_IDLE_READERS: usize = 8;
/// WAL size (pages of 4 KiB) at which the writer checkpoints after a commit. Larger than
/// SQLite's default (1000): with the background checkpointer copying frames in between, a
/// bigger WAL means fewer checkpoints on the commit path (measured ~15% more events/s on the
/// state store at 4000); it also bounds the WAL file.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;
/// Prepared statements kept per connection. Every statement goes through `prepare_cached`;
/// the state writer alone uses about 30 distinct ones, more than rusqlite's default of 16,
/// and an LRU that is too small would re-parse the hot statements on every call.
const STATEMENT_CACHE: usize = 64;

/// `PRAGMA synchronous` of a database's writer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Synchronous {
    /// fsync the WAL at every commit: survives power loss (the log).
    Full,
    /// fsync only at checkpoints: survives a process crash, not power loss (the state store,
    /// whose durability barrier is an explicit `sync()`).
    Normal,
}

impl Synchronous {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot create data dir {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot start the checkpoint thread of {}", path.display())]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot migrate {}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: MigrateError,
    },
}

/// One SQLite file: a single writer connection (SQLite allows one writer at a time anyway)
/// and reader connections that, in WAL mode, never wait for the writer.
pub(crate) struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    idle_readers: Mutex<Vec<Connection>>,
    /// Declared last: dropped after the connections above.
    _checkpointer: Checkpointer,
}

impl Db {
    /// Opens (creating if needed) `dir/file`, switches it to WAL and applies `migrations`.
    pub(crate) fn open(
        dir: &Path,
        file: &str,
        synchronous: Synchronous,
        migrations: &[Migration],
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(file);
        let sqlite = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut writer = open_writer(&path, synchronous).map_err(sqlite)?;
        migrate::apply(&mut writer, migrations).map_err(|source| OpenError::Migrate {
            path: path.clone(),
            source,
        })?;
        // The background checkpointer copies frames early; the writer's own checkpoint then
        // finds little left to do, and it is what lets the WAL restart (see checkpoint.rs).
        writer
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(sqlite)?;
        let checkpointer = Checkpointer::start(&path).map_err(|source| OpenError::Thread {
            path: path.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), synchronous = synchronous.as_str(), "opened sqlite database");
        Ok(Db {
            path,
            writer: Mutex::new(writer),
            idle_readers: Mutex::new(Vec::new()),
            _checkpointer: checkpointer,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer connection; holding the guard serializes this process's writes.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().expect("sqlite writer mutex poisoned")
    }

    /// A reader connection from the pool (opened on demand), returned to it on drop.
    pub(crate) fn reader(&self) -> rusqlite::Result<Reader<'_>> {
        let idle = self
            .idle_readers
            .lock()
            .expect("sqlite reader pool poisoned")
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        Ok(Reader {
            db: self,
            conn: Some(conn),
        })
    }
}

/// A pooled reader connection.
pub(crate) struct Reader<'a> {
    db: &'a Db,
    conn: Option<Connection>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("reader used after drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut idle = self
            .db
            .idle_readers
            .lock()
            .expect("sqlite reader pool poisoned");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

fn open_writer(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is persistent in the file; readers then never block the writer or each other.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "sqlite refused wal journal mode");
    }
    conn.pragma_update(None, "synchronous", synchronous.as_str())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // Read-write flags (not read-only) so the reader can maintain the shared WAL index;
    // `query_only` keeps it from writing rows.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Runs blocking SQLite work on tokio's blocking pool. A panic inside is re-raised here; a
/// task cancelled by runtime shutdown becomes `cancelled(..)`.
pub(crate) async fn blocking<T, E, F>(
    work: F,
    cancelled: impl FnOnce(tokio::task::JoinError) -> E,
) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(cancelled(e)),
    }
}

/// How a SQLite error should be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// A uniqueness/foreign-key/check rule refused the write.
    Constraint,
    /// A stored value could not be converted to the Rust type (a corrupt or foreign row).
    Decode,
    /// Busy, locked, IO, full disk and anything else: the store cannot serve right now.
    Unavailable,
}

pub(crate) fn classify(e: &rusqlite::Error) -> ErrorClass {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            ErrorClass::Constraint
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => ErrorClass::Decode,
        _ => ErrorClass::Unavailable,
    }
}

/// A value that parsed badly out of a column, as a rusqlite conversion error (so row mappers
/// can use `?` and the caller classifies it as [`ErrorClass::Decode`]).
pub(crate) fn decode_error(column: usize, problem: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        problem.to_string().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.pragma_query_value(None, name, |r| {
            r.get::<_, rusqlite::types::Value>(0)
                .map(|v| format!("{v:?}"))
        })
        .unwrap()
    }

    #[test]
    fn writer_and_readers_have_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), "t.db", Synchronous::Full, migrate::LOG).unwrap();
        let w = db.writer();
        assert_eq!(pragma(&w, "journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma(&w, "synchronous"), "Integer(2)");
        assert_eq!(pragma(&w, "foreign_keys"), "Integer(1)");
        assert_eq!(pragma(&w, "busy_timeout"), "Integer(5000)");
        drop(w);
        let r = db.reader().unwrap();
        assert_eq!(pragma(&r, "busy_timeout"), "Integer(5000)");
        assert_eq!(pragma(&r, "query_only"), "Integer(1)");
    }

    #[test]
    fn readers_are_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), "t.db", Synchronous::Normal, migrate::STATE).unwrap();
        let (a, b) = (db.reader().unwrap(), db.reader().unwrap());
        drop((a, b));
        assert_eq!(db.idle_readers.lock().unwrap().len(), 2);
        let _c = db.reader().unwrap();
        assert_eq!(db.idle_readers.lock().unwrap().len(), 1);
    }

    #[test]
    fn constraint_errors_are_told_apart() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        let err = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(classify(&err), ErrorClass::Constraint);
        let err = conn.execute("SELECT * FROM missing", []).unwrap_err();
        assert_eq!(classify(&err), ErrorClass::Unavailable);
        assert_eq!(classify(&decode_error(0, "bad uuid")), ErrorClass::Decode);
    }
}
