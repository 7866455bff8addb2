//! The log's Merkle tree and its signed checkpoints in MongoDB (issue 16).
//!
//! - `merkle_subtrees`: one document per **perfect, aligned subtree** the tree has completed,
//!   `{_id: {level, index}, hash}` (level 0 = the leaves; `index` counts subtrees of that level
//!   from the left; `hash` is 32 bytes). A subtree's hash never changes once its last leaf is
//!   appended, so documents are only ever inserted; an insert that meets an existing document
//!   compares the two and reports a different one ([`Extended::Diverged`]). About `2n`
//!   documents for `n` events; any proof reads `O(log n)` of them in one query.
//! - `merkle_state`: `{_id: "tree", size, last_hash}`: how many leaves the stored subtrees
//!   cover and the chain hash of the last one (the next event's expected `prev_hash`). It only
//!   moves forward, by compare-and-set, after the subtrees it covers are stored.
//! - `log_checkpoints`: `{_id: size, root, note, key_id, issued_at}`, every signed checkpoint
//!   (the note is the whole C2SP signed note). Inserted, never changed.
//!
//! The tree is a pure function of the log: [`TreeStore::clear_tree`] drops it (not the
//! checkpoints) and the notary rebuilds it from position 1.

use std::collections::BTreeMap;

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use chrono::{DateTime, Utc};
use cryptovault_events::merkle::{CompletedSubtree, Hash, Subtree, HASH_SIZE};
use futures::TryStreamExt;
use mongodb::options::{InsertManyOptions, ReadConcern};
use mongodb::{Collection, Database};

use super::codec::{to_i64, to_u64};
use super::error::is_duplicate_key;
use super::{durable_write_concern, StoreError};

pub const SUBTREES: &str = "merkle_subtrees";
pub const TREE_STATE: &str = "merkle_state";
pub const CHECKPOINTS: &str = "log_checkpoints";

const TREE_ID: &str = "tree";

/// Where the stored tree ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// Leaves covered (= the log position of the last one).
    pub size: u64,
    /// Hex chain hash of the event at position `size` ([`cryptovault_events::GENESIS_HASH`]
    /// for the empty tree).
    pub last_hash: String,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The whole signed note (C2SP signed-note text).
    pub note: String,
    pub issued_at: DateTime<Utc>,
}

/// What [`TreeStore::extend`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// The stored tree now ends at the new head.
    Done,
    /// The stored head was no longer `from` (another process extended or cleared the tree);
    /// nothing moved. The subtrees written are correct for the log and stay.
    Moved,
    /// A stored subtree has another hash than the one computed from the log: the store holds
    /// a tree of a different history (damage or tampering). Nothing moved.
    Diverged {
        subtree: Subtree,
        stored: Hash,
        computed: Hash,
    },
}

/// What [`TreeStore::insert_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A checkpoint of this size was stored already (by another process): it is returned.
    Existing(StoredCheckpoint),
}

/// The three collections. Cheap to clone.
#[derive(Clone)]
pub struct TreeStore {
    subtrees: Collection<Document>,
    state: Collection<Document>,
    checkpoints: Collection<Document>,
}

impl TreeStore {
    /// The tree's collections in `db`, read at majority and written durably.
    pub fn new(db: &Database) -> Self {
        let db = db.client().database_with_options(
            db.name(),
            mongodb::options::DatabaseOptions::builder()
                .read_concern(ReadConcern::majority())
                .write_concern(durable_write_concern())
                .build(),
        );
        Self {
            subtrees: db.collection(SUBTREES),
            state: db.collection(TREE_STATE),
            checkpoints: db.collection(CHECKPOINTS),
        }
    }

    /// The stored head (size 0 when nothing is stored).
    pub async fn head(&self) -> Result<TreeHead, StoreError> {
        let found = self.state.find_one(doc! { "_id": TREE_ID }).await?;
        Ok(match found {
            Some(state) => TreeHead {
                size: to_u64(state.get_i64("size").unwrap_or(0)),
                last_hash: state
                    .get_str("last_hash")
                    .unwrap_or(cryptovault_events::GENESIS_HASH)
                    .to_owned(),
            },
            None => TreeHead {
                size: 0,
                last_hash: cryptovault_events::GENESIS_HASH.to_owned(),
            },
        })
    }

    /// The stored hashes of `wanted` (those that exist), in one query.
    pub async fn subtrees(
        &self,
        wanted: &[Subtree],
    ) -> Result<BTreeMap<Subtree, Hash>, StoreError> {
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<Bson> = wanted
            .iter()
            .map(|s| Bson::Document(subtree_id(s)))
            .collect();
        let documents: Vec<Document> = self
            .subtrees
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?;
        let mut found = BTreeMap::new();
        for document in documents {
            let (subtree, hash) = decode_subtree(&document)?;
            found.insert(subtree, hash);
        }
        Ok(found)
    }

    /// Stores `completed` (the subtrees the leaves `from.size + 1 ..= to.size` completed), then
    /// moves the head from `from` to `to` if it still is `from`.
    pub async fn extend(
        &self,
        from: &TreeHead,
        to: &TreeHead,
        completed: &[CompletedSubtree],
    ) -> Result<Extended, StoreError> {
        if !completed.is_empty() {
            let documents = completed.iter().map(|c| {
                let mut document = doc! { "_id": subtree_id(&c.subtree) };
                document.insert("hash", binary(&c.hash));
                document
            });
            let inserted = self
                .subtrees
                .insert_many(documents)
                .with_options(InsertManyOptions::builder().ordered(false).build())
                .await;
            if let Err(error) = inserted {
                if !is_duplicate_key(&error) {
                    return Err(error.into());
                }
                // Some were stored already (another process, or an earlier attempt of ours):
                // they must be the very same hashes.
                let wanted: Vec<Subtree> = completed.iter().map(|c| c.subtree).collect();
                let stored = self.subtrees(&wanted).await?;
                for c in completed {
                    match stored.get(&c.subtree) {
                        Some(hash) if *hash == c.hash => {}
                        Some(hash) => {
                            return Ok(Extended::Diverged {
                                subtree: c.subtree,
                                stored: *hash,
                                computed: c.hash,
                            })
                        }
                        // Not stored although the insert failed for a duplicate: retry later.
                        None => {
                            return Err(StoreError::Unavailable(format!(
                                "subtree {} was not stored",
                                c.subtree
                            )))
                        }
                    }
                }
            }
        }
        let filter = if from.size == 0 {
            doc! { "_id": TREE_ID, "size": { "$in": [0_i64, Bson::Null] } }
        } else {
            doc! { "_id": TREE_ID, "size": to_i64(from.size) }
        };
        let moved = self
            .state
            .update_one(
                filter,
                doc! { "$set": { "size": to_i64(to.size), "last_hash": &to.last_hash } },
            )
            .upsert(from.size == 0)
            .await;
        match moved {
            Ok(result) if result.matched_count == 1 || result.upserted_id.is_some() => {
                Ok(Extended::Done)
            }
            Ok(_) => Ok(Extended::Moved),
            Err(error) if is_duplicate_key(&error) => Ok(Extended::Moved),
            Err(error) => Err(error.into()),
        }
    }

    /// Drops the tree (not the checkpoints): the notary rebuilds it from the log.
    pub async fn clear_tree(&self) -> Result<(), StoreError> {
        self.state.delete_many(doc! {}).await?;
        self.subtrees.delete_many(doc! {}).await?;
        Ok(())
    }

    /// The checkpoint with the largest size, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let found = self
            .checkpoints
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .await?;
        found.map(|d| decode_checkpoint(&d)).transpose()
    }

    /// The checkpoint of exactly `size` leaves, if one was signed.
    pub async fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let found = self
            .checkpoints
            .find_one(doc! { "_id": to_i64(size) })
            .await?;
        found.map(|d| decode_checkpoint(&d)).transpose()
    }

    /// The smallest checkpoint of at least `size` leaves, if any.
    pub async fn checkpoint_covering(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let found = self
            .checkpoints
            .find_one(doc! { "_id": { "$gte": to_i64(size) } })
            .sort(doc! { "_id": 1 })
            .await?;
        found.map(|d| decode_checkpoint(&d)).transpose()
    }

    /// Checkpoints newest first, those below `before` (all when `None`), at most `limit`.
    pub async fn checkpoints(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let filter = match before {
            Some(size) => doc! { "_id": { "$lt": to_i64(size) } },
            None => doc! {},
        };
        let documents: Vec<Document> = self
            .checkpoints
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        documents.iter().map(decode_checkpoint).collect()
    }

    /// Stores a signed checkpoint unless one of its size exists (then returns that one).
    pub async fn insert_checkpoint(
        &self,
        checkpoint: &StoredCheckpoint,
        key_id: u32,
    ) -> Result<Inserted, StoreError> {
        let mut document = doc! { "_id": to_i64(checkpoint.size) };
        document.insert("root", binary(&checkpoint.root));
        document.insert("note", &checkpoint.note);
        document.insert("key_id", format!("{key_id:08x}"));
        document.insert(
            "issued_at",
            bson::DateTime::from_chrono(checkpoint.issued_at),
        );
        match self.checkpoints.insert_one(document).await {
            Ok(_) => Ok(Inserted::New),
            Err(error) if is_duplicate_key(&error) => {
                match self.checkpoint(checkpoint.size).await? {
                    Some(existing) => Ok(Inserted::Existing(existing)),
                    None => Err(StoreError::Unavailable(
                        "a checkpoint insert met a duplicate that cannot be read".into(),
                    )),
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn subtree_id(subtree: &Subtree) -> Document {
    doc! {
        "level": i64::from(subtree.level()),
        "index": to_i64(subtree.index_in_level()),
    }
}

fn binary(hash: &Hash) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: hash.to_vec(),
    }
}

fn hash_field(document: &Document, field: &str) -> Result<Hash, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("{:?}", document.get("_id")),
        reason,
    };
    let bytes = document
        .get_binary_generic(field)
        .map_err(|e| corrupt(format!("{field}: {e}")))?;
    <[u8; HASH_SIZE]>::try_from(bytes.as_slice())
        .map_err(|_| corrupt(format!("{field} is {} bytes, not {HASH_SIZE}", bytes.len())))
}

fn decode_subtree(document: &Document) -> Result<(Subtree, Hash), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("{:?}", document.get("_id")),
        reason,
    };
    let id = document
        .get_document("_id")
        .map_err(|e| corrupt(e.to_string()))?;
    let level = id.get_i64("level").map_err(|e| corrupt(e.to_string()))?;
    let index = id.get_i64("index").map_err(|e| corrupt(e.to_string()))?;
    let level = u32::try_from(level)
        .ok()
        .filter(|l| *l < 64)
        .ok_or_else(|| corrupt(format!("level {level}")))?;
    let size = 1u64 << level;
    let start = to_u64(index)
        .checked_mul(size)
        .ok_or_else(|| corrupt(format!("index {index}")))?;
    let subtree = Subtree::new(start, size).map_err(|e| corrupt(e.to_string()))?;
    Ok((subtree, hash_field(document, "hash")?))
}

fn decode_checkpoint(document: &Document) -> Result<StoredCheckpoint, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("{:?}", document.get("_id")),
        reason,
    };
    Ok(StoredCheckpoint {
        size: to_u64(
            document
                .get_i64("_id")
                .map_err(|e| corrupt(e.to_string()))?,
        ),
        root: hash_field(document, "root")?,
        note: document
            .get_str("note")
            .map_err(|e| corrupt(e.to_string()))?
            .to_owned(),
        issued_at: document
            .get_datetime("issued_at")
            .map_err(|e| corrupt(e.to_string()))?
            .to_chrono(),
    })
}
