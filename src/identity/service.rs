//! Identity commands: load the streams a decision needs, decide (pure rules in `domain`),
//! append, and manage sessions. HTTP handlers and the CLI call these; nothing here knows HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cryptovault_events::identity::{
    email_stream, logins_stream, user_stream, Credential, EmailClaimed, IdentityEvent, LoginFailed,
    LoginSucceeded, UserRegistered,
};
use cryptovault_events::{DomainEvent, EventFamily, EventMetadata, NewEvent};
use uuid::Uuid;

use super::domain::{
    locked_until, Attempt, DisplayName, Email, InvalidInput, LockoutPolicy, Password, Role,
    UserState,
};
use super::tokens::{AccessTokens, Claims};
use super::{password, totp};
use crate::store::credentials::Credentials;
use crate::store::sessions::{RefreshGrant, RefreshRefusal, Sessions};
use crate::store::{AppendBatch, AppendError, EventStore, ExpectedVersion};

/// Why an identity command was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("this email address is already registered")]
    EmailTaken,
    /// Same answer for an unknown address and a wrong password.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("two-factor authentication is enabled: totp_code is required")]
    TotpRequired,
    #[error("totp_code is not valid")]
    InvalidTotp,
    #[error("account locked after repeated failed logins; retry in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    #[error("refresh token is invalid or expired")]
    InvalidRefresh,
    #[error("refresh token was already used; the session has been revoked")]
    RefreshReused,
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("user not found")]
    UnknownUser,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<super::domain::UserRefusal> for IdentityError {
    fn from(refusal: super::domain::UserRefusal) -> Self {
        Self::InvalidState(refusal.0)
    }
}

impl From<crate::store::StoreError> for IdentityError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// Who is asking, for event metadata and login records.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub(super) fn metadata(&self, actor: Option<String>) -> EventMetadata {
        EventMetadata {
            request_id: self.request_id.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: None,
            actor,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// An issued session: access token (with its claims) and refresh token.
pub struct Session {
    pub access_token: String,
    pub claims: Claims,
    pub refresh: RefreshGrant,
}

#[derive(Clone)]
pub struct IdentitySettings {
    pub lockout: LockoutPolicy,
    pub refresh_ttl: Duration,
}

#[derive(Clone)]
pub struct Identity {
    store: EventStore,
    pub sessions: Sessions,
    /// Password hashes, outside the log (`Self::check_password`, `Self::new_credential`).
    credentials: Credentials,
    pub tokens: AccessTokens,
    settings: IdentitySettings,
    /// Address → user id. An `EmailClaimed` is never undone, so a found owner stays right
    /// forever; unknown addresses are not cached (they may be claimed any moment).
    owners: Arc<Mutex<HashMap<String, Uuid>>>,
}

/// Addresses remembered before the owner cache starts afresh.
const OWNER_CACHE_LIMIT: usize = 100_000;

/// Login attempts read to decide a lockout.
const LOGIN_HISTORY: usize = 64;
/// Retries of a user-stream update that lost an optimistic-concurrency race.
const CONFLICT_RETRIES: usize = 8;

pub(super) fn event<E: DomainEvent>(e: E, metadata: EventMetadata) -> NewEvent {
    e.into_new_event(Uuid::now_v7(), Utc::now(), metadata)
}

impl Identity {
    pub fn new(
        store: EventStore,
        sessions: Sessions,
        credentials: Credentials,
        tokens: AccessTokens,
        settings: IdentitySettings,
    ) -> Self {
        Self {
            store,
            sessions,
            credentials,
            tokens,
            settings,
            owners: Arc::default(),
        }
    }

    /// Registers a user. The address is claimed in the same atomic append as the registration,
    /// with "stream must not exist": of two concurrent signups for one address exactly one wins.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        name: &str,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let email = Email::parse(email, "email")?;
        let password = Password::parse(password, "password")?;
        let name = DisplayName::parse(name, "name")?;
        if self.user_id_by_email(&email).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        let user_id = Uuid::now_v7();
        let credential_id = self.new_credential(user_id, password.expose()).await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        let batch = AppendBatch::single(
            email_stream(email.as_str()),
            ExpectedVersion::NoStream,
            vec![event(
                EmailClaimed {
                    user_id,
                    email: email.as_str().to_owned(),
                },
                metadata.clone(),
            )],
        )
        .with(
            user_stream(user_id),
            ExpectedVersion::NoStream,
            vec![event(
                UserRegistered {
                    user_id,
                    email: email.as_str().to_owned(),
                    name: name.as_str().to_owned(),
                    credential: Credential::Stored { credential_id },
                    roles: vec![Role::User.as_str().to_owned()],
                },
                metadata,
            )],
        );
        match self.store.append(batch).await {
            Ok(_) => self.user(user_id).await,
            Err(AppendError::Conflict { .. }) => Err(IdentityError::EmailTaken),
            Err(other) => Err(IdentityError::Internal(other.into())),
        }
    }

    /// Checks credentials (and the TOTP code when 2FA is on), records the attempt, and issues a
    /// session. Unknown addresses and wrong passwords get the same error after the same work.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(UserState, Session), IdentityError> {
        let email = Email::parse(email, "email")?;
        if password.is_empty() || password.len() > 1024 {
            return Err(InvalidInput {
                field: "password",
                message: "must be 1 to 1024 bytes".into(),
            }
            .into());
        }
        let user = match self.user_id_by_email(&email).await? {
            Some(id) => Some(self.user(id).await?),
            None => None,
        };
        let Some(user) = user else {
            // Same cost as a real check, then the same answer.
            let _ =
                password::verify(password.to_owned(), password::decoy_hash().to_owned()).await?;
            self.record_failure(None, &email, "unknown_email", meta)
                .await?;
            return Err(IdentityError::InvalidCredentials);
        };

        if let Some(until) = self.locked_until(user.user_id).await? {
            self.record_failure(Some(user.user_id), &email, "account_locked", meta)
                .await?;
            let retry = (until - Utc::now()).num_seconds().max(1) as u64;
            return Err(IdentityError::Locked {
                retry_after_secs: retry,
            });
        }
        if !self.check_password(&user, password).await? {
            self.record_failure(Some(user.user_id), &email, "invalid_password", meta)
                .await?;
            return Err(IdentityError::InvalidCredentials);
        }
        if user.totp_enabled {
            let Some(code) = totp_code.filter(|c| !c.trim().is_empty()) else {
                self.record_failure(Some(user.user_id), &email, "totp_missing", meta)
                    .await?;
                return Err(IdentityError::TotpRequired);
            };
            let secret = self.sessions.totp_secret(user.user_id).await?;
            let step = secret
                .filter(|(_, confirmed)| *confirmed)
                .and_then(|(s, _)| totp::matching_step(&s, code, unix_now()));
            let Some(step) = step else {
                self.record_failure(Some(user.user_id), &email, "invalid_totp", meta)
                    .await?;
                return Err(IdentityError::InvalidTotp);
            };
            if !self.sessions.use_totp_step(user.user_id, step).await? {
                self.record_failure(Some(user.user_id), &email, "totp_reused", meta)
                    .await?;
                return Err(IdentityError::InvalidTotp);
            }
        }

        let session_id = Uuid::now_v7();
        let succeeded = LoginSucceeded {
            user_id: user.user_id,
            session_id,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        self.store
            .append(AppendBatch::single(
                logins_stream(Some(user.user_id)),
                ExpectedVersion::Any,
                vec![event(
                    succeeded,
                    meta.metadata(Some(user.user_id.to_string())),
                )],
            ))
            .await
            .map_err(|e| IdentityError::Internal(e.into()))?;
        let session = self.issue_session(&user, session_id).await?;
        Ok((user, session))
    }

    /// Rotates a refresh token into a new session pair (same family).
    pub async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<(UserState, Session), IdentityError> {
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(self.settings.refresh_ttl).map_err(anyhow::Error::from)?;
        let grant = match self
            .sessions
            .rotate_refresh(refresh_token, now, expires)
            .await?
        {
            Ok(grant) => grant,
            Err(RefreshRefusal::Invalid) => return Err(IdentityError::InvalidRefresh),
            Err(RefreshRefusal::Reused) => return Err(IdentityError::RefreshReused),
        };
        let user = self.user(grant.user_id).await?;
        let (access_token, claims) = self.tokens.issue(
            user.user_id,
            user.roles.iter().copied().collect(),
            grant.family_id,
            now.timestamp(),
        )?;
        Ok((
            user,
            Session {
                access_token,
                claims,
                refresh: grant,
            },
        ))
    }

    /// Revokes the access token and the refresh family of the session (either may be absent).
    pub async fn logout(
        &self,
        claims: Option<&Claims>,
        refresh_token: Option<&str>,
    ) -> Result<(), IdentityError> {
        if let Some(claims) = claims {
            let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
            self.sessions.revoke_access(claims.jti, expires).await?;
            self.sessions.revoke_family(claims.sid).await?;
        }
        if let Some(token) = refresh_token {
            if let Some(family) = self.sessions.family_of(token).await? {
                self.sessions.revoke_family(family).await?;
            }
        }
        Ok(())
    }

    /// The current state of a user, folded from the user stream.
    pub async fn user(&self, user_id: Uuid) -> Result<UserState, IdentityError> {
        let events = self
            .store
            .read_stream(&user_stream(user_id), 1, 10_000)
            .await?;
        UserState::fold(&events).ok_or(IdentityError::UnknownUser)
    }

    pub async fn user_id_by_email(&self, email: &Email) -> Result<Option<Uuid>, IdentityError> {
        if let Some(owner) = self
            .owners
            .lock()
            .expect("owner cache poisoned")
            .get(email.as_str())
        {
            return Ok(Some(*owner));
        }
        let events = self
            .store
            .read_stream(&email_stream(email.as_str()), 1, 1)
            .await?;
        let owner = events
            .first()
            .and_then(|e| EmailClaimed::from_envelope(e).ok())
            .map(|claimed| claimed.user_id);
        if let Some(owner) = owner {
            let mut owners = self.owners.lock().expect("owner cache poisoned");
            if owners.len() >= OWNER_CACHE_LIMIT {
                owners.clear();
            }
            owners.insert(email.as_str().to_owned(), owner);
        }
        Ok(owner)
    }

    pub async fn update_profile(
        &self,
        user_id: Uuid,
        name: &str,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let name = DisplayName::parse(name, "name")?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| Ok(user.rename(&name)))
            .await
    }

    /// Changes the password after checking the current one, and ends every other session.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let new = Password::parse(new, "new_password")?;
        let user = self.user(user_id).await?;
        if !self.check_password(&user, current).await? {
            return Err(InvalidInput {
                field: "current_password",
                message: "is not the current password".into(),
            }
            .into());
        }
        let credential_id = self.new_credential(user_id, new.expose()).await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| {
            Ok(user.change_password(credential_id))
        })
        .await?;
        self.sessions.revoke_user(user_id).await?;
        Ok(())
    }

    /// Whether `password` is `user`'s password, checked against the credential the folded user
    /// state names. **The one password check** (login, change-password, step-up): a stored
    /// credential is read from `credentials`; a schema version 1 user's hash comes from its
    /// event. A credential that is missing (deleted, or an erased user) never matches, after the
    /// same work as a real check.
    pub async fn check_password(
        &self,
        user: &UserState,
        password: &str,
    ) -> Result<bool, IdentityError> {
        let hash = match &user.credential {
            Credential::Stored { credential_id } => {
                self.credentials.hash(user.user_id, *credential_id).await?
            }
            Credential::LegacyHash { password_hash } => Some(password_hash.clone()),
        };
        match hash {
            Some(hash) => Ok(password::verify(password.to_owned(), hash).await?),
            None => {
                tracing::warn!(user_id = %user.user_id, "the user's credential is missing: no password matches");
                let decoy = password::decoy_hash().to_owned();
                let _ = password::verify(password.to_owned(), decoy).await?;
                Ok(false)
            }
        }
    }

    /// Hashes `password` (argon2id) and stores it durably as a new credential of `user_id`,
    /// under a fresh id; the caller then appends the event naming that id (the commit point —
    /// if the append fails, the credential is an orphan nothing names).
    async fn new_credential(&self, user_id: Uuid, password: &str) -> Result<Uuid, IdentityError> {
        let hash = password::hash(password.to_owned()).await?;
        let credential_id = Uuid::new_v4();
        self.credentials
            .insert(user_id, credential_id, &hash)
            .await?;
        Ok(credential_id)
    }

    /// Adds a role (idempotent: granting a role the user has writes nothing).
    pub async fn grant_role(
        &self,
        user_id: Uuid,
        role: Role,
        granted_by: &str,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let metadata = meta.metadata(Some(granted_by.to_owned()));
        self.change_user(user_id, &metadata, |user| Ok(user.grant(role, granted_by)))
            .await
    }

    /// Decides on the current user state (a decision of `UserState`, pure) and appends its
    /// events with `metadata`, expecting that state's version; decides again when a concurrent
    /// change won the race.
    pub(super) async fn change_user(
        &self,
        user_id: Uuid,
        metadata: &EventMetadata,
        decide: impl Fn(&UserState) -> Result<Vec<IdentityEvent>, IdentityError>,
    ) -> Result<UserState, IdentityError> {
        for _ in 0..CONFLICT_RETRIES {
            let user = self.user(user_id).await?;
            let events = decide(&user)?;
            if events.is_empty() {
                return Ok(user);
            }
            let now = Utc::now();
            let events = events
                .into_iter()
                .map(|e| e.into_new_event(Uuid::now_v7(), now, metadata.clone()))
                .collect();
            let batch = AppendBatch::single(
                user_stream(user_id),
                ExpectedVersion::Exact(user.version),
                events,
            );
            match self.store.append(batch).await {
                Ok(_) => return self.user(user_id).await,
                Err(AppendError::Conflict { .. }) => continue,
                Err(other) => return Err(IdentityError::Internal(other.into())),
            }
        }
        // Contention that outlasts the retries passes: 503 `unavailable`, not a bug.
        Err(crate::store::StoreError::RetriesExhausted {
            attempts: CONFLICT_RETRIES as u32,
            last: format!("user {user_id} kept changing concurrently"),
        }
        .into())
    }

    async fn issue_session(
        &self,
        user: &UserState,
        session_id: Uuid,
    ) -> Result<Session, IdentityError> {
        let now = Utc::now();
        let (access_token, claims) = self.tokens.issue(
            user.user_id,
            user.roles.iter().copied().collect(),
            session_id,
            now.timestamp(),
        )?;
        let expires = now
            + chrono::Duration::from_std(self.settings.refresh_ttl).map_err(anyhow::Error::from)?;
        let refresh = self
            .sessions
            .issue_refresh(user.user_id, session_id, expires)
            .await?;
        Ok(Session {
            access_token,
            claims,
            refresh,
        })
    }

    async fn locked_until(
        &self,
        user_id: Uuid,
    ) -> Result<Option<chrono::DateTime<Utc>>, IdentityError> {
        let recent = self
            .store
            .read_stream_tail(&logins_stream(Some(user_id)), LOGIN_HISTORY)
            .await?;
        let attempts: Vec<_> = recent
            .iter()
            .map(|e| (Attempt::of(e), e.occurred_at))
            .collect();
        Ok(locked_until(&attempts, self.settings.lockout, Utc::now()))
    }

    async fn record_failure(
        &self,
        user_id: Option<Uuid>,
        email: &Email,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let failed = LoginFailed {
            user_id,
            email: email.as_str().to_owned(),
            reason: reason.to_owned(),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        self.store
            .append(AppendBatch::single(
                logins_stream(user_id),
                ExpectedVersion::Any,
                vec![event(failed, meta.metadata(user_id.map(|u| u.to_string())))],
            ))
            .await
            .map_err(|e| IdentityError::Internal(e.into()))?;
        Ok(())
    }
}

pub(super) fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}
