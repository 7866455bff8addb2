//! The event store: an append-only, hash-chained global log in MongoDB.
//!
//! **Architecture invariant:** this module is the only code that writes to the `events` and
//! `event_store_meta` collections, and it has no update or delete path for
//! an event document. Appends go through one group-commit writer task per store instance
//! ([`writer`]); positions are claimed and events inserted in one transaction, so the log is
//! gapless and a reader that sees position N has seen every position below N, whatever the
//! number of writer processes.
//!
//! **API boundary:** [`EventStore::append`], [`EventStore::read_stream`],
//! [`EventStore::read_all`], [`EventStore::subscribe`], [`EventStore::verify`].

pub mod append;
pub mod backoff;
pub mod codec;
pub mod credentials;
pub mod document;
pub mod error;
pub mod idempotency;
pub mod liabilities;
pub mod login_throttle;
pub mod mongo_monitor;
pub mod personal_keys;
pub mod plan;
pub mod read_models;
pub mod schema;
pub mod sealed_feed;
pub mod sessions;
pub mod snapshots;
mod stored_state;
pub mod subscription;
mod transaction;
pub mod tree;
pub mod verify;
pub mod writer;
pub mod writer_sessions;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::options::ReadConcern;
use mongodb::Collection;
use tokio::sync::{mpsc, oneshot, watch};

use cryptovault_events::EventEnvelope;

pub use append::{
    AppendBatch, AppendResult, AppendedEvent, ExpectedVersion, StreamAppend, StreamTip,
};
pub use error::{AppendError, StoreError};
/// The driver's handles, for the code that wires the application together (startup, the
/// command line) and passes them back into the store; nothing outside `store` calls them.
pub use mongodb::{Client, Database};
pub use verify::VerifyReport;

use codec::to_i64;
use document::from_document;
pub use transaction::durable_write_concern;
use writer::{PendingAppend, Writer};

/// Connects to MongoDB with the settings' URL. Fails fast (5 s, unless the URL says otherwise)
/// if no server answers.
pub async fn connect(settings: &crate::config::StoreSettings) -> anyhow::Result<Client> {
    let mut options = mongodb::options::ClientOptions::parse(&settings.mongo_url)
        .await
        .context("MONGO_URL is not a valid MongoDB connection string")?;
    // The URL's `appName` and `serverSelectionTimeoutMS` win (the fault tests name the
    // service's client to aim fail points at it, and shorten the wait for a gone server).
    options.app_name.get_or_insert_with(|| "cryptovault".into());
    options
        .server_selection_timeout
        .get_or_insert(std::time::Duration::from_secs(5));
    options.max_pool_size = Some(64);
    mongo_monitor::install(&mut options);
    let client = Client::with_options(options).context("MONGO_URL")?;
    Ok(client)
}

/// Tuning knobs of a store instance.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most events one group-commit transaction takes (MongoDB caps a transaction's oplog
    /// entry at 16 MB; 1,000 small events stay far below).
    pub max_group_events: usize,
    /// Events fetched per read by `read_all` users such as subscriptions.
    pub read_batch: usize,
    /// How long an idle subscription waits before polling for events of other processes
    /// (appends through this instance wake it at once).
    pub poll_interval: Duration,
    /// How long an append keeps retrying transient failures before giving up.
    pub append_timeout: Duration,
    /// Capacity of the queue in front of the writer; callers wait when it is full.
    pub queue_capacity: usize,
    /// Group transactions the writer overlaps: each inserts while the ones before it commit
    /// (commits still happen one after another, in order). 1 turns the pipeline off; at most
    /// the number of head slots (4).
    pub pipeline_depth: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_group_events: 1000,
            read_batch: 1000,
            poll_interval: Duration::from_millis(50),
            append_timeout: Duration::from_secs(10),
            queue_capacity: 10_000,
            pipeline_depth: 2,
        }
    }
}

/// A handle to the event store. Cheap to clone; all clones share one writer task.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    events: Collection<Document>,
    meta: Collection<Document>,
    writer: mpsc::Sender<PendingAppend>,
    head: watch::Receiver<u64>,
    config: StoreConfig,
    /// What this process's writer committed, for its notary.
    sealed: Arc<sealed_feed::SealedFeed>,
}

impl EventStore {
    /// Opens the store in `db_name`: ensures collections, validator and indexes, then starts the
    /// writer task. Must be called inside a tokio runtime.
    pub async fn open(
        client: &Client,
        db_name: &str,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        let db = client.database_with_options(
            db_name,
            mongodb::options::DatabaseOptions::builder()
                .read_concern(ReadConcern::majority())
                .write_concern(durable_write_concern())
                .build(),
        );
        schema::ensure(&db).await?;
        let initial_head = read_head(&db).await?.0;
        let (head_tx, head_rx) = watch::channel(initial_head);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let sealed = Arc::new(sealed_feed::SealedFeed::default());
        let writer = Writer::new(
            client.clone(),
            db.collection(schema::EVENTS),
            db.collection(schema::META),
            config.clone(),
            head_tx,
            sealed.clone(),
        );
        tokio::spawn(writer.run(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                events: db.collection(schema::EVENTS),
                meta: db.collection(schema::META),
                writer: tx,
                head: head_rx,
                config,
                sealed,
            }),
        })
    }

    /// Appends a batch atomically and durably (majority, journaled) and returns where each event
    /// landed. Re-appending a batch whose event ids all exist returns their original placement
    /// and writes nothing. On [`AppendError::Conflict`] nothing is written.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendResult, AppendError> {
        self.enqueue(batch).await?.await
    }

    /// Queues a batch for the writer and returns the future of its outcome (as [`Self::append`]
    /// would). Batches are decided in the order they are queued, so a caller may queue a batch
    /// that expects the version an earlier queued batch creates, before that one committed; if
    /// the earlier one fails, the later one fails with a conflict.
    pub async fn enqueue(
        &self,
        batch: AppendBatch,
    ) -> Result<impl Future<Output = Result<AppendResult, AppendError>> + use<>, AppendError> {
        batch.validate().map_err(AppendError::Invalid)?;
        let (reply, outcome) = oneshot::channel();
        crate::telemetry::warn_if_slow(
            "event store: queue an append",
            self.inner.writer.send(PendingAppend { batch, reply }),
        )
        .await
        .map_err(|_| StoreError::WriterStopped)?;
        Ok(async move {
            crate::telemetry::warn_if_slow("event store: wait for the writer's answer", outcome)
                .await
                .map_err(|_| StoreError::WriterStopped)?
        })
    }

    /// Events of one stream with `stream_version >= from_version`, in version order, at most
    /// `limit`.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let cursor = self
            .inner
            .events
            .find(
                doc! { "stream_id": stream_id, "stream_version": { "$gte": to_i64(from_version) } },
            )
            .sort(doc! { "stream_version": 1 })
            .limit(to_i64(limit as u64));
        let cursor = crate::telemetry::warn_if_slow("event store: read a stream", cursor).await?;
        decode_all(cursor).await
    }

    /// The last `limit` events of a stream, newest first.
    pub async fn read_stream_tail(
        &self,
        stream_id: &str,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let cursor = self
            .inner
            .events
            .find(doc! { "stream_id": stream_id })
            .sort(doc! { "stream_version": -1 })
            .limit(to_i64(limit as u64))
            .await?;
        decode_all(cursor).await
    }

    /// The stored event with this id, if any.
    pub async fn read_event(
        &self,
        event_id: uuid::Uuid,
    ) -> Result<Option<EventEnvelope>, StoreError> {
        let found = self
            .inner
            .events
            .find_one(doc! { "_id": event_id.to_string() })
            .await?;
        found.map(from_document).transpose()
    }

    /// The events at `positions` (those that exist), in position order, in one query. Reads at
    /// majority, like [`EventStore::read_all`].
    pub async fn read_positions(
        &self,
        positions: &[u64],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<i64> = positions.iter().map(|p| to_i64(*p)).collect();
        let cursor = self
            .inner
            .events
            .find(doc! { "position": { "$in": wanted } })
            .sort(doc! { "position": 1 })
            .await?;
        decode_all(cursor).await
    }

    /// Events with `position >= from_position`, in position order, at most `limit`. Reads at
    /// majority, so everything returned is durable.
    pub async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let cursor = self
            .inner
            .events
            .find(doc! { "position": { "$gte": to_i64(from_position) } })
            .sort(doc! { "position": 1 })
            .limit(to_i64(limit as u64))
            .batch_size(u32::try_from(limit.min(10_000)).unwrap_or(10_000))
            .await?;
        decode_all(cursor).await
    }

    /// The position of the last committed event (0 for an empty log) and its hash.
    pub async fn head(&self) -> Result<(u64, String), StoreError> {
        read_head_from(&self.inner.meta).await
    }

    /// Highest position this instance knows to be committed (its own appends, and what its
    /// subscriptions have seen); cheap, never touches MongoDB.
    pub fn known_head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    pub(crate) fn head_watch(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// The links this process's writer committed (off until the notary turns it on).
    pub(crate) fn sealed(&self) -> &sealed_feed::SealedFeed {
        &self.inner.sealed
    }

    pub(crate) fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub(crate) fn events(&self) -> &Collection<Document> {
        &self.inner.events
    }
}

async fn decode_all(cursor: mongodb::Cursor<Document>) -> Result<Vec<EventEnvelope>, StoreError> {
    let documents: Vec<Document> = cursor.try_collect().await?;
    documents.into_iter().map(from_document).collect()
}

async fn read_head(db: &Database) -> Result<(u64, String), StoreError> {
    read_head_from(&db.collection(schema::META)).await
}

async fn read_head_from(meta: &Collection<Document>) -> Result<(u64, String), StoreError> {
    let slots: Vec<Document> = meta
        .find(doc! { "_id": { "$in": schema::HEAD_SLOTS.to_vec() } })
        .await?
        .try_collect()
        .await?;
    let head = schema::head_of_slots(&slots)?;
    Ok((head.position, head.hash))
}
