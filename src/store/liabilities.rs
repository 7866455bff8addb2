//! `liabilities` and `liability_nodes`: issued proofs of liabilities (issue 16), so that users'
//! proofs are served from what was signed, not recomputed.
//!
//! - `liabilities`: one document per issuance, `_id` = the checkpoint size it was computed at
//!   (Int64); `checkpoint_root` (base64), `note` (the whole signed note), `assets` (per asset
//!   `{asset, leaf_count, total, root}` as the note states them), `issued_at`.
//! - `liability_nodes`: every node of every asset's sum tree, `_id` =
//!   `<size>:<asset>:<level>:<index>` (level 0 = the leaves, numbered as
//!   `SumTree::nodes`), with `hash` (base64), `sum` (atto-units, decimal integer text) and, on
//!   leaves, `user_id`. A proof is one `$in` read of its `O(log n)` siblings.
//!
//! An issuance is deterministic (balances at a position, derived salts, Ed25519), so two
//! instances issuing at the same checkpoint write identical documents: duplicates are ignored.
//! The nodes are written first and the `liabilities` document last, which is the commit point:
//! an issuance that died half-way is not served and is completed by the next attempt.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use cryptovault_events::liabilities::SumNode;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::store::codec::to_i64;
use crate::store::error::is_duplicate_key;
use crate::store::{durable_write_concern, StoreError};

pub const LIABILITIES: &str = "liabilities";
pub const LIABILITY_NODES: &str = "liability_nodes";

/// Nodes per `insert_many`.
const BATCH: usize = 5_000;

/// One issuance as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuanceRow {
    /// The checkpoint size the balances were computed at.
    #[serde(rename = "_id")]
    pub checkpoint_size: i64,
    /// Base64 of the checkpoint's root.
    pub checkpoint_root: String,
    /// The whole signed liabilities note.
    pub note: String,
    pub assets: Vec<IssuedAsset>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub issued_at: DateTime<Utc>,
}

/// One asset's line of an issuance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedAsset {
    pub asset: String,
    pub leaf_count: i64,
    /// Exact decimal text of the asset.
    pub total: String,
    /// Base64 of the sum tree's root hash.
    pub root: String,
}

/// One node to store: its asset, place, value and (leaves only) user.
pub struct NodeToStore<'a> {
    pub asset: &'a str,
    pub level: u32,
    pub index: u64,
    pub node: SumNode,
    pub user_id: Option<&'a str>,
}

/// A user's leaf in an issued tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLeaf {
    pub index: u64,
    pub node: SumNode,
}

#[derive(Clone)]
pub struct LiabilitiesStore {
    issuances: Collection<IssuanceRow>,
    nodes: Collection<Document>,
}

fn node_id(size: u64, asset: &str, level: u32, index: u64) -> String {
    format!("{size}:{asset}:{level}:{index}")
}

fn node_of(doc: &Document) -> Option<SumNode> {
    let hash = STANDARD
        .decode(doc.get_str("hash").ok()?)
        .ok()?
        .try_into()
        .ok()?;
    let sum = doc.get_str("sum").ok()?.parse().ok()?;
    Some(SumNode { hash, sum })
}

fn corrupt(id: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

impl LiabilitiesStore {
    pub fn new(db: &Database) -> Self {
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build();
        Self {
            issuances: db.collection_with_options(LIABILITIES, options.clone()),
            nodes: db.collection_with_options(LIABILITY_NODES, options),
        }
    }

    /// The index a user's leaf is found by (idempotent; issuance calls it first).
    async fn ensure_index(&self) -> Result<(), StoreError> {
        let options = IndexOptions::builder()
            .partial_filter_expression(doc! { "user_id": { "$exists": true } })
            .build();
        self.nodes
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "size": 1, "asset": 1, "user_id": 1 })
                    .options(options)
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Stores an issuance: its nodes, then the issuance itself (the commit point). Documents
    /// already there (the same issuance, written by another instance or an earlier attempt) are
    /// kept. Returns the stored issuance (the earlier one if it existed).
    pub async fn save(
        &self,
        issuance: &IssuanceRow,
        nodes: &[NodeToStore<'_>],
    ) -> Result<IssuanceRow, StoreError> {
        let size = issuance.checkpoint_size as u64;
        if let Some(existing) = self.issuance(size).await? {
            return Ok(existing);
        }
        self.ensure_index().await?;
        for chunk in nodes.chunks(BATCH) {
            let mut batch = Vec::with_capacity(chunk.len());
            for n in chunk {
                let mut d = doc! {
                    "_id": node_id(size, n.asset, n.level, n.index),
                    "size": issuance.checkpoint_size,
                    "asset": n.asset,
                    "level": i64::from(n.level),
                    "index": to_i64(n.index),
                    "hash": STANDARD.encode(n.node.hash),
                    "sum": n.node.sum.to_string(),
                };
                if let Some(user) = n.user_id {
                    d.insert("user_id", user);
                }
                batch.push(d);
            }
            match self.nodes.insert_many(&batch).ordered(false).await {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) && only_duplicates(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.issuances.insert_one(issuance).await {
            Ok(_) => Ok(issuance.clone()),
            Err(e) if is_duplicate_key(&e) => self
                .issuance(size)
                .await?
                .ok_or_else(|| corrupt(LIABILITIES, "duplicate issuance vanished")),
            Err(e) => Err(e.into()),
        }
    }

    /// The issuance at checkpoint `size`.
    pub async fn issuance(&self, size: u64) -> Result<Option<IssuanceRow>, StoreError> {
        Ok(self
            .issuances
            .find_one(doc! { "_id": to_i64(size) })
            .await?)
    }

    /// The latest issuance (largest checkpoint size).
    pub async fn latest(&self) -> Result<Option<IssuanceRow>, StoreError> {
        Ok(self
            .issuances
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .await?)
    }

    /// `user_id`'s leaf in the `asset` tree of the issuance at `size`.
    pub async fn leaf(
        &self,
        size: u64,
        asset: &str,
        user_id: &str,
    ) -> Result<Option<StoredLeaf>, StoreError> {
        let found = self
            .nodes
            .find_one(doc! { "size": to_i64(size), "asset": asset, "user_id": user_id })
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let id = found.get_str("_id").unwrap_or_default().to_owned();
        let index = found
            .get_i64("index")
            .ok()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| corrupt(&id, "no index"))?;
        let node = node_of(&found).ok_or_else(|| corrupt(&id, "no hash or sum"))?;
        Ok(Some(StoredLeaf { index, node }))
    }

    /// The nodes at `positions` (`(level, index)`) of the `asset` tree of the issuance at
    /// `size`, in that order; a missing one is an error (the issuance is damaged).
    pub async fn nodes(
        &self,
        size: u64,
        asset: &str,
        positions: &[(u32, u64)],
    ) -> Result<Vec<SumNode>, StoreError> {
        let ids: Vec<String> = positions
            .iter()
            .map(|(level, index)| node_id(size, asset, *level, *index))
            .collect();
        let mut cursor = self.nodes.find(doc! { "_id": { "$in": &ids } }).await?;
        let mut found = HashMap::new();
        while cursor.advance().await? {
            let d: Document = cursor.deserialize_current()?;
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            let node = node_of(&d).ok_or_else(|| corrupt(&id, "no hash or sum"))?;
            found.insert(id, node);
        }
        ids.iter()
            .map(|id| {
                found
                    .get(id)
                    .copied()
                    .ok_or_else(|| corrupt(id, "missing liabilities node"))
            })
            .collect()
    }
}

/// Whether every error of an unordered `insert_many` is a duplicate key (the rest was written).
fn only_duplicates(error: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    match error.kind.as_ref() {
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|w| w.code == 11000))
        }
        _ => false,
    }
}
