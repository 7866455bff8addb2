//! Session state that is not part of the event log, in MongoDB:
//!
//! - `refresh_tokens`: rotating refresh tokens, stored as SHA-256 of the token (the token itself
//!   is never stored), grouped in families (one family per login); TTL index on `expires_at`.
//! - `sessions`: one document per session (`_id` = the `sid` claim = the refresh-token family
//!   id): its user, its roles as of user-stream version `user_version`, `expires_at` (TTL) and,
//!   once it ended, `revoked_at` and `revoked_reason`. Every authenticated request reads its
//!   session here by `_id` (one primary-key read, [`Sessions::session`]): an ended, expired or
//!   unknown session refuses every access token it issued, on every instance at once. The
//!   session's `roles` are what the request may do (not the token's claim), so a revoked role
//!   applies to tokens already issued. (This replaces the per-`jti` `revoked_tokens` list of
//!   earlier versions; a database that has one keeps it until its TTL empties it.)
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
    sessions: Collection<Document>,
    totp: Collection<Document>,
}

/// What the store knows about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Live: the user and their roles (as of the last role change the session saw).
    Live { user_id: Uuid, roles: Vec<String> },
    /// Ended (logout, password change, refresh-token reuse, 2FA enabled); why.
    Ended { reason: String },
    /// Never issued, expired, or issued before session records existed.
    Unknown,
}

/// Why a session ended (`revoked_reason`; also the close reason of its sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    LoggedOut,
    PasswordChanged,
    RefreshReused,
    TwoFactorEnabled,
    /// The user's personal data was erased (`admin erase-user`): nobody logs in to it again.
    Erased,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged out",
            Self::PasswordChanged => "password changed",
            Self::RefreshReused => "refresh token reused",
            Self::TwoFactorEnabled => "two-factor authentication enabled",
            Self::Erased => "personal data erased",
        }
    }
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

fn version(user_version: u64) -> i64 {
    i64::try_from(user_version).unwrap_or(i64::MAX)
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
            sessions: db.collection_with_options("sessions", options.clone()),
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
        sessions
            .sessions
            .create_index(ttl("expires_at_ttl"))
            .await?;
        sessions
            .sessions
            .create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build())
            .await?;
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
                    if let Some(family) = known
                        .get_str("family_id")
                        .ok()
                        .and_then(|f| Uuid::parse_str(f).ok())
                    {
                        self.end_session(family, EndReason::RefreshReused).await?;
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
        // The session must still be live (one ended by a password change, 2FA or a logout
        // refuses its refresh tokens even if their own `revoked` flag was not set yet); it lives
        // as long as its newest refresh token.
        let extended = self
            .sessions
            .update_one(
                doc! {
                    "_id": family_id.to_string(),
                    "user_id": user_id.to_string(),
                    "revoked_at": null,
                    "expires_at": { "$gt": BsonDateTime::from_chrono(now) },
                },
                doc! { "$max": { "expires_at": BsonDateTime::from_chrono(expires_at) } },
            )
            .await?;
        if extended.matched_count == 0 {
            return Ok(Err(RefreshRefusal::Invalid));
        }
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

    /// Records a new live session `session_id` of `user_id` with `roles` as of user-stream
    /// version `user_version`, living until `expires_at` (extended by every rotation).
    pub async fn start_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        roles: &[&str],
        user_version: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.sessions
            .insert_one(doc! {
                "_id": session_id.to_string(),
                "user_id": user_id.to_string(),
                "roles": roles,
                "user_version": version(user_version),
                "created_at": BsonDateTime::now(),
                "expires_at": BsonDateTime::from_chrono(expires_at),
                "revoked_at": null,
                "revoked_reason": null,
            })
            .await?;
        Ok(())
    }

    /// The state of a session: one read by primary key (the per-request check of every
    /// authenticated request and the periodic check of every open `/ws/account`).
    pub async fn session(
        &self,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<SessionState, StoreError> {
        let Some(found) = self
            .sessions
            .find_one(doc! { "_id": session_id.to_string() })
            .await?
        else {
            return Ok(SessionState::Unknown);
        };
        if !matches!(found.get("revoked_at"), None | Some(bson::Bson::Null)) {
            let reason = found
                .get_str("revoked_reason")
                .unwrap_or("ended")
                .to_owned();
            return Ok(SessionState::Ended { reason });
        }
        // The TTL monitor removes expired documents only about once a minute.
        let live = found
            .get_datetime("expires_at")
            .is_ok_and(|at| at.to_chrono() > now);
        let user_id = found
            .get_str("user_id")
            .ok()
            .and_then(|u| Uuid::parse_str(u).ok());
        let (true, Some(user_id)) = (live, user_id) else {
            return Ok(SessionState::Unknown);
        };
        let roles = found
            .get_array("roles")
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(SessionState::Live { user_id, roles })
    }

    /// Ends one session and its refresh family (idempotent; the first reason stays).
    pub async fn end_session(&self, session_id: Uuid, reason: EndReason) -> Result<(), StoreError> {
        let id = session_id.to_string();
        self.sessions
            .update_one(
                doc! { "_id": &id, "revoked_at": null },
                doc! { "$set": { "revoked_at": BsonDateTime::now(), "revoked_reason": reason.as_str() } },
            )
            .await?;
        self.refresh
            .update_many(
                doc! { "family_id": &id },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    /// Ends every session of a user (and their refresh families), except `keep` if given.
    pub async fn end_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: EndReason,
    ) -> Result<(), StoreError> {
        let user = user_id.to_string();
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        self.sessions
            .update_many(
                doc! { "user_id": &user, "_id": { "$ne": &keep }, "revoked_at": null },
                doc! { "$set": { "revoked_at": BsonDateTime::now(), "revoked_reason": reason.as_str() } },
            )
            .await?;
        self.refresh
            .update_many(
                doc! { "user_id": &user, "family_id": { "$ne": &keep } },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    /// Gives every session of `user_id` that saw an older user-stream version than
    /// `user_version` the roles of that version. Never moves a session backwards, so a slow
    /// writer holding an older fold cannot undo a newer revocation.
    pub async fn sync_roles(
        &self,
        user_id: Uuid,
        roles: &[&str],
        user_version: u64,
    ) -> Result<(), StoreError> {
        let v = version(user_version);
        self.sessions
            .update_many(
                doc! { "user_id": user_id.to_string(), "user_version": { "$lt": v } },
                doc! { "$set": { "roles": roles, "user_version": v } },
            )
            .await?;
        Ok(())
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
