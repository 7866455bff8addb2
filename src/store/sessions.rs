//! Session state that is not part of the event log, in MongoDB:
//!
//! - `refresh_tokens`: rotating refresh tokens, stored as SHA-256 of the token (the token itself
//!   is never stored), grouped in families (one family per login); TTL index on `expires_at`.
//! - `revoked_tokens`: ids (`jti`) of access tokens revoked before their expiry (logout); TTL
//!   index on `expires_at`, so an entry lives exactly as long as the token could.
//! - `totp_secrets`: TOTP secrets (kept out of the immutable log so that they can be deleted)
//!   and the last time step whose code was accepted (a code is accepted once).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bson::{doc, DateTime as BsonDateTime, Document};
use chrono::{DateTime, Utc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{durable_write_concern, StoreError};

#[derive(Clone)]
pub struct Sessions {
    refresh: Collection<Document>,
    revoked: Collection<Document>,
    totp: Collection<Document>,
}

/// Why a refresh token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Unknown, expired or revoked.
    Invalid,
    /// Already rotated: presented a second time. The whole family is now revoked.
    Reused,
}

/// A rotated (or newly issued) refresh token and whose it is.
pub struct RefreshGrant {
    pub token: String,
    pub user_id: Uuid,
    pub family_id: Uuid,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    /// Opens the collections and creates their indexes (idempotent).
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build();
        let sessions = Self {
            refresh: db.collection_with_options("refresh_tokens", options.clone()),
            revoked: db.collection_with_options("revoked_tokens", options.clone()),
            totp: db.collection_with_options("totp_secrets", options),
        };
        let ttl = |name: &str| {
            IndexModel::builder()
                .keys(doc! { "expires_at": 1 })
                .options(
                    IndexOptions::builder()
                        .expire_after(std::time::Duration::ZERO)
                        .name(name.to_owned())
                        .build(),
                )
                .build()
        };
        sessions.refresh.create_index(ttl("expires_at_ttl")).await?;
        sessions
            .refresh
            .create_index(IndexModel::builder().keys(doc! { "family_id": 1 }).build())
            .await?;
        sessions
            .refresh
            .create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build())
            .await?;
        sessions.revoked.create_index(ttl("expires_at_ttl")).await?;
        Ok(sessions)
    }

    /// Issues a refresh token in `family_id`, valid until `expires_at`.
    pub async fn issue_refresh(
        &self,
        user_id: Uuid,
        family_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<RefreshGrant, StoreError> {
        let secret: [u8; 32] = rand::random();
        let token = URL_SAFE_NO_PAD.encode(secret);
        self.refresh
            .insert_one(doc! {
                "_id": token_hash(&token),
                "user_id": user_id.to_string(),
                "family_id": family_id.to_string(),
                "expires_at": BsonDateTime::from_chrono(expires_at),
                "created_at": BsonDateTime::now(),
                "used_at": null,
                "revoked": false,
            })
            .await?;
        Ok(RefreshGrant {
            token,
            user_id,
            family_id,
        })
    }

    /// Consumes `token` and issues its successor in the same family. Presenting a token that
    /// was already consumed revokes the family (a stolen token and its rightful owner cannot
    /// both keep the session).
    pub async fn rotate_refresh(
        &self,
        token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Result<RefreshGrant, RefreshRefusal>, StoreError> {
        let id = token_hash(token);
        let consumed = self
            .refresh
            .find_one_and_update(
                doc! {
                    "_id": &id,
                    "used_at": null,
                    "revoked": false,
                    "expires_at": { "$gt": BsonDateTime::from_chrono(now) },
                },
                doc! { "$set": { "used_at": BsonDateTime::from_chrono(now) } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        let Some(consumed) = consumed else {
            let known = self.refresh.find_one(doc! { "_id": &id }).await?;
            if let Some(known) = known {
                if !matches!(known.get("used_at"), None | Some(bson::Bson::Null)) {
                    if let Ok(family) = known.get_str("family_id") {
                        self.revoke_family_by_str(family).await?;
                    }
                    return Ok(Err(RefreshRefusal::Reused));
                }
            }
            return Ok(Err(RefreshRefusal::Invalid));
        };
        let parse = |field: &str| {
            consumed
                .get_str(field)
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let (Some(user_id), Some(family_id)) = (parse("user_id"), parse("family_id")) else {
            return Ok(Err(RefreshRefusal::Invalid));
        };
        self.issue_refresh(user_id, family_id, expires_at)
            .await
            .map(Ok)
    }

    /// The family a refresh token belongs to, if the token is known.
    pub async fn family_of(&self, token: &str) -> Result<Option<Uuid>, StoreError> {
        let found = self
            .refresh
            .find_one(doc! { "_id": token_hash(token) })
            .await?;
        Ok(found
            .and_then(|d| d.get_str("family_id").ok().map(str::to_owned))
            .and_then(|s| Uuid::parse_str(&s).ok()))
    }

    pub async fn revoke_family(&self, family_id: Uuid) -> Result<(), StoreError> {
        self.revoke_family_by_str(&family_id.to_string()).await
    }

    async fn revoke_family_by_str(&self, family_id: &str) -> Result<(), StoreError> {
        self.refresh
            .update_many(
                doc! { "family_id": family_id },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    /// Revokes every refresh token of a user (after a password change).
    pub async fn revoke_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.refresh
            .update_many(
                doc! { "user_id": user_id.to_string() },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    /// Revokes one access token until its own expiry.
    pub async fn revoke_access(
        &self,
        jti: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.revoked
            .update_one(
                doc! { "_id": jti.to_string() },
                doc! { "$setOnInsert": { "expires_at": BsonDateTime::from_chrono(expires_at) } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    pub async fn is_access_revoked(&self, jti: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .revoked
            .find_one(doc! { "_id": jti.to_string() })
            .await?
            .is_some())
    }

    /// Stores a pending (unconfirmed) TOTP secret for the user, replacing an earlier pending one.
    pub async fn put_pending_totp(&self, user_id: Uuid, secret: &str) -> Result<(), StoreError> {
        self.totp
            .replace_one(
                doc! { "_id": user_id.to_string() },
                doc! { "_id": user_id.to_string(), "secret": secret, "confirmed": false },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The user's TOTP secret and whether it was confirmed.
    pub async fn totp_secret(&self, user_id: Uuid) -> Result<Option<(String, bool)>, StoreError> {
        let found = self
            .totp
            .find_one(doc! { "_id": user_id.to_string() })
            .await?;
        Ok(found.and_then(|d| {
            let secret = d.get_str("secret").ok()?.to_owned();
            Some((secret, d.get_bool("confirmed").unwrap_or(false)))
        }))
    }

    /// Records that the code of time step `step` was used. False when this step or a later one
    /// was used already (a replayed code) or the user has no secret. Atomic: of two concurrent
    /// uses of one code exactly one gets true.
    pub async fn use_totp_step(&self, user_id: Uuid, step: u64) -> Result<bool, StoreError> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let used = self
            .totp
            .update_one(
                doc! {
                    "_id": user_id.to_string(),
                    "$or": [{ "last_step": { "$exists": false } }, { "last_step": { "$lt": step } }],
                },
                doc! { "$set": { "last_step": step } },
            )
            .await?;
        Ok(used.modified_count == 1)
    }

    pub async fn confirm_totp(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.totp
            .update_one(
                doc! { "_id": user_id.to_string() },
                doc! { "$set": { "confirmed": true } },
            )
            .await?;
        Ok(())
    }

    pub async fn delete_totp(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.totp
            .delete_one(doc! { "_id": user_id.to_string() })
            .await?;
        Ok(())
    }
}
