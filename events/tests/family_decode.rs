//! The decode seam of each stream family: every event type round-trips through its family
//! enum; another family's event is `Ok(None)`; an unknown schema version or a payload of the
//! wrong shape is an error naming the type and the version.

use chrono::{TimeZone, Utc};
use cryptovault_events::identity::{
    Credential, EmailClaimed, IdentityEvent, LoginFailed, LoginSucceeded, PasswordChanged,
    PersonalDataErased, ProfileUpdated, RoleGranted, RoleRevoked, TwoFactorDisabled,
    TwoFactorEnabled, UserRegistered,
};
use cryptovault_events::ledger::{
    FundsDeposited, LedgerEvent, TransferReceived, TransferSent, WithdrawalApproved,
    WithdrawalCompleted, WithdrawalOpened, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::personal::Personal;
use cryptovault_events::{
    DecodeError, DomainEvent, EventEnvelope, EventFamily, EventMetadata, EventTypeError, NewEvent,
    GENESIS_HASH,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn sealed(event: NewEvent) -> EventEnvelope {
    EventEnvelope::seal(event, "s-1".into(), 1, 1, GENESIS_HASH.into())
}

fn stored<F: EventFamily>(event: F) -> EventEnvelope {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    sealed(event.into_new_event(id(99), at, EventMetadata::default()))
}

/// One event of every ledger type ([`assert_covers`] fails until a new type has a sample).
fn ledger_samples(amount: Decimal, note: Option<String>) -> Vec<LedgerEvent> {
    let (user, other, w) = (id(1), id(2), id(3));
    let asset = || "ETH".to_owned();
    vec![
        FundsDeposited {
            deposit_id: id(4),
            user_id: user,
            asset: asset(),
            amount,
        }
        .into(),
        WithdrawalRequested {
            withdrawal_id: w,
            user_id: user,
            asset: asset(),
            amount,
            address: "0xabc".into(),
        }
        .into(),
        WithdrawalApproved {
            withdrawal_id: w,
            user_id: user,
            asset: asset(),
            approved_by: other,
        }
        .into(),
        WithdrawalCompleted {
            withdrawal_id: w,
            user_id: user,
            asset: asset(),
            amount,
            completed_by: other,
        }
        .into(),
        WithdrawalRejected {
            withdrawal_id: w,
            user_id: user,
            asset: asset(),
            amount,
            rejected_by: other,
            reason: note.clone(),
        }
        .into(),
        WithdrawalOpened {
            withdrawal_id: w,
            user_id: user,
            asset: asset(),
        }
        .into(),
        TransferSent {
            transfer_id: id(5),
            from_user: user,
            to_user: other,
            asset: asset(),
            amount,
            note: note.clone(),
        }
        .into(),
        TransferReceived {
            transfer_id: id(5),
            from_user: user,
            to_user: other,
            asset: asset(),
            amount,
            note,
        }
        .into(),
    ]
}

/// Sealed text as the service writes it (the events crate only carries it).
fn sealed_text(data: &str) -> Personal {
    Personal::sealed(format!("pii1:{}:{data}AAAA", id(1))).unwrap()
}

fn identity_samples() -> Vec<IdentityEvent> {
    let user = id(1);
    vec![
        EmailClaimed {
            user_id: user,
            email: sealed_text("a"),
        }
        .into(),
        UserRegistered {
            user_id: user,
            email: sealed_text("b"),
            name: sealed_text("c"),
            credential: Credential::Stored {
                credential_id: id(7),
            },
            roles: vec!["user".into()],
        }
        .into(),
        ProfileUpdated {
            name: sealed_text("d"),
        }
        .into(),
        PasswordChanged {
            credential: Credential::Stored {
                credential_id: id(8),
            },
        }
        .into(),
        TwoFactorEnabled {}.into(),
        TwoFactorDisabled {}.into(),
        RoleGranted {
            role: "admin".into(),
            granted_by: "cli".into(),
        }
        .into(),
        RoleRevoked {
            role: "admin".into(),
            revoked_by: "cli".into(),
        }
        .into(),
        PersonalDataErased {
            erased_by: "cli".into(),
            reason: "request 42".into(),
        }
        .into(),
        LoginSucceeded {
            user_id: user,
            session_id: id(6),
            ip: Some(sealed_text("e")),
            user_agent: None,
        }
        .into(),
        LoginFailed {
            user_id: None,
            email: sealed_text("f"),
            reason: "unknown_email".into(),
            ip: None,
            user_agent: Some(sealed_text("g")),
        }
        .into(),
    ]
}

/// The sample lists cover every type of their family exactly once.
fn assert_covers<F: EventFamily>(samples: &[F]) {
    let mut types: Vec<&str> = samples.iter().map(F::event_type).collect();
    types.sort_unstable();
    let mut expected = F::EVENT_TYPES.to_vec();
    expected.sort_unstable();
    assert_eq!(types, expected);
}

#[test]
fn every_ledger_event_round_trips_through_the_family() {
    let samples = ledger_samples("1.25".parse().unwrap(), Some("thanks".into()));
    assert_covers(&samples);
    for sample in samples {
        let envelope = stored(sample.clone());
        assert_eq!(envelope.event_type, sample.event_type());
        assert_eq!(envelope.schema_version, 1);
        assert_eq!(LedgerEvent::decode(&envelope).unwrap(), Some(sample));
        // Not an identity event.
        assert!(IdentityEvent::decode(&envelope).unwrap().is_none());
    }
}

#[test]
fn every_identity_event_round_trips_through_the_family() {
    let samples = identity_samples();
    assert_covers(&samples);
    for sample in samples {
        let envelope = stored(sample.clone());
        assert_eq!(envelope.event_type, sample.event_type());
        assert_eq!(IdentityEvent::decode(&envelope).unwrap(), Some(sample));
        assert!(LedgerEvent::decode(&envelope).unwrap().is_none());
    }
}

/// An envelope of `event_type` at `schema_version` with `payload`, as an old log holds it.
fn stored_raw(event_type: &str, schema_version: u32, payload: serde_json::Value) -> EventEnvelope {
    let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
    sealed(NewEvent::new(
        id(98),
        event_type,
        schema_version,
        at,
        EventMetadata::default(),
        payload,
    ))
}

#[test]
fn new_credential_events_name_a_credential_and_carry_no_hash() {
    for sample in identity_samples() {
        let envelope = stored(sample);
        let text = envelope.payload.to_string();
        assert!(!text.contains("password_hash"), "{text}");
        if matches!(
            envelope.event_type.as_str(),
            "UserRegistered" | "PasswordChanged"
        ) {
            assert_eq!(envelope.schema_version, 2);
            assert!(envelope.payload["credential_id"].is_string(), "{text}");
        }
    }
}

#[test]
fn schema_version_1_credential_events_upcast_to_a_legacy_hash() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let registered = stored_raw(
        "UserRegistered",
        1,
        serde_json::json!({
            "user_id": id(1), "email": "a@example.com", "name": "A",
            "password_hash": hash, "roles": ["user"],
        }),
    );
    assert_eq!(
        IdentityEvent::decode(&registered).unwrap(),
        Some(IdentityEvent::UserRegistered(UserRegistered {
            user_id: id(1),
            email: Personal::Legacy("a@example.com".into()),
            name: Personal::Legacy("A".into()),
            credential: Credential::LegacyHash {
                password_hash: hash.into()
            },
            roles: vec!["user".into()],
        }))
    );
    let changed = stored_raw(
        "PasswordChanged",
        1,
        serde_json::json!({ "password_hash": hash }),
    );
    assert_eq!(
        PasswordChanged::from_envelope(&changed).unwrap().credential,
        Credential::LegacyHash {
            password_hash: hash.into()
        }
    );
    // A version 2 payload never carries a hash; a version 1 payload always does.
    let smuggled = stored_raw(
        "PasswordChanged",
        2,
        serde_json::json!({ "password_hash": hash }),
    );
    assert!(matches!(
        IdentityEvent::decode(&smuggled),
        Err(DecodeError::Payload { version: 2, .. })
    ));
    let no_hash = stored_raw(
        "PasswordChanged",
        1,
        serde_json::json!({ "credential_id": id(3) }),
    );
    assert!(matches!(
        IdentityEvent::decode(&no_hash),
        Err(DecodeError::Payload { version: 1, .. })
    ));
}

#[test]
fn schema_version_1_personal_fields_upcast_to_legacy_plaintext_and_version_2_must_be_sealed() {
    let failed = stored_raw(
        "LoginFailed",
        1,
        serde_json::json!({ "user_id": null, "email": "x@example.com", "reason": "unknown_email",
                            "ip": "10.0.0.1", "user_agent": null }),
    );
    assert_eq!(
        LoginFailed::from_envelope(&failed).unwrap(),
        LoginFailed {
            user_id: None,
            email: Personal::Legacy("x@example.com".into()),
            reason: "unknown_email".into(),
            ip: Some(Personal::Legacy("10.0.0.1".into())),
            user_agent: None,
        }
    );
    let claimed = stored_raw(
        "EmailClaimed",
        1,
        serde_json::json!({ "user_id": id(1), "email": "x@example.com" }),
    );
    assert_eq!(
        EmailClaimed::from_envelope(&claimed).unwrap().email,
        Personal::Legacy("x@example.com".into())
    );
    let renamed = stored_raw("ProfileUpdated", 1, serde_json::json!({ "name": "X" }));
    assert_eq!(
        ProfileUpdated::from_envelope(&renamed).unwrap().name,
        Personal::Legacy("X".into())
    );
    let plaintext_v2 = stored_raw("ProfileUpdated", 2, serde_json::json!({ "name": "X" }));
    assert!(matches!(
        IdentityEvent::decode(&plaintext_v2),
        Err(DecodeError::Payload { version: 2, .. })
    ));
}

#[test]
fn a_single_type_reads_through_the_same_seam() {
    let deposit = FundsDeposited {
        deposit_id: id(4),
        user_id: id(1),
        asset: "BTC".into(),
        amount: "0.5".parse().unwrap(),
    };
    let envelope = stored(LedgerEvent::from(deposit.clone()));
    assert_eq!(FundsDeposited::from_envelope(&envelope).unwrap(), deposit);
    match TransferSent::from_envelope(&envelope) {
        Err(EventTypeError::WrongType { expected, found }) => {
            assert_eq!(
                (expected, found.as_str()),
                ("TransferSent", "FundsDeposited")
            );
        }
        other => panic!("expected a wrong type, got {other:?}"),
    }
    let mut future = envelope;
    future.schema_version = 2;
    assert!(matches!(
        FundsDeposited::from_envelope(&future),
        Err(EventTypeError::Decode(DecodeError::UnknownVersion {
            event_type: "FundsDeposited",
            version: 2
        }))
    ));
}

#[test]
fn an_unknown_schema_version_is_an_error_naming_type_and_version() {
    for sample in ledger_samples(Decimal::ONE, None) {
        let mut envelope = stored(sample);
        envelope.schema_version = 7;
        let error = LedgerEvent::decode(&envelope).unwrap_err();
        assert!(
            matches!(error, DecodeError::UnknownVersion { event_type, version: 7 } if event_type == envelope.event_type),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("no reader for {} schema version 7", envelope.event_type)
        );
    }
    for sample in identity_samples() {
        let mut envelope = stored(sample);
        envelope.schema_version = 0;
        let error = IdentityEvent::decode(&envelope).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("no reader for {} schema version 0", envelope.event_type)
        );
    }
}

#[test]
fn a_payload_of_the_wrong_shape_is_an_error_naming_type_and_version() {
    let mut envelope = stored(LedgerEvent::from(WithdrawalOpened {
        withdrawal_id: id(3),
        user_id: id(1),
        asset: "ETH".into(),
    }));
    envelope.payload = serde_json::json!({ "withdrawal_id": "not a uuid" });
    let error = LedgerEvent::decode(&envelope).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::Payload {
                event_type: "WithdrawalOpened",
                version: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .starts_with("WithdrawalOpened schema version 1: payload does not match the schema"));
}

#[test]
fn other_event_types_belong_to_no_family() {
    let envelope = sealed(NewEvent::new(
        id(7),
        "Tested",
        1,
        Utc::now(),
        EventMetadata::default(),
        serde_json::json!({}),
    ));
    assert!(LedgerEvent::decode(&envelope).unwrap().is_none());
    assert!(IdentityEvent::decode(&envelope).unwrap().is_none());
}

#[test]
fn the_caller_chooses_the_event_id() {
    let at = Utc::now();
    let event = TwoFactorEnabled {}.into_new_event(id(42), at, EventMetadata::default());
    assert_eq!(event.event_id, id(42));
    let again = TwoFactorEnabled {}.into_new_event(id(42), at, EventMetadata::default());
    assert_eq!(event, again);
}

proptest! {
    /// Any amount (a `Decimal`, travelling as a string) and any note survive the family.
    #[test]
    fn ledger_events_round_trip_for_any_amount_and_note(
        mantissa in any::<i64>(),
        scale in 0u32..=28,
        note in proptest::option::of(any::<String>()),
    ) {
        let amount = Decimal::new(mantissa, scale);
        for sample in ledger_samples(amount, note.clone()) {
            let envelope = stored(sample.clone());
            prop_assert_eq!(LedgerEvent::decode(&envelope).unwrap(), Some(sample));
        }
    }
}
