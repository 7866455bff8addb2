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
    /// The append failed for a reason that does not pass (a bug or damage, e.g. a document
    /// the validator refuses); nothing was written.
    #[error("the event store refused the append: {0}")]
    CommitFailed(String),
    /// Transient conflicts persisted beyond the retry budget.
    #[error("append gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: String },
}

impl StoreError {
    /// The store cannot do this now, for a reason that passes: MongoDB unreachable or electing,
    /// a dropped connection, a lock or write conflict, or a commit that failed after its
    /// retries. A retry later may succeed; nothing is wrong with the request or the data. The
    /// HTTP layer answers these 503 `unavailable`; the others (a corrupt document, a gap in the
    /// log) are bugs or damage, answered 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Mongo(e) => is_unavailable(e),
            // The writer reports a group commit that failed for a passing reason as
            // `Unavailable` (outcome unknown, safe to retry with the same event ids); the
            // stopped writer means shutting down.
            Self::Unavailable(_) | Self::RetriesExhausted { .. } | Self::WriterStopped => true,
            Self::Corrupt { .. } | Self::Gap { .. } | Self::CommitFailed(_) => false,
        }
    }
}

impl AppendError {
    /// See [`StoreError::is_unavailable`]; a refusal (conflict, mismatch, invalid) is not.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_unavailable())
    }
}

/// Server error codes of a condition that passes (mongo's `error_codes.yml`; the driver's
/// retryable-read, "not writable primary" and "node is recovering" lists, and the transaction
/// and lock codes).
const UNAVAILABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    43,    // CursorNotFound (the cursor went with a restarted node)
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    251,   // NoSuchTransaction (aborted or expired transaction)
    262,   // ExceededTimeLimit
    290,   // TransactionExceededLifetimeLimitSeconds
    365,   // TemporarilyUnavailable
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11601, // Interrupted
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Labels the server or the driver attach to errors worth retrying.
const UNAVAILABLE_LABELS: &[&str] = &[
    mongodb::error::TRANSIENT_TRANSACTION_ERROR,
    mongodb::error::RETRYABLE_WRITE_ERROR,
    mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT,
    mongodb::error::SYSTEM_OVERLOADED_ERROR,
    mongodb::error::RETRYABLE_ERROR,
];

/// Whether a MongoDB driver error means "unavailable for now" (see
/// [`StoreError::is_unavailable`]): by its kind (server selection failed, I/O error, the
/// connection pool was cleared, DNS, the client shut down), its labels, or the server's code — of the command, of a
/// write concern error, or of a write error. Anything else (a duplicate key, a validation
/// failure, a bad query, authorization, malformed BSON) is a bug or a misconfiguration.
pub fn is_unavailable(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    if UNAVAILABLE_LABELS.iter().any(|l| error.contains_label(l)) {
        return true;
    }
    let code = |c: &i32| UNAVAILABLE_CODES.contains(c);
    let here = match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        // The client was shut down: the process is stopping.
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(e) => code(&e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => code(&e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => code(&e.code),
        ErrorKind::InsertMany(e) => {
            e.write_concern_error
                .as_ref()
                .is_some_and(|w| code(&w.code))
                || e.write_errors.iter().flatten().any(|w| code(&w.code))
        }
        ErrorKind::BulkWrite(e) => {
            e.write_concern_errors.iter().any(|w| code(&w.code))
                || e.write_errors.values().any(|w| code(&w.code))
        }
        _ => false,
    };
    // The driver keeps the error that made it retry as the source.
    here || std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<mongodb::error::Error>())
        .is_some_and(is_unavailable)
}

/// Whether `error` or anything in its `source()` chain is an unavailable store or MongoDB
/// error ([`StoreError`], [`AppendError`], `mongodb::error::Error`). For errors that travel
/// through `anyhow` (ledger, identity): `error_chain_is_unavailable(cause.as_ref())`.
pub fn error_chain_is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let unavailable = if let Some(e) = e.downcast_ref::<mongodb::error::Error>() {
            is_unavailable(e)
        } else if let Some(e) = e.downcast_ref::<StoreError>() {
            e.is_unavailable()
        } else if let Some(e) = e.downcast_ref::<AppendError>() {
            e.is_unavailable()
        } else {
            false
        };
        if unavailable {
            return true;
        }
        next = e.source();
    }
    false
}

/// E11000: a unique index refused the write.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == 11000)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::error::{Error, ErrorKind};

    fn command_error(code: i32) -> Error {
        let response: mongodb::error::CommandError = bson::from_document(bson::doc! {
            "code": code, "codeName": "Test", "errmsg": "test"
        })
        .unwrap();
        Error::from(ErrorKind::Command(response))
    }

    #[test]
    fn faults_that_pass_are_unavailable_and_bugs_are_not() {
        for code in [
            6, 7, 24, 50, 89, 91, 112, 189, 251, 262, 9001, 10107, 11600, 11602, 13435, 13436,
        ] {
            assert!(is_unavailable(&command_error(code)), "code {code}");
        }
        for code in [2, 13, 26, 121, 11000] {
            assert!(!is_unavailable(&command_error(code)), "code {code}");
        }
        let io = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_unavailable(&io));
        assert!(StoreError::Unavailable("commit failed".into()).is_unavailable());
        assert!(!StoreError::Gap {
            missing: 3,
            found: 4
        }
        .is_unavailable());
        assert!(!AppendError::Invalid("empty".into()).is_unavailable());
    }

    #[test]
    fn the_chain_is_searched_through_anyhow() {
        let append = AppendError::Store(StoreError::Mongo(command_error(91)));
        let cause = anyhow::Error::from(append).context("depositing");
        assert!(error_chain_is_unavailable(cause.as_ref()));
        let bug = anyhow::Error::from(StoreError::Corrupt {
            id: "x".into(),
            reason: "no hash".into(),
        });
        assert!(!error_chain_is_unavailable(bug.as_ref()));
        let plain = anyhow::anyhow!("something else");
        assert!(!error_chain_is_unavailable(plain.as_ref()));
    }
}
