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
use cryptovault_events::personal::{is_sealed, key_id, Personal, ERASED};
use cryptovault_events::{DomainEvent, EventFamily, EventMetadata, NewEvent};
use uuid::Uuid;

use super::domain::{DisplayName, Email, InvalidInput, Password, Role, SessionVoided, UserState};
use super::throttle::{self, Refused, Reservation, Source, ThrottlePolicy};
use super::tokens::{AccessTokens, Claims};
use super::{password, totp};
use crate::privacy::{reveal, BlindIndex, DataKey};
use crate::store::credentials::Credentials;
use crate::store::login_throttle::LoginThrottle;
use crate::store::personal_keys::PersonalKeys;
use crate::store::sessions::{EndReason, RefreshGrant, RefreshRefusal, Sessions};
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
    /// The login throttle refused the attempt before any check: the same answer for every
    /// address, registered or not (the wait is in `Retry-After`).
    #[error("too many failed sign-in attempts for this address; retry after Retry-After seconds")]
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
    pub throttle: ThrottlePolicy,
    pub refresh_ttl: Duration,
}

#[derive(Clone)]
pub struct Identity {
    store: EventStore,
    pub sessions: Sessions,
    throttle: LoginThrottle,
    /// Password hashes, outside the log (`Self::check_password`, `Self::new_credential`).
    credentials: Credentials,
    /// Each user's data key: every personal field of an identity event is sealed under it.
    keys: PersonalKeys,
    /// `EMAIL_INDEX_KEY`: the id of a new address's `email-…` stream.
    email_index: BlindIndex,
    pub tokens: AccessTokens,
    settings: IdentitySettings,
    /// Address → user id. An `EmailClaimed` is never undone, so a found owner stays right
    /// forever; unknown addresses are not cached (they may be claimed any moment).
    owners: Arc<Mutex<HashMap<String, Uuid>>>,
}

/// Addresses remembered before the owner cache starts afresh.
const OWNER_CACHE_LIMIT: usize = 100_000;

/// Events of a user stream read per page.
const USER_PAGE: usize = 10_000;
/// Retries of a user-stream update that lost an optimistic-concurrency race.
const CONFLICT_RETRIES: usize = 8;

pub(super) fn event<E: DomainEvent>(e: E, metadata: EventMetadata) -> NewEvent {
    e.into_new_event(Uuid::now_v7(), Utc::now(), metadata)
}

/// The collections outside the log that identity commands use (all in `crate::store`).
pub struct IdentityStores {
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
    pub credentials: Credentials,
    pub keys: PersonalKeys,
}

impl Identity {
    pub fn new(
        store: EventStore,
        stores: IdentityStores,
        email_index: BlindIndex,
        tokens: AccessTokens,
        settings: IdentitySettings,
    ) -> Self {
        let IdentityStores {
            sessions,
            throttle,
            credentials,
            keys,
        } = stores;
        Self {
            store,
            sessions,
            throttle,
            credentials,
            keys,
            email_index,
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
        let key = self.data_key(user_id).await?;
        let credential_id = self.new_credential(user_id, password.expose()).await?;
        let metadata = key.seal_metadata(meta.metadata(Some(user_id.to_string())));
        let batch = AppendBatch::single(
            email_stream(&self.email_index.of(email.as_str())),
            ExpectedVersion::NoStream,
            vec![event(
                EmailClaimed {
                    user_id,
                    email: key.seal(email.as_str()),
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
                    email: key.seal(email.as_str()),
                    name: key.seal(name.as_str()),
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
    /// session. The attempt is first reserved with the login throttle (keyed by the address,
    /// registered or not; `device` is the device cookie, if any); only a reserved attempt has its
    /// password checked. Unknown addresses and wrong passwords get the same error after the same
    /// work. Also returns the device id to keep in the device cookie.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: Option<&str>,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(UserState, Session, String), IdentityError> {
        let email = Email::parse(email, "email")?;
        if password.is_empty() || password.len() > 1024 {
            return Err(InvalidInput {
                field: "password",
                message: "must be 1 to 1024 bytes".into(),
            }
            .into());
        }
        let source = self.source(device, meta);
        let reservation = match self.reserve(&email, &source).await? {
            Ok(reservation) => reservation,
            Err(refused) => {
                let user_id = self.user_id_by_email(&email).await?;
                self.record_failure(user_id, &email, "account_locked", meta)
                    .await?;
                return Err(IdentityError::Locked {
                    retry_after_secs: refused.retry_after_secs,
                });
            }
        };
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
        let device_id = device
            .filter(|d| throttle::valid_device_id(d))
            .map(str::to_owned)
            .unwrap_or_else(new_device_id);
        self.succeeded(&email, &reservation, &device_id, meta)
            .await?;

        let session_id = Uuid::now_v7();
        let key = self.data_key(user.user_id).await?;
        let succeeded = LoginSucceeded {
            user_id: user.user_id,
            session_id,
            ip: key.seal_opt(meta.ip.as_deref()),
            user_agent: key.seal_opt(meta.user_agent.as_deref()),
        };
        self.store
            .append(AppendBatch::single(
                logins_stream(Some(user.user_id)),
                ExpectedVersion::Any,
                vec![event(
                    succeeded,
                    key.seal_metadata(meta.metadata(Some(user.user_id.to_string()))),
                )],
            ))
            .await
            .map_err(|e| IdentityError::Internal(e.into()))?;
        let session = self.issue_session(&user, session_id).await?;
        Ok((user, session, device_id))
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
        self.sync_session_roles(&user).await?;
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

    /// Ends the session of the access token and that of the refresh token (either may be
    /// absent; usually they are one): every access token of it is refused from the next
    /// request on, on every instance, and its refresh family is revoked.
    pub async fn logout(
        &self,
        claims: Option<&Claims>,
        refresh_token: Option<&str>,
    ) -> Result<(), IdentityError> {
        if let Some(claims) = claims {
            self.sessions
                .end_session(claims.sid, EndReason::LoggedOut)
                .await?;
        }
        if let Some(token) = refresh_token {
            if let Some(family) = self.sessions.family_of(token).await? {
                if claims.is_none_or(|c| c.sid != family) {
                    self.sessions
                        .end_session(family, EndReason::LoggedOut)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The current state of a user, folded from the user stream.
    pub async fn user(&self, user_id: Uuid) -> Result<UserState, IdentityError> {
        // Every event, page by page: a decision on a state that missed the stream's tail
        // (a revoked role, a changed password, an erasure) would be a decision on the past.
        let stream = user_stream(user_id);
        let mut events = Vec::new();
        loop {
            let from = events.len() as u64 + 1;
            let page = self.store.read_stream(&stream, from, USER_PAGE).await?;
            let full = page.len() == USER_PAGE;
            events.extend(page);
            if !full {
                break;
            }
        }
        if events.is_empty() {
            return Err(IdentityError::UnknownUser);
        }
        let key = self.keys.get(&user_id.to_string()).await?;
        UserState::fold(&events, |field| reveal(field, key.as_ref()))
            .ok_or(IdentityError::UnknownUser)
    }

    /// The data key of `user_id`, created on first use.
    async fn data_key(&self, user_id: Uuid) -> Result<DataKey, IdentityError> {
        Ok(self.keys.get_or_create(&user_id.to_string()).await?)
    }

    /// What an auditor may read of the personal fields in `envelopes`: per position, each
    /// sealed field (`payload.email`, `metadata.ip`, …) opened with its subject's key, or
    /// `[erased]` when the key was erased. The envelopes themselves stay as stored (ciphertext),
    /// so that they still hash to their chain.
    pub async fn personal_data(
        &self,
        envelopes: &[cryptovault_events::EventEnvelope],
    ) -> Result<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
        IdentityError,
    > {
        let mut fields: Vec<(u64, String, String)> = Vec::new();
        for envelope in envelopes {
            collect_sealed(&envelope.payload, "payload", &mut |path, text| {
                fields.push((envelope.position, path, text.to_owned()));
            });
            for (name, value) in [
                ("metadata.ip", &envelope.metadata.ip),
                ("metadata.user_agent", &envelope.metadata.user_agent),
            ] {
                if let Some(text) = value.as_deref().filter(|t| is_sealed(t)) {
                    fields.push((envelope.position, name.to_owned(), text.to_owned()));
                }
            }
        }
        let revealed = self
            .reveal_all(fields.iter().map(|(_, _, text)| text.as_str()))
            .await?;
        let mut out: std::collections::BTreeMap<
            String,
            std::collections::BTreeMap<String, String>,
        > = std::collections::BTreeMap::new();
        for (position, path, text) in fields {
            let value = revealed
                .get(&text)
                .cloned()
                .unwrap_or_else(|| ERASED.to_owned());
            out.entry(position.to_string())
                .or_default()
                .insert(path, value);
        }
        Ok(out)
    }

    /// Each sealed text among `texts` → its plaintext, or `[erased]` (one key lookup for all).
    pub async fn reveal_all<'a>(
        &self,
        texts: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, String>, IdentityError> {
        let sealed: Vec<&str> = texts.filter(|t| is_sealed(t)).collect();
        let mut ids: Vec<String> = sealed
            .iter()
            .filter_map(|t| key_id(t).map(str::to_owned))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let keys = self.keys.get_many(&ids).await?;
        Ok(sealed
            .into_iter()
            .map(|text| {
                let field = Personal::Sealed(text.to_owned());
                let key = key_id(text).and_then(|id| keys.get(id));
                (text.to_owned(), reveal(&field, key))
            })
            .collect())
    }

    /// Erases the personal data of `user_id` (crypto-shredding): appends `PersonalDataErased`
    /// (audited: `erased_by`, `reason`), then deletes the user's data key — every sealed field
    /// of theirs becomes unreadable —, their credentials, TOTP secret and refresh tokens. The
    /// account and its money stay; nobody can log in to it again. Safe to rerun (a rerun
    /// repeats the deletions). Returns the user as it was (its opened email, for clearing
    /// read-model copies of schema version 1 plaintext).
    pub async fn erase_user(
        &self,
        user_id: Uuid,
        erased_by: &str,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(InvalidInput {
                field: "reason",
                message: "must be 1 to 500 characters".into(),
            }
            .into());
        }
        let before = self.user(user_id).await?;
        let metadata = EventMetadata {
            actor: Some(erased_by.to_owned()),
            ip: None,
            user_agent: None,
            ..meta.metadata(None)
        };
        self.decide_and_append(user_id, &metadata, |user| Ok(user.erase(erased_by, reason)))
            .await?;
        self.keys.erase(&user_id.to_string()).await?;
        if !before.erased {
            // The throttle's state of the address holds the IPs the user signed in from.
            self.throttle
                .forget(&self.email_index.of(&before.email))
                .await?;
        }
        self.credentials.delete_user(user_id).await?;
        self.sessions.delete_totp(user_id).await?;
        self.sessions
            .end_user_sessions(user_id, None, EndReason::Erased)
            .await?;
        self.owners
            .lock()
            .expect("owner cache poisoned")
            .retain(|_, owner| *owner != user_id);
        Ok(before)
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
        // The blind-index stream of every claim since schema version 2, then the plaintext
        // stream id of an older log.
        let mut owner = None;
        for stream in [
            email_stream(&self.email_index.of(email.as_str())),
            email_stream(email.as_str()),
        ] {
            let events = self.store.read_stream(&stream, 1, 1).await?;
            owner = events
                .first()
                .and_then(|e| EmailClaimed::from_envelope(e).ok())
                .map(|claimed| claimed.user_id);
            if owner.is_some() {
                break;
            }
        }
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
        let sealed = self.data_key(user_id).await?.seal(name.as_str());
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| Ok(user.rename(sealed.clone())))
            .await
    }

    /// Changes the password after a step-up (the current password, and a code when 2FA is on;
    /// see [`Self::step_up`]), and ends every other session.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
        totp_code: Option<&str>,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let new = Password::parse(new, "new_password")?;
        let user = self.user(user_id).await?;
        self.step_up(&user, current, totp_code, device, meta)
            .await?;
        let credential_id = self.new_credential(user_id, new.expose()).await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| {
            Ok(user.change_password(credential_id))
        })
        .await?;
        // Every session ends, the caller's too: the new password logs in again.
        self.sessions
            .end_user_sessions(user_id, None, EndReason::PasswordChanged)
            .await?;
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
            // An erased user's credentials are deleted; a schema version 1 hash in the log
            // must not let them in either.
            _ if user.erased => None,
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

    /// Adds a role (idempotent: granting a role the user has writes nothing). The user's open
    /// sessions get it at once (their session records carry the roles).
    pub async fn grant_role(
        &self,
        user_id: Uuid,
        role: Role,
        granted_by: &str,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let metadata = meta.metadata(Some(granted_by.to_owned()));
        let user = self
            .change_user(user_id, &metadata, |user| Ok(user.grant(role, granted_by)))
            .await?;
        self.sync_session_roles(&user).await?;
        Ok(user)
    }

    /// Removes a role (`RoleRevoked`; idempotent: revoking a role the user lacks writes
    /// nothing). `revoker` is the admin doing it through the API (`None`: the CLI); an admin
    /// cannot remove their own admin role (`UserState::revoke`), so the API always leaves at
    /// least the caller as an admin. Every open session of the user loses the role from its
    /// next request on, on every instance (the session records carry the roles); the sessions
    /// themselves go on. A retry after a failure re-applies the roles to the sessions even when
    /// the event was already appended.
    pub async fn revoke_role(
        &self,
        user_id: Uuid,
        role: Role,
        revoked_by: &str,
        revoker: Option<Uuid>,
        meta: &RequestMeta,
    ) -> Result<UserState, IdentityError> {
        let metadata = meta.metadata(Some(revoked_by.to_owned()));
        let user = self
            .change_user(user_id, &metadata, |user| {
                Ok(user.revoke(role, revoked_by, revoker)?)
            })
            .await?;
        self.sync_session_roles(&user).await?;
        Ok(user)
    }

    /// Writes `user`'s roles into every session of theirs that saw an older version.
    async fn sync_session_roles(&self, user: &UserState) -> Result<(), IdentityError> {
        let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        self.sessions
            .sync_roles(user.user_id, &roles, user.version)
            .await?;
        Ok(())
    }

    /// Ends every session of the user but `keep` (after 2FA is enabled: sessions opened
    /// without the second factor end).
    pub(super) async fn end_other_sessions(
        &self,
        user_id: Uuid,
        keep: Uuid,
        reason: EndReason,
    ) -> Result<(), IdentityError> {
        self.sessions
            .end_user_sessions(user_id, Some(keep), reason)
            .await?;
        Ok(())
    }

    /// Decides on the current user state (a decision of `UserState`, pure) and appends its
    /// events with `metadata`, expecting that state's version; decides again when a concurrent
    /// change won the race.
    /// Refused once the user's personal data was erased. The metadata's ip and user agent are
    /// sealed under the user's data key.
    pub(super) async fn change_user(
        &self,
        user_id: Uuid,
        metadata: &EventMetadata,
        decide: impl Fn(&UserState) -> Result<Vec<IdentityEvent>, IdentityError>,
    ) -> Result<UserState, IdentityError> {
        if self.user(user_id).await?.erased {
            return Err(IdentityError::InvalidState(
                "this user's personal data was erased",
            ));
        }
        let metadata = self
            .data_key(user_id)
            .await?
            .seal_metadata(metadata.clone());
        self.decide_and_append(user_id, &metadata, |user| {
            if user.erased {
                return Err(IdentityError::InvalidState(
                    "this user's personal data was erased",
                ));
            }
            decide(user)
        })
        .await
    }

    /// [`Self::change_user`] without the erasure check and with `metadata` as given.
    async fn decide_and_append(
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

    /// Records the session (with the user's roles), then issues its tokens. A change that raced
    /// with this login is caught by folding the user again after the record exists: the change
    /// either saw the record (and updated or ended it) or is in the second fold — a role change
    /// is applied, a password change or 2FA switched on voids the session.
    async fn issue_session(
        &self,
        user: &UserState,
        session_id: Uuid,
    ) -> Result<Session, IdentityError> {
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(self.settings.refresh_ttl).map_err(anyhow::Error::from)?;
        let access_expiry =
            now + chrono::Duration::from_std(self.tokens.ttl).map_err(anyhow::Error::from)?;
        let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        self.sessions
            .start_session(
                session_id,
                user.user_id,
                &roles,
                user.version,
                expires.max(access_expiry),
            )
            .await?;
        let checked = user;
        let user = self.user(user.user_id).await?;
        // A password change or 2FA that committed while this login was checking: it ended the
        // sessions it saw, and this one must not outlive it.
        if let Some(voided) = checked.session_outlived_by(&user) {
            let (reason, refusal) = match voided {
                SessionVoided::PasswordChanged => (
                    EndReason::PasswordChanged,
                    IdentityError::InvalidCredentials,
                ),
                SessionVoided::TwoFactorEnabled => {
                    (EndReason::TwoFactorEnabled, IdentityError::TotpRequired)
                }
                SessionVoided::Erased => (EndReason::Erased, IdentityError::InvalidCredentials),
            };
            self.sessions.end_session(session_id, reason).await?;
            return Err(refusal);
        }
        self.sync_session_roles(&user).await?;
        let (access_token, claims) = self.tokens.issue(
            user.user_id,
            user.roles.iter().copied().collect(),
            session_id,
            now.timestamp(),
        )?;
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

    /// The source of an attempt: the client IP, and the device cookie when it is one this
    /// service could have issued (anything else is ignored).
    fn source(&self, device: Option<&str>, meta: &RequestMeta) -> Source {
        Source {
            ip: throttle::source_ip(meta.ip.as_deref().unwrap_or_default()),
            device: device
                .filter(|d| throttle::valid_device_id(d))
                .map(throttle::device_hash),
        }
    }

    /// Reserves an attempt for `email` from `source` (atomically, across processes) before any
    /// secret is checked; `Err(Refused)` when the throttle refuses it.
    async fn reserve(
        &self,
        email: &Email,
        source: &Source,
    ) -> Result<Result<Reservation, Refused>, IdentityError> {
        let now = Utc::now();
        let policy = self.settings.throttle;
        Ok(self
            .throttle
            .update(&self.email_index.of(email.as_str()), now, |state| {
                throttle::reserve(state, source, &policy, now.timestamp_millis())
            })
            .await?)
    }

    /// A reserved attempt succeeded: its source starts afresh and becomes known (with
    /// `device_id`, when given).
    async fn succeeded(
        &self,
        email: &Email,
        reservation: &Reservation,
        device_id: &str,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        let ip = throttle::source_ip(meta.ip.as_deref().unwrap_or_default());
        let device = throttle::valid_device_id(device_id).then(|| throttle::device_hash(device_id));
        let updated = self
            .throttle
            .update(&self.email_index.of(email.as_str()), Utc::now(), |state| {
                let next = throttle::succeed(state, reservation, &ip, device.as_deref());
                Ok::<_, std::convert::Infallible>((next, ()))
            })
            .await?;
        match updated {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }

    /// Step-up for a sensitive change by a signed-in user (2FA enrolment and disable, password
    /// change): the current password, and a valid unused TOTP code when 2FA is on. Counted by
    /// the login throttle like a login (so a stolen access token gets no extra guesses) and
    /// every failure recorded on the user's logins stream: `LoginFailed` with reason
    /// `step_up_failed` (wrong password, missing or wrong code) or `step_up_locked` (refused
    /// by the throttle).
    pub(super) async fn step_up(
        &self,
        user: &UserState,
        current_password: &str,
        totp_code: Option<&str>,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        if current_password.is_empty() || current_password.len() > 1024 {
            return Err(InvalidInput {
                field: "current_password",
                message: "must be 1 to 1024 bytes".into(),
            }
            .into());
        }
        let email = Email::parse(&user.email, "email")?;
        let source = self.source(device, meta);
        let failed =
            |reason: &'static str| self.record_failure(Some(user.user_id), &email, reason, meta);
        let reservation = match self.reserve(&email, &source).await? {
            Ok(reservation) => reservation,
            Err(refused) => {
                failed("step_up_locked").await?;
                return Err(IdentityError::Locked {
                    retry_after_secs: refused.retry_after_secs,
                });
            }
        };
        if !self.check_password(user, current_password).await? {
            failed("step_up_failed").await?;
            return Err(InvalidInput {
                field: "current_password",
                message: "is not the current password".into(),
            }
            .into());
        }
        if user.totp_enabled {
            let Some(code) = totp_code.filter(|c| !c.trim().is_empty()) else {
                failed("step_up_failed").await?;
                return Err(IdentityError::TotpRequired);
            };
            let secret = self.sessions.totp_secret(user.user_id).await?;
            let step = secret
                .filter(|(_, confirmed)| *confirmed)
                .and_then(|(s, _)| totp::matching_step(&s, code, unix_now()));
            let accepted = match step {
                Some(step) => self.sessions.use_totp_step(user.user_id, step).await?,
                None => false,
            };
            if !accepted {
                failed("step_up_failed").await?;
                return Err(IdentityError::InvalidTotp);
            }
        }
        let device = device.unwrap_or_default();
        self.succeeded(&email, &reservation, device, meta).await
    }

    async fn record_failure(
        &self,
        user_id: Option<Uuid>,
        email: &Email,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<(), IdentityError> {
        // A known user's attempts are sealed under their key; attempts on unknown addresses
        // under the month's `unknown-YYYY-MM` key (deleting old months' keys shreds them).
        // (also those of a user without a key: an erased one, or one from before keys).
        let own_key = match user_id {
            Some(id) => self.keys.get(&id.to_string()).await?,
            None => None,
        };
        // An erased user's attempts are not linked to their id again.
        let user_id = match (user_id, &own_key) {
            (Some(id), None) if self.keys.is_erased(&id.to_string()).await? => None,
            _ => user_id,
        };
        let key = match own_key {
            Some(key) => key,
            None => {
                let month = format!("unknown-{}", Utc::now().format("%Y-%m"));
                self.keys.get_or_create(&month).await?
            }
        };
        let failed = LoginFailed {
            user_id,
            email: key.seal(email.as_str()),
            reason: reason.to_owned(),
            ip: key.seal_opt(meta.ip.as_deref()),
            user_agent: key.seal_opt(meta.user_agent.as_deref()),
        };
        let metadata = key.seal_metadata(meta.metadata(user_id.map(|u| u.to_string())));
        self.store
            .append(AppendBatch::single(
                logins_stream(user_id),
                ExpectedVersion::Any,
                vec![event(failed, metadata)],
            ))
            .await
            .map_err(|e| IdentityError::Internal(e.into()))?;
        Ok(())
    }
}

/// A fresh device id for the device cookie: 192 random bits, URL-safe.
fn new_device_id() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Calls `found(path, text)` for every sealed string in `value` (`path` like `payload.email`).
fn collect_sealed(value: &serde_json::Value, path: &str, found: &mut impl FnMut(String, &str)) {
    match value {
        serde_json::Value::String(text) if is_sealed(text) => found(path.to_owned(), text),
        serde_json::Value::Object(map) => {
            for (name, inner) in map {
                collect_sealed(inner, &format!("{path}.{name}"), found);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                collect_sealed(inner, &format!("{path}.{i}"), found);
            }
        }
        _ => {}
    }
}

pub(super) fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}
