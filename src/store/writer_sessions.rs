//! Ending the open transactions of a writer process that died.
//!
//! A process killed inside an append transaction leaves that transaction open on the server: its
//! inserted positions (`position_unique`) make every other writer's insert fail with a
//! `WriteConflict` until the server's `transactionLifetimeLimitSeconds` ends it (60 s by
//! default). So each writer registers the logical session ids (`ClientSession::id()`) it runs
//! its transactions on in [`WRITER_SESSIONS`], one document per writer, with a `heartbeat` date a
//! task renews every [`HEARTBEAT_EVERY`]. A writer whose group has kept failing for
//! [`REAP_AFTER_FAILING`] looks for registrations whose heartbeat is older than
//! [`DEAD_AFTER`], ends their sessions with `killSessions` (the server aborts their
//! transactions at once, also one whose commit is still running) and removes the registration.
//! A writer whose task ends (every store handle dropped) removes its own.
//!
//! Dates are the server's (`$$NOW`, in the heartbeat and in the staleness test), so clocks of
//! the writers' machines do not matter. Ending a live writer's sessions by mistake (its
//! heartbeat task starved for [`DEAD_AFTER`]) costs that writer a rerun, nothing else: its
//! transaction aborts, and the writer reruns it from stored state as after any failure.
//!
//! `killSessions` ends sessions of the *authenticated user* only: every instance must connect as
//! the same MongoDB user (they share one `MONGO_URL`), which needs no extra privilege. For
//! sessions of another user the server answers `ok` and ends nothing; then (and when the command
//! is refused) the dead transaction lasts until `transactionLifetimeLimitSeconds`, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::{
    Acknowledgment, CollectionOptions, IndexOptions, ReadConcern, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, IndexModel};

use super::error::StoreError;

/// One document per live writer: `_id` (writer id), `lsids`, `heartbeat` (server date), `pid`.
pub const WRITER_SESSIONS: &str = "writer_sessions";
/// How often a writer renews its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// A writer whose heartbeat is older than this is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);
/// How long a group keeps failing before its writer looks for dead writers.
pub const REAP_AFTER_FAILING: Duration = Duration::from_secs(1);
/// Least time between two looks of one writer.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// Registrations not renewed for this long are deleted by the server (TTL index): those of
/// processes that exited without removing theirs, when no writer needed to end them.
const FORGET_AFTER_SECS: i64 = 3600;

/// The registration of one writer's sessions, and the reaper of dead writers' sessions.
/// Cheap to clone.
#[derive(Clone)]
pub struct WriterSessions {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    collection: Collection<Document>,
    writer_id: String,
    lsids: Mutex<Vec<Document>>,
    /// Held while the registration document is written or removed; `true` once removed for
    /// good. A heartbeat that read the session ids before [`WriterSessions::deregister`] must
    /// not upsert the document back after the removal (a dead writer's registration would stay
    /// behind, listing sessions, until its TTL).
    registration: tokio::sync::Mutex<bool>,
    heartbeat_started: AtomicBool,
    reaping: AtomicBool,
    last_reap: Mutex<Option<Instant>>,
    refused_warned: AtomicBool,
}

impl WriterSessions {
    /// The registry of a new writer in database `db`.
    pub fn new(client: &Client, db: &str) -> Self {
        let collection = client.database(db).collection_with_options(
            WRITER_SESSIONS,
            CollectionOptions::builder()
                // Heartbeats need no durability: one lost in a failover at worst makes a live
                // writer look dead, which costs it a rerun. Read on the primary, at once.
                .write_concern(WriteConcern::builder().w(Acknowledgment::Nodes(1)).build())
                .read_concern(ReadConcern::local())
                .build(),
        );
        Self {
            inner: Arc::new(Inner {
                client: client.clone(),
                collection,
                writer_id: uuid::Uuid::now_v7().to_string(),
                lsids: Mutex::new(Vec::new()),
                registration: tokio::sync::Mutex::new(false),
                heartbeat_started: AtomicBool::new(false),
                reaping: AtomicBool::new(false),
                last_reap: Mutex::new(None),
                refused_warned: AtomicBool::new(false),
            }),
        }
    }

    /// Registers the id of a session the writer is about to run transactions on (the first
    /// registration also starts the heartbeat task). A failed registration is logged, not
    /// returned: the next heartbeat carries the id.
    pub async fn register(&self, session: &ClientSession) {
        self.inner.lsids.lock().unwrap().push(session.id().clone());
        if let Err(error) = self.inner.renew().await {
            tracing::warn!(%error, "writer: could not register a session (the heartbeat will)");
        }
        if !self.inner.heartbeat_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(heartbeat(Arc::downgrade(&self.inner)));
        }
    }

    /// Called after each failed attempt of a group, with how long the group has been failing:
    /// past [`REAP_AFTER_FAILING`], and at most every [`REAP_EVERY`], ends the sessions of dead
    /// writers in a task of its own (the writer goes on retrying meanwhile).
    pub fn note_failure(&self, failing_for: Duration) {
        if failing_for < REAP_AFTER_FAILING {
            return;
        }
        {
            let mut last = self.inner.last_reap.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < REAP_EVERY) {
                return;
            }
            if self.inner.reaping.swap(true, Ordering::SeqCst) {
                return;
            }
            *last = Some(Instant::now());
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(error) = inner.reap().await {
                // Usually MongoDB itself is unavailable, which the failing group reports.
                tracing::debug!(%error, "writer: could not look for dead writers' sessions");
            }
            inner.reaping.store(false, Ordering::SeqCst);
        });
    }

    /// Removes this writer's registration (its task is ending: no transaction of it is open).
    pub async fn deregister(&self) {
        let mut removed = self.inner.registration.lock().await;
        *removed = true;
        self.inner.heartbeat_started.store(true, Ordering::SeqCst);
        self.inner.lsids.lock().unwrap().clear();
        if let Err(error) = self
            .inner
            .collection
            .delete_one(doc! { "_id": &self.inner.writer_id })
            .await
        {
            tracing::warn!(%error, "writer: could not remove its session registration");
        }
    }

    /// This writer's id in [`WRITER_SESSIONS`].
    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }
}

/// Renews the heartbeat every [`HEARTBEAT_EVERY`] while the writer exists.
async fn heartbeat(inner: Weak<Inner>) {
    if let Some(inner) = inner.upgrade() {
        inner.ensure_ttl_index().await;
    }
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.lsids.lock().unwrap().is_empty() {
            // Deregistered.
            return;
        }
        if let Err(error) = inner.renew().await {
            tracing::debug!(%error, "writer: heartbeat failed");
        }
    }
}

impl Inner {
    /// Writes the registration: every session id and a fresh heartbeat (server time).
    /// Recreates it if a reaper removed it (this writer only looked dead).
    async fn renew(&self) -> Result<(), StoreError> {
        let removed = self.registration.lock().await;
        if *removed {
            return Ok(());
        }
        let lsids: Vec<Bson> = self
            .lsids
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .map(Bson::Document)
            .collect();
        if lsids.is_empty() {
            return Ok(());
        }
        self.collection
            .update_one(
                doc! { "_id": &self.writer_id },
                vec![doc! { "$set": {
                    "lsids": { "$literal": lsids },
                    "heartbeat": "$$NOW",
                    "pid": i64::from(std::process::id()),
                }}],
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn ensure_ttl_index(&self) {
        let index = IndexModel::builder()
            .keys(doc! { "heartbeat": 1 })
            .options(
                IndexOptions::builder()
                    .name("heartbeat_ttl".to_owned())
                    .expire_after(Duration::from_secs(FORGET_AFTER_SECS as u64))
                    .build(),
            )
            .build();
        if let Err(error) = self.collection.create_index(index).await {
            tracing::debug!(%error, "writer: could not create the writer_sessions TTL index");
        }
    }

    /// Ends the sessions of every other writer whose heartbeat is older than [`DEAD_AFTER`],
    /// then removes its registration (unless it renewed meanwhile).
    async fn reap(&self) -> Result<(), StoreError> {
        let dead_after_ms = i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
        let dead: Vec<Document> = self
            .collection
            .find(doc! {
                "_id": { "$ne": &self.writer_id },
                "$expr": { "$lt": ["$heartbeat", { "$subtract": ["$$NOW", dead_after_ms] }] },
            })
            .await?
            .try_collect()
            .await?;
        for writer in dead {
            let lsids = writer.get_array("lsids").cloned().unwrap_or_default();
            if !lsids.is_empty() {
                let killed = self
                    .client
                    .database("admin")
                    .run_command(doc! { "killSessions": lsids.clone() })
                    .await;
                if let Err(error) = killed {
                    if !self.refused_warned.swap(true, Ordering::SeqCst) {
                        tracing::error!(
                            %error,
                            "writer: killSessions failed; a dead writer's transactions now last \
                             until transactionLifetimeLimitSeconds"
                        );
                    }
                    return Err(error.into());
                }
            }
            metrics::counter!("event_store_dead_writer_sessions_killed_total")
                .increment(lsids.len() as u64);
            tracing::warn!(
                writer = writer.get_str("_id").unwrap_or("?"),
                pid = writer.get_i64("pid").unwrap_or(0),
                sessions = lsids.len(),
                "writer: ended the sessions of a writer that stopped renewing its heartbeat"
            );
            let mut registration = doc! { "_id": writer.get("_id").cloned().unwrap_or(Bson::Null) };
            if let Some(heartbeat) = writer.get("heartbeat") {
                registration.insert("heartbeat", heartbeat.clone());
            }
            self.collection.delete_one(registration).await?;
        }
        Ok(())
    }
}
