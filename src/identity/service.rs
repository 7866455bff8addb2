//! Identity commands: load the streams a decision needs, decide (pure rules in `domain`),
//! append, and manage sessions. HTTP handlers and the CLI call these; nothing here knows HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cryptovault_events::identity::{
    email_stream, logins_stream, user_stream, EmailClaimed, IdentityEvent, LoginFailed,
    LoginSucceeded, UserRegistered,
};
use cryptovault_events::{DomainEvent, EventFamily, EventMetadata, NewEvent};
use uuid::Uuid;

use super::domain::{DisplayName, Email, InvalidInput, Password, Role, SessionVoided, UserState};
use super::throttle::{self, Refused, Reservation, Source, ThrottlePolicy};
use super::tokens::{AccessTokens, Claims};
use super::{password, totp};
use crate::store::login_throttle::LoginThrottle;
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
    pub tokens: AccessTokens,
    settings: IdentitySettings,
    /// Address → user id. An `EmailClaimed` is never undone, so a found owner stays right
    /// forever; unknown addresses are not cached (they may be claimed any moment).
    owners: Arc<Mutex<HashMap<String, Uuid>>>,
}

/// Addresses remembered before the owner cache starts afresh.
const OWNER_CACHE_LIMIT: usize = 100_000;

/// Retries of a user-stream update that lost an optimistic-concurrency race.
const CONFLICT_RETRIES: usize = 8;

pub(super) fn event<E: DomainEvent>(e: E, metadata: EventMetadata) -> NewEvent {
    e.into_new_event(Uuid::now_v7(), Utc::now(), metadata)
}

impl Identity {
    pub fn new(
        store: EventStore,
        sessions: Sessions,
        throttle: LoginThrottle,
        tokens: AccessTokens,
        settings: IdentitySettings,
    ) -> Self {
        Self {
            store,
            sessions,
            throttle,
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
        let password_hash = password::hash(password.expose().to_owned()).await?;
        let user_id = Uuid::now_v7();
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
                    password_hash,
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

        if !password::verify(password.to_owned(), user.password_hash.clone()).await? {
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
        let password_hash = password::hash(new.expose().to_owned()).await?;
        let metadata = meta.metadata(Some(user_id.to_string()));
        self.change_user(user_id, &metadata, |user| {
            Ok(user.change_password(password_hash.clone()))
        })
        .await?;
        // Every session ends, the caller's too: the new password logs in again.
        self.sessions
            .end_user_sessions(user_id, None, EndReason::PasswordChanged)
            .await?;
        Ok(())
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
            .update(email.as_str(), now, |state| {
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
            .update(email.as_str(), Utc::now(), |state| {
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
        if !password::verify(current_password.to_owned(), user.password_hash.clone()).await? {
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

/// A fresh device id for the device cookie: 192 random bits, URL-safe.
fn new_device_id() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}
