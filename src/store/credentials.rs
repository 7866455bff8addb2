//! `credentials`: password hashes, kept out of the immutable log so that they can be deleted.
//!
//! One document per credential: `_id` (the credential id the user's `UserRegistered` /
//! `PasswordChanged` event names), `user_id`, `hash` (argon2id PHC string), `created_at`.
//! A credential is written (durably) **before** the event that names it is appended; the event
//! is the commit point. A credential whose append failed is never named by any event (an
//! orphan) and may be deleted at any time.

use bson::{doc, DateTime as BsonDateTime, Document};
use mongodb::{Collection, Database, IndexModel};
use uuid::Uuid;

use crate::store::{durable_write_concern, StoreError};

pub const CREDENTIALS: &str = "credentials";

#[derive(Clone)]
pub struct Credentials {
    collection: Collection<Document>,
}

impl Credentials {
    /// Opens the collection and creates its index (idempotent).
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build();
        let collection = db.collection_with_options(CREDENTIALS, options);
        collection
            .create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build())
            .await?;
        Ok(Self { collection })
    }

    /// Stores `hash` as credential `credential_id` of `user_id` (majority, journaled).
    pub async fn insert(
        &self,
        user_id: Uuid,
        credential_id: Uuid,
        hash: &str,
    ) -> Result<(), StoreError> {
        self.collection
            .insert_one(doc! {
                "_id": credential_id.to_string(),
                "user_id": user_id.to_string(),
                "hash": hash,
                "created_at": BsonDateTime::now(),
            })
            .await?;
        Ok(())
    }

    /// The hash of credential `credential_id` if it exists and belongs to `user_id`.
    pub async fn hash(
        &self,
        user_id: Uuid,
        credential_id: Uuid,
    ) -> Result<Option<String>, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "_id": credential_id.to_string(), "user_id": user_id.to_string() })
            .await?;
        Ok(found.and_then(|d| d.get_str("hash").ok().map(str::to_owned)))
    }

    /// Deletes every credential of `user_id`; returns how many there were.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let deleted = self
            .collection
            .delete_many(doc! { "user_id": user_id.to_string() })
            .await?;
        Ok(deleted.deleted_count)
    }
}
