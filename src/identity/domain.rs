//! Identity rules as pure code: parsing of user input into domain types, the user state folded
//! from the user stream, and the decisions on a user (each returns the events to append). No
//! I/O, no clock reads (time is a parameter). The login throttle's rule is `identity::throttle`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cryptovault_events::identity::{
    Credential, IdentityEvent, PasswordChanged, PersonalDataErased, ProfileUpdated, RoleGranted,
    RoleRevoked, TwoFactorDisabled, TwoFactorEnabled, UserRegistered,
};
use cryptovault_events::personal::{Personal, ERASED};
use cryptovault_events::EventEnvelope;
use serde::Serialize;
use uuid::Uuid;

/// Input that does not satisfy a rule; `field` names the JSON field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidInput {
    InvalidInput {
        field,
        message: message.into(),
    }
}

/// A syntactically valid email address, trimmed and lower-cased (the unique key of a user).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        let email = raw.trim().to_lowercase();
        let Some((local, domain)) = email.split_once('@') else {
            return Err(invalid(field, "must be an email address"));
        };
        let valid = email.len() <= 254
            && !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && email
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
        if valid {
            Ok(Self(email))
        } else {
            Err(invalid(field, "must be an email address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 8 to 128 characters, not only whitespace.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        let chars = raw.chars().count();
        if !(8..=128).contains(&chars) {
            return Err(invalid(field, "must be 8 to 128 characters"));
        }
        if raw.trim().is_empty() {
            return Err(invalid(field, "must not be only whitespace"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        let name = raw.trim();
        let chars = name.chars().count();
        if !(1..=100).contains(&chars) {
            return Err(invalid(field, "must be 1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid(field, "must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a principal may do. `admin` implies nothing else automatically: roles are checked
/// explicitly at each route.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        match raw.trim().to_lowercase().as_str() {
            "user" => Ok(Self::User),
            "auditor" => Ok(Self::Auditor),
            "admin" => Ok(Self::Admin),
            _ => Err(invalid(field, "must be one of user, auditor, admin")),
        }
    }
}

/// A user as folded from the `user-…` stream, its personal fields opened (`[erased]` once
/// shredded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    /// `PersonalDataErased` was recorded: personal data shredded, nobody logs in.
    pub erased: bool,
    /// The credential the password is checked against (`Identity::check_password`).
    pub credential: Credential,
    pub roles: BTreeSet<Role>,
    pub totp_enabled: bool,
    pub created_at: DateTime<Utc>,
    /// Version of the last event folded: the expected version of the next append.
    pub version: u64,
}

impl UserState {
    /// Folds a user stream (in version order), reading each personal field with `open` (the
    /// service opens sealed fields with the user's data key, `crate::privacy::reveal`). `None`
    /// for an empty stream.
    pub fn fold(events: &[EventEnvelope], open: impl Fn(&Personal) -> String) -> Option<Self> {
        let mut state: Option<Self> = None;
        for event in events {
            state = Self::apply(state, event, &open);
        }
        state
    }

    fn apply(
        state: Option<Self>,
        event: &EventEnvelope,
        open: &impl Fn(&Personal) -> String,
    ) -> Option<Self> {
        // An event this fold cannot read changes nothing but still takes its version: the next
        // append expects it.
        let decoded = IdentityEvent::decode(event).ok().flatten();
        if let Some(IdentityEvent::UserRegistered(registered)) = decoded {
            return Some(Self::registered(registered, event, open));
        }
        let mut user = state?;
        user.version = event.stream_version;
        match decoded {
            Some(IdentityEvent::ProfileUpdated(changed)) => {
                if !user.erased {
                    user.name = open(&changed.name);
                }
            }
            Some(IdentityEvent::PersonalDataErased(_)) => {
                user.erased = true;
                user.email = ERASED.to_owned();
                user.name = ERASED.to_owned();
            }
            Some(IdentityEvent::PasswordChanged(changed)) => {
                user.credential = changed.credential;
            }
            Some(IdentityEvent::TwoFactorEnabled(_)) => user.totp_enabled = true,
            Some(IdentityEvent::TwoFactorDisabled(_)) => user.totp_enabled = false,
            Some(IdentityEvent::RoleGranted(granted)) => {
                if let Ok(role) = Role::parse(&granted.role, "role") {
                    user.roles.insert(role);
                }
            }
            Some(IdentityEvent::RoleRevoked(revoked)) => {
                if let Ok(role) = Role::parse(&revoked.role, "role") {
                    user.roles.remove(&role);
                }
            }
            // Registration is matched above; the address claim and login attempts live on
            // their own streams.
            Some(
                IdentityEvent::UserRegistered(_)
                | IdentityEvent::EmailClaimed(_)
                | IdentityEvent::LoginSucceeded(_)
                | IdentityEvent::LoginFailed(_),
            )
            | None => {}
        }
        Some(user)
    }

    fn registered(
        registered: UserRegistered,
        event: &EventEnvelope,
        open: &impl Fn(&Personal) -> String,
    ) -> Self {
        Self {
            user_id: registered.user_id,
            email: open(&registered.email),
            name: open(&registered.name),
            erased: false,
            credential: registered.credential,
            roles: registered
                .roles
                .iter()
                .filter_map(|r| Role::parse(r, "role").ok())
                .collect(),
            totp_enabled: false,
            created_at: event.occurred_at,
            version: event.stream_version,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether a session opened on the strength of this state may still be issued now that
    /// the user is `later`: not if the user was erased, the password changed or 2FA was turned
    /// on in between (those end every session, and one whose record was written after they did
    /// must end too).
    pub fn session_outlived_by(&self, later: &UserState) -> Option<SessionVoided> {
        if later.erased && !self.erased {
            Some(SessionVoided::Erased)
        } else if later.credential != self.credential {
            Some(SessionVoided::PasswordChanged)
        } else if later.totp_enabled && !self.totp_enabled {
            Some(SessionVoided::TwoFactorEnabled)
        } else {
            None
        }
    }
}

/// Why a session being issued was voided by a change that raced with its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVoided {
    PasswordChanged,
    TwoFactorEnabled,
    /// The user's personal data was erased (`admin erase-user`).
    Erased,
}

/// Why a decision on a user was refused; nothing is written. HTTP 409 `invalid_state`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UserRefusal(pub &'static str);

/// Decisions on a user: each returns the events to append to the `user-…` stream (none:
/// nothing to change) or a refusal. The service appends them expecting the state's version.
impl UserState {
    /// `name` is the new [`DisplayName`] sealed under the user's key (at the edge: sealing
    /// draws a random nonce).
    pub fn rename(&self, name: Personal) -> Vec<IdentityEvent> {
        vec![ProfileUpdated { name }.into()]
    }

    /// Records the erasure of the user's personal data; nothing if it is already erased (a
    /// rerun of the command only repeats the deletions).
    pub fn erase(&self, erased_by: &str, reason: &str) -> Vec<IdentityEvent> {
        if self.erased {
            return Vec::new();
        }
        vec![PersonalDataErased {
            erased_by: erased_by.to_owned(),
            reason: reason.to_owned(),
        }
        .into()]
    }

    /// `credential_id` names the new password's credential, stored before this decision's
    /// event is appended (the event is the commit point; the hash never enters the log).
    pub fn change_password(&self, credential_id: Uuid) -> Vec<IdentityEvent> {
        vec![PasswordChanged {
            credential: Credential::Stored { credential_id },
        }
        .into()]
    }

    /// Idempotent: granting a role the user has changes nothing.
    pub fn grant(&self, role: Role, granted_by: &str) -> Vec<IdentityEvent> {
        if self.has_role(role) {
            return Vec::new();
        }
        vec![RoleGranted {
            role: role.as_str().to_owned(),
            granted_by: granted_by.to_owned(),
        }
        .into()]
    }

    /// Removes a role; idempotent: revoking a role the user lacks changes nothing. Refused:
    /// the `user` role (every account's base role), and an admin removing their own admin role
    /// (`revoker` is the acting user, `None` for the command line) — so an admin acting through
    /// the API always leaves at least one admin: themselves.
    pub fn revoke(
        &self,
        role: Role,
        revoked_by: &str,
        revoker: Option<Uuid>,
    ) -> Result<Vec<IdentityEvent>, UserRefusal> {
        if role == Role::User {
            return Err(UserRefusal(
                "the user role is every account's base role and cannot be revoked",
            ));
        }
        if role == Role::Admin && revoker == Some(self.user_id) {
            return Err(UserRefusal(
                "an admin cannot revoke their own admin role (another admin or the CLI can)",
            ));
        }
        if !self.has_role(role) {
            return Ok(Vec::new());
        }
        Ok(vec![RoleRevoked {
            role: role.as_str().to_owned(),
            revoked_by: revoked_by.to_owned(),
        }
        .into()])
    }

    pub fn enable_two_factor(&self) -> Result<Vec<IdentityEvent>, UserRefusal> {
        if self.totp_enabled {
            return Err(UserRefusal("two-factor authentication is already enabled"));
        }
        Ok(vec![TwoFactorEnabled {}.into()])
    }

    pub fn disable_two_factor(&self) -> Result<Vec<IdentityEvent>, UserRefusal> {
        if !self.totp_enabled {
            return Err(UserRefusal("two-factor authentication is not enabled"));
        }
        Ok(vec![TwoFactorDisabled {}.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_password_change_or_2fa_that_raced_with_a_login_voids_its_session() {
        let before = UserState {
            user_id: Uuid::from_u128(1),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            erased: false,
            credential: Credential::Stored {
                credential_id: Uuid::from_u128(10),
            },
            roles: BTreeSet::from([Role::User]),
            totp_enabled: false,
            created_at: at(0),
            version: 1,
        };
        let mut later = before.clone();
        later.version = 2;
        later.name = "Ada L.".into();
        later.roles.insert(Role::Auditor);
        assert_eq!(before.session_outlived_by(&later), None);
        let mut changed = later.clone();
        changed.credential = Credential::Stored {
            credential_id: Uuid::from_u128(11),
        };
        assert_eq!(
            before.session_outlived_by(&changed),
            Some(SessionVoided::PasswordChanged)
        );
        let mut erased = later.clone();
        erased.erased = true;
        assert_eq!(
            before.session_outlived_by(&erased),
            Some(SessionVoided::Erased)
        );
        let mut two_factor = later.clone();
        two_factor.totp_enabled = true;
        assert_eq!(
            before.session_outlived_by(&two_factor),
            Some(SessionVoided::TwoFactorEnabled)
        );
        assert_eq!(
            two_factor.session_outlived_by(&later),
            None,
            "2FA turned off"
        );
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ", "email")
                .unwrap()
                .as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "alice@.com",
        ] {
            assert!(Email::parse(bad, "email").is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic_and_name_their_field(raw in any::<String>()) {
            for result in [
                Email::parse(&raw, "email").err(),
                Password::parse(&raw, "password").err(),
                DisplayName::parse(&raw, "name").err(),
            ].into_iter().flatten() {
                prop_assert!(!result.message.is_empty());
            }
        }
    }
}
