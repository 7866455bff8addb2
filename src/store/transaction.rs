//! MongoDB transaction primitives of the writer: opening and committing a transaction, the
//! pipelined transaction task, ending a failed transaction on the server, and which failures
//! are worth a rerun.

use std::time::Duration;

use bson::{doc, Document};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use mongodb::{ClientSession, Collection};
use tokio::sync::oneshot;

use super::document::to_i64;
use super::error::StoreError;
use super::plan::Head;
use super::schema::{is_duplicate_key, HEAD_SLOTS};

/// Durable write concern for every acknowledged write: majority, journaled.
pub fn durable_write_concern() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

/// What a pipelined transaction task returns: its session (ready for reuse: a failed
/// transaction has been ended on the server) and the outcome.
pub type TaskOutcome = (ClientSession, Result<(), StoreError>);

/// Where a transaction writes: the log and one head slot.
pub struct Target {
    pub events: Collection<Document>,
    pub meta: Collection<Document>,
    pub slot: &'static str,
}

impl Target {
    /// Inserts the sealed events (the inserts claim their positions: `position_unique`) and
    /// records the new head in this target's slot.
    pub async fn write(
        &self,
        s: &mut ClientSession,
        documents: Vec<Document>,
        head: &Head,
    ) -> Result<(), StoreError> {
        self.events.insert_many(documents).session(&mut *s).await?;
        self.meta
            .update_one(
                doc! { "_id": self.slot },
                doc! { "$set": { "position": to_i64(head.position), "hash": &head.hash } },
            )
            .session(&mut *s)
            .await?;
        Ok(())
    }
}

/// One pipelined transaction: insert at once, commit only after the transaction before it
/// (`previous`) committed, then tell the next one (`committed`). If the previous one failed,
/// this one aborts without committing.
pub async fn pipelined_transaction(
    target: Target,
    mut session: ClientSession,
    documents: Vec<Document>,
    head: Head,
    previous: Option<oneshot::Receiver<bool>>,
    committed: oneshot::Sender<bool>,
) -> TaskOutcome {
    let inserted = match open(&mut session).await {
        Ok(()) => target.write(&mut session, documents, &head).await,
        Err(error) => Err(error),
    };
    let previous_committed = match previous {
        Some(previous) => previous.await.unwrap_or(false),
        None => true,
    };
    let result = match inserted {
        Ok(()) if previous_committed => commit(&mut session).await,
        Ok(()) => Err(StoreError::Unavailable(
            "the transaction before this one in the pipeline failed".into(),
        )),
        Err(error) => Err(error),
    };
    if result.is_err() {
        discard(&mut session, &target.meta).await;
    }
    let _ = committed.send(result.is_ok());
    (session, result)
}

/// Ends a failed transaction on the server before anything is rerun, so that its inserts cannot
/// hold positions or ids against the rerun. One still in progress is aborted. One whose commit
/// failed may still be open on the server (a commit that never ran): a new transaction on the
/// same session supersedes it — the server aborts the older one — and is aborted in turn.
pub async fn discard(session: &mut ClientSession, meta: &Collection<Document>) {
    if session.abort_transaction().await.is_ok() {
        return;
    }
    if open(session).await.is_ok() {
        let _ = meta
            .find_one(doc! { "_id": HEAD_SLOTS[0] })
            .session(&mut *session)
            .await;
        let _ = session.abort_transaction().await;
    }
}

/// Starts a transaction: snapshot reads, durable commit.
pub async fn open(s: &mut ClientSession) -> Result<(), StoreError> {
    s.start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(durable_write_concern())
        .await?;
    Ok(())
}

/// Commits, retrying the commit itself while its outcome is unknown (the driver's rule: a
/// commit with `UnknownTransactionCommitResult` may be retried and is idempotent).
pub async fn commit(s: &mut ClientSession) -> Result<(), StoreError> {
    let mut attempts = 0;
    loop {
        match s.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(backoff(attempts)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Write conflicts, elections, dropped connections and duplicate keys from a concurrent writer
/// are all resolved by running the whole transaction again: the plan is re-derived from what is
/// then stored, so a retry never applies anything twice.
pub fn is_retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Mongo(e) => {
            e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                || is_duplicate_key(e)
                || matches!(
                    e.kind.as_ref(),
                    ErrorKind::Io(_)
                        | ErrorKind::ConnectionPoolCleared { .. }
                        | ErrorKind::ServerSelection { .. }
                )
                // WriteConflict and NoSuchTransaction, should they arrive without the label;
                // Interrupted: the session was ended by another writer that took this one for
                // dead (`writer_sessions`), which aborts its transaction.
                || matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 112 || c.code == 251 || c.code == 11601)
        }
        _ => false,
    }
}

/// Exponential backoff with full jitter: up to 1 ms, 2 ms, 4 ms … capped at 100 ms.
pub fn backoff(attempt: u32) -> Duration {
    let cap_us = (1000u64 << attempt.min(7)).min(100_000);
    Duration::from_micros(rand::random_range(0..=cap_us))
}
