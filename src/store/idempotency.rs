//! The `idempotency_keys` records of `Idempotency-Key` on write endpoints (PRODUCT.md §3; the
//! request hash and the key rules are `crate::idempotency`'s).
//!
//! A record per (user, key) in `idempotency_keys` holds a hash of the request (method, path,
//! canonical JSON body) and, once done, the response. The same key and body get the first
//! response back and write nothing; the same key with another body (or on another route) gets
//! 409 `idempotency_conflict`. A concurrent duplicate waits for the first to finish. Records
//! live in MongoDB, so this survives restarts; the ledger additionally derives its event ids
//! from the key, so even a crash between the append and the stored response cannot apply a
//! command twice.
//!
//! **A record of a success is kept for good.** The event ids a key derives are the key's
//! forever, so forgetting the key would let a reuse run another command under it (a false
//! 201). A *pending* record carries `expires_at` (TTL index, 24 h) as a safety net for a run
//! whose own clean-up never happened, and so does a stored *refusal* (4xx): it wrote nothing,
//! so after a day its key may serve another request, and refusals cannot pile up for ever.
//! Successes written by earlier versions (which expired every record after 24 h) lose their
//! expiry when the store opens.
//!
//! Faults must not leave a key stuck: each run of a keyed request owns its pending record by an
//! `attempt` id. A run that fails on the server side removes its record (`abandon`), so the
//! retry runs the command again (the derived event ids make that safe). When MongoDB is down,
//! that removal — or the storing of a finished answer — fails too; it is then retried in the
//! background until it succeeds (`settle_in_background`), so the client's retry once MongoDB is
//! back finds the key free (or answered) instead of waiting for a request that already ended.

use std::time::Duration;

use bson::{doc, DateTime as BsonDateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use uuid::Uuid;

use crate::idempotency::Begin;
use crate::store::backoff::Backoff;
use crate::store::{durable_write_concern, StoreError};

/// How long a *pending* record is kept if nothing settles it (finished records are kept for good).
const PENDING_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A pending record older than this belongs to a request that died; a retry may take it over.
const STALE_PENDING: Duration = Duration::from_secs(30);
/// How long a duplicate waits for the first request to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// Longest pause between two tries of a background settlement.
const SETTLE_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct IdempotencyKeys {
    records: Collection<Document>,
}

impl IdempotencyKeys {
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let records = db.collection_with_options(
            "idempotency_keys",
            mongodb::options::CollectionOptions::builder()
                .write_concern(durable_write_concern())
                .build(),
        );
        let keys = Self { records };
        keys.records
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "expires_at": 1 })
                    .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
                    .build(),
            )
            .await?;
        // Earlier versions gave finished records an expiry too; a finished key is kept for good.
        keys.records
            .update_many(
                doc! { "state": "done", "status": { "$lt": 400 }, "expires_at": { "$exists": true } },
                doc! { "$unset": { "expires_at": "" } },
            )
            .await?;
        Ok(keys)
    }

    fn id(user: Uuid, key: &str) -> String {
        format!("{user}:{key}")
    }

    pub async fn begin(&self, user: Uuid, key: &str, hash: &str) -> Result<Begin, StoreError> {
        let id = Self::id(user, key);
        let now = chrono::Utc::now();
        let attempt = Uuid::new_v4();
        let inserted = self
            .records
            .insert_one(doc! {
                "_id": &id,
                "request_hash": hash,
                "state": "pending",
                "attempt": attempt.to_string(),
                "started_at": BsonDateTime::from_chrono(now),
                "expires_at": BsonDateTime::from_chrono(now + chrono::Duration::from_std(PENDING_RETENTION).expect("fits")),
            })
            .await;
        match inserted {
            Ok(_) => return Ok(Begin::Run(attempt)),
            Err(e) if crate::store::error::is_duplicate_key(&e) => {}
            Err(e) => {
                // The insert may have happened (a connection lost after the write): remove the
                // record this attempt may own, so that it does not hold the key.
                self.settle_in_background(user, key, attempt, None);
                return Err(e.into());
            }
        }
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            let Some(record) = self.records.find_one(doc! { "_id": &id }).await? else {
                // Abandoned and removed meanwhile: try to take it.
                return Box::pin(self.begin(user, key, hash)).await;
            };
            if record.get_str("request_hash").ok() != Some(hash) {
                return Ok(Begin::Mismatch);
            }
            if record.get_str("state").ok() == Some("done") {
                return Ok(Begin::Replay {
                    status: record.get_i32("status").unwrap_or(200) as u16,
                    body: record.get_str("body").unwrap_or("null").to_owned(),
                });
            }
            let started = record
                .get_datetime("started_at")
                .map(|d| d.to_chrono())
                .unwrap_or(now);
            if (chrono::Utc::now() - started).to_std().unwrap_or_default() > STALE_PENDING {
                let attempt = Uuid::new_v4();
                let taken = self
                    .records
                    .update_one(
                        doc! { "_id": &id, "state": "pending", "started_at": BsonDateTime::from_chrono(started) },
                        doc! { "$set": { "started_at": BsonDateTime::now(), "attempt": attempt.to_string() } },
                    )
                    .await?;
                if taken.modified_count == 1 {
                    return Ok(Begin::Run(attempt));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Begin::InProgress);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stores the answer of a request that ran (success or a client error), if `attempt` still
    /// owns the record (a stale record may have been taken over by a retry, which stores its
    /// own, equal answer).
    pub async fn finish(
        &self,
        user: Uuid,
        key: &str,
        attempt: Uuid,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        // A success is kept for good (its events bear the key's ids); a refusal wrote nothing,
        // so it keeps the pending record's expiry (24 h) and cannot pile up for ever.
        let update = if status < 400 {
            doc! {
                "$set": { "state": "done", "status": i32::from(status), "body": body },
                "$unset": { "expires_at": "" },
            }
        } else {
            doc! { "$set": { "state": "done", "status": i32::from(status), "body": body } }
        };
        self.records
            .update_one(
                doc! { "_id": Self::id(user, key), "state": "pending", "attempt": attempt.to_string() },
                update,
            )
            .await?;
        Ok(())
    }

    /// Forgets a request that failed on the server side, so a retry runs it again. Only the
    /// attempt's own pending record goes: never another attempt's, never a stored answer.
    pub async fn abandon(&self, user: Uuid, key: &str, attempt: Uuid) -> Result<(), StoreError> {
        self.records
            .delete_one(doc! { "_id": Self::id(user, key), "state": "pending", "attempt": attempt.to_string() })
            .await?;
        Ok(())
    }

    /// Stores `answer` (with `Some`) or abandons the attempt (with `None`) in a task of its own,
    /// trying again with backoff until it succeeds or the record would be stale anyway (after
    /// which a retry takes it over). For when MongoDB failed the first try, and for requests
    /// that were dropped half-way (the request timeout, a client gone).
    pub fn settle_in_background(
        &self,
        user: Uuid,
        key: &str,
        attempt: Uuid,
        answer: Option<(u16, String)>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (keys, key) = (self.clone(), key.to_owned());
        runtime.spawn(async move {
            let give_up = tokio::time::Instant::now() + STALE_PENDING;
            let mut pause = Backoff::new(Duration::from_millis(50), SETTLE_BACKOFF_MAX);
            loop {
                let settled = match &answer {
                    Some((status, body)) => keys.finish(user, &key, attempt, *status, body).await,
                    None => keys.abandon(user, &key, attempt).await,
                };
                match settled {
                    Ok(()) => return,
                    Err(error) if tokio::time::Instant::now() >= give_up => {
                        tracing::warn!(%error, "gave up settling an idempotency record; it goes stale");
                        return;
                    }
                    Err(_) => pause.wait().await,
                }
            }
        });
    }
}
