//! Log retention for the embedded log: drop records older than the retention period that
//! every consumer group has already committed.
//!
//! Two rules keep this safe: nothing uncommitted is deleted (so no acknowledged webhook is
//! lost before it is processed), and the newest record of every partition is kept, because
//! the next offset is derived from the highest stored one; deleting it would let offsets
//! start again below what groups have committed.

use rusqlite::{params, Connection};

/// Records deleted per call. The caller holds the log's writer while deleting, so appends
/// wait; one partition and a small chunk per lock hold keep that wait to milliseconds.
pub(super) const CHUNK: i64 = 500;

/// Deletes up to [`CHUNK`] eligible records of one partition; returns how many went. Call
/// again until it returns 0.
pub(super) fn trim_chunk(
    conn: &Connection,
    partition: u32,
    older_than_ms: i64,
) -> rusqlite::Result<u64> {
    let Some(bound) = trim_bound(conn, partition)? else {
        return Ok(0);
    };
    let mut stmt = conn.prepare_cached(
        "DELETE FROM log_records WHERE partition = ?1 AND appended_at < ?3 \
         AND offset < min(?2, (SELECT MIN(offset) FROM log_records WHERE partition = ?1) + ?4)",
    )?;
    Ok(stmt.execute(params![partition, bound, older_than_ms, CHUNK])? as u64)
}

/// The first offset that must stay: the lowest offset committed on this partition by any
/// group, but never past the partition's newest record. `None` when no group has committed
/// on it yet. A group that never committed here is not protected (it would start at its
/// configured position anyway).
fn trim_bound(conn: &Connection, partition: u32) -> rusqlite::Result<Option<i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT MIN(next_offset) FROM consumer_offsets WHERE partition = ?1")?;
    let committed: Option<i64> = stmt.query_row(params![partition], |r| r.get(0))?;
    let mut stmt =
        conn.prepare_cached("SELECT MAX(offset) FROM log_records WHERE partition = ?1")?;
    let newest: Option<i64> = stmt.query_row(params![partition], |r| r.get(0))?;
    Ok(match (committed, newest) {
        (Some(committed), Some(newest)) => Some(committed.min(newest)),
        _ => None,
    })
}
