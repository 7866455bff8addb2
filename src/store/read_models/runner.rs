//! The generic projection runner.

use std::time::Duration;

use bson::{doc, Bson, Document};
use cryptovault_events::EventEnvelope;
use futures::{FutureExt, StreamExt};
use mongodb::options::{ReadConcern, ReturnDocument};
use mongodb::{Client, ClientSession, Database};
use std::sync::Arc;

use mongodb::IndexModel;
use tokio::sync::{broadcast, watch};

use crate::store::backoff::Backoff;
use crate::store::codec::to_i64;
use crate::store::durable_write_concern;
use crate::store::EventStore;

pub const CHECKPOINTS: &str = "projection_checkpoints";

/// What a read model does with a chunk of events: typed changes to its rows, per collection.
/// Implementations compute them with the pure folds of the `projections` crate; the runner
/// alone turns them into MongoDB operations ([`Change::statement`], and plain inserts for
/// [`Change::Create`]).
pub trait ReadModel: Send + Sync + 'static {
    /// Checkpoint name.
    const NAME: &'static str;
    /// Collections this read model owns (cleared by a rebuild).
    const COLLECTIONS: &'static [&'static str];
    /// `(collection, changes)` applying `events` (all new to this read model), in order.
    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)>;
    /// `(collection, index)` pairs the read model's queries need.
    fn indexes() -> Vec<(&'static str, IndexModel)> {
        Vec::new()
    }
}

/// One change to one row of a read model (the row is named by its `_id`).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Creates the row with these fields (its `Row` type's serde shape without `_id`) unless
    /// it exists. Rows are created by the event that starts them, so a create never follows
    /// another change to the same row.
    Create { id: Bson, row: Document },
    /// Adds `by` to numeric fields (dotted paths), creating the row with `on_insert` if it does
    /// not exist, and sets `set` if given.
    Increment {
        id: Bson,
        by: Document,
        on_insert: Document,
        set: Option<Document>,
    },
    /// Sets `fields`; with `upsert`, creates the row (with `fields` and `on_insert`) if absent.
    Set {
        id: Bson,
        fields: Document,
        on_insert: Option<Document>,
        upsert: bool,
    },
}

impl Change {
    /// The change that creates `row` (a serde `Row` type whose `_id` field is its id).
    pub fn create<T: serde::Serialize>(row: &T) -> Self {
        let (id, row) = row_fields(row);
        Self::Create { id, row }
    }

    /// The MongoDB `update` statement of this change.
    pub fn statement(self) -> Document {
        match self {
            Self::Create { id, row } => {
                doc! { "q": { "_id": id }, "u": { "$setOnInsert": row }, "upsert": true }
            }
            Self::Increment {
                id,
                by,
                on_insert,
                set,
            } => {
                let mut update = doc! { "$inc": by, "$setOnInsert": on_insert };
                if let Some(set) = set {
                    update.insert("$set", set);
                }
                doc! { "q": { "_id": id }, "u": update, "upsert": true }
            }
            Self::Set {
                id,
                fields,
                on_insert,
                upsert,
            } => {
                let mut update = doc! { "$set": fields };
                if let Some(on_insert) = on_insert {
                    update.insert("$setOnInsert", on_insert);
                }
                let mut statement = doc! { "q": { "_id": id }, "u": update };
                if upsert {
                    statement.insert("upsert", true);
                }
                statement
            }
        }
    }
}

/// The `_id` and the other fields of a serde `Row` value, as stored.
pub fn row_fields<T: serde::Serialize>(row: &T) -> (Bson, Document) {
    let mut fields = bson::to_document(row).expect("a read-model row serializes to BSON");
    let id = fields.remove("_id").expect("a read-model row has an `_id`");
    (id, fields)
}

/// Where a runner writes: the checkpoint id and a suffix appended to every collection name.
/// The live read model has an empty suffix; `cryptovault replay` builds a shadow copy with
/// [`Target::shadow`] and swaps it in (see [`super::replay`]).
#[derive(Debug, Clone)]
pub struct Target {
    pub checkpoint: String,
    pub suffix: &'static str,
}

impl Target {
    pub fn live<M: ReadModel>() -> Self {
        Self {
            checkpoint: M::NAME.to_owned(),
            suffix: "",
        }
    }

    pub fn shadow<M: ReadModel>() -> Self {
        Self {
            checkpoint: format!("{}{SHADOW_SUFFIX}", M::NAME),
            suffix: SHADOW_SUFFIX,
        }
    }

    pub fn collection(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }
}

/// Suffix of the collections a replay builds before swapping them in.
pub const SHADOW_SUFFIX: &str = "__replay";

/// Creates the indexes of `M` on `target`'s collections (idempotent).
pub async fn create_indexes<M: ReadModel>(
    db: &Database,
    target: &Target,
) -> mongodb::error::Result<()> {
    for (collection, index) in M::indexes() {
        db.collection::<Document>(&target.collection(collection))
            .create_index(index)
            .await?;
    }
    Ok(())
}

/// Handle to a running projection: its checkpoint as this process last saw it.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub name: &'static str,
    checkpoint: watch::Receiver<u64>,
    applied: broadcast::Sender<Arc<Vec<EventEnvelope>>>,
    db: Database,
}

impl ProjectionHandle {
    /// Every chunk of events this process's runner applies, right after its transaction
    /// commits (for live pushes). A slow receiver loses chunks (`Lagged`) rather than slowing
    /// the projection.
    pub fn applied(&self) -> broadcast::Receiver<Arc<Vec<EventEnvelope>>> {
        self.applied.subscribe()
    }

    pub fn position(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    /// Waits until the projection has applied `position` (read-your-writes), at most `timeout`.
    /// Also sees progress made by other processes' runners, through the stored checkpoint.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut local = self.checkpoint.clone();
        loop {
            if *local.borrow_and_update() >= position
                || crate::telemetry::warn_if_slow(
                    "projection: read the stored checkpoint",
                    stored_checkpoint(&self.db, self.name),
                )
                .await
                .unwrap_or(0)
                    >= position
            {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(25));
            let _ = tokio::time::timeout(step, local.changed()).await;
        }
    }
}

pub async fn stored_checkpoint(db: &Database, name: &str) -> mongodb::error::Result<u64> {
    let found = db
        .collection::<Document>(CHECKPOINTS)
        .find_one(doc! { "_id": name })
        .await?;
    Ok(found
        .and_then(|d| d.get_i64("position").ok())
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(0))
}

/// Events applied per transaction at most.
const CHUNK: usize = 500;
/// Longest wait for more events once a chunk has its first one (adds at most this much to the
/// projection lag).
const LINGER: Duration = Duration::from_millis(5);

/// Starts the runner for `model` as a background task.
pub async fn spawn<M: ReadModel>(
    client: Client,
    db: Database,
    store: EventStore,
    model: M,
) -> mongodb::error::Result<ProjectionHandle> {
    let target = Target::live::<M>();
    ensure_checkpoint(&db, &target.checkpoint).await?;
    create_indexes::<M>(&db, &target).await?;
    let start = stored_checkpoint(&db, M::NAME).await?;
    let (tx, rx) = watch::channel(start);
    let (applied, _) = broadcast::channel(256);
    let handle = ProjectionHandle {
        name: M::NAME,
        checkpoint: rx,
        applied: applied.clone(),
        db: db.clone(),
    };
    let runner = Runner {
        client,
        db,
        model: Arc::new(model),
        target,
    };
    tokio::spawn(run(runner, store, tx, applied));
    Ok(handle)
}

/// Creates the checkpoint document `name` at position 0 unless it exists.
pub async fn ensure_checkpoint(db: &Database, name: &str) -> mongodb::error::Result<()> {
    db.collection::<Document>(CHECKPOINTS)
        .update_one(
            doc! { "_id": name },
            doc! { "$setOnInsert": { "position": 0_i64, "txn": 0_i64 } },
        )
        .upsert(true)
        .await
        .map(|_| ())
        .or_else(|e| {
            if crate::store::error::is_duplicate_key(&e) {
                Ok(())
            } else {
                Err(e)
            }
        })
}

/// Applies chunks of events to one target of one read model, exactly once.
pub struct Runner<M: ReadModel> {
    pub client: Client,
    pub db: Database,
    pub model: Arc<M>,
    pub target: Target,
}

/// What applying a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The checkpoint is now at this position (possibly unchanged: another runner was ahead).
    UpTo(u64),
    /// The stored checkpoint is behind the chunk (the read model was reset or swapped by a
    /// replay): the caller must resume reading from this position.
    Rewound(u64),
}

async fn run<M: ReadModel>(
    runner: Runner<M>,
    store: EventStore,
    tx: watch::Sender<u64>,
    applied: broadcast::Sender<Arc<Vec<EventEnvelope>>>,
) {
    let name = M::NAME;
    // Between restarts after a failure (reading the checkpoint, the log, or a chunk whose
    // transaction still failed after the driver's retries); reset by every applied chunk.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // A log that cannot be read (damage, not a passing failure) is retried more slowly.
    let mut unreadable = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
    loop {
        let from = match stored_checkpoint(&runner.db, &runner.target.checkpoint).await {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(projection = name, %error, "reading checkpoint failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        tx.send_replace(from);
        // The subscription runs in a task of its own and hands events over a bounded channel.
        // Chunking it in place would leave its read suspended mid-operation whenever a chunk
        // closes, while this task applies the chunk with the same MongoDB client: the driver
        // hands its (fair) session-pool lock to the suspended read, which nobody polls, and
        // every operation of the client waits forever. That deadlock froze whole test
        // services for 30 s and more; see the runner rule in ARCHITECTURE.md ("The ledger").
        let feed = SubscriptionFeed::start(&store, from);
        // A chunk closes when it is full or LINGER after its first event: under a steady trickle
        // of appends this turns one transaction (with its durable commit) per event into one
        // per few milliseconds, per read model.
        let mut chunks =
            std::pin::pin!(tokio_stream::StreamExt::chunks_timeout(feed, CHUNK, LINGER));
        while let Some(chunk) = chunks.next().await {
            let events: Result<Vec<EventEnvelope>, _> = chunk.into_iter().collect();
            let events = match events {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(projection = name, %error, "projection stopped: the log cannot be read");
                    metrics::counter!("projection_failures_total", "projection" => name)
                        .increment(1);
                    unreadable.wait().await;
                    break;
                }
            };
            let events = Arc::new(events);
            match runner.apply_with_retries(&events).await {
                Ok(Applied::UpTo(checkpoint)) => {
                    backoff.reset();
                    unreadable.reset();
                    tx.send_if_modified(|current| {
                        let advanced = checkpoint > *current;
                        if advanced {
                            *current = checkpoint;
                        }
                        advanced
                    });
                    let _ = applied.send(events.clone());
                    let head = store.known_head();
                    metrics::gauge!("projection_lag_events", "projection" => name)
                        .set(head.saturating_sub(checkpoint) as f64);
                    if let Some(last) = events.last() {
                        let lag = (chrono::Utc::now() - last.occurred_at)
                            .num_milliseconds()
                            .max(0) as f64
                            / 1000.0;
                        metrics::histogram!("projection_lag_seconds", "projection" => name)
                            .record(lag);
                    }
                }
                Ok(Applied::Rewound(position)) => {
                    tracing::info!(
                        projection = name,
                        position,
                        "checkpoint moved back (reset or replay); resuming from it"
                    );
                    break;
                }
                Err(error) => {
                    tracing::error!(projection = name, %error, "applying events failed; restarting from the checkpoint");
                    backoff.wait().await;
                    break;
                }
            }
        }
    }
}

/// A subscription polled by its own task, delivering into a bounded channel; the task stops
/// when the feed is dropped. (Also feeds `invariant_monitor.rs`.)
pub(crate) struct SubscriptionFeed {
    events: tokio::sync::mpsc::Receiver<Result<EventEnvelope, crate::store::StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

impl SubscriptionFeed {
    pub(crate) fn start(store: &EventStore, from: u64) -> Self {
        let (tx, events) = tokio::sync::mpsc::channel(CHUNK * 2);
        let subscription = store.subscribe(from);
        let task = tokio::spawn(async move {
            let mut subscription = std::pin::pin!(subscription);
            while let Some(item) = subscription.next().await {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Self { events, task }
    }
}

impl futures::Stream for SubscriptionFeed {
    type Item = Result<EventEnvelope, crate::store::StoreError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for SubscriptionFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<M: ReadModel> Runner<M> {
    /// Applies `events` (consecutive positions) in one transaction, through the driver's
    /// transaction helper: it retries the whole transaction on `TransientTransactionError` and
    /// the commit on `UnknownTransactionCommitResult`, with its own backoff, within its time
    /// limit (120 s). An error that remains is returned; the caller retries the chunk later
    /// from the stored checkpoint (exactly once either way).
    pub async fn apply_with_retries(
        &self,
        events: &[EventEnvelope],
    ) -> mongodb::error::Result<Applied> {
        let mut inserts = true;
        loop {
            let mut session = self.client.start_session().await?;
            let applied = session
                .start_transaction()
                .read_concern(ReadConcern::snapshot())
                .write_concern(durable_write_concern())
                // `and_run` rather than `and_run2`: the future of an async closure is not `Send`
                // for every lifetime (rust-lang/rust#110338), and this runs in a spawned task.
                // Both are the same helper (the driver's `convenient_run!`).
                .and_run((self, events, inserts), |s, context| {
                    let (runner, events, inserts) = *context;
                    async move { runner.apply(s, events, inserts).await }.boxed()
                })
                .await;
            match applied {
                // A row to create exists already: only a reset racing the runner (the rows of a
                // chunk deleted, its checkpoint not yet moved back) does that. Apply the chunk
                // with upserts, which leave existing rows as they are.
                Err(e) if inserts && crate::store::error::is_duplicate_key(&e) => {
                    tracing::warn!(
                        projection = M::NAME,
                        error = %e,
                        "row to create exists; applying the chunk with upserts"
                    );
                    inserts = false;
                }
                other => return other,
            }
        }
    }

    /// The body of one transaction: lock and read the checkpoint, apply the events after it,
    /// move it. With `inserts`, rows the model creates are inserted rather than upserted
    /// ([`split_inserts`]). Nothing to apply aborts the transaction (the helper then does not
    /// commit).
    async fn apply(
        &self,
        s: &mut ClientSession,
        events: &[EventEnvelope],
        inserts: bool,
    ) -> mongodb::error::Result<Applied> {
        let checkpoints = self.db.collection::<Document>(CHECKPOINTS);
        let id = self.target.checkpoint.as_str();
        let current = checkpoints
            .find_one_and_update(doc! { "_id": id }, doc! { "$inc": { "txn": 1_i64 } })
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .and_then(|d| d.get_i64("position").ok())
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0);
        // Positions in a chunk are consecutive, so the unapplied events are a suffix.
        let fresh = &events[events.partition_point(|e| e.position <= current)..];
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            s.abort_transaction().await?;
            return Ok(Applied::UpTo(current));
        };
        if first.position != current + 1 {
            s.abort_transaction().await?;
            return Ok(Applied::Rewound(current));
        }
        let last = last.position;
        for (collection, changes) in self.model.changes(fresh) {
            let name = self.target.collection(collection);
            let (inserts, updates) = split_inserts(changes, inserts);
            if !inserts.is_empty() {
                // Typed, so that a duplicate `_id` comes back as an error (see the retry above).
                self.db
                    .collection::<Document>(&name)
                    .insert_many(inserts)
                    .session(&mut *s)
                    .await?;
            }
            if !updates.is_empty() {
                self.db
                    .run_command(doc! { "update": &name, "updates": updates, "ordered": true })
                    .session(&mut *s)
                    .await?;
            }
        }
        checkpoints
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "position": to_i64(last) } },
            )
            .session(&mut *s)
            .await?;
        Ok(Applied::UpTo(last))
    }
}

/// Splits a chunk's changes: with `inserts`, each [`Change::Create`] becomes a plain insert
/// of `{_id, ...row}`, which MongoDB applies about twice as fast as an upsert. The inserts go
/// first; the remaining statements keep their order. That is equivalent because a create never
/// follows a change to the same row (rows are created by the event that starts them), and it
/// is exactly-once because the checkpoint is — a duplicate `_id` aborts the chunk, which is
/// then applied with upserts (`inserts` false: every change is an update statement).
fn split_inserts(changes: Vec<Change>, inserts: bool) -> (Vec<Document>, Vec<Document>) {
    let mut documents = Vec::new();
    let mut statements = Vec::new();
    for change in changes {
        match change {
            Change::Create { id, row } if inserts => {
                let mut document = doc! { "_id": id };
                document.extend(row);
                documents.push(document);
            }
            other => statements.push(other.statement()),
        }
    }
    (documents, statements)
}

/// Clears a read model and its checkpoint so that its runner rebuilds it in place from
/// position 0 (a running runner notices the rewind at its next chunk). Used by tests; the read
/// model is incomplete until the rebuild catches up — operators use `cryptovault replay`,
/// which never serves a half-built model.
pub async fn reset<M: ReadModel>(db: &Database) -> mongodb::error::Result<()> {
    for collection in M::COLLECTIONS {
        db.collection::<Document>(collection)
            .delete_many(doc! {})
            .await?;
    }
    db.collection::<Document>(CHECKPOINTS)
        .update_one(
            doc! { "_id": M::NAME },
            doc! { "$set": { "position": 0_i64 } },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_the_statements_and_inserts_of_the_stored_shape() {
        let create = Change::Create {
            id: "u:t".into(),
            row: doc! { "a": 1, "b": "x" },
        };
        assert_eq!(
            create.clone().statement(),
            doc! { "q": { "_id": "u:t" }, "u": { "$setOnInsert": { "a": 1, "b": "x" } }, "upsert": true }
        );
        let status = Change::Set {
            id: "u:t".into(),
            fields: doc! { "status": "completed" },
            on_insert: None,
            upsert: false,
        };
        assert_eq!(
            status.clone().statement(),
            doc! { "q": { "_id": "u:t" }, "u": { "$set": { "status": "completed" } } }
        );
        let increment = Change::Increment {
            id: "o:ETH".into(),
            by: doc! { "available.whole": 1 },
            on_insert: doc! { "owner": "o", "asset": "ETH" },
            set: Some(doc! { "not_exact": "why" }),
        };
        assert_eq!(
            increment.clone().statement(),
            doc! {
                "q": { "_id": "o:ETH" },
                "u": {
                    "$inc": { "available.whole": 1 },
                    "$setOnInsert": { "owner": "o", "asset": "ETH" },
                    "$set": { "not_exact": "why" },
                },
                "upsert": true,
            }
        );
        let changes = vec![status.clone(), create.clone(), increment.clone()];
        let (inserts, statements) = split_inserts(changes.clone(), true);
        assert_eq!(inserts, vec![doc! { "_id": "u:t", "a": 1, "b": "x" }]);
        assert_eq!(statements, vec![status.statement(), increment.statement()]);
        let (inserts, statements) = split_inserts(changes, false);
        assert!(inserts.is_empty());
        assert_eq!(statements.len(), 3);
    }
}
