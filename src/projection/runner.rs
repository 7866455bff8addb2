//! The generic projection runner.

use std::time::Duration;

use bson::{doc, Document};
use cryptovault_events::EventEnvelope;
use futures::StreamExt;
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ReadConcern, ReturnDocument};
use mongodb::{Client, ClientSession, Database};
use tokio::sync::watch;

use crate::store::document::to_i64;
use crate::store::writer::durable_write_concern;
use crate::store::EventStore;

pub const CHECKPOINTS: &str = "projection_checkpoints";

/// What a read model does with a chunk of events: MongoDB `update` statements per collection.
/// Implementations compute them with the pure folds of the `projections` crate.
pub trait ReadModel: Send + Sync + 'static {
    /// Checkpoint name.
    const NAME: &'static str;
    /// Collections this read model owns (cleared by a rebuild).
    const COLLECTIONS: &'static [&'static str];
    /// `(collection, update statements)` applying `events` (all new to this read model).
    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)>;
}

/// Handle to a running projection: its checkpoint as this process last saw it.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub name: &'static str,
    checkpoint: watch::Receiver<u64>,
    db: Database,
}

impl ProjectionHandle {
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
                || stored_checkpoint(&self.db, self.name).await.unwrap_or(0) >= position
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

/// Starts the runner for `model` as a background task.
pub async fn spawn<M: ReadModel>(
    client: Client,
    db: Database,
    store: EventStore,
    model: M,
) -> mongodb::error::Result<ProjectionHandle> {
    db.collection::<Document>(CHECKPOINTS)
        .update_one(
            doc! { "_id": M::NAME },
            doc! { "$setOnInsert": { "position": 0_i64, "txn": 0_i64 } },
        )
        .upsert(true)
        .await
        .or_else(|e| {
            if crate::store::schema::is_duplicate_key(&e) {
                Ok(Default::default())
            } else {
                Err(e)
            }
        })?;
    let start = stored_checkpoint(&db, M::NAME).await?;
    let (tx, rx) = watch::channel(start);
    let handle = ProjectionHandle {
        name: M::NAME,
        checkpoint: rx,
        db: db.clone(),
    };
    tokio::spawn(run(client, db, store, model, tx));
    Ok(handle)
}

async fn run<M: ReadModel>(
    client: Client,
    db: Database,
    store: EventStore,
    model: M,
    tx: watch::Sender<u64>,
) {
    loop {
        let from = match stored_checkpoint(&db, M::NAME).await {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(projection = M::NAME, %error, "reading checkpoint failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut chunks = std::pin::pin!(store.subscribe(from).ready_chunks(CHUNK));
        while let Some(chunk) = chunks.next().await {
            let events: Result<Vec<EventEnvelope>, _> = chunk.into_iter().collect();
            let events = match events {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(projection = M::NAME, %error, "projection stopped: the log cannot be read");
                    metrics::counter!("projection_failures_total", "projection" => M::NAME)
                        .increment(1);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    break;
                }
            };
            match apply_with_retries(&client, &db, &model, &events).await {
                Ok(checkpoint) => {
                    tx.send_if_modified(|current| {
                        let advanced = checkpoint > *current;
                        if advanced {
                            *current = checkpoint;
                        }
                        advanced
                    });
                    let head = store.known_head();
                    metrics::gauge!("projection_lag_events", "projection" => M::NAME)
                        .set(head.saturating_sub(checkpoint) as f64);
                    if let Some(last) = events.last() {
                        let lag = (chrono::Utc::now() - last.occurred_at)
                            .num_milliseconds()
                            .max(0) as f64
                            / 1000.0;
                        metrics::histogram!("projection_lag_seconds", "projection" => M::NAME)
                            .record(lag);
                    }
                }
                Err(error) => {
                    tracing::error!(projection = M::NAME, %error, "applying events failed; restarting from the checkpoint");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

async fn apply_with_retries<M: ReadModel>(
    client: &Client,
    db: &Database,
    model: &M,
    events: &[EventEnvelope],
) -> mongodb::error::Result<u64> {
    let mut attempt = 0u32;
    loop {
        let mut session = client.start_session().await?;
        match apply(&mut session, db, model, events).await {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(e)
                if attempt < 20
                    && (e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                        || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(rand::random_range(
                    1..=10u64 << attempt.min(4),
                )))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One transaction: lock and read the checkpoint, apply the events after it, move it.
async fn apply<M: ReadModel>(
    s: &mut ClientSession,
    db: &Database,
    model: &M,
    events: &[EventEnvelope],
) -> mongodb::error::Result<u64> {
    s.start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(durable_write_concern())
        .await?;
    let checkpoints = db.collection::<Document>(CHECKPOINTS);
    let current = checkpoints
        .find_one_and_update(doc! { "_id": M::NAME }, doc! { "$inc": { "txn": 1_i64 } })
        .return_document(ReturnDocument::After)
        .session(&mut *s)
        .await?
        .and_then(|d| d.get_i64("position").ok())
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(0);
    let fresh: Vec<EventEnvelope> = events
        .iter()
        .filter(|e| e.position > current)
        .cloned()
        .collect();
    let Some(last) = fresh.last().map(|e| e.position) else {
        s.abort_transaction().await?;
        return Ok(current);
    };
    for (collection, updates) in model.updates(&fresh) {
        if updates.is_empty() {
            continue;
        }
        db.run_command(doc! { "update": collection, "updates": updates, "ordered": true })
            .session(&mut *s)
            .await?;
    }
    checkpoints
        .update_one(
            doc! { "_id": M::NAME },
            doc! { "$set": { "position": to_i64(last) } },
        )
        .session(&mut *s)
        .await?;
    loop {
        match s.commit_transaction().await {
            Ok(()) => return Ok(last),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Clears a read model and its checkpoint so that its runner rebuilds it from position 0 (the
/// runner must be restarted). Used by tests and by operators; the read model is empty until
/// the rebuild catches up.
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
