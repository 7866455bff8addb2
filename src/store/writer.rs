//! The group-commit writer: one task per store instance that turns many concurrent appends into
//! few MongoDB transactions.
//!
//! Callers send their batch over a channel and wait on a oneshot. The task takes the first
//! waiting batch plus everything queued behind it (up to [`StoreConfig::max_group_events`]) and
//! commits them in one transaction:
//!
//! 1. `findOneAndUpdate` on the head document. This claims the log: a concurrent transaction of
//!    another process touching the head fails with a `WriteConflict` and retries, so positions
//!    are assigned in commit order and never interleave.
//!
//!    Fast path: when the writer knows the head it left after its last commit and the versions
//!    of every touched stream, it plans the group before the transaction and opens it with a
//!    *conditional* update of the head (`{position, hash}` as it left them → the new head). That
//!    update is the claim, the check that no other process appended since, and the head's move
//!    in one round trip. If it matches nothing, another process has appended: the same
//!    transaction carries on with the steps below.
//! 2. Take the touched streams' versions from the writer's cache, reading misses from `events`.
//! 3. [`plan_group`] decides every batch (pure). If it refuses a batch, the refusal is confirmed
//!    against the database first (the cache may be stale, the batch may be a retry): the
//!    submitted ids and the versions are read afresh and the group is planned again.
//! 4. Insert the sealed events, move the head, commit with `w: majority, j: true`. Nothing is
//!    acknowledged before the commit returns.
//!
//! The cache and the skipped id lookup are safe because the unique indexes back them: an event
//! id that exists, or a stream version another process took, fails the insert with a duplicate
//! key; the transaction is then rerun in *thorough* mode, which reads everything from the
//! database. A group that accepts nothing is aborted, so refused batches write nothing at all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{Acknowledgment, ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{Client, ClientSession, Collection};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::append::{AppendBatch, AppendResult, AppendedEvent};
use super::document::{to_document, to_i64};
use super::error::{AppendError, StoreError};
use super::plan::{plan_group, GroupPlan, Head, StoredState};
use super::schema::{is_duplicate_key, HEAD_ID};
use super::StoreConfig;
use crate::telemetry::warn_if_slow;

/// A group commit slower than this is logged as a warning (a healthy one takes milliseconds).
const SLOW_GROUP_COMMIT: Duration = Duration::from_secs(1);

/// A batch waiting for the writer, with the channel its outcome goes back on.
pub struct PendingAppend {
    pub batch: AppendBatch,
    pub reply: oneshot::Sender<Result<AppendResult, AppendError>>,
}

/// Durable write concern for every acknowledged write: majority, journaled.
pub fn durable_write_concern() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

/// Scheduler turns the writer waits for more callers when its group is smaller than the last.
const LINGER_YIELDS: u32 = 8;

/// Most stream versions the writer remembers; beyond it the cache starts afresh.
const VERSION_CACHE_LIMIT: usize = 200_000;

pub struct Writer {
    client: Client,
    events: Collection<Document>,
    meta: Collection<Document>,
    config: StoreConfig,
    head_tx: watch::Sender<u64>,
    /// Last committed version of streams this writer has seen. Possibly stale when other
    /// processes append to the same streams; see the module docs for why that is safe.
    versions: HashMap<String, u64>,
    /// The head as this writer's last commit left it; stale when another process appended
    /// since, which the fast path's conditional head update detects.
    head: Option<Head>,
}

impl Writer {
    pub fn new(
        client: Client,
        events: Collection<Document>,
        meta: Collection<Document>,
        config: StoreConfig,
        head_tx: watch::Sender<u64>,
    ) -> Self {
        Self {
            client,
            events,
            meta,
            config,
            head_tx,
            versions: HashMap::new(),
            head: None,
        }
    }

    /// Runs until every sender of `rx` is dropped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<PendingAppend>) {
        let mut session: Option<ClientSession> = None;
        let mut last_group_len = 0;
        while let Some(first) = rx.recv().await {
            let mut events = first.batch.event_count();
            let mut group = vec![first];
            let mut lingered = 0;
            while events < self.config.max_group_events {
                match rx.try_recv() {
                    Ok(next) => {
                        events += next.batch.event_count();
                        group.push(next);
                    }
                    // Callers answered by the previous group are usually about to send again:
                    // give them a few scheduler turns, so the group does not split in halves.
                    Err(_) if group.len() < last_group_len && lingered < LINGER_YIELDS => {
                        lingered += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(_) => break,
                }
            }
            last_group_len = group.len();
            let (batches, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|p| (p.batch, p.reply)).unzip();
            let started = Instant::now();
            let outcome = self.commit_with_retries(&mut session, &batches).await;
            let took = started.elapsed();
            metrics::histogram!("event_store_group_commit_seconds").record(took.as_secs_f64());
            if took > SLOW_GROUP_COMMIT {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    events,
                    batches = batches.len(),
                    "slow group commit"
                );
            }
            metrics::histogram!("event_store_group_events").record(events as f64);
            match outcome {
                Ok(outcomes) => {
                    for (reply, result) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(result);
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::error!(error = %message, batches = batches.len(), "group commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(AppendError::Store(StoreError::Unavailable(
                            message.clone(),
                        ))));
                    }
                }
            }
        }
    }

    async fn commit_with_retries(
        &mut self,
        session: &mut Option<ClientSession>,
        batches: &[AppendBatch],
    ) -> Result<Vec<Result<AppendResult, AppendError>>, StoreError> {
        let deadline = Instant::now() + self.config.append_timeout;
        let mut attempt: u32 = 0;
        let mut thorough = false;
        loop {
            attempt += 1;
            if session.is_none() {
                *session = Some(
                    warn_if_slow("writer: start a session", self.client.start_session()).await?,
                );
            }
            let s = session.as_mut().expect("session was just created");
            match warn_if_slow(
                "writer: one commit attempt",
                self.commit_group(s, batches, thorough),
            )
            .await
            {
                Ok(plan) => {
                    self.remember(&plan);
                    return Ok(plan.outcomes);
                }
                Err(error) => {
                    // Dropping the session aborts any transaction it still has open.
                    *session = None;
                    // The commit may or may not have happened: read the head next time.
                    self.head = None;
                    metrics::counter!("event_store_transaction_retries_total").increment(1);
                    if matches!(&error, StoreError::Mongo(e) if is_duplicate_key(e)) {
                        // An id exists or a cached version is stale: read everything next time.
                        thorough = true;
                        for batch in batches {
                            for stream in &batch.streams {
                                self.versions.remove(&stream.stream_id);
                            }
                        }
                    }
                    let retryable = is_retryable(&error);
                    tracing::debug!(attempt, %error, retryable, "group commit attempt failed");
                    if !retryable || Instant::now() >= deadline {
                        return Err(match error {
                            StoreError::Mongo(e) if retryable => StoreError::RetriesExhausted {
                                attempts: attempt,
                                last: e.to_string(),
                            },
                            other => other,
                        });
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// After a commit: publish the new head and cache the new stream versions.
    fn remember(&mut self, plan: &GroupPlan) {
        let Some(position) = plan.envelopes.last().map(|e| e.position) else {
            return;
        };
        self.head = Some(plan.head.clone());
        self.head_tx.send_if_modified(|head| {
            let advanced = position > *head;
            if advanced {
                *head = position;
            }
            advanced
        });
        metrics::counter!("event_store_events_appended_total")
            .increment(plan.envelopes.len() as u64);
        if self.versions.len() + plan.stream_versions.len() > VERSION_CACHE_LIMIT {
            self.versions.clear();
        }
        for (stream, version) in &plan.stream_versions {
            self.versions.insert(stream.clone(), *version);
        }
    }

    /// One attempt: the whole transaction. On success the outcomes are final.
    async fn commit_group(
        &self,
        s: &mut ClientSession,
        batches: &[AppendBatch],
        thorough: bool,
    ) -> Result<GroupPlan, StoreError> {
        let fast = if thorough {
            None
        } else {
            self.plan_from_cache(batches)
        };
        s.start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable_write_concern())
            .await?;
        if let Some((old_head, plan)) = fast {
            if self.move_head(s, &old_head, &plan.head).await? {
                self.insert(s, &plan).await?;
                commit(s).await?;
                return Ok(plan);
            }
            metrics::counter!("event_store_stale_head_total").increment(1);
        }
        let head = self.claim_head(s).await?;
        let stored = self.read_stored_state(s, batches, thorough).await?;
        let mut plan = plan_group(head.clone(), stored, batches);
        if !thorough && plan.outcomes.iter().any(Result::is_err) {
            // Confirm refusals against the database before reporting them.
            let stored = self.read_stored_state(s, batches, true).await?;
            plan = plan_group(head, stored, batches);
        }
        if plan.envelopes.is_empty() {
            s.abort_transaction().await?;
            return Ok(plan);
        }
        self.insert(s, &plan).await?;
        self.meta
            .update_one(
                doc! { "_id": HEAD_ID },
                doc! { "$set": { "position": to_i64(plan.head.position), "hash": &plan.head.hash } },
            )
            .session(&mut *s)
            .await?;
        commit(s).await?;
        Ok(plan)
    }

    /// The fast path's plan: `Some` when the head and every touched stream's version are known
    /// from this writer's own commits and every batch is accepted on them (a refusal is
    /// confirmed against the database, on the full path). Returns the head it starts from.
    fn plan_from_cache(&self, batches: &[AppendBatch]) -> Option<(Head, GroupPlan)> {
        let head = self.head.clone()?;
        let mut stored = StoredState::default();
        for stream in batches.iter().flat_map(|b| b.streams.iter()) {
            let version = *self.versions.get(&stream.stream_id)?;
            stored.versions.insert(stream.stream_id.clone(), version);
        }
        let plan = plan_group(head.clone(), stored, batches);
        (!plan.envelopes.is_empty() && plan.outcomes.iter().all(Result::is_ok))
            .then_some((head, plan))
    }

    /// Moves the head from `old` to `new` if it is still at `old`; false when another process
    /// has moved it. Writes the head document, so it claims the log like [`Self::claim_head`].
    async fn move_head(
        &self,
        s: &mut ClientSession,
        old: &Head,
        new: &Head,
    ) -> Result<bool, StoreError> {
        let moved = self
            .meta
            .update_one(
                doc! { "_id": HEAD_ID, "position": to_i64(old.position), "hash": &old.hash },
                doc! {
                    "$set": { "position": to_i64(new.position), "hash": &new.hash },
                    "$inc": { "txn": 1_i64 },
                },
            )
            .session(&mut *s)
            .await?;
        Ok(moved.matched_count == 1)
    }

    /// Inserts the plan's sealed events.
    async fn insert(&self, s: &mut ClientSession, plan: &GroupPlan) -> Result<(), StoreError> {
        let documents = plan
            .envelopes
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        self.events.insert_many(documents).session(&mut *s).await?;
        Ok(())
    }

    /// Reads the head inside the transaction and writes to it, so that a concurrent writer's
    /// transaction conflicts at once instead of after doing all its work.
    async fn claim_head(&self, s: &mut ClientSession) -> Result<Head, StoreError> {
        let head_doc = self
            .meta
            .find_one_and_update(doc! { "_id": HEAD_ID }, doc! { "$inc": { "txn": 1_i64 } })
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                id: HEAD_ID.into(),
                reason: "head document missing; run schema::ensure first".into(),
            })?;
        Ok(Head {
            position: u64::try_from(head_doc.get_i64("position").unwrap_or(0)).unwrap_or(0),
            hash: head_doc
                .get_str("hash")
                .unwrap_or(cryptovault_events::GENESIS_HASH)
                .to_owned(),
        })
    }

    /// Stream versions (cached unless `from_database`) and, when `from_database`, the stored
    /// events among the submitted ids.
    async fn read_stored_state(
        &self,
        s: &mut ClientSession,
        batches: &[AppendBatch],
        from_database: bool,
    ) -> Result<StoredState, StoreError> {
        let mut stored = StoredState::default();
        let mut misses = Vec::new();
        for stream in batches.iter().flat_map(|b| b.streams.iter()) {
            match self.versions.get(&stream.stream_id) {
                Some(version) if !from_database => {
                    stored.versions.insert(stream.stream_id.clone(), *version);
                }
                _ => misses.push(Bson::String(stream.stream_id.clone())),
            }
        }
        if !misses.is_empty() {
            // The index on (stream_id, stream_version) turns sort + $first into a scan of one
            // index key per stream.
            let mut cursor = self
                .events
                .aggregate([
                    doc! { "$match": { "stream_id": { "$in": misses } } },
                    doc! { "$sort": { "stream_id": 1, "stream_version": -1 } },
                    doc! { "$group": { "_id": "$stream_id", "version": { "$first": "$stream_version" } } },
                ])
                .session(&mut *s)
                .await?;
            while let Some(found) = cursor.next(&mut *s).await {
                let found = found?;
                if let (Ok(id), Ok(version)) = (found.get_str("_id"), found.get_i64("version")) {
                    stored
                        .versions
                        .insert(id.to_owned(), u64::try_from(version).unwrap_or(0));
                }
            }
        }
        if from_database {
            let ids: Vec<Bson> = batches
                .iter()
                .flat_map(|b| b.streams.iter())
                .flat_map(|st| st.events.iter())
                .map(|e| Bson::String(e.event_id.to_string()))
                .collect();
            let mut cursor = self
                .events
                .find(doc! { "_id": { "$in": ids } })
                .projection(doc! { "stream_id": 1, "stream_version": 1, "position": 1 })
                .session(&mut *s)
                .await?;
            while let Some(found) = cursor.next(&mut *s).await {
                let placed = placed_event(&found?)?;
                stored.existing.insert(placed.event_id, placed);
            }
        }
        Ok(stored)
    }
}

fn placed_event(found: &Document) -> Result<AppendedEvent, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        id: found.get("_id").map(|v| v.to_string()).unwrap_or_default(),
        reason: reason.into(),
    };
    let event_id = found
        .get_str("_id")
        .ok()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| corrupt("_id is not a UUID string"))?;
    let number = |name: &str| {
        found
            .get_i64(name)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt(name))
    };
    Ok(AppendedEvent {
        event_id,
        stream_id: found
            .get_str("stream_id")
            .map_err(|_| corrupt("stream_id"))?
            .to_owned(),
        stream_version: number("stream_version")?,
        position: number("position")?,
    })
}

/// Commits, retrying the commit itself while its outcome is unknown (the driver's rule: a
/// commit with `UnknownTransactionCommitResult` may be retried and is idempotent).
async fn commit(s: &mut ClientSession) -> Result<(), StoreError> {
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
fn is_retryable(error: &StoreError) -> bool {
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
                // WriteConflict and NoSuchTransaction, should they arrive without the label.
                || matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 112 || c.code == 251)
        }
        _ => false,
    }
}

/// Exponential backoff with full jitter: up to 1 ms, 2 ms, 4 ms … capped at 100 ms.
fn backoff(attempt: u32) -> Duration {
    let cap_us = (1000u64 << attempt.min(7)).min(100_000);
    Duration::from_micros(rand::random_range(0..=cap_us))
}
