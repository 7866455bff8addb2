//! Rebuilding a read model from position 0 while the service keeps serving the old copy.
//!
//! 1. The events are applied, from position 0, to shadow collections (`<name>__replay`) with
//!    their own checkpoint, until the shadow has caught up with the head of the log.
//! 2. The swap: one transaction write-locks the live checkpoint document — from then on no
//!    runner of any process can commit to the live read model, since every runner transaction
//!    starts by writing that document — sets it to the shadow's position, and while it holds
//!    the lock each shadow collection is renamed over the live one (`dropTarget`); then it
//!    commits. Readers see the old complete model, then the new complete model, never a
//!    half-built one.
//! 3. Events appended since the shadow's position are applied to the new live model (by this
//!    process and/or the service's runners, which notice that the checkpoint moved back —
//!    exactly once either way, as always).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bson::{doc, Document};
use cryptovault_events::EventEnvelope;
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use mongodb::options::ReturnDocument;
use mongodb::{Client, Database};
use tokio::sync::mpsc;

use super::runner::{create_indexes, Applied, ReadModel, Runner, Target, CHECKPOINTS};
use crate::store::backoff::Backoff;
use crate::store::codec::to_i64;
use crate::store::durable_write_concern;
use crate::store::EventStore;

/// Events read and applied per transaction during a replay.
const REPLAY_CHUNK: usize = 2_000;

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    pub projection: &'static str,
    /// Events applied to the shadow copy before the swap.
    pub events: u64,
    /// Position of the live read model right after the swap.
    pub swapped_at: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// Rebuilds `model` from position 0 and swaps it in (see the module docs). `progress` is
/// called after every chunk with `(position reached, head)`.
pub async fn replay<M: ReadModel>(
    client: &Client,
    db: &Database,
    store: &EventStore,
    model: M,
    options: ReplayOptions,
    progress: impl Fn(u64, u64),
) -> anyhow::Result<ReplayReport> {
    let shadow = Runner {
        client: client.clone(),
        db: db.clone(),
        model: Arc::new(model),
        target: Target::shadow::<M>(),
    };
    claim(db, &shadow.target, options.force).await?;
    let rebuilt = rebuild_and_swap(&shadow, store, &progress).await;
    // Released on failure too (the next replay starts the shadow over); only a crash leaves
    // the claim behind, for `--force`.
    db.collection::<Document>(CHECKPOINTS)
        .delete_one(doc! { "_id": &shadow.target.checkpoint })
        .await?;
    let (events, position, seconds) = rebuilt?;
    let live = Runner {
        target: Target::live::<M>(),
        ..shadow
    };
    catch_up(&live, store, position, &progress).await?;
    Ok(ReplayReport {
        projection: M::NAME,
        events,
        swapped_at: position,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
    })
}

/// Options of [`replay`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Take over a claim left by a replay that died (see [`claim`]).
    pub force: bool,
}

/// Claims the shadow of a read model for this replay: its checkpoint document is created here
/// and removed when the replay ends, so a second concurrent replay of the same read model is
/// refused instead of interleaving with this one in the same shadow collections.
async fn claim(db: &Database, shadow: &Target, force: bool) -> anyhow::Result<()> {
    let checkpoints = db.collection::<Document>(CHECKPOINTS);
    let claim = doc! {
        "_id": &shadow.checkpoint,
        "position": 0_i64,
        "txn": 0_i64,
        "replay_started_at": bson::DateTime::now(),
    };
    if force {
        checkpoints
            .replace_one(doc! { "_id": &shadow.checkpoint }, claim)
            .upsert(true)
            .await?;
        return Ok(());
    }
    match checkpoints.insert_one(claim).await {
        Ok(_) => Ok(()),
        Err(e) if crate::store::error::is_duplicate_key(&e) => {
            let since = checkpoints
                .find_one(doc! { "_id": &shadow.checkpoint })
                .await?
                .and_then(|d| d.get_datetime("replay_started_at").ok().copied())
                .map(|t| t.to_chrono().to_rfc3339())
                .unwrap_or_else(|| "an unknown time".into());
            anyhow::bail!(
                "another replay of {} has been running since {since}; if that process died, run this replay with --force",
                shadow.checkpoint.trim_end_matches(super::runner::SHADOW_SUFFIX)
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Steps 1–2 of the module docs; returns (events replayed, position swapped in, seconds of
/// the bulk replay).
async fn rebuild_and_swap<M: ReadModel>(
    shadow: &Runner<M>,
    store: &EventStore,
    progress: &impl Fn(u64, u64),
) -> anyhow::Result<(u64, u64, f64)> {
    let db = &shadow.db;
    for collection in M::COLLECTIONS {
        db.collection::<Document>(&shadow.target.collection(collection))
            .drop()
            .await?;
        // Exists even if no event produces a row, so that the swap can rename it.
        db.create_collection(shadow.target.collection(collection))
            .await?;
    }
    let started = Instant::now();
    let mut position = catch_up(shadow, store, 0, progress).await?;
    let events = position;
    let seconds = started.elapsed().as_secs_f64();
    // Indexes after the bulk load (cheaper than maintaining them row by row), then a last
    // catch-up so that the swap leaves as little as possible for the live runners.
    create_indexes::<M>(db, &shadow.target).await?;
    position = catch_up(shadow, store, position, progress).await?;
    swap::<M>(&shadow.client, db, &shadow.target, position).await?;
    Ok((events, position, seconds))
}

/// Brings the live copy of `model` up to the current head from its stored checkpoint (what a
/// running service would do; safe alongside it, exactly once). Returns the position reached.
pub async fn bring_up_to_date<M: ReadModel>(
    client: &Client,
    db: &Database,
    store: &EventStore,
    model: M,
) -> anyhow::Result<u64> {
    let target = Target::live::<M>();
    super::runner::ensure_checkpoint(db, &target.checkpoint).await?;
    create_indexes::<M>(db, &target).await?;
    let from = super::runner::stored_checkpoint(db, &target.checkpoint).await?;
    let runner = Runner {
        client: client.clone(),
        db: db.clone(),
        model: Arc::new(model),
        target,
    };
    catch_up(&runner, store, from, &|_, _| {}).await
}

/// Applies every event after `from` up to the current head to `runner`'s target; returns
/// the position reached. Reading runs one chunk ahead of applying.
async fn catch_up<M: ReadModel>(
    runner: &Runner<M>,
    store: &EventStore,
    from: u64,
    progress: &impl Fn(u64, u64),
) -> anyhow::Result<u64> {
    let head = store.head().await?.0;
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Vec<EventEnvelope>>>(2);
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut next = from + 1;
        while next <= head {
            let chunk = reader_store
                .read_all(next, REPLAY_CHUNK)
                .await
                .map_err(anyhow::Error::from);
            let stop = match &chunk {
                Ok(events) => match events.last() {
                    Some(last) => {
                        next = last.position + 1;
                        false
                    }
                    None => true,
                },
                Err(_) => true,
            };
            if tx.send(chunk).await.is_err() || stop {
                break;
            }
        }
    });
    let mut position = from;
    while let Some(chunk) = rx.recv().await {
        let mut events = chunk?;
        events.retain(|e| e.position <= head);
        if events.is_empty() {
            break;
        }
        match runner.apply_with_retries(&events).await? {
            Applied::UpTo(reached) => position = reached,
            Applied::Rewound(at) => {
                anyhow::bail!(
                    "checkpoint {} moved back to {at} during a replay",
                    runner.target.checkpoint
                )
            }
        }
        progress(position, head);
    }
    reader.await.context("replay reader task")?;
    Ok(position)
}

/// Swaps the shadow collections in and sets the live checkpoint to `position`, atomically
/// with respect to every runner (see the module docs).
async fn swap<M: ReadModel>(
    client: &Client,
    db: &Database,
    shadow: &Target,
    position: u64,
) -> anyhow::Result<()> {
    let checkpoints = db.collection::<Document>(CHECKPOINTS);
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
    loop {
        let mut session = client.start_session().await?;
        session
            .start_transaction()
            .write_concern(durable_write_concern())
            .await?;
        let locked = checkpoints
            .find_one_and_update(
                doc! { "_id": M::NAME },
                doc! { "$set": { "position": to_i64(position) }, "$inc": { "txn": 1_i64 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .session(&mut session)
            .await;
        match locked {
            Ok(_) => {}
            Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) && backoff.failures() < 50 => {
                backoff.wait().await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let database = db.name();
        for collection in M::COLLECTIONS {
            let renamed = client
                .database("admin")
                .run_command(doc! {
                    "renameCollection": format!("{database}.{}", shadow.collection(collection)),
                    "to": format!("{database}.{collection}"),
                    "dropTarget": true,
                })
                .await;
            if let Err(error) = renamed {
                let _ = session.abort_transaction().await;
                return Err(anyhow::Error::from(error)
                    .context(format!("renaming the rebuilt {collection} into place")));
            }
        }
        session
            .commit_transaction()
            .await
            .context("committing the new checkpoint after the swap; run the replay again")?;
        return Ok(());
    }
}
