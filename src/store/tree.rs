//! The log's Merkle tree and its signed checkpoints in MongoDB (issue 16).
//!
//! - `merkle_subtrees`: one document per **perfect, aligned subtree of at least
//!   [`LOWEST_STORED_LEVEL`]** (16 leaves) the tree has completed, `{_id: {level, index}, hash}`
//!   (`index` counts subtrees of that level from the left; `hash` is 32 bytes). A subtree's
//!   hash never changes once its last leaf is appended, so documents are only ever inserted;
//!   an insert that meets an existing document compares the two and reports a different one
//!   ([`Extended::Diverged`]). About `n / 8` documents for `n` events. **Smaller subtrees are
//!   not stored:** their leaves are the events' chain hashes, so [`TreeStore::subtrees`]
//!   computes them from the `hash` field of at most 15 events each (the events of one stored
//!   subtree's width). Any proof reads `O(log n)` documents and at most `2 · 15` event hashes
//!   per leaf it proves, in two queries; issue 16's benchmark shows what the ~2 inserts per
//!   event cost when every level was stored.
//! - `merkle_state`: `{_id: "tree", generation, size, last_hash}`: how many leaves the stored
//!   subtrees of this generation cover and the chain hash of the last one. It only moves
//!   forward, after the subtrees it covers are stored; a rebuild starts a new generation. The
//!   notary never signs on its word: it extends its own tree from a verified checkpoint by
//!   reading events.
//! - `log_checkpoints`: `{_id: size, root, note, key_id, issued_at}`, every signed checkpoint
//!   (the note is the whole C2SP signed note). Inserted, never changed.
//!
//! The tree is a pure function of the log: [`TreeStore::clear_tree`] drops it (not the
//! checkpoints) and the notary rebuilds it from position 1.

use std::collections::BTreeMap;

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use chrono::{DateTime, Utc};
use cryptovault_events::merkle::{self, CompletedSubtree, Hash, Subtree, HASH_SIZE};
use futures::TryStreamExt;
use mongodb::options::{InsertManyOptions, ReadConcern};
use mongodb::{Collection, Database};

use super::codec::{to_i64, to_u64};
use super::error::is_duplicate_key;
use super::{durable_write_concern, StoreError};

pub const SUBTREES: &str = "merkle_subtrees";
pub const TREE_STATE: &str = "merkle_state";
pub const CHECKPOINTS: &str = "log_checkpoints";

/// The lowest level stored in `merkle_subtrees` (subtrees of `2^4 = 16` leaves); the levels
/// below are computed from the events' hashes when a proof needs them.
pub const LOWEST_STORED_LEVEL: u32 = 4;

/// Whether `subtree` is one `merkle_subtrees` holds.
pub fn is_stored(subtree: &Subtree) -> bool {
    subtree.level() >= LOWEST_STORED_LEVEL
}

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

/// The stored progress record: which generation of the tree (a rebuild starts a new one) and
/// how far its subtrees are stored. **Not trusted** by the notary for signing (an attacker
/// with database access can write it); it only tells where stored subtrees end and when a
/// rebuild began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeState {
    /// Empty for the first generation; a new random id per `clear_tree`.
    pub generation: String,
    pub head: TreeHead,
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

/// What [`TreeStore::store_subtrees`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// Every subtree is stored, with the computed hash.
    Done,
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
    /// The log, for the hashes of the levels not stored.
    events: Collection<Document>,
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
            events: db.collection(super::schema::EVENTS),
            subtrees: db.collection(SUBTREES),
            state: db.collection(TREE_STATE),
            checkpoints: db.collection(CHECKPOINTS),
        }
    }

    /// The stored progress record (generation `""`, size 0 when nothing is stored).
    pub async fn state(&self) -> Result<TreeState, StoreError> {
        let found = self.state.find_one(doc! { "_id": TREE_ID }).await?;
        let genesis = || cryptovault_events::GENESIS_HASH.to_owned();
        Ok(match found {
            Some(state) => TreeState {
                generation: state.get_str("generation").unwrap_or("").to_owned(),
                head: TreeHead {
                    size: to_u64(state.get_i64("size").unwrap_or(0)),
                    last_hash: state
                        .get_str("last_hash")
                        .map_or_else(|_| genesis(), str::to_owned),
                },
            },
            None => TreeState {
                generation: String::new(),
                head: TreeHead {
                    size: 0,
                    last_hash: genesis(),
                },
            },
        })
    }

    /// Where the stored subtrees end (see [`Self::state`]).
    pub async fn head(&self) -> Result<TreeHead, StoreError> {
        Ok(self.state().await?.head)
    }

    /// The hashes of `wanted` that can be had (missing ones are left out): those of at least
    /// [`LOWEST_STORED_LEVEL`] from `merkle_subtrees`, the smaller ones computed from the
    /// stored `hash` of the events they cover (leaf `i` is the event at position `i + 1`).
    /// Neither is trusted: a proof built from them is checked against a signed root before it
    /// is served or relied on, and a changed event hash shows as a proof that does not verify.
    pub async fn subtrees(
        &self,
        wanted: &[Subtree],
    ) -> Result<BTreeMap<Subtree, Hash>, StoreError> {
        let (stored, computed): (Vec<Subtree>, Vec<Subtree>) =
            wanted.iter().partition(|s| is_stored(s));
        let mut found = self.stored_subtrees(&stored).await?;
        found.extend(self.computed_subtrees(&computed).await?);
        Ok(found)
    }

    /// The documents of `wanted` in `merkle_subtrees`, in one query.
    async fn stored_subtrees(
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

    /// The small subtrees `wanted`, folded from their events' stored hashes (one query); a
    /// subtree with a missing event or an unreadable hash is left out.
    async fn computed_subtrees(
        &self,
        wanted: &[Subtree],
    ) -> Result<BTreeMap<Subtree, Hash>, StoreError> {
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let positions: std::collections::BTreeSet<i64> = wanted
            .iter()
            .flat_map(|s| s.start() + 1..=s.end())
            .map(to_i64)
            .collect();
        let documents: Vec<Document> = self
            .events
            .find(doc! { "position": { "$in": positions.into_iter().collect::<Vec<_>>() } })
            .projection(doc! { "_id": 0, "position": 1, "hash": 1 })
            .await?
            .try_collect()
            .await?;
        let leaves: BTreeMap<u64, Hash> = documents
            .iter()
            .filter_map(|d| {
                let position = to_u64(d.get_i64("position").ok()?);
                let leaf = cryptovault_events::bundle::event_leaf(d.get_str("hash").ok()?)?;
                Some((position.checked_sub(1)?, merkle::leaf_hash(&leaf)))
            })
            .collect();
        Ok(wanted
            .iter()
            .filter_map(|s| {
                let hashes: Option<Vec<Hash>> = (s.start()..s.end())
                    .map(|i| leaves.get(&i).copied())
                    .collect();
                Some((*s, merkle::root(&hashes?)))
            })
            .collect())
    }

    /// Stores those of `completed` (subtrees computed from the log) that are of a stored level
    /// ([`is_stored`]; the rest are dropped). A subtree stored already (by
    /// another process, or an earlier attempt) must have the very same hash: a different one
    /// is returned as [`Extended::Diverged`] and nothing is overwritten.
    pub async fn store_subtrees(
        &self,
        completed: &[CompletedSubtree],
    ) -> Result<Extended, StoreError> {
        let completed: Vec<&CompletedSubtree> =
            completed.iter().filter(|c| is_stored(&c.subtree)).collect();
        if completed.is_empty() {
            return Ok(Extended::Done);
        }
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
        let Err(error) = inserted else {
            return Ok(Extended::Done);
        };
        if !is_duplicate_key(&error) {
            return Err(error.into());
        }
        let wanted: Vec<Subtree> = completed.iter().map(|c| c.subtree).collect();
        let stored = self.stored_subtrees(&wanted).await?;
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
                // Deleted meanwhile (a rebuild began): the next generation stores it again.
                None => {}
            }
        }
        Ok(Extended::Done)
    }

    /// Records that the subtrees of generation `generation` are stored up to `to` (never moves
    /// back; a record of another generation is left alone).
    pub async fn advance(&self, generation: &str, to: &TreeHead) -> Result<(), StoreError> {
        let moved = self
            .state
            .update_one(
                doc! { "_id": TREE_ID, "generation": generation, "size": { "$lt": to_i64(to.size) } },
                doc! { "$set": { "size": to_i64(to.size), "last_hash": &to.last_hash } },
            )
            .upsert(true)
            .await;
        match moved {
            Ok(_) => Ok(()),
            // The record is ahead, or of another generation: nothing to do.
            Err(error) if is_duplicate_key(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Drops the tree (not the checkpoints) and starts a new generation: every notary then
    /// rebuilds it from position 1. The subtrees go first, the new generation last, so no
    /// subtree of the rebuild is deleted.
    pub async fn clear_tree(&self) -> Result<(), StoreError> {
        self.subtrees.delete_many(doc! {}).await?;
        self.state
            .replace_one(
                doc! { "_id": TREE_ID },
                doc! {
                    "_id": TREE_ID,
                    "generation": uuid::Uuid::now_v7().to_string(),
                    "size": 0_i64,
                    "last_hash": cryptovault_events::GENESIS_HASH,
                },
            )
            .upsert(true)
            .await?;
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
