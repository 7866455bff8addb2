//! Self-contained proof bundles (issue 16) and their offline verification: receipts
//! (`cryptovault.receipt.v1`, and `cryptovault.inclusion.v1`, a receipt of one event) and
//! consistency bundles (`cryptovault.consistency.v1`). The JSON is the one in
//! `notes/issue16-spec.md`: hashes in proofs are standard padded base64 of 32 bytes, event hashes
//! inside envelopes stay lowercase hex.
//!
//! # What a verified receipt proves, and what it does not
//!
//! [`verify_receipt`] checks, in this order, and stops at the first failure:
//!
//! 1. The checkpoint is a signed note with a valid signature by the pinned [`VerifierKey`], and
//!    its text is a `tlog-checkpoint` body whose origin is the key's name: the holder of that
//!    key asserted "the log had this root at this size".
//! 2. For each entry: the envelope hashes to its own `hash` ([`canonical::event_hash`]): the
//!    event is exactly what was appended, not altered afterwards. Since the hash covers
//!    `prev_hash`, it is also bound to its predecessor.
//! 3. `leaf_index == position - 1` (leaf `i` is the event at log position `i + 1`) and
//!    `leaf_index < size`: the leaf the proof is about is the event's own place in the log.
//! 4. The inclusion proof leads from `leaf_hash(hash bytes)` at that index to the signed root
//!    ([`merkle::verify_inclusion`]).
//!
//! Together: **this event, unchanged, is at this position of the log the key signed at that
//! size.** A receipt does **not** prove the event's effects (that a balance is what the event
//! implies; that needs the events before it), that the event is valid by the ledger's rules,
//! that no other events exist (a later refund, a contradicting event elsewhere in the log),
//! nor that the log showed everyone the same tree (a split view; compare checkpoints with
//! other parties and check consistency proofs between the ones you keep). Nor does it prove
//! anything beyond `size`.
//!
//! # What a verified consistency bundle proves, and what it does not
//!
//! [`verify_consistency_bundle`] checks that both the old checkpoint (one the verifier kept)
//! and the new one verify under the pinned key, have the same origin, have the sizes the
//! bundle states, and that the proof shows the new tree extends the old one
//! ([`merkle::verify_consistency`]). That proves **the log the key signed at the old size is
//! the unchanged prefix of the log it signed at the new size**: nothing before the old size
//! was changed, dropped or reordered in between. It does not prove the appended events are
//! valid, nor that the log did not sign a different tree for someone else.
//!
//! Both verifications need only the verifier key: no I/O, no clock, no randomness.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::canonical;
use crate::checkpoint::{Checkpoint, CheckpointError, NoteError, VerifierKey};
use crate::envelope::EventEnvelope;
use crate::merkle::{self, Hash, MerkleError};

/// The `format` of a receipt: a signed checkpoint and one or more events with their proofs.
pub const RECEIPT_FORMAT: &str = "cryptovault.receipt.v1";

/// The `format` of the proofs API's inclusion bundle: a receipt of exactly one event.
pub const INCLUSION_FORMAT: &str = "cryptovault.inclusion.v1";

/// The `format` of a consistency bundle.
pub const CONSISTENCY_FORMAT: &str = "cryptovault.consistency.v1";

/// A self-contained receipt: a signed checkpoint and events with their inclusion proofs in
/// that checkpoint's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`RECEIPT_FORMAT`] or [`INCLUSION_FORMAT`]; verifiers refuse any other value.
    pub format: String,
    /// The whole signed note: body lines, blank line, signature lines, each ending in `\n`.
    pub checkpoint: String,
    pub entries: Vec<ReceiptEntry>,
}

/// One event of a receipt with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    /// Zero-based leaf index: the event's position minus one.
    pub leaf_index: u64,
    /// Sibling hashes from the leaf towards the root (RFC 9162 §2.1.3), base64 in JSON.
    #[serde(with = "base64_hashes")]
    pub inclusion_proof: Vec<Hash>,
    /// The envelope as the audit API serves it.
    pub event: EventEnvelope,
}

/// A consistency proof between two signed checkpoints of one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyBundle {
    /// [`CONSISTENCY_FORMAT`]; verifiers refuse any other value.
    pub format: String,
    pub old_size: u64,
    pub new_size: u64,
    /// The old signed note; `null` when the verifier brings the one it kept.
    pub old_checkpoint: Option<String>,
    /// The new signed note.
    pub new_checkpoint: String,
    /// RFC 9162 §2.1.4 consistency proof, base64 in JSON.
    #[serde(with = "base64_hashes")]
    pub proof: Vec<Hash>,
}

impl Receipt {
    /// A [`RECEIPT_FORMAT`] receipt of `entries` under the signed note `checkpoint_note_text`.
    pub fn new(checkpoint_note_text: impl Into<String>, entries: Vec<ReceiptEntry>) -> Self {
        Self {
            format: RECEIPT_FORMAT.to_owned(),
            checkpoint: checkpoint_note_text.into(),
            entries,
        }
    }

    /// An [`INCLUSION_FORMAT`] bundle: the receipt of the one event of `entry`.
    pub fn inclusion(checkpoint_note_text: impl Into<String>, entry: ReceiptEntry) -> Self {
        Self {
            format: INCLUSION_FORMAT.to_owned(),
            checkpoint: checkpoint_note_text.into(),
            entries: vec![entry],
        }
    }
}

impl ReceiptEntry {
    /// The entry of `event` with its inclusion proof; the leaf index is `position - 1` (0 for
    /// the invalid position 0, which verification then refuses).
    pub fn new(event: EventEnvelope, inclusion_proof: Vec<Hash>) -> Self {
        Self {
            leaf_index: event.position.saturating_sub(1),
            inclusion_proof,
            event,
        }
    }
}

impl ConsistencyBundle {
    /// The bundle proving the tree of `old_size` leaves is a prefix of the one of `new_size`.
    pub fn new(
        old_size: u64,
        new_size: u64,
        old_checkpoint: Option<String>,
        new_checkpoint: impl Into<String>,
        proof: Vec<Hash>,
    ) -> Self {
        Self {
            format: CONSISTENCY_FORMAT.to_owned(),
            old_size,
            new_size,
            old_checkpoint,
            new_checkpoint: new_checkpoint.into(),
            proof,
        }
    }
}

/// The tree leaf of an event: the 32 bytes of its chain hash (lowercase hex in `hash`); `None`
/// when `hash_hex` is not 64 hex digits.
pub fn event_leaf(hash_hex: &str) -> Option<[u8; 32]> {
    let mut leaf = [0u8; 32];
    hex::decode_to_slice(hash_hex, &mut leaf).ok()?;
    Some(leaf)
}

/// The leaf hash of `event` in the log's tree, `SHA-256(0x00 ‖ hash bytes)`, from its stored
/// `hash` (not recomputed); `None` when that is not 64 hex digits.
pub fn event_leaf_hash(event: &EventEnvelope) -> Option<Hash> {
    event_leaf(&event.hash).map(|leaf| merkle::leaf_hash(&leaf))
}

/// Standard padded base64 of a hash, as in proofs and checkpoint roots.
pub fn hash_to_base64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// The hash whose canonical standard padded base64 is `s`.
pub fn hash_from_base64(s: &str) -> Option<Hash> {
    let bytes = STANDARD.decode(s).ok()?;
    if STANDARD.encode(&bytes) != s {
        return None;
    }
    bytes.try_into().ok()
}

/// Serde for a list of hashes as a JSON array of standard padded base64 strings (for use by
/// other bundle types too: `#[serde(with = "cryptovault_events::bundle::base64_hashes")]`).
pub mod base64_hashes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{hash_from_base64, hash_to_base64};
    use crate::merkle::Hash;

    pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hashes.iter().map(hash_to_base64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                hash_from_base64(s).ok_or_else(|| {
                    D::Error::custom(format!(
                        "hash {i} is not the standard padded base64 of 32 bytes: {s:?}"
                    ))
                })
            })
            .collect()
    }
}

/// Which signed note of a bundle a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteRole {
    /// A receipt's checkpoint.
    Checkpoint,
    /// The checkpoint the verifier kept (consistency).
    Old,
    /// The bundle's new checkpoint (consistency).
    New,
}

impl std::fmt::Display for NoteRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Checkpoint => "checkpoint",
            Self::Old => "old checkpoint",
            Self::New => "new checkpoint",
        })
    }
}

/// The check a bundle failed. Entry checks name the entry's index in the bundle and the
/// event's position.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    /// The `format` field is not one this verifier reads (the input is not such a bundle).
    #[error("unknown format {found:?} (expected {expected})")]
    UnknownFormat {
        found: String,
        expected: &'static str,
    },
    /// A receipt without entries proves nothing; an inclusion bundle has exactly one.
    #[error("{format} must have {expected}, it has {count} entries")]
    EntryCount {
        format: &'static str,
        expected: &'static str,
        count: usize,
    },
    /// The note is not a signed note or its text is not a checkpoint body.
    #[error("{note} is malformed: {source}")]
    MalformedNote {
        note: NoteRole,
        source: CheckpointError,
    },
    /// No valid signature by the pinned key (a missing one, a wrong one, another key's).
    #[error("{note} signature does not verify under key {key}: {source}")]
    BadSignature {
        note: NoteRole,
        key: String,
        source: NoteError,
    },
    /// The checkpoint's origin is not the pinned key's name (the log it names).
    #[error("{note} origin differs: {origin:?} is not the key's log {expected:?}")]
    OriginDiffers {
        note: NoteRole,
        origin: String,
        expected: String,
    },
    /// The envelope does not hash to its `hash`.
    #[error("entry {entry} (position {position}): event altered: stored hash {stored}, computed {computed}")]
    EventAltered {
        entry: usize,
        position: u64,
        stored: String,
        computed: String,
    },
    /// The leaf index is not the event's position minus one.
    #[error("entry {entry} (position {position}): leaf index {leaf_index} is not position {position} - 1")]
    LeafIndexNotPosition {
        entry: usize,
        position: u64,
        leaf_index: u64,
    },
    /// The leaf index is not below the checkpoint's tree size.
    #[error("entry {entry} (position {position}): leaf index {leaf_index} is not below the checkpoint's tree size {size}")]
    LeafIndexBeyondSize {
        entry: usize,
        position: u64,
        leaf_index: u64,
        size: u64,
    },
    /// The inclusion proof does not hold: wrong length, or it leads to another root.
    #[error("entry {entry} (position {position}): {}", inclusion_failure(.source))]
    InclusionFailed {
        entry: usize,
        position: u64,
        source: MerkleError,
    },
    /// The bundle's stated size is not the size its checkpoint signs.
    #[error("bundle's {field} {stated} is not the {note}'s tree size {signed}")]
    SizeDiffers {
        field: &'static str,
        note: NoteRole,
        stated: u64,
        signed: u64,
    },
    /// The old and new checkpoints are of different logs.
    #[error("origin differs: old checkpoint {old:?}, new checkpoint {new:?}")]
    OriginsDiffer { old: String, new: String },
    /// The consistency proof does not hold.
    #[error("consistency proof from size {old_size} to {new_size} does not verify: {}", consistency_failure(.source))]
    ConsistencyFailed {
        old_size: u64,
        new_size: u64,
        source: MerkleError,
    },
}

impl BundleError {
    /// Whether the input is not a bundle of the expected kind at all (rather than a bundle
    /// that fails a check): an unknown `format`, or an entry count the format forbids.
    pub fn is_unusable_input(&self) -> bool {
        matches!(self, Self::UnknownFormat { .. } | Self::EntryCount { .. })
    }
}

fn inclusion_failure(e: &MerkleError) -> String {
    match e {
        MerkleError::RootMismatch => "inclusion proof does not lead to the checkpoint root".into(),
        MerkleError::WrongProofLength { expected, actual } => format!(
            "inclusion proof has {actual} hashes, {expected} expected for this index and size"
        ),
        other => format!("inclusion proof does not verify: {other}"),
    }
}

fn consistency_failure(e: &MerkleError) -> String {
    match e {
        MerkleError::OldRootMismatch => "it does not lead to the old checkpoint root".into(),
        MerkleError::NewRootMismatch => "it does not lead to the new checkpoint root".into(),
        other => other.to_string(),
    }
}

/// What a verified receipt showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptReport {
    pub format: String,
    /// The log's origin (the key's name).
    pub origin: String,
    /// The pinned verifier key.
    pub key: String,
    pub tree_size: u64,
    /// Base64 of the signed root.
    pub root: String,
    pub entries: Vec<VerifiedEntry>,
}

/// One verified receipt entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedEntry {
    pub position: u64,
    pub leaf_index: u64,
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub hash: String,
}

/// What a verified consistency bundle showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyReport {
    pub origin: String,
    pub key: String,
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
}

/// Opens a signed checkpoint under `key`, naming `note` in the error.
pub fn open_checkpoint(
    text: &str,
    key: &VerifierKey,
    note: NoteRole,
) -> Result<Checkpoint, BundleError> {
    match Checkpoint::open(text, key, &[]) {
        Ok((checkpoint, _)) => Ok(checkpoint),
        Err(CheckpointError::Note(
            source @ (NoteError::InvalidSignature { .. } | NoteError::NoVerifiedSignature),
        )) => Err(BundleError::BadSignature {
            note,
            key: key.to_string(),
            source,
        }),
        Err(CheckpointError::OriginMismatch { origin, key_name }) => {
            Err(BundleError::OriginDiffers {
                note,
                origin,
                expected: key_name,
            })
        }
        Err(source) => Err(BundleError::MalformedNote { note, source }),
    }
}

/// Verifies a receipt (or inclusion bundle) with only the log's verifier key: the checks and
/// their meaning are in the module docs. Stops at the first failed check.
pub fn verify_receipt(receipt: &Receipt, key: &VerifierKey) -> Result<ReceiptReport, BundleError> {
    let (format, expected) = match receipt.format.as_str() {
        RECEIPT_FORMAT => (RECEIPT_FORMAT, "at least one entry"),
        INCLUSION_FORMAT => (INCLUSION_FORMAT, "exactly one entry"),
        other => {
            return Err(BundleError::UnknownFormat {
                found: other.to_owned(),
                expected: "cryptovault.receipt.v1 or cryptovault.inclusion.v1",
            })
        }
    };
    let count = receipt.entries.len();
    if count == 0 || (format == INCLUSION_FORMAT && count != 1) {
        return Err(BundleError::EntryCount {
            format,
            expected,
            count,
        });
    }
    let checkpoint = open_checkpoint(&receipt.checkpoint, key, NoteRole::Checkpoint)?;
    let size = checkpoint.size();
    let mut entries = Vec::with_capacity(count);
    for (entry, item) in receipt.entries.iter().enumerate() {
        entries.push(verify_included(
            entry,
            &item.event,
            item.leaf_index,
            &item.inclusion_proof,
            &checkpoint,
        )?);
    }
    Ok(ReceiptReport {
        format: format.to_owned(),
        origin: checkpoint.origin().to_owned(),
        key: key.to_string(),
        tree_size: size,
        root: hash_to_base64(checkpoint.root()),
        entries,
    })
}

/// The entry checks of a receipt (module docs, checks 2–4) for one event under an opened
/// `checkpoint`: the envelope hashes to its `hash`, `leaf_index` is its position minus one and
/// below the tree size, and `proof` leads from its leaf to the signed root. `entry` names the
/// event in errors. Other bundles that carry events (statements) use it too.
pub fn verify_included(
    entry: usize,
    event: &EventEnvelope,
    leaf_index: u64,
    proof: &[Hash],
    checkpoint: &Checkpoint,
) -> Result<VerifiedEntry, BundleError> {
    let size = checkpoint.size();
    let position = event.position;
    let computed = canonical::event_hash(event);
    // `computed` is 64 lowercase hex digits, so equal to it `hash` is a valid leaf.
    let leaf = match event_leaf(&event.hash) {
        Some(leaf) if computed == event.hash => leaf,
        _ => {
            return Err(BundleError::EventAltered {
                entry,
                position,
                stored: event.hash.clone(),
                computed,
            })
        }
    };
    if position.checked_sub(1) != Some(leaf_index) {
        return Err(BundleError::LeafIndexNotPosition {
            entry,
            position,
            leaf_index,
        });
    }
    if leaf_index >= size {
        return Err(BundleError::LeafIndexBeyondSize {
            entry,
            position,
            leaf_index,
            size,
        });
    }
    merkle::verify_inclusion(
        &merkle::leaf_hash(&leaf),
        leaf_index,
        size,
        proof,
        checkpoint.root(),
    )
    .map_err(|source| BundleError::InclusionFailed {
        entry,
        position,
        source,
    })?;
    Ok(VerifiedEntry {
        position,
        leaf_index,
        event_id: event.event_id.to_string(),
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        hash: event.hash.clone(),
    })
}

/// Verifies that `bundle`'s new checkpoint extends `old_note_text`, a signed checkpoint the
/// verifier kept (the bundle's own `old_checkpoint` is not used), with only the verifier key:
/// see the module docs.
pub fn verify_consistency_bundle(
    old_note_text: &str,
    bundle: &ConsistencyBundle,
    key: &VerifierKey,
) -> Result<ConsistencyReport, BundleError> {
    verify_consistency_across_keys(old_note_text, key, bundle, key)
}

/// As [`verify_consistency_bundle`], across a key rotation: the old note must verify under
/// `old_key` (the retired key), the bundle's new note under `key` (the current one); both keys
/// name the same log (origin).
pub fn verify_consistency_across_keys(
    old_note_text: &str,
    old_key: &VerifierKey,
    bundle: &ConsistencyBundle,
    key: &VerifierKey,
) -> Result<ConsistencyReport, BundleError> {
    if bundle.format != CONSISTENCY_FORMAT {
        return Err(BundleError::UnknownFormat {
            found: bundle.format.clone(),
            expected: CONSISTENCY_FORMAT,
        });
    }
    let old = open_checkpoint(old_note_text, old_key, NoteRole::Old)?;
    let new = open_checkpoint(&bundle.new_checkpoint, key, NoteRole::New)?;
    if old.origin() != new.origin() {
        return Err(BundleError::OriginsDiffer {
            old: old.origin().to_owned(),
            new: new.origin().to_owned(),
        });
    }
    for (field, note, stated, signed) in [
        ("old_size", NoteRole::Old, bundle.old_size, old.size()),
        ("new_size", NoteRole::New, bundle.new_size, new.size()),
    ] {
        if stated != signed {
            return Err(BundleError::SizeDiffers {
                field,
                note,
                stated,
                signed,
            });
        }
    }
    merkle::verify_consistency(
        old.size(),
        new.size(),
        old.root(),
        new.root(),
        &bundle.proof,
    )
    .map_err(|source| BundleError::ConsistencyFailed {
        old_size: old.size(),
        new_size: new.size(),
        source,
    })?;
    Ok(ConsistencyReport {
        origin: new.origin().to_owned(),
        key: key.to_string(),
        old_size: old.size(),
        new_size: new.size(),
        old_root: hash_to_base64(old.root()),
        new_root: hash_to_base64(new.root()),
    })
}
