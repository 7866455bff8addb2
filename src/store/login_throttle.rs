//! `login_throttle`: one document per email address (registered or not; keyed by its blind index
//! `HMAC(EMAIL_INDEX_KEY, normalised address)`, so no address is stored in plaintext) holding
//! the login throttle's state (`identity::throttle::ThrottleState`: per-source counters and
//! blocks, the account-wide window, known devices and IPs). Kept out of the event log: it is
//! operational state, rewritten on every attempt.
//!
//! Every change is a compare-and-swap on the document's `version` (an insert for the first
//! one, refused by the `_id` index if another process inserted first): the decision is taken on
//! the state read, and written only if nobody changed it meanwhile; otherwise it is taken
//! again on the new state. So attempts are counted atomically **before** the password check,
//! across any number of service processes. A TTL index on `expires_at` forgets an address 90
//! days after its last attempt.

use std::time::Duration;

use bson::{doc, DateTime as BsonDateTime, Document};
use chrono::{DateTime, Utc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::identity::throttle::ThrottleState;
use crate::store::{durable_write_concern, StoreError};

/// How long an address's state outlives its last attempt.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Compare-and-swap rounds before giving up (503): each lost round means another attempt on
/// the same address won, and a blocked address refuses without writing, so a handful suffice.
const ROUNDS: u32 = 32;

#[derive(Clone)]
pub struct LoginThrottle {
    states: Collection<Document>,
}

impl LoginThrottle {
    /// Opens the collection and creates its TTL index (idempotent).
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build();
        let states = db.collection_with_options("login_throttle", options);
        states
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "expires_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .expire_after(Duration::ZERO)
                            .name("expires_at_ttl".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(Self { states })
    }

    async fn load(&self, key: &str) -> Result<ThrottleState, StoreError> {
        let Some(mut found) = self.states.find_one(doc! { "_id": key }).await? else {
            return Ok(ThrottleState::default());
        };
        found.remove("_id");
        found.remove("expires_at");
        // A document this version cannot read is started afresh (it only ever loosens the
        // throttle for one address once, and is overwritten by the next attempt).
        let version = found.get_i64("version").unwrap_or(0);
        Ok(bson::from_document(found).unwrap_or(ThrottleState {
            version,
            ..ThrottleState::default()
        }))
    }

    /// Writes `next` if the stored state is still at `expected` (its version); false if another
    /// attempt changed it first.
    async fn swap(
        &self,
        key: &str,
        expected: i64,
        next: &ThrottleState,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut fields = bson::to_document(next).map_err(|e| StoreError::Corrupt {
            id: format!("login_throttle {key}"),
            reason: e.to_string(),
        })?;
        let retention = chrono::Duration::from_std(RETENTION).unwrap_or(chrono::Duration::MAX);
        fields.insert("expires_at", BsonDateTime::from_chrono(now + retention));
        if expected == 0 {
            let mut document = doc! { "_id": key };
            document.extend(fields);
            return match self.states.insert_one(document).await {
                Ok(_) => Ok(true),
                Err(e) if crate::store::error::is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        let updated = self
            .states
            .update_one(
                doc! { "_id": key, "version": expected },
                doc! { "$set": fields },
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// Forgets `key`'s state (its known IPs and devices are personal data: `admin erase-user`).
    pub async fn forget(&self, key: &str) -> Result<(), StoreError> {
        self.states.delete_one(doc! { "_id": key }).await?;
        Ok(())
    }

    /// Decides on the current state of `key` and stores the decision atomically: `decide`
    /// returns the new state and a result, or a refusal (`Err`, nothing written). Decided again
    /// whenever another attempt changed the state first.
    pub async fn update<T, R>(
        &self,
        key: &str,
        now: DateTime<Utc>,
        decide: impl Fn(&ThrottleState) -> Result<(ThrottleState, T), R>,
    ) -> Result<Result<T, R>, StoreError> {
        for _ in 0..ROUNDS {
            let state = self.load(key).await?;
            let (next, result) = match decide(&state) {
                Ok(decided) => decided,
                Err(refusal) => return Ok(Err(refusal)),
            };
            if self.swap(key, state.version, &next, now).await? {
                return Ok(Ok(result));
            }
        }
        Err(StoreError::RetriesExhausted {
            attempts: ROUNDS,
            last: format!("login throttle of {key} kept changing concurrently"),
        })
    }
}
