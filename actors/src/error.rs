//! One error enum per contract. Variants carry the coordinates that make a log line useful.

/// Errors from an [`crate::EventLog`] backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log cannot accept or serve records right now; callers answer 503 / retry.
    #[error("log unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The disk under the log is full: nothing was written. Callers answer 503 / retry, and
    /// `/health` reports it until a write succeeds again. Says no path: it reaches clients.
    #[error("disk full: {context}")]
    DiskFull { context: String },
    /// A stored record could not be decoded.
    #[error("corrupt record at partition {partition} offset {offset}")]
    Corrupt {
        partition: u32,
        offset: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller asked for something the log does not have.
    #[error("invalid log request: {0}")]
    Invalid(String),
}

/// Errors from a [`crate::StateStore`] backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Transient: the store is unreachable or timed out. Retry with backoff.
    #[error("store unavailable during {operation}")]
    Unavailable {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A uniqueness rule refused the write (e.g. a phone number owned by another branch).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced row does not exist (in this tenant).
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored row could not be decoded.
    #[error("corrupt row in {table}: {problem}")]
    Corrupt {
        table: &'static str,
        problem: String,
    },
}

impl StoreError {
    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
