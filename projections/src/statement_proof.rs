//! Verifiable statements (issue 16), checked offline with only the log's verifier key.
//!
//! Two forms, both bound to one signed checkpoint (the statement covers the ledger up to the
//! checkpoint's size):
//!
//! - **JSON, `cryptovault.statement.v1`**: the usual JSON statement with, at the top, `format`
//!   and `checkpoint` (the whole signed note), and in every movement the envelope of the event
//!   it comes from (`event`), its `leaf_index` and its `inclusion_proof` (base64 hashes) in the
//!   checkpoint's tree. [`verify_statement`] checks:
//!   1. the checkpoint's signature and origin (as receipts do), and `up_to_position` is its size;
//!   2. per movement: the event is unaltered and included at its position
//!      ([`bundle::verify_included`]); the movement's `position` and `occurred_at` are the
//!      event's, and `occurred_at` is within the period; the movement's `type`, `reference`,
//!      `counterparty_id` and `amount` are exactly the statement user's entry in this asset that
//!      the event makes, recomputed with the ledger's own fold ([`crate::entries::entries`]);
//!      movements are in (`occurred_at`, `position`) order, none twice;
//!   3. per asset: each `balance` is the opening plus the movements so far, the
//!      `closing_balance` is the last one, `movement_count` is the number of movements.
//! - **CSV + digest, `cryptovault.statement-digest.v1`**: the CSV bytes are exactly the usual
//!   ones; a separate digest file carries the checkpoint and a signed note (same key, origin
//!   `<log origin>/statement`, so it can never pass for a checkpoint) binding the user, the
//!   assets, the period, the checkpoint's size and root and the SHA-256 of the exact bytes
//!   ([`DigestFacts`]). [`verify_digest`] checks both signatures, that the digest names the
//!   checkpoint it comes with, and the SHA-256 of the bytes.
//!
//! # What a verified statement does not prove
//!
//! - **Completeness.** A statement can omit a movement and still verify (its balances would
//!   then not add up to the user's real closing balance, but nothing here knows that balance).
//!   Only the user's own receipts and balances, and the liabilities proof, speak to it.
//! - **The opening balance.** It is the sum of every entry before the period; proving it would
//!   take every earlier event. The JSON checks that the movements lead from it to the closing
//!   balance, nothing about the opening figure itself.
//! - The CSV digest proves the service's key signed these exact bytes for these parameters at
//!   this checkpoint: it says nothing about the rows beyond that (no per-row proofs).
//! - Nothing about prices or values in other currencies; nor the `email` and `generated_at`
//!   header fields.
//!
//! Pure: no I/O, no clock. The verifier reads the whole JSON into memory.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cryptovault_events::bundle::{self, base64_hashes, hash_from_base64, hash_to_base64};
use cryptovault_events::checkpoint::{Checkpoint, NoteError, SignedNote, VerifierKey};
use cryptovault_events::merkle::Hash;
use cryptovault_events::{EventEnvelope, Units};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::entries::{entries, RunningBalance};

/// The `format` of a verifiable JSON statement.
pub const STATEMENT_FORMAT: &str = "cryptovault.statement.v1";
/// The `format` of a statement digest file.
pub const DIGEST_FORMAT: &str = "cryptovault.statement-digest.v1";
/// Appended to the log's origin to make a digest note's first line.
pub const DIGEST_ORIGIN_SUFFIX: &str = "/statement";

/// A verifiable JSON statement, as `POST /api/transactions/export` with `"verifiable": true`
/// writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiableStatement {
    pub format: String,
    /// The whole signed checkpoint note.
    pub checkpoint: String,
    pub statement: StatementBody,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatementBody {
    pub user_id: Uuid,
    #[serde(default)]
    pub email: Option<String>,
    /// RFC 3339, inclusive; `null` for "from the beginning".
    pub from: Option<String>,
    /// RFC 3339, exclusive; `null` for "up to the checkpoint".
    pub to: Option<String>,
    pub up_to_position: u64,
    #[serde(default)]
    pub generated_at: Option<String>,
    pub assets: Vec<AssetSection>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AssetSection {
    pub asset: String,
    pub opening_balance: String,
    pub movements: Vec<ProvenMovement>,
    pub closing_balance: String,
    pub movement_count: u64,
}

/// One movement with the event it comes from and that event's inclusion proof.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvenMovement {
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: String,
    pub position: u64,
    pub reference: String,
    pub counterparty_id: Option<String>,
    pub amount: String,
    pub balance: String,
    pub leaf_index: u64,
    #[serde(with = "base64_hashes")]
    pub inclusion_proof: Vec<Hash>,
    pub event: EventEnvelope,
}

/// A statement digest file: the checkpoint and the signed digest note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestFile {
    /// [`DIGEST_FORMAT`].
    pub format: String,
    /// The whole signed checkpoint note the statement was computed at.
    pub checkpoint: String,
    /// The signed digest note (see [`DigestFacts::note_text`]).
    pub digest: String,
}

/// What a digest note binds. Its text, one `key value` line each after the origin line:
///
/// ```text
/// cryptovault.local/ledger/statement
/// format csv
/// user 0190c3e2-…
/// assets BTC,ETH
/// from 2026-01-01T00:00:00.000Z      (or "-")
/// to -
/// checkpoint 42 <base64 root>
/// sha256 <64 lowercase hex digits of the exact statement bytes>
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestFacts {
    /// `csv` or `json`: the statement's format.
    pub format: String,
    pub user_id: Uuid,
    pub assets: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub size: u64,
    /// Base64 of the checkpoint's root.
    pub root: String,
    /// Lowercase hex.
    pub sha256: String,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A value that cannot be a word of a digest line (empty, or holding a space, a comma or a
/// control character).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} cannot be written in a digest note")]
pub struct BadDigestValue {
    pub field: &'static str,
    pub value: String,
}

fn word(field: &'static str, value: &str) -> Result<(), BadDigestValue> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == ',' || c.is_control())
    {
        return Err(BadDigestValue {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl DigestFacts {
    /// The note text for the log `origin` (ends in `\n`).
    pub fn note_text(&self, origin: &str) -> Result<String, BadDigestValue> {
        word("format", &self.format)?;
        for asset in &self.assets {
            word("asset", asset)?;
        }
        if self.assets.is_empty() {
            return Err(BadDigestValue {
                field: "assets",
                value: String::new(),
            });
        }
        for (field, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(value) = value {
                word(field, value)?;
            }
        }
        word("root", &self.root)?;
        word("sha256", &self.sha256)?;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        Ok(format!(
            "{origin}{DIGEST_ORIGIN_SUFFIX}\nformat {}\nuser {}\nassets {}\nfrom {}\nto {}\n\
             checkpoint {} {}\nsha256 {}\n",
            self.format,
            self.user_id,
            self.assets.join(","),
            opt(&self.from),
            opt(&self.to),
            self.size,
            self.root,
            self.sha256
        ))
    }

    /// Parses a digest note's text (as [`Self::note_text`] writes it); returns the origin
    /// line and the facts.
    pub fn parse(text: &str) -> Result<(String, Self), String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("the text does not end in a newline")?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default().to_owned();
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines
                .next()
                .ok_or_else(|| format!("line {name:?} is missing"))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| format!("expected a {name:?} line, found {line:?}"))
        };
        let format = field("format")?;
        let user_id = field("user")?;
        let user_id = Uuid::from_str(&user_id).map_err(|_| format!("user {user_id:?}"))?;
        let assets: Vec<String> = field("assets")?.split(',').map(str::to_owned).collect();
        let opt = |v: String| (v != "-").then_some(v);
        let from = opt(field("from")?);
        let to = opt(field("to")?);
        let checkpoint = field("checkpoint")?;
        let (size, root) = checkpoint
            .split_once(' ')
            .ok_or_else(|| format!("checkpoint {checkpoint:?}"))?;
        let size: u64 = size
            .parse()
            .map_err(|_| format!("checkpoint size {size:?}"))?;
        let root = root.to_owned();
        let sha256 = field("sha256")?;
        if lines.next().is_some() {
            return Err("extra lines after sha256".into());
        }
        Ok((
            origin,
            Self {
                format,
                user_id,
                assets,
                from,
                to,
                size,
                root,
                sha256,
            },
        ))
    }
}

/// The check a statement or a digest failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not such a document (exit 2 in the CLI).
    #[error("unknown format {found:?} (expected {expected})")]
    UnknownFormat {
        found: String,
        expected: &'static str,
    },
    /// The checkpoint does not open under the key (signature, origin, syntax).
    #[error(transparent)]
    Checkpoint(bundle::BundleError),
    #[error("up_to_position {stated} is not the checkpoint's tree size {size}")]
    UpToPosition { stated: u64, size: u64 },
    #[error("{field} {value:?} is not an RFC 3339 time")]
    Period { field: &'static str, value: String },
    /// A movement failed a check (its index in the asset's movements, from 0).
    #[error("asset {asset} movement {movement} (position {position}): {what}")]
    Movement {
        asset: String,
        movement: usize,
        position: u64,
        what: String,
    },
    /// An asset's totals do not add up.
    #[error("asset {asset}: {what}")]
    Asset { asset: String, what: String },
    #[error("digest note: {0}")]
    Digest(String),
    #[error("digest signature does not verify under key {key}: {source}")]
    DigestSignature { key: String, source: NoteError },
    #[error("the digest names checkpoint {stated}, the checkpoint it comes with is {actual}")]
    DigestCheckpoint { stated: String, actual: String },
    #[error("sha256 of the statement is {computed}, the digest signs {signed}: the bytes differ")]
    Sha256Differs { signed: String, computed: String },
}

impl StatementError {
    /// Whether the input is not such a document at all (rather than one failing a check).
    pub fn is_unusable_input(&self) -> bool {
        matches!(self, Self::UnknownFormat { .. })
    }
}

/// What a verified JSON statement showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementReport {
    pub origin: String,
    pub key: String,
    pub tree_size: u64,
    pub root: String,
    pub user_id: Uuid,
    pub from: Option<String>,
    pub to: Option<String>,
    pub assets: Vec<AssetReport>,
    pub not_proven: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetReport {
    pub asset: String,
    pub opening_balance: String,
    pub closing_balance: String,
    pub movements: u64,
}

/// What a verified digest showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestReport {
    pub origin: String,
    pub key: String,
    pub tree_size: u64,
    pub root: String,
    pub facts: DigestFacts,
    pub bytes: usize,
    pub not_proven: &'static str,
}

const NOT_PROVEN: &str = "completeness (a statement can omit movements), the opening balance, \
                          and anything about prices";

fn time(field: &'static str, value: &str) -> Result<DateTime<Utc>, StatementError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StatementError::Period {
            field,
            value: value.to_owned(),
        })
}

fn units(value: &str) -> Result<Units, String> {
    Units::from_str(value).map_err(|e| e.to_string())
}

/// Verifies a JSON statement with only the log's key (checks in the module docs); stops at the
/// first failure.
pub fn verify_statement(
    statement: &VerifiableStatement,
    key: &VerifierKey,
) -> Result<StatementReport, StatementError> {
    if statement.format != STATEMENT_FORMAT {
        return Err(StatementError::UnknownFormat {
            found: statement.format.clone(),
            expected: STATEMENT_FORMAT,
        });
    }
    let checkpoint =
        bundle::open_checkpoint(&statement.checkpoint, key, bundle::NoteRole::Checkpoint)
            .map_err(StatementError::Checkpoint)?;
    let body = &statement.statement;
    if body.up_to_position != checkpoint.size() {
        return Err(StatementError::UpToPosition {
            stated: body.up_to_position,
            size: checkpoint.size(),
        });
    }
    let from = body.from.as_deref().map(|v| time("from", v)).transpose()?;
    let to = body.to.as_deref().map(|v| time("to", v)).transpose()?;
    let mut assets = Vec::with_capacity(body.assets.len());
    for section in &body.assets {
        assets.push(verify_asset(
            body.user_id,
            (from, to),
            section,
            &checkpoint,
        )?);
    }
    Ok(StatementReport {
        origin: checkpoint.origin().to_owned(),
        key: key.to_string(),
        tree_size: checkpoint.size(),
        root: hash_to_base64(checkpoint.root()),
        user_id: body.user_id,
        from: body.from.clone(),
        to: body.to.clone(),
        assets,
        not_proven: NOT_PROVEN,
    })
}

type Period = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn verify_asset(
    user_id: Uuid,
    period: Period,
    section: &AssetSection,
    checkpoint: &Checkpoint,
) -> Result<AssetReport, StatementError> {
    let asset = &section.asset;
    let asset_error = |what: String| StatementError::Asset {
        asset: asset.clone(),
        what,
    };
    let opening = units(&section.opening_balance)
        .map_err(|e| asset_error(format!("opening_balance: {e}")))?;
    let mut running = RunningBalance::new(opening);
    let mut previous: Option<(DateTime<Utc>, u64)> = None;
    for (index, movement) in section.movements.iter().enumerate() {
        let failed = |what: String| StatementError::Movement {
            asset: asset.clone(),
            movement: index,
            position: movement.position,
            what,
        };
        let (occurred_at, amount) =
            verify_movement(user_id, asset, period, index, movement, checkpoint).map_err(failed)?;
        let key = (occurred_at, movement.position);
        if previous.is_some_and(|p| p >= key) {
            return Err(failed(
                "out of (occurred_at, position) order, or listed twice".into(),
            ));
        }
        previous = Some(key);
        let balance = running
            .add(amount)
            .map_err(|e| failed(format!("balance: {e}")))?;
        let stated = units(&movement.balance).map_err(|e| failed(format!("balance: {e}")))?;
        if stated != balance {
            return Err(failed(format!(
                "balance {} is not the opening balance plus the movements so far ({balance})",
                movement.balance
            )));
        }
    }
    let closing = units(&section.closing_balance)
        .map_err(|e| asset_error(format!("closing_balance: {e}")))?;
    if closing != running.closing() {
        return Err(asset_error(format!(
            "closing_balance {} is not opening {} plus the movements ({})",
            section.closing_balance,
            section.opening_balance,
            running.closing()
        )));
    }
    if section.movement_count != running.movements {
        return Err(asset_error(format!(
            "movement_count {} but {} movements are listed",
            section.movement_count, running.movements
        )));
    }
    Ok(AssetReport {
        asset: asset.clone(),
        opening_balance: section.opening_balance.clone(),
        closing_balance: section.closing_balance.clone(),
        movements: running.movements,
    })
}

/// One movement's checks (module docs, 2); its time and signed amount.
fn verify_movement(
    user_id: Uuid,
    asset: &str,
    (from, to): Period,
    index: usize,
    movement: &ProvenMovement,
    checkpoint: &Checkpoint,
) -> Result<(DateTime<Utc>, Units), String> {
    let event = &movement.event;
    bundle::verify_included(
        index,
        event,
        movement.leaf_index,
        &movement.inclusion_proof,
        checkpoint,
    )
    .map_err(|e| e.to_string())?;
    if movement.position != event.position {
        return Err(format!(
            "position is not the event's position {}",
            event.position
        ));
    }
    let occurred_at = DateTime::parse_from_rfc3339(&movement.occurred_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("occurred_at {:?} is not a time", movement.occurred_at))?;
    if occurred_at != event.occurred_at {
        return Err(format!(
            "occurred_at {} is not the event's {}",
            movement.occurred_at, event.occurred_at
        ));
    }
    if from.is_some_and(|from| occurred_at < from) || to.is_some_and(|to| occurred_at >= to) {
        return Err("occurred_at is outside the statement's period".into());
    }
    let made = entries(event).map_err(|e| e.to_string())?;
    let mut mine = made
        .into_iter()
        .filter(|e| e.user_id == user_id && e.asset == asset && e.kind.is_movement());
    let entry = match (mine.next(), mine.next()) {
        (Some(entry), None) => entry,
        (None, _) => {
            return Err(format!(
                "the event ({}) moves no {asset} of user {user_id}",
                event.event_type
            ))
        }
        (Some(_), Some(_)) => return Err("the event makes several entries".into()),
    };
    if movement.kind != entry.kind.as_str() {
        return Err(format!(
            "type {:?} but the event is a {}",
            movement.kind,
            entry.kind.as_str()
        ));
    }
    if movement.reference != entry.reference.to_string() {
        return Err(format!(
            "reference {} but the event's is {}",
            movement.reference, entry.reference
        ));
    }
    let counterparty = entry.counterparty.map(|c| c.to_string());
    if movement.counterparty_id != counterparty {
        return Err(format!(
            "counterparty_id {:?} but the event's is {counterparty:?}",
            movement.counterparty_id
        ));
    }
    let total = entry
        .total()
        .ok_or("the event's change is beyond the range")?;
    let amount = units(&movement.amount).map_err(|e| format!("amount: {e}"))?;
    if amount != total {
        return Err(format!(
            "amount {} but the event moves {total}",
            movement.amount
        ));
    }
    Ok((occurred_at, amount))
}

/// Verifies that `bytes` are the statement `digest` signs, with only the log's key: the
/// checkpoint and the digest note verify under `key`, the note's origin is the key's name
/// plus [`DIGEST_ORIGIN_SUFFIX`], it names the checkpoint's size and root, and its `sha256`
/// is the SHA-256 of `bytes`.
pub fn verify_digest(
    bytes: &[u8],
    digest: &DigestFile,
    key: &VerifierKey,
) -> Result<DigestReport, StatementError> {
    if digest.format != DIGEST_FORMAT {
        return Err(StatementError::UnknownFormat {
            found: digest.format.clone(),
            expected: DIGEST_FORMAT,
        });
    }
    let checkpoint = bundle::open_checkpoint(&digest.checkpoint, key, bundle::NoteRole::Checkpoint)
        .map_err(StatementError::Checkpoint)?;
    let note = SignedNote::parse(&digest.digest)
        .map_err(|e| StatementError::Digest(format!("not a signed note: {e}")))?;
    note.verify(std::slice::from_ref(key))
        .map_err(|source| StatementError::DigestSignature {
            key: key.to_string(),
            source,
        })?;
    let (origin, facts) = DigestFacts::parse(note.text()).map_err(StatementError::Digest)?;
    let expected = format!("{}{DIGEST_ORIGIN_SUFFIX}", key.name());
    if origin != expected {
        return Err(StatementError::Digest(format!(
            "origin {origin:?} is not {expected:?}"
        )));
    }
    let root = hash_to_base64(checkpoint.root());
    if facts.size != checkpoint.size() || hash_from_base64(&facts.root) != Some(*checkpoint.root())
    {
        return Err(StatementError::DigestCheckpoint {
            stated: format!("{} {}", facts.size, facts.root),
            actual: format!("{} {root}", checkpoint.size()),
        });
    }
    let computed = sha256_hex(bytes);
    if computed != facts.sha256 {
        return Err(StatementError::Sha256Differs {
            signed: facts.sha256,
            computed,
        });
    }
    Ok(DigestReport {
        origin: checkpoint.origin().to_owned(),
        key: key.to_string(),
        tree_size: checkpoint.size(),
        root,
        facts,
        bytes: bytes.len(),
        not_proven: "that the statement is complete, the opening balance, each row's figures \
                     (no per-row proofs: the service's key vouches for the bytes), prices",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;
    use cryptovault_events::checkpoint::SignerKey;
    use cryptovault_events::ledger::{FundsDeposited, TransferSent};
    use cryptovault_events::merkle::{self, MemoryTree};
    use cryptovault_events::{DomainEvent, EventMetadata, GENESIS_HASH};
    use serde_json::{json, Value};

    const ME: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn at(position: u64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + position as i64 * 1000).unwrap()
    }

    fn sealed(event: impl DomainEvent, position: u64) -> EventEnvelope {
        EventEnvelope::seal(
            event.into_new_event(
                Uuid::from_u128(100 + position as u128),
                at(position),
                EventMetadata::default(),
            ),
            "s".into(),
            position,
            position,
            GENESIS_HASH.into(),
        )
    }

    fn signer() -> SignerKey {
        SignerKey::from_seed("example.test/ledger", [7; 32]).unwrap()
    }

    /// Events: 1 deposit of 2 ETH to ME, 2 transfer of 0.5 ETH ME → OTHER, 3 deposit to OTHER.
    fn log() -> (Vec<EventEnvelope>, MemoryTree, String) {
        let events = vec![
            sealed(
                FundsDeposited {
                    deposit_id: Uuid::from_u128(11),
                    user_id: ME,
                    asset: "ETH".into(),
                    amount: "2".parse().unwrap(),
                },
                1,
            ),
            sealed(
                TransferSent {
                    transfer_id: Uuid::from_u128(12),
                    from_user: ME,
                    to_user: OTHER,
                    asset: "ETH".into(),
                    amount: "0.5".parse().unwrap(),
                    note: None,
                },
                2,
            ),
            sealed(
                FundsDeposited {
                    deposit_id: Uuid::from_u128(13),
                    user_id: OTHER,
                    asset: "ETH".into(),
                    amount: "9".parse().unwrap(),
                },
                3,
            ),
        ];
        let tree = MemoryTree::from_leaf_hashes(
            events.iter().map(|e| bundle::event_leaf_hash(e).unwrap()),
        );
        let note = Checkpoint::new("example.test/ledger", tree.size(), tree.root())
            .unwrap()
            .sign(&signer())
            .unwrap()
            .to_string();
        (events, tree, note)
    }

    fn movement(
        tree: &MemoryTree,
        event: &EventEnvelope,
        kind: &str,
        reference: u128,
        counterparty: Option<Uuid>,
        amount: &str,
        balance: &str,
    ) -> Value {
        let index = event.position - 1;
        let proof = merkle::inclusion_proof(tree, index, tree.size()).unwrap();
        json!({
            "type": kind,
            "occurred_at": event.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "position": event.position,
            "reference": Uuid::from_u128(reference),
            "counterparty_id": counterparty,
            "amount": amount,
            "balance": balance,
            "leaf_index": index,
            "inclusion_proof": proof.iter().map(hash_to_base64).collect::<Vec<_>>(),
            "event": event,
        })
    }

    fn statement() -> Value {
        let (events, tree, note) = log();
        json!({
            "format": STATEMENT_FORMAT,
            "checkpoint": note,
            "statement": {
                "user_id": ME, "email": "me@example.test", "from": null, "to": null,
                "up_to_position": 3, "generated_at": "2026-06-01T00:00:00.000Z",
                "assets": [{
                    "asset": "ETH",
                    "opening_balance": "0.00000000",
                    "movements": [
                        movement(&tree, &events[0], "deposit", 11, None, "2.00000000", "2.00000000"),
                        movement(&tree, &events[1], "transfer_out", 12, Some(OTHER), "-0.50000000", "1.50000000"),
                    ],
                    "closing_balance": "1.50000000",
                    "movement_count": 2,
                }],
            },
        })
    }

    fn verify(value: &Value) -> Result<StatementReport, StatementError> {
        let statement: VerifiableStatement = serde_json::from_value(value.clone()).unwrap();
        verify_statement(&statement, &signer().verifier())
    }

    fn failure(value: &Value) -> String {
        verify(value).unwrap_err().to_string()
    }

    #[test]
    fn a_true_statement_verifies() {
        let report = verify(&statement()).unwrap();
        assert_eq!(report.tree_size, 3);
        assert_eq!(report.user_id, ME);
        assert_eq!(report.assets[0].movements, 2);
        assert_eq!(report.assets[0].closing_balance, "1.50000000");
    }

    #[test]
    fn a_changed_amount_fails_naming_the_movement() {
        let mut s = statement();
        s["statement"]["assets"][0]["movements"][1]["amount"] = json!("-0.40000000");
        s["statement"]["assets"][0]["movements"][1]["balance"] = json!("1.60000000");
        s["statement"]["assets"][0]["closing_balance"] = json!("1.60000000");
        let message = failure(&s);
        assert!(
            message.contains("asset ETH movement 1 (position 2)"),
            "{message}"
        );
        assert!(
            message.contains("amount -0.40000000 but the event moves -0.5"),
            "{message}"
        );
    }

    #[test]
    fn a_changed_event_or_a_dropped_proof_hash_fails() {
        let mut s = statement();
        s["statement"]["assets"][0]["movements"][0]["event"]["payload"]["amount"] = json!("3");
        assert!(failure(&s).contains("event altered"), "{}", failure(&s));
        let mut s = statement();
        s["statement"]["assets"][0]["movements"][0]["inclusion_proof"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert!(
            failure(&s).contains("inclusion proof has 1 hashes"),
            "{}",
            failure(&s)
        );
    }

    #[test]
    fn balances_must_add_up() {
        let mut s = statement();
        s["statement"]["assets"][0]["movements"][1]["balance"] = json!("1.4");
        assert!(
            failure(&s).contains("balance 1.4 is not"),
            "{}",
            failure(&s)
        );
        let mut s = statement();
        s["statement"]["assets"][0]["closing_balance"] = json!("1.6");
        assert!(
            failure(&s).contains("closing_balance 1.6"),
            "{}",
            failure(&s)
        );
        let mut s = statement();
        s["statement"]["assets"][0]["movement_count"] = json!(3);
        assert!(failure(&s).contains("movement_count 3"), "{}", failure(&s));
        let mut s = statement();
        s["statement"]["assets"][0]["opening_balance"] = json!("1");
        assert!(failure(&s).contains("movement 0"), "{}", failure(&s));
    }

    #[test]
    fn another_users_event_or_a_repeated_movement_fails() {
        let (events, tree, _) = log();
        let mut s = statement();
        s["statement"]["assets"][0]["movements"][1] =
            movement(&tree, &events[2], "deposit", 13, None, "9", "11");
        assert!(
            failure(&s).contains("moves no ETH of user"),
            "{}",
            failure(&s)
        );
        let mut s = statement();
        let first = s["statement"]["assets"][0]["movements"][0].clone();
        s["statement"]["assets"][0]["movements"][1] = first;
        s["statement"]["assets"][0]["movements"][1]["balance"] = json!("4");
        s["statement"]["assets"][0]["closing_balance"] = json!("4");
        assert!(failure(&s).contains("listed twice"), "{}", failure(&s));
        let mut s = statement();
        s["statement"]["user_id"] = json!(OTHER);
        assert!(
            failure(&s).contains("moves no ETH of user"),
            "{}",
            failure(&s)
        );
    }

    #[test]
    fn the_period_position_and_checkpoint_are_checked() {
        let mut s = statement();
        s["statement"]["from"] = json!("2026-06-01T00:00:00.000Z");
        assert!(
            failure(&s).contains("outside the statement's period"),
            "{}",
            failure(&s)
        );
        let mut s = statement();
        s["statement"]["up_to_position"] = json!(4);
        assert!(matches!(
            verify(&s),
            Err(StatementError::UpToPosition { .. })
        ));
        let mut s = statement();
        let other = SignerKey::from_seed("example.test/ledger", [8; 32]).unwrap();
        let (_, tree, _) = log();
        s["checkpoint"] = json!(Checkpoint::new("example.test/ledger", 3, tree.root())
            .unwrap()
            .sign(&other)
            .unwrap()
            .to_string());
        assert!(matches!(verify(&s), Err(StatementError::Checkpoint(_))));
        let mut s = statement();
        s["format"] = json!("cryptovault.receipt.v1");
        assert!(verify(&s).unwrap_err().is_unusable_input());
    }

    fn digest(bytes: &[u8]) -> DigestFile {
        let (_, tree, note) = log();
        let facts = DigestFacts {
            format: "csv".into(),
            user_id: ME,
            assets: vec!["ETH".into(), "BTC".into()],
            from: Some("2026-01-01T00:00:00.000Z".into()),
            to: None,
            size: 3,
            root: hash_to_base64(&tree.root()),
            sha256: sha256_hex(bytes),
        };
        let text = facts.note_text("example.test/ledger").unwrap();
        assert_eq!(
            DigestFacts::parse(&text).unwrap(),
            ("example.test/ledger/statement".into(), facts)
        );
        DigestFile {
            format: DIGEST_FORMAT.into(),
            checkpoint: note,
            digest: SignedNote::sign(&text, &[&signer()]).unwrap().to_string(),
        }
    }

    #[test]
    fn a_digest_binds_the_exact_bytes() {
        let csv = b"asset,type\nETH,deposit\n";
        let file = digest(csv);
        let key = signer().verifier();
        let report = verify_digest(csv, &file, &key).unwrap();
        assert_eq!(report.tree_size, 3);
        assert_eq!(report.facts.assets, ["ETH", "BTC"]);
        let changed = b"asset,type\nETH,deposiT\n";
        assert!(matches!(
            verify_digest(changed, &file, &key),
            Err(StatementError::Sha256Differs { .. })
        ));
    }

    #[test]
    fn a_digest_must_be_signed_by_the_key_and_name_its_checkpoint() {
        let csv = b"x\n";
        let key = signer().verifier();
        let mut file = digest(csv);
        // A checkpoint is not a digest (its origin lacks "/statement").
        file.digest = file.checkpoint.clone();
        assert!(matches!(
            verify_digest(csv, &file, &key),
            Err(StatementError::Digest(_))
        ));
        // Signed by another key.
        let mut file = digest(csv);
        let other = SignerKey::from_seed("example.test/ledger", [8; 32]).unwrap();
        let text = SignedNote::parse(&file.digest).unwrap().text().to_owned();
        file.digest = SignedNote::sign(&text, &[&other]).unwrap().to_string();
        assert!(matches!(
            verify_digest(csv, &file, &key),
            Err(StatementError::DigestSignature { .. })
        ));
        // Another checkpoint than the one it names.
        let mut file = digest(csv);
        file.checkpoint = Checkpoint::new("example.test/ledger", 2, [0; 32])
            .unwrap()
            .sign(&signer())
            .unwrap()
            .to_string();
        assert!(matches!(
            verify_digest(csv, &file, &key),
            Err(StatementError::DigestCheckpoint { .. })
        ));
    }

    #[test]
    fn digest_values_with_separators_are_refused() {
        let mut facts = DigestFacts {
            format: "csv".into(),
            user_id: ME,
            assets: vec!["E,TH".into()],
            from: None,
            to: None,
            size: 1,
            root: "r".into(),
            sha256: "s".into(),
        };
        assert!(facts.note_text("o").is_err());
        facts.assets = vec![];
        assert!(facts.note_text("o").is_err());
    }
}
