//! Given/when/then tests of user decisions (cqrs-es's `TestFramework` shape): *given* the
//! events of a user stream, *when* a decision runs on the folded [`UserState`], *then* it
//! returns exactly these events — and the user folded with them is what the events say — or
//! exactly this refusal. Pure: no store, no clock read by the code under test.

use chrono::{TimeZone, Utc};
use cryptovault_events::identity::{user_stream, Credential, IdentityEvent, UserRegistered};
use cryptovault_events::personal::Personal;
use cryptovault_events::{EventEnvelope, EventFamily, EventMetadata, GENESIS_HASH};
use std::fmt::Debug;
use uuid::Uuid;

use super::domain::{UserRefusal, UserState};

/// The user under test and the events of its stream so far.
pub struct Given {
    user_id: Uuid,
    events: Vec<EventEnvelope>,
}

/// A user registered as `email` with the role `user`.
pub fn given_registered(user_id: Uuid, email: &str) -> Given {
    Given {
        user_id,
        events: Vec::new(),
    }
    .and(
        UserRegistered {
            user_id,
            // Sealed text as the service writes it (these decisions never open it).
            email: Personal::Sealed(format!("pii1:{user_id}:{email}")),
            name: Personal::Sealed(format!("pii1:{user_id}:QWRh")),
            credential: Credential::Stored {
                credential_id: Uuid::from_u128(7),
            },
            roles: vec!["user".to_owned()],
        }
        .into(),
    )
}

impl Given {
    /// The stream also has `event`.
    pub fn and(mut self, event: IdentityEvent) -> Self {
        let version = self.events.len() as u64 + 1;
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        self.events.push(EventEnvelope::seal(
            event.into_new_event(
                Uuid::from_u128(version as u128),
                at,
                EventMetadata::default(),
            ),
            user_stream(self.user_id),
            version,
            version,
            GENESIS_HASH.into(),
        ));
        self
    }

    /// The folded user.
    pub fn user(&self) -> UserState {
        UserState::fold(&self.events, |p| p.as_stored().to_owned()).expect("a registered user")
    }

    /// Runs `decide` on the folded user.
    pub fn when<T: Debug>(self, decide: impl FnOnce(&UserState) -> T) -> Then<T> {
        let result = decide(&self.user());
        Then {
            given: self,
            result,
        }
    }
}

/// A decision's result, to be checked.
pub struct Then<T> {
    given: Given,
    result: T,
}

impl Then<Vec<IdentityEvent>> {
    /// The decision returned `expected`; returns the stream with them appended.
    pub fn then_expect(self, expected: Vec<IdentityEvent>) -> Given {
        assert_eq!(self.result, expected, "the decision's events");
        self.result
            .into_iter()
            .fold(self.given, |given, event| given.and(event))
    }
}

impl Then<Result<Vec<IdentityEvent>, UserRefusal>> {
    /// The decision returned `expected`; returns the stream with them appended.
    pub fn then_expect(self, expected: Vec<IdentityEvent>) -> Given {
        match self.result {
            Ok(events) => Then {
                given: self.given,
                result: events,
            }
            .then_expect(expected),
            Err(refusal) => panic!("expected {expected:?}, the decision refused: {refusal}"),
        }
    }

    /// The decision was refused with `expected`.
    pub fn then_refused(self, expected: UserRefusal) {
        match self.result {
            Ok(events) => {
                panic!("expected the refusal {expected:?}, the decision returned {events:?}")
            }
            Err(refusal) => assert_eq!(refusal, expected, "the refusal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptovault_events::identity::{
        PersonalDataErased, ProfileUpdated, RoleGranted, RoleRevoked, TwoFactorDisabled,
        TwoFactorEnabled,
    };

    use super::*;
    use crate::identity::domain::Role;

    const ADA: Uuid = Uuid::from_u128(1);

    #[test]
    fn a_role_is_granted_once_and_a_second_grant_writes_nothing() {
        let given = given_registered(ADA, "ada@example.com")
            .when(|user| user.grant(Role::Admin, "cli"))
            .then_expect(vec![RoleGranted {
                role: "admin".into(),
                granted_by: "cli".into(),
            }
            .into()]);
        assert!(given.user().has_role(Role::Admin));
        given
            .when(|user| user.grant(Role::Admin, "someone-else"))
            .then_expect(Vec::new());
    }

    #[test]
    fn a_role_is_revoked_once_never_the_base_role_nor_an_admin_s_own_admin_role() {
        const BOSS: Uuid = Uuid::from_u128(2);
        let auditor = given_registered(ADA, "ada@example.com").and(
            RoleGranted {
                role: "auditor".into(),
                granted_by: "cli".into(),
            }
            .into(),
        );
        let revoked = auditor
            .when(|user| user.revoke(Role::Auditor, "boss", Some(BOSS)))
            .then_expect(vec![RoleRevoked {
                role: "auditor".into(),
                revoked_by: "boss".into(),
            }
            .into()]);
        assert!(!revoked.user().has_role(Role::Auditor));
        let revoked = revoked
            .when(|user| user.revoke(Role::Auditor, "boss", Some(BOSS)))
            .then_expect(Vec::new());
        revoked
            .when(|user| user.revoke(Role::User, "boss", Some(BOSS)))
            .then_refused(UserRefusal(
                "the user role is every account's base role and cannot be revoked",
            ));
        let admin = given_registered(ADA, "ada@example.com").and(
            RoleGranted {
                role: "admin".into(),
                granted_by: "cli".into(),
            }
            .into(),
        );
        admin
            .when(|user| user.revoke(Role::Admin, "ada", Some(ADA)))
            .then_refused(UserRefusal(
                "an admin cannot revoke their own admin role (another admin or the CLI can)",
            ));
        given_registered(ADA, "ada@example.com")
            .and(
                RoleGranted {
                    role: "admin".into(),
                    granted_by: "cli".into(),
                }
                .into(),
            )
            .when(|user| user.revoke(Role::Admin, "cli", None))
            .then_expect(vec![RoleRevoked {
                role: "admin".into(),
                revoked_by: "cli".into(),
            }
            .into()]);
    }

    #[test]
    fn erasure_is_recorded_once_and_the_folded_user_shows_no_personal_data() {
        let given = given_registered(ADA, "ada@example.com");
        assert!(!given.user().erased);
        assert!(given.user().email.contains("ada@example.com"));
        let erased = given
            .when(|user| user.erase("cli", "request 7"))
            .then_expect(vec![PersonalDataErased {
                erased_by: "cli".into(),
                reason: "request 7".into(),
            }
            .into()]);
        let user = erased.user();
        assert!(user.erased);
        assert_eq!(
            (user.email.as_str(), user.name.as_str()),
            ("[erased]", "[erased]")
        );
        // A later rename (written before the erasure was seen) does not bring a name back.
        let renamed = erased.and(
            ProfileUpdated {
                name: Personal::Sealed(format!("pii1:{ADA}:Qm9i")),
            }
            .into(),
        );
        assert_eq!(renamed.user().name, "[erased]");
        renamed
            .when(|user| user.erase("cli", "again"))
            .then_expect(Vec::new());
    }

    #[test]
    fn two_factor_is_enabled_once_and_disabled_only_when_enabled() {
        given_registered(ADA, "ada@example.com")
            .when(|user| user.disable_two_factor())
            .then_refused(UserRefusal("two-factor authentication is not enabled"));
        let enabled = given_registered(ADA, "ada@example.com")
            .when(|user| user.enable_two_factor())
            .then_expect(vec![TwoFactorEnabled {}.into()]);
        assert!(enabled.user().totp_enabled);
        enabled
            .when(|user| user.enable_two_factor())
            .then_refused(UserRefusal("two-factor authentication is already enabled"));
        given_registered(ADA, "ada@example.com")
            .and(TwoFactorEnabled {}.into())
            .when(|user| user.disable_two_factor())
            .then_expect(vec![TwoFactorDisabled {}.into()]);
    }
}
