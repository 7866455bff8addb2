//! `personal_keys`: the data key of each data subject (`_id` = key id: a user id, or
//! `unknown-YYYY-MM` for login attempts on unknown addresses; `key`: 32 random bytes;
//! `created_at`). Every personal field of an identity event is sealed under its subject's key
//! (`crate::privacy`); erasing the key shreds them all. Kept out of the log on purpose:
//! this collection is the one place that must be deletable. An erased key leaves a tombstone
//! (`erased_at`, no `key`), so a command that raced with the erasure never creates the key
//! again: whatever it seals then is sealed under bytes nobody stored.

use std::collections::HashMap;

use bson::{doc, spec::BinarySubtype, Binary, DateTime as BsonDateTime, Document};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use crate::privacy::DataKey;
use crate::store::{durable_write_concern, StoreError};

pub const PERSONAL_KEYS: &str = "personal_keys";

#[derive(Clone)]
pub struct PersonalKeys {
    collection: Collection<Document>,
}

fn key_of(id: &str, document: &Document) -> Option<DataKey> {
    let binary = document.get_binary_generic("key").ok()?;
    let bytes: [u8; 32] = binary.as_slice().try_into().ok()?;
    Some(DataKey::new(id.to_owned(), bytes))
}

impl PersonalKeys {
    pub fn open(db: &Database) -> Self {
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build();
        Self {
            collection: db.collection_with_options(PERSONAL_KEYS, options),
        }
    }

    /// The key `id`, created (durably) with fresh random bytes if it does not exist; of two
    /// concurrent creations both get the one stored.
    pub async fn get_or_create(&self, id: &str) -> Result<DataKey, StoreError> {
        if let Some(key) = self.get(id).await? {
            return Ok(key);
        }
        let fresh = DataKey::generate(id.to_owned());
        let stored = self
            .collection
            .find_one_and_update(
                doc! { "_id": id },
                doc! { "$setOnInsert": {
                    "key": Binary { subtype: BinarySubtype::Generic, bytes: fresh.bytes().to_vec() },
                    "created_at": BsonDateTime::now(),
                } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        Ok(stored.as_ref().and_then(|d| key_of(id, d)).unwrap_or(fresh))
    }

    /// The key `id`, `None` if it never existed or was erased.
    pub async fn get(&self, id: &str) -> Result<Option<DataKey>, StoreError> {
        let found = self.collection.find_one(doc! { "_id": id }).await?;
        Ok(found.and_then(|d| key_of(id, &d)))
    }

    /// The keys of `ids` that exist.
    pub async fn get_many(&self, ids: &[String]) -> Result<HashMap<String, DataKey>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let documents: Vec<Document> = self
            .collection
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .iter()
            .filter_map(|d| {
                let id = d.get_str("_id").ok()?;
                Some((id.to_owned(), key_of(id, d)?))
            })
            .collect())
    }

    /// Erases the key `id` (shreds everything sealed under it), leaving a tombstone; whether a
    /// key existed.
    pub async fn erase(&self, id: &str) -> Result<bool, StoreError> {
        let before = self
            .collection
            .find_one_and_update(
                doc! { "_id": id },
                doc! { "$unset": { "key": "" }, "$set": { "erased_at": BsonDateTime::now() } },
            )
            .upsert(true)
            .return_document(ReturnDocument::Before)
            .await?;
        Ok(before.is_some_and(|d| d.contains_key("key")))
    }

    /// Whether the key `id` was erased.
    pub async fn is_erased(&self, id: &str) -> Result<bool, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "_id": id, "erased_at": { "$exists": true } })
            .await?;
        Ok(found.is_some())
    }
}
