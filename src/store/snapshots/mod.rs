//! Account snapshots in MongoDB (`account_snapshots`, `_id` = the account's stream id). An
//! optimisation only: a snapshot that cannot be read or written is logged and skipped, and the
//! account is then folded from its streams.

use bson::{doc, Document};
use mongodb::{Collection, Database};
use uuid::Uuid;

pub mod codec;

use crate::ledger::account::AccountState;
use crate::store::codec::to_i64;
use crate::store::error::is_duplicate_key;
use codec::FORMAT;

pub const COLLECTION: &str = "account_snapshots";

#[derive(Clone)]
pub struct SnapshotStore {
    snapshots: Collection<Document>,
}

impl SnapshotStore {
    pub fn new(db: &Database) -> Self {
        Self {
            snapshots: db.collection(COLLECTION),
        }
    }

    /// The stored snapshot of the account `id` (its `account-…` stream id), if there is a
    /// readable one of the current format.
    pub async fn load(&self, id: &str, user_id: Uuid, asset: &str) -> Option<AccountState> {
        let found = match self.snapshots.find_one(doc! { "_id": id }).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::warn!(%error, account = id, "account snapshot unreadable; folding the streams");
                return None;
            }
        };
        codec::decode(&found, user_id, asset)
            .map_err(|reason| {
                tracing::warn!(%reason, account = id, "account snapshot ignored");
                metrics::counter!("ledger_snapshots_ignored_total").increment(1);
            })
            .ok()
    }

    /// Stores `state` (a fold of committed events only) as the snapshot of `id`, unless the
    /// stored one of the current format is at least as far along in either stream.
    pub async fn save(&self, id: &str, state: &AccountState) {
        let replaceable = doc! {
            "_id": id,
            "$or": [
                { "format": { "$ne": FORMAT } },
                {
                    "version": { "$lte": to_i64(state.version()) },
                    "credits_version": { "$lte": to_i64(state.credits_version()) },
                },
            ],
        };
        let result = self
            .snapshots
            .replace_one(replaceable, codec::encode(id, state))
            .upsert(true)
            .await;
        match result {
            Ok(_) => metrics::counter!("ledger_snapshots_written_total").increment(1),
            // A newer snapshot exists (the filter missed, the upsert hit its `_id`).
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => {
                tracing::warn!(%error, account = id, "account snapshot not written");
            }
        }
    }
}
