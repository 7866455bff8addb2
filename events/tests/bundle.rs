//! Receipts and consistency bundles over a log of real sealed events: a good bundle verifies,
//! and each kind of tampering fails with the check that names it.

use chrono::{Duration, TimeZone, Utc};
use cryptovault_events::bundle::{
    event_leaf_hash, verify_consistency_bundle, verify_receipt, BundleError, ConsistencyBundle,
    NoteRole, Receipt, ReceiptEntry, CONSISTENCY_FORMAT, INCLUSION_FORMAT,
};
use cryptovault_events::canonical::event_hash;
use cryptovault_events::checkpoint::{Checkpoint, SignerKey, VerifierKey};
use cryptovault_events::merkle::{consistency_proof, inclusion_proof, MemoryTree, MerkleError};
use cryptovault_events::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

const ORIGIN: &str = "cryptovault.test/ledger";

/// `n` chained events at positions 1..=n, alternating between two streams.
fn log(n: u64) -> Vec<EventEnvelope> {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut versions = [0u64; 2];
    (1..=n)
        .map(|position| {
            let stream = (position % 2) as usize;
            versions[stream] += 1;
            let event = NewEvent::new(
                Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(position)),
                "DepositRecorded",
                1,
                start + Duration::milliseconds(position as i64 * 1_001),
                EventMetadata {
                    actor: Some(format!("user-{stream}")),
                    request_id: Some(format!("req-{position}")),
                    ..EventMetadata::default()
                },
                json!({ "asset": "BTC", "amount": format!("0.{position:08}"), "note": "dépôt" }),
            );
            let envelope = EventEnvelope::seal(
                event,
                format!("account-{stream}"),
                versions[stream],
                position,
                prev.clone(),
            );
            prev = envelope.hash.clone();
            envelope
        })
        .collect()
}

fn signer() -> SignerKey {
    SignerKey::from_seed(ORIGIN, [7; 32]).unwrap()
}

fn key() -> VerifierKey {
    signer().verifier()
}

fn tree(events: &[EventEnvelope]) -> MemoryTree {
    MemoryTree::from_leaf_hashes(events.iter().map(|e| event_leaf_hash(e).unwrap()))
}

/// The signed note of `tree`'s first `size` leaves.
fn note(tree: &MemoryTree, size: u64, signer: &SignerKey, origin: &str) -> String {
    let root = cryptovault_events::merkle::tree_root(tree, size).unwrap();
    Checkpoint::new(origin, size, root)
        .unwrap()
        .sign(signer)
        .unwrap()
        .to_string()
}

fn entry(events: &[EventEnvelope], tree: &MemoryTree, position: u64, size: u64) -> ReceiptEntry {
    let proof = inclusion_proof(tree, position - 1, size).unwrap();
    ReceiptEntry::new(events[(position - 1) as usize].clone(), proof)
}

/// A receipt for `positions` under the checkpoint at `size`.
fn receipt(events: &[EventEnvelope], size: u64, positions: &[u64]) -> Receipt {
    let tree = tree(events);
    let entries = positions
        .iter()
        .map(|&p| entry(events, &tree, p, size))
        .collect();
    Receipt::new(note(&tree, size, &signer(), ORIGIN), entries)
}

#[test]
fn a_good_receipt_verifies_and_round_trips_through_json() {
    let events = log(13);
    let receipt = receipt(&events, 13, &[1, 7, 13]);
    let report = verify_receipt(&receipt, &key()).unwrap();
    assert_eq!(report.tree_size, 13);
    assert_eq!(report.origin, ORIGIN);
    let positions: Vec<u64> = report.entries.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 7, 13]);

    let text = serde_json::to_string_pretty(&receipt).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["format"], "cryptovault.receipt.v1");
    assert_eq!(value["entries"][1]["leaf_index"], 6);
    let sibling = value["entries"][1]["inclusion_proof"][0].as_str().unwrap();
    assert_eq!(sibling.len(), 44, "base64 of 32 bytes, padded: {sibling}");
    assert_eq!(value["entries"][1]["event"]["hash"], events[6].hash);
    let back: Receipt = serde_json::from_str(&text).unwrap();
    assert_eq!(back, receipt);
    assert!(verify_receipt(&back, &key()).is_ok());
}

#[test]
fn an_inclusion_bundle_is_a_receipt_of_one_event() {
    let events = log(6);
    let tree = tree(&events);
    let bundle = Receipt::inclusion(
        note(&tree, 6, &signer(), ORIGIN),
        entry(&events, &tree, 3, 6),
    );
    assert_eq!(bundle.format, INCLUSION_FORMAT);
    assert_eq!(verify_receipt(&bundle, &key()).unwrap().entries.len(), 1);

    let mut two = bundle.clone();
    two.entries.push(entry(&events, &tree, 4, 6));
    let err = verify_receipt(&two, &key()).unwrap_err();
    assert!(
        matches!(err, BundleError::EntryCount { count: 2, .. }),
        "{err}"
    );
    assert!(err.is_unusable_input());
}

#[test]
fn an_unknown_format_or_no_entries_is_refused() {
    let events = log(3);
    let mut bad = receipt(&events, 3, &[2]);
    bad.format = "cryptovault.receipt.v2".into();
    let err = verify_receipt(&bad, &key()).unwrap_err();
    assert!(matches!(err, BundleError::UnknownFormat { .. }), "{err}");
    assert!(err.is_unusable_input());

    let mut empty = receipt(&events, 3, &[2]);
    empty.entries.clear();
    let err = verify_receipt(&empty, &key()).unwrap_err();
    assert!(
        matches!(err, BundleError::EntryCount { count: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_changed_payload_is_an_altered_event() {
    let events = log(9);
    let mut receipt = receipt(&events, 9, &[2, 5]);
    receipt.entries[1].event.payload["amount"] = json!("1000.00000000");
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    let computed = event_hash(&receipt.entries[1].event);
    assert_eq!(
        err,
        BundleError::EventAltered {
            entry: 1,
            position: 5,
            stored: events[4].hash.clone(),
            computed: computed.clone(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "entry 1 (position 5): event altered: stored hash {}, computed {computed}",
            events[4].hash
        )
    );
    assert!(!err.is_unusable_input());
}

#[test]
fn a_changed_and_rehashed_event_is_not_in_the_tree() {
    let events = log(9);
    let mut receipt = receipt(&events, 9, &[5]);
    let event = &mut receipt.entries[0].event;
    event.payload["amount"] = json!("1000.00000000");
    event.hash = event_hash(event);
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert_eq!(
        err,
        BundleError::InclusionFailed {
            entry: 0,
            position: 5,
            source: MerkleError::RootMismatch
        }
    );
    assert_eq!(
        err.to_string(),
        "entry 0 (position 5): inclusion proof does not lead to the checkpoint root"
    );
}

#[test]
fn a_malformed_stored_hash_is_an_altered_event() {
    let events = log(2);
    let mut receipt = receipt(&events, 2, &[2]);
    receipt.entries[0].event.hash = "not hex".into();
    assert!(matches!(
        verify_receipt(&receipt, &key()),
        Err(BundleError::EventAltered {
            entry: 0,
            position: 2,
            ..
        })
    ));
}

#[test]
fn a_changed_or_missing_sibling_fails_the_inclusion_check() {
    let events = log(11);
    let mut changed = receipt(&events, 11, &[4]);
    changed.entries[0].inclusion_proof[1][0] ^= 1;
    assert!(matches!(
        verify_receipt(&changed, &key()),
        Err(BundleError::InclusionFailed {
            source: MerkleError::RootMismatch,
            ..
        })
    ));

    let mut short = receipt(&events, 11, &[4]);
    short.entries[0].inclusion_proof.pop();
    let err = verify_receipt(&short, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::InclusionFailed {
                source: MerkleError::WrongProofLength { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_wrong_leaf_index_is_named() {
    let events = log(8);
    let mut receipt = receipt(&events, 8, &[7]);
    receipt.entries[0].leaf_index = 4;
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry 0 (position 7): leaf index 4 is not position 7 - 1"
    );
}

#[test]
fn an_event_beyond_the_checkpoint_size_is_refused() {
    let events = log(8);
    let tree = tree(&events);
    // The proof is for the tree of 8, the checkpoint signs 5.
    let receipt = Receipt::new(
        note(&tree, 5, &signer(), ORIGIN),
        vec![entry(&events, &tree, 7, 8)],
    );
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::LeafIndexBeyondSize {
                leaf_index: 6,
                size: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_proof_for_another_size_fails_against_the_signed_one() {
    let events = log(12);
    let tree = tree(&events);
    // The note signs size 12, the proof is for size 10.
    let receipt = Receipt::new(
        note(&tree, 12, &signer(), ORIGIN),
        vec![entry(&events, &tree, 9, 10)],
    );
    assert!(matches!(
        verify_receipt(&receipt, &key()),
        Err(BundleError::InclusionFailed {
            entry: 0,
            position: 9,
            ..
        })
    ));
}

#[test]
fn a_note_signed_by_another_key_is_refused() {
    let events = log(5);
    let tree = tree(&events);
    let other = SignerKey::from_seed(ORIGIN, [8; 32]).unwrap();
    let receipt = Receipt::new(
        note(&tree, 5, &other, ORIGIN),
        vec![entry(&events, &tree, 2, 5)],
    );
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::BadSignature {
                note: NoteRole::Checkpoint,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with(&format!(
        "checkpoint signature does not verify under key {}",
        key()
    )));
}

#[test]
fn a_note_whose_text_was_changed_is_refused() {
    let events = log(5);
    let mut receipt = receipt(&events, 5, &[2]);
    receipt.checkpoint = receipt.checkpoint.replacen("\n5\n", "\n4\n", 1);
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");

    receipt.checkpoint = "not a note".into();
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert!(matches!(err, BundleError::MalformedNote { .. }), "{err}");
}

#[test]
fn a_note_from_another_origin_is_refused() {
    let events = log(5);
    let tree = tree(&events);
    // Signed by the pinned key, but naming another log.
    let receipt = Receipt::new(
        note(&tree, 5, &signer(), "elsewhere.example/log"),
        vec![entry(&events, &tree, 2, 5)],
    );
    let err = verify_receipt(&receipt, &key()).unwrap_err();
    assert!(matches!(err, BundleError::OriginDiffers { .. }), "{err}");
    assert!(err.to_string().contains("origin differs"), "{err}");

    // Signed by another log's key.
    let other = SignerKey::from_seed("elsewhere.example/log", [7; 32]).unwrap();
    let receipt = Receipt::new(
        note(&tree, 5, &other, "elsewhere.example/log"),
        vec![entry(&events, &tree, 2, 5)],
    );
    assert!(matches!(
        verify_receipt(&receipt, &key()),
        Err(BundleError::BadSignature { .. })
    ));
}

#[test]
fn bad_base64_in_a_proof_is_a_parse_error_not_a_panic() {
    let events = log(4);
    let mut value = serde_json::to_value(receipt(&events, 4, &[1])).unwrap();
    for bad in [json!("AAAA"), json!("not base64!"), json!(17), json!(null)] {
        value["entries"][0]["inclusion_proof"][0] = bad;
        assert!(serde_json::from_value::<Receipt>(value.clone()).is_err());
    }
}

/// The consistency bundle from size `old` to `new` of `events`, and the old note.
fn consistency(events: &[EventEnvelope], old: u64, new: u64) -> (String, ConsistencyBundle) {
    let tree = tree(events);
    let old_note = note(&tree, old, &signer(), ORIGIN);
    let bundle = ConsistencyBundle::new(
        old,
        new,
        Some(old_note.clone()),
        note(&tree, new, &signer(), ORIGIN),
        consistency_proof(&tree, old, new).unwrap(),
    );
    (old_note, bundle)
}

#[test]
fn a_good_consistency_bundle_verifies_and_round_trips_through_json() {
    let events = log(25);
    for (old, new) in [(10, 25), (1, 25), (16, 25), (25, 25), (0, 25)] {
        let (old_note, bundle) = consistency(&events, old, new);
        let report = verify_consistency_bundle(&old_note, &bundle, &key())
            .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
        assert_eq!((report.old_size, report.new_size), (old, new));
        let text = serde_json::to_string(&bundle).unwrap();
        let back: ConsistencyBundle = serde_json::from_str(&text).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.format, CONSISTENCY_FORMAT);
    }
    let (_, bundle) = consistency(&events, 10, 25);
    let mut value = serde_json::to_value(&bundle).unwrap();
    value["old_checkpoint"] = serde_json::Value::Null;
    let back: ConsistencyBundle = serde_json::from_value(value).unwrap();
    assert_eq!(back.old_checkpoint, None);
}

#[test]
fn a_wrong_consistency_proof_fails() {
    let events = log(25);
    let (old_note, mut bundle) = consistency(&events, 10, 25);
    bundle.proof[0][5] ^= 0x40;
    let err = verify_consistency_bundle(&old_note, &bundle, &key()).unwrap_err();
    assert!(
        matches!(err, BundleError::ConsistencyFailed { .. }),
        "{err}"
    );

    let (old_note, mut bundle) = consistency(&events, 10, 25);
    bundle.proof.push([0; 32]);
    let err = verify_consistency_bundle(&old_note, &bundle, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::ConsistencyFailed {
                source: MerkleError::WrongProofLength { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_old_root_from_another_history_fails() {
    let events = log(25);
    let (_, bundle) = consistency(&events, 10, 25);
    // The same first ten positions, one of them different: a rewritten history.
    let mut rewritten = events[..10].to_vec();
    rewritten[3].payload["amount"] = json!("9.99");
    rewritten[3].hash = event_hash(&rewritten[3]);
    let other_old = note(&tree(&rewritten), 10, &signer(), ORIGIN);
    let err = verify_consistency_bundle(&other_old, &bundle, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::ConsistencyFailed {
                source: MerkleError::OldRootMismatch,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("old checkpoint root"), "{err}");
}

#[test]
fn swapped_sizes_fail() {
    let events = log(25);
    let (old_note, bundle) = consistency(&events, 10, 25);
    // The auditor passes the new note as the old one and vice versa.
    let swapped = ConsistencyBundle::new(25, 10, None, old_note.clone(), bundle.proof.clone());
    let err = verify_consistency_bundle(&bundle.new_checkpoint, &swapped, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::ConsistencyFailed {
                source: MerkleError::SizesOutOfOrder { .. },
                ..
            }
        ),
        "{err}"
    );
    // Sizes in the bundle that are not the notes'.
    let mut lying = bundle.clone();
    lying.old_size = 11;
    let err = verify_consistency_bundle(&old_note, &lying, &key()).unwrap_err();
    assert_eq!(
        err,
        BundleError::SizeDiffers {
            field: "old_size",
            note: NoteRole::Old,
            stated: 11,
            signed: 10
        }
    );
}

#[test]
fn different_origins_or_keys_fail() {
    let events = log(25);
    let (_, bundle) = consistency(&events, 10, 25);
    let tree = tree(&events);
    let foreign = note(&tree, 10, &signer(), "elsewhere.example/log");
    let err = verify_consistency_bundle(&foreign, &bundle, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::OriginDiffers {
                note: NoteRole::Old,
                ..
            }
        ),
        "{err}"
    );

    let other = SignerKey::from_seed(ORIGIN, [9; 32]).unwrap();
    let (old_note, mut bundle) = consistency(&events, 10, 25);
    bundle.new_checkpoint = note(&tree, 25, &other, ORIGIN);
    let err = verify_consistency_bundle(&old_note, &bundle, &key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::BadSignature {
                note: NoteRole::New,
                ..
            }
        ),
        "{err}"
    );

    let mut bundle = consistency(&events, 10, 25).1;
    bundle.format = "cryptovault.receipt.v1".into();
    let err = verify_consistency_bundle(&old_note, &bundle, &key()).unwrap_err();
    assert!(err.is_unusable_input(), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_receipt_and_consistency_bundle_of_a_random_log_verifies(
        size in 1u64..=70, a in any::<u64>(), b in any::<u64>(), flip in any::<(usize, u8)>()
    ) {
        let events = log(size);
        let position = a % size + 1;
        let old = b % (size + 1);
        let good = receipt(&events, size, &[position]);
        prop_assert!(verify_receipt(&good, &key()).is_ok());
        let mut bad = good.clone();
        let proof = &mut bad.entries[0].inclusion_proof;
        if !proof.is_empty() {
            let i = flip.0 % proof.len();
            proof[i][flip.1 as usize % 32] ^= 1;
            prop_assert!(verify_receipt(&bad, &key()).is_err());
        }
        // Another leaf index (the next position's, wrapping), when there is another.
        let mut wrong_index = good.clone();
        wrong_index.entries[0].leaf_index = position % size;
        if size > 1 {
            prop_assert!(verify_receipt(&wrong_index, &key()).is_err());
        }

        let (old_note, bundle) = consistency(&events, old, size);
        prop_assert!(verify_consistency_bundle(&old_note, &bundle, &key()).is_ok());
        if !bundle.proof.is_empty() {
            let mut bad = bundle.clone();
            let i = flip.0 % bad.proof.len();
            bad.proof[i][flip.1 as usize % 32] ^= 1;
            prop_assert!(verify_consistency_bundle(&old_note, &bad, &key()).is_err());
        }
    }
}
