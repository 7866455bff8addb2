//! Identity rules as pure code: parsing of user input into domain types, the user state folded
//! from the user stream, the decisions on a user (each returns the events to append), and the
//! lockout decision. No I/O, no clock reads (time is a parameter).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptovault_events::identity::{
    Credential, IdentityEvent, PasswordChanged, PersonalDataErased, ProfileUpdated, RoleGranted,
    TwoFactorDisabled, TwoFactorEnabled, UserRegistered,
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

/// When repeated failures lock an account.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Consecutive counted failures that lock the account.
    pub max_failures: u32,
    /// How long the lock lasts after the latest counted failure.
    pub duration: Duration,
}

/// One login attempt as the lockout rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Succeeded,
    /// A wrong password or code.
    Failed,
    /// Refused for another reason (already locked, unknown address): does not count.
    Ignored,
}

impl Attempt {
    /// Classifies a stored login event.
    pub fn of(event: &EventEnvelope) -> Self {
        match IdentityEvent::decode(event) {
            Ok(Some(IdentityEvent::LoginFailed(failed))) if failed.counts_towards_lockout() => {
                Self::Failed
            }
            Ok(Some(IdentityEvent::LoginSucceeded(_))) => Self::Succeeded,
            // Uncounted failures, events of other streams, and events that do not decode.
            Ok(Some(
                IdentityEvent::LoginFailed(_)
                | IdentityEvent::EmailClaimed(_)
                | IdentityEvent::UserRegistered(_)
                | IdentityEvent::ProfileUpdated(_)
                | IdentityEvent::PasswordChanged(_)
                | IdentityEvent::TwoFactorEnabled(_)
                | IdentityEvent::TwoFactorDisabled(_)
                | IdentityEvent::RoleGranted(_)
                | IdentityEvent::PersonalDataErased(_),
            ))
            | Ok(None)
            | Err(_) => Self::Ignored,
        }
    }
}

/// `Some(until)` when the account is locked at `now`: the last `max_failures` counted attempts
/// (newest first in `recent`) all failed and the newest of them is less than `duration` old.
/// After the lock expires one new attempt is allowed; if it fails, the account locks again.
pub fn locked_until(
    recent: &[(Attempt, DateTime<Utc>)],
    policy: LockoutPolicy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let counted: Vec<&(Attempt, DateTime<Utc>)> = recent
        .iter()
        .filter(|(a, _)| *a != Attempt::Ignored)
        .collect();
    let window = counted.get(..policy.max_failures as usize)?;
    if policy.max_failures == 0 || !window.iter().all(|(a, _)| *a == Attempt::Failed) {
        return None;
    }
    let latest = window[0].1;
    let until = latest + chrono::Duration::from_std(policy.duration).ok()?;
    (until > now).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 3,
        duration: Duration::from_secs(60),
    };

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn three_consecutive_failures_lock_for_the_duration() {
        let recent = [
            (Attempt::Failed, at(30)),
            (Attempt::Failed, at(20)),
            (Attempt::Failed, at(10)),
        ];
        assert_eq!(locked_until(&recent, POLICY, at(31)), Some(at(90)));
        assert_eq!(locked_until(&recent, POLICY, at(90)), None);
    }

    #[test]
    fn a_success_in_between_resets_and_ignored_attempts_do_not_count() {
        let recent = [
            (Attempt::Failed, at(30)),
            (Attempt::Succeeded, at(20)),
            (Attempt::Failed, at(10)),
        ];
        assert_eq!(locked_until(&recent, POLICY, at(31)), None);
        let recent = [
            (Attempt::Ignored, at(40)),
            (Attempt::Failed, at(30)),
            (Attempt::Ignored, at(25)),
            (Attempt::Failed, at(20)),
            (Attempt::Failed, at(10)),
        ];
        assert_eq!(locked_until(&recent, POLICY, at(41)), Some(at(90)));
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

        #[test]
        fn fewer_failures_than_the_limit_never_lock(n in 0usize..3, now in 0i64..1000) {
            let recent: Vec<_> = (0..n).map(|i| (Attempt::Failed, at(now - i as i64))).collect();
            prop_assert_eq!(locked_until(&recent, POLICY, at(now)), None);
        }
    }
}
