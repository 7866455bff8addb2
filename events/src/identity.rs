//! Events of the identity stream families:
//!
//! - `email-<normalised email>`: one `EmailClaimed`, appended with "no stream" so that two
//!   concurrent signups for one address cannot both succeed;
//! - `user-<user id>`: the user's registration and every change to it;
//! - `logins-<user id>` (and `logins-unknown` for unknown addresses): every login attempt, kept
//!   apart so that the user stream stays short.
//!
//! [`IdentityEvent`] is the family of all three; [`IdentityEvent::decode`] is the one place an
//! envelope of it becomes a typed event.
//!
//! Secrets never enter the log: from schema version 2 on, `UserRegistered` and
//! `PasswordChanged` name a credential (`credential_id`) whose argon2id hash lives in the
//! deletable `credentials` collection; TOTP secrets live outside the log too (see
//! ARCHITECTURE.md). Schema version 1 payloads carried the hash itself (`password_hash`); they
//! still decode ([`Credential::LegacyHash`]) because a hash-chained event cannot be rewritten.
//!
//! Personal data is erasable: from schema version 2 on, emails, names and the ip / user agent of
//! login attempts are [`Personal`] fields, sealed under the subject's data key (see
//! [`crate::personal`]); a new address's `email-…` stream id is a blind index, not the address.
//! Schema version 1 payloads held them in plaintext; they decode as [`Personal::Legacy`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    invalid_payload, not_decoded, payload, payload_as, DecodeError, DomainEvent, EventFamily,
};
use crate::envelope::EventEnvelope;
use crate::personal::Personal;

/// An address is taken by a user. The only event of an `email-…` stream (schema version 2:
/// the address sealed, in a stream named by its blind index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailClaimed {
    pub user_id: Uuid,
    pub email: Personal,
}

#[derive(Deserialize)]
struct EmailClaimedV1 {
    user_id: Uuid,
    email: String,
}

/// Which stored secret a user's password is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credential {
    /// A document of the deletable `credentials` collection (schema version 2 on): the log
    /// records only that the credential changed, never the hash.
    Stored { credential_id: Uuid },
    /// The argon2id PHC hash a schema version 1 payload carried (upcast; never written again).
    LegacyHash { password_hash: String },
}

/// A user signed up (schema version 2: the credential by id; version 1 carried the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: Personal,
    pub name: Personal,
    #[serde(flatten)]
    pub credential: Credential,
    pub roles: Vec<String>,
}

/// `UserRegistered` schema version 1: the hash in the log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRegisteredV1 {
    user_id: Uuid,
    email: String,
    name: String,
    password_hash: String,
    roles: Vec<String>,
}

/// `PasswordChanged` schema version 1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChangedV1 {
    password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub name: Personal,
}

#[derive(Deserialize)]
struct ProfileUpdatedV1 {
    name: String,
}

/// The user's password is now checked against another credential (schema version 2: by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    #[serde(flatten)]
    pub credential: Credential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorEnabled {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorDisabled {}

/// A role was added to a user (`granted_by` is a user id, or `cli` for the bootstrap command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGranted {
    pub role: String,
    pub granted_by: String,
}

/// A role was removed from a user (`revoked_by` is the revoking admin's user id, or `cli` for the
/// command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRevoked {
    pub role: String,
    pub revoked_by: String,
}

/// The user's personal data was erased (`cryptovault admin erase-user`): their data key is
/// deleted, so every sealed field of theirs is shredded; the account (and its money) stays,
/// but nobody can log in to it again. `erased_by` is a user id or `cli`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDataErased {
    pub erased_by: String,
    pub reason: String,
}

/// A login attempt that issued a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginSucceeded {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub ip: Option<Personal>,
    pub user_agent: Option<Personal>,
}

#[derive(Deserialize)]
struct LoginSucceededV1 {
    user_id: Uuid,
    session_id: Uuid,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// A login attempt (or a step-up check) that was refused. `reason`: `invalid_password`,
/// `invalid_totp`, `totp_missing`, `totp_reused`, `unknown_email`, `account_locked` (refused by
/// the login throttle before any check), `step_up_failed`, `step_up_locked`. The throttle counts
/// attempts in its own collection, not by reading these events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub user_id: Option<Uuid>,
    /// The address tried, sealed under the user's key (or the month's `unknown-…` key).
    pub email: Personal,
    pub reason: String,
    pub ip: Option<Personal>,
    pub user_agent: Option<Personal>,
}

#[derive(Deserialize)]
struct LoginFailedV1 {
    user_id: Option<Uuid>,
    email: String,
    reason: String,
    ip: Option<String>,
    user_agent: Option<String>,
}

fn legacy(text: Option<String>) -> Option<Personal> {
    text.map(Personal::Legacy)
}

/// Every event of the identity family: the `email-…`, `user-…` and `logins-…` streams. One
/// family, not one per stream: the address claim and the login attempts are few types, and
/// every identity fold (`UserState`, the lockout rule, the audit trail) then decides about each
/// of them explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityEvent {
    EmailClaimed(EmailClaimed),
    UserRegistered(UserRegistered),
    ProfileUpdated(ProfileUpdated),
    PasswordChanged(PasswordChanged),
    TwoFactorEnabled(TwoFactorEnabled),
    TwoFactorDisabled(TwoFactorDisabled),
    RoleGranted(RoleGranted),
    RoleRevoked(RoleRevoked),
    PersonalDataErased(PersonalDataErased),
    LoginSucceeded(LoginSucceeded),
    LoginFailed(LoginFailed),
}

crate::domain::event_family! {
    IdentityEvent {
        EmailClaimed = "EmailClaimed" @ 2,
        UserRegistered = "UserRegistered" @ 2,
        ProfileUpdated = "ProfileUpdated" @ 2,
        PasswordChanged = "PasswordChanged" @ 2,
        TwoFactorEnabled = "TwoFactorEnabled",
        TwoFactorDisabled = "TwoFactorDisabled",
        RoleGranted = "RoleGranted",
        RoleRevoked = "RoleRevoked",
        PersonalDataErased = "PersonalDataErased",
        LoginSucceeded = "LoginSucceeded" @ 2,
        LoginFailed = "LoginFailed" @ 2,
    }
}

impl IdentityEvent {
    /// The identity event in `envelope`; `Ok(None)` for another family's event. **The identity
    /// family's only decode and upcasting seam**: it dispatches on `(event_type,
    /// schema_version)`; an old schema version gets an arm here that converts it to the current
    /// type.
    pub fn decode(envelope: &EventEnvelope) -> Result<Option<Self>, DecodeError> {
        let event = match (envelope.event_type.as_str(), envelope.schema_version) {
            (EmailClaimed::EVENT_TYPE, 1) => {
                let v1: EmailClaimedV1 = payload_as(envelope, EmailClaimed::EVENT_TYPE)?;
                Self::EmailClaimed(EmailClaimed {
                    user_id: v1.user_id,
                    email: Personal::Legacy(v1.email),
                })
            }
            (EmailClaimed::EVENT_TYPE, 2) => Self::EmailClaimed(payload(envelope)?),
            (UserRegistered::EVENT_TYPE, 1) => {
                let v1: UserRegisteredV1 = payload_as(envelope, UserRegistered::EVENT_TYPE)?;
                Self::UserRegistered(UserRegistered {
                    user_id: v1.user_id,
                    email: Personal::Legacy(v1.email),
                    name: Personal::Legacy(v1.name),
                    credential: Credential::LegacyHash {
                        password_hash: v1.password_hash,
                    },
                    roles: v1.roles,
                })
            }
            (UserRegistered::EVENT_TYPE, 2) => {
                let registered: UserRegistered = payload(envelope)?;
                stored_credential(envelope, UserRegistered::EVENT_TYPE, &registered.credential)?;
                Self::UserRegistered(registered)
            }
            (ProfileUpdated::EVENT_TYPE, 1) => {
                let v1: ProfileUpdatedV1 = payload_as(envelope, ProfileUpdated::EVENT_TYPE)?;
                Self::ProfileUpdated(ProfileUpdated {
                    name: Personal::Legacy(v1.name),
                })
            }
            (ProfileUpdated::EVENT_TYPE, 2) => Self::ProfileUpdated(payload(envelope)?),
            (PasswordChanged::EVENT_TYPE, 1) => {
                let v1: PasswordChangedV1 = payload_as(envelope, PasswordChanged::EVENT_TYPE)?;
                Self::PasswordChanged(PasswordChanged {
                    credential: Credential::LegacyHash {
                        password_hash: v1.password_hash,
                    },
                })
            }
            (PasswordChanged::EVENT_TYPE, 2) => {
                let changed: PasswordChanged = payload(envelope)?;
                stored_credential(envelope, PasswordChanged::EVENT_TYPE, &changed.credential)?;
                Self::PasswordChanged(changed)
            }
            (TwoFactorEnabled::EVENT_TYPE, 1) => Self::TwoFactorEnabled(payload(envelope)?),
            (TwoFactorDisabled::EVENT_TYPE, 1) => Self::TwoFactorDisabled(payload(envelope)?),
            (RoleGranted::EVENT_TYPE, 1) => Self::RoleGranted(payload(envelope)?),
            (RoleRevoked::EVENT_TYPE, 1) => Self::RoleRevoked(payload(envelope)?),
            (PersonalDataErased::EVENT_TYPE, 1) => Self::PersonalDataErased(payload(envelope)?),
            (LoginSucceeded::EVENT_TYPE, 1) => {
                let v1: LoginSucceededV1 = payload_as(envelope, LoginSucceeded::EVENT_TYPE)?;
                Self::LoginSucceeded(LoginSucceeded {
                    user_id: v1.user_id,
                    session_id: v1.session_id,
                    ip: legacy(v1.ip),
                    user_agent: legacy(v1.user_agent),
                })
            }
            (LoginSucceeded::EVENT_TYPE, 2) => Self::LoginSucceeded(payload(envelope)?),
            (LoginFailed::EVENT_TYPE, 1) => {
                let v1: LoginFailedV1 = payload_as(envelope, LoginFailed::EVENT_TYPE)?;
                Self::LoginFailed(LoginFailed {
                    user_id: v1.user_id,
                    email: Personal::Legacy(v1.email),
                    reason: v1.reason,
                    ip: legacy(v1.ip),
                    user_agent: legacy(v1.user_agent),
                })
            }
            (LoginFailed::EVENT_TYPE, 2) => Self::LoginFailed(payload(envelope)?),
            _ => return not_decoded(Self::EVENT_TYPES, envelope),
        };
        Ok(Some(event))
    }
}

/// From schema version 2 on a credential is named, never carried.
fn stored_credential(
    envelope: &EventEnvelope,
    event_type: &'static str,
    credential: &Credential,
) -> Result<(), DecodeError> {
    match credential {
        Credential::Stored { .. } => Ok(()),
        Credential::LegacyHash { .. } => Err(invalid_payload(
            envelope,
            event_type,
            "schema version 2 names a credential_id and carries no password_hash",
        )),
    }
}

/// Stream of one user's registration and profile.
pub fn user_stream(user_id: Uuid) -> String {
    format!("user-{user_id}")
}

/// Stream that reserves an email address: `email-<blind index>` (the hex HMAC of the
/// normalised address, computed by the service) for every new claim; logs from before schema
/// version 2 hold `email-<normalised address>` streams, which the service still reads.
pub fn email_stream(index_or_legacy_address: &str) -> String {
    format!("email-{index_or_legacy_address}")
}

/// Stream of one user's login attempts; `None` for attempts on unknown addresses.
pub fn logins_stream(user_id: Option<Uuid>) -> String {
    match user_id {
        Some(id) => format!("logins-{id}"),
        None => "logins-unknown".to_owned(),
    }
}
