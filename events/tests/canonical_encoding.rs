//! Properties of the canonical encoding and the event hash: stable, canonical, sensitive to
//! every hashed field, and reproducible outside Rust.

use chrono::{TimeZone, Utc};
use cryptovault_events::canonical::{canonical_json, event_hash};
use cryptovault_events::{ChainVerifier, EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// JSON values as payloads hold them: no floats (money travels as strings).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn metadata() -> impl Strategy<Value = EventMetadata> {
    let field = || proptest::option::of(any::<String>());
    (field(), field(), field(), field(), field(), field()).prop_map(|(a, b, c, d, e, f)| {
        EventMetadata {
            request_id: a,
            correlation_id: b,
            causation_id: c,
            actor: d,
            ip: e,
            user_agent: f,
        }
    })
}

prop_compose! {
    fn envelope()(
        id in any::<u128>(),
        stream_id in "[a-z]{1,8}-[0-9a-f]{1,8}",
        stream_version in 1u64..1_000_000,
        position in 1u64..i64::MAX as u64,
        event_type in "[A-Z][a-zA-Z]{1,20}",
        schema_version in 1u32..10,
        millis in 0i64..4_102_444_800_000,
        metadata in metadata(),
        payload in prop::collection::vec((any::<String>(), json_value()), 0..6),
        prev in any::<[u8; 32]>(),
    ) -> EventEnvelope {
        let payload = Value::Object(payload.into_iter().collect());
        let event = NewEvent {
            event_id: Uuid::from_u128(id),
            event_type,
            schema_version,
            occurred_at: Utc.timestamp_millis_opt(millis).unwrap(),
            metadata,
            payload,
        };
        EventEnvelope::seal(event, stream_id, stream_version, position, hex::encode(prev))
    }
}

proptest! {
    #[test]
    fn key_order_does_not_change_the_encoding(pairs in prop::collection::vec((any::<String>(), json_value()), 0..10)) {
        let forward: Map<String, Value> = pairs.iter().cloned().collect();
        // The same entries inserted in reverse order.
        let backward: Map<String, Value> = forward.keys().map(|k| (k.clone(), forward[k].clone())).rev().collect();
        prop_assert_eq!(canonical_json(&Value::Object(forward)), canonical_json(&Value::Object(backward)));
    }

    #[test]
    fn the_encoding_is_valid_json_of_the_same_value_and_a_fixed_point(value in json_value()) {
        let encoded = canonical_json(&value);
        let parsed: Value = serde_json::from_str(&encoded).unwrap();
        prop_assert_eq!(&parsed, &value);
        prop_assert_eq!(canonical_json(&parsed), encoded);
    }

    #[test]
    fn a_sealed_envelope_survives_a_json_round_trip_with_its_hash(e in envelope()) {
        let text = serde_json::to_string(&e).unwrap();
        let back: EventEnvelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(event_hash(&back), e.hash.clone());
        prop_assert_eq!(back, e);
    }

    #[test]
    fn every_hashed_field_changes_the_hash(e in envelope(), which in 0usize..8) {
        let mut changed = e.clone();
        match which {
            0 => changed.position += 1,
            1 => changed.stream_version += 1,
            2 => changed.stream_id.push('x'),
            3 => changed.event_type.push('x'),
            4 => changed.prev_hash = GENESIS_HASH.to_owned(),
            5 => changed.payload["__tampered"] = json!("1"),
            6 => changed.metadata.actor = Some(format!("{:?}!", changed.metadata.actor)),
            _ => changed.occurred_at += chrono::Duration::milliseconds(1),
        }
        prop_assume!(changed.prev_hash != e.prev_hash || which != 4);
        prop_assert_ne!(event_hash(&changed), e.hash);
    }

    #[test]
    fn a_chain_of_sealed_events_verifies_and_any_edit_is_located(len in 2usize..30, victim_seed in any::<usize>()) {
        let mut chain = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for i in 0..len {
            let event = NewEvent::new(Uuid::now_v7(), "Tested", 1, Utc::now(), EventMetadata::default(), json!({ "i": i }));
            let sealed = EventEnvelope::seal(event, "s".into(), i as u64 + 1, i as u64 + 1, prev.clone());
            prev.clone_from(&sealed.hash);
            chain.push(sealed);
        }
        let mut verifier = ChainVerifier::default();
        for e in &chain {
            prop_assert!(verifier.push(e).is_ok());
        }
        prop_assert!(verifier.finish(len as u64, &prev).is_ok());

        let victim = victim_seed % len;
        chain[victim].payload = json!({ "i": "edited" });
        let mut verifier = ChainVerifier::default();
        let broken = chain.iter().find_map(|e| verifier.push(e).err()).expect("edit detected");
        prop_assert_eq!(broken.position, victim as u64 + 1);
    }
}

/// A fixed event whose canonical bytes and hash were computed independently with Python's
/// `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` and
/// `hashlib.sha256` — the recipe the README gives auditors.
#[test]
fn known_answer_matches_the_documented_recipe() {
    let event = NewEvent {
        event_id: Uuid::parse_str("0190f5b2-7c1e-7abc-8def-0123456789ab").unwrap(),
        event_type: "FundsDeposited".into(),
        schema_version: 1,
        occurred_at: Utc.timestamp_millis_opt(1_764_301_531_123).unwrap(),
        metadata: EventMetadata {
            request_id: Some("req-1".into()),
            actor: Some("user:42".into()),
            ..EventMetadata::default()
        },
        payload: json!({ "asset": "BTC", "amount": "0.00150000", "note": "café \"quoted\"" }),
    };
    let sealed = EventEnvelope::seal(event, "account-42".into(), 3, 17, GENESIS_HASH.into());
    let canonical = canonical_json(&cryptovault_events::canonical::hashed_fields(&sealed));
    assert_eq!(canonical, KNOWN_CANONICAL);
    assert_eq!(sealed.hash, KNOWN_HASH);
}

const KNOWN_CANONICAL: &str = r#"{"event_id":"0190f5b2-7c1e-7abc-8def-0123456789ab","event_type":"FundsDeposited","metadata":{"actor":"user:42","causation_id":null,"correlation_id":null,"ip":null,"request_id":"req-1","user_agent":null},"occurred_at":"2025-11-28T03:45:31.123Z","payload":{"amount":"0.00150000","asset":"BTC","note":"café \"quoted\""},"position":17,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","schema_version":1,"stream_id":"account-42","stream_version":3}"#;
const KNOWN_HASH: &str = "402f43f570c889301c4a96d024ff5b649564287d423a248f78c335835bf59774";

proptest! {
    /// The fast writer used for hashing and the documented JSON-tree definition agree.
    #[test]
    fn the_direct_writer_equals_the_documented_encoding(e in envelope()) {
        let direct = String::from_utf8(cryptovault_events::canonical::canonical_envelope_bytes(&e)).unwrap();
        prop_assert_eq!(direct, canonical_json(&cryptovault_events::canonical::hashed_fields(&e)));
    }
}
