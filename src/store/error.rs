//! Typed errors of the event store.

use uuid::Uuid;

use super::append::ExpectedVersion;

/// Why an append was refused. Nothing was written in every case.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A stream's version differs from the caller's expectation (optimistic concurrency).
    #[error("stream {stream_id}: expected version {expected}, found {actual}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// Some events of the batch exist already, or exist in another stream: this is not a retry
    /// of an earlier append.
    #[error(
        "event {event_id} already exists but the batch is not a retry of the append that wrote it"
    )]
    IdempotencyMismatch { event_id: Uuid },
    /// The batch is malformed (a programming error of the caller).
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failures of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored document does not decode as an event envelope.
    #[error("event document {id} is malformed: {reason}")]
    Corrupt { id: String, reason: String },
    /// The log skips a position that a subscriber must deliver in order.
    #[error("position {missing} is missing from the log (next found: {found})")]
    Gap { missing: u64, found: u64 },
    /// The store's writer task has stopped (the store is shutting down).
    #[error("the event store writer has stopped")]
    WriterStopped,
    /// The append could not be committed. Its outcome may be unknown (the connection dropped
    /// during commit): retrying with the same event ids is always safe and tells which.
    #[error("the event store could not commit the append: {0}")]
    Unavailable(String),
    /// Transient conflicts persisted beyond the retry budget.
    #[error("append gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: String },
}
