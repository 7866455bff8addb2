//! Proof of liabilities: a Merkle **sum** tree over the users' balances of one asset, its signed
//! note, and the per-user bundle that lets a user check offline that their balance is counted.
//!
//! # Construction
//!
//! - A **user hash** hides who a leaf belongs to: `SHA-256("cryptovault-liabilities-user-v1" ‖
//!   salt ‖ user id)` ([`user_hash`]) with a 32-byte salt per issuance and user (the service
//!   derives it, [`SaltKey`]; the user receives their own salt in their bundle) and the user id's
//!   UTF-8 bytes (the id as the API shows it, e.g. a lowercase hyphenated UUID).
//! - A **leaf** commits to a user hash and that user's balance of the asset, a non-negative
//!   integer count of 10⁻¹⁸ of the asset (the atto-units of [`crate::Units`]; total = available +
//!   held), as a big-endian `u128`: `hash = SHA-256(0x00 ‖ "cryptovault-liabilities-v1" ‖
//!   user_hash ‖ balance_be16)`, `sum = balance` ([`leaf`]).
//! - A **node** carries `sum = left.sum + right.sum` (checked: an overflow refuses the tree) and
//!   `hash = SHA-256(0x01 ‖ "cryptovault-liabilities-v1" ‖ left.hash ‖ left.sum_be16 ‖
//!   right.hash ‖ right.sum_be16)` ([`parent`]). Both children's sums are hashed, not only their
//!   total: with only the total committed (Maxwell's original tree) a custodian could give two
//!   siblings sums that each user checks against a different split and under-report the total.
//!   Sums are unsigned, so no leaf can carry a negative balance that cancels another user's.
//! - The label after the domain-separation byte makes a liabilities leaf or node unable to pose as
//!   a log-tree ([`crate::merkle`]) leaf or node, and the other way round.
//! - **Shape**: the RFC 6962 split (the left subtree holds the largest power of two below `n`
//!   leaves), the same as the log tree; built bottom-up by pairing neighbours and carrying an
//!   unpaired last node up unchanged, which gives that shape. The root of no leaves is
//!   `(SHA-256(""), 0)` ([`empty_root`]).
//! - **Order**: the leaves are sorted by user hash ([`SumTree::build`]), so a leaf's position
//!   says nothing about the user (not their sign-up order, not their id).
//!
//! # What it proves, and what it does not
//!
//! A verified bundle ([`verify_liabilities`]) proves that the holder of the signing key asserted,
//! for the log at the named checkpoint, a tree for the asset with the stated leaf count and total,
//! and that this tree has the user's leaf with the stated balance: the user's balance is counted
//! in the published total, and every node on the path adds up exactly (no negative or hidden
//! sums). If every user checks, the total is at least the sum of what all users were shown.
//!
//! It does **not** prove that the custodian holds assets worth the total (that needs a proof of
//! reserves, e.g. signed messages from its wallets), nor that every user is in the tree: a user
//! left out can only be detected by that user checking (the service refuses to answer a user it
//! left out, which is itself the evidence). Nor that the balance is the one the log implies (the
//! note names the checkpoint, so an auditor with the log can recompute the tree). The leaf count
//! reveals the number of holders of the asset, and a proof reveals the sums of the sibling
//! subtrees on the user's path (not who holds them).
//!
//! # Formats
//!
//! The **liabilities note** is a C2SP signed note ([`crate::checkpoint::SignedNote`]) signed by
//! the checkpoint key, with the text ([`LiabilitiesNote`]):
//!
//! ```text
//! <origin>/liabilities
//! <checkpoint tree size>
//! <base64 checkpoint root>
//! <ASSET> <leaf count> <total> <base64 sum-tree root hash>     (one line per asset, sorted by code)
//! ```
//!
//! `<origin>` is the log's origin, which is the key's name; the `/liabilities` suffix keeps a
//! liabilities note from being taken for a checkpoint (a checkpoint's origin must equal the key
//! name). Totals and balances are exact decimals of the asset ([`format_amount`]: the shortest
//! text, no exponent, no sign, e.g. `12.5`, `0`, `0.000000000000000001`).
//!
//! The **bundle** (JSON, [`LiabilitiesBundle`], `format` = [`BUNDLE_FORMAT`]) holds, for one user
//! and one asset, the signed note, the user id, the salt, the balance, the leaf index and count and
//! the proof: the siblings `(hash, sum)` from the leaf towards the root, in RFC 6962 audit-path
//! order.
//!
//! No I/O, no clock, no randomness: salts and balances come from the caller.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::checkpoint::{NoteError, SignedNote, SignerKey, VerifierKey};
use crate::merkle::{self, Hash, MerkleError};

/// The label hashed into every leaf and node after its domain-separation byte.
pub const TREE_LABEL: &[u8] = b"cryptovault-liabilities-v1";

/// The label that opens every salted user hash.
pub const USER_LABEL: &[u8] = b"cryptovault-liabilities-user-v1";

/// The `format` of a [`LiabilitiesBundle`]; verifiers refuse any other.
pub const BUNDLE_FORMAT: &str = "cryptovault.liabilities.v1";

/// The suffix of a liabilities note's first line after the log's origin.
pub const ORIGIN_SUFFIX: &str = "/liabilities";

/// The label under which [`SaltKey::from_signer`] derives the salt key from the signing key.
pub const SALT_KEY_LABEL: &str = "cryptovault-liabilities-salt-key-v1";

/// A salt: 32 bytes per issuance and user.
pub type Salt = [u8; 32];

/// Atto-units (10⁻¹⁸) of an asset per whole unit.
const ONE: u128 = 1_000_000_000_000_000_000;

/// Why a tree, a note or a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LiabilitiesError {
    /// Two balances (or a node's two children) add up beyond `u128`.
    #[error("the balances add up beyond the largest total (2^128 - 1 atto-units)")]
    SumOverflow,
    /// Two leaves have the same user hash.
    #[error("two leaves have the same user hash")]
    DuplicateUser,
    /// A proof was asked for or checked with `index >= count`.
    #[error("leaf index {index} is not below the leaf count {count}")]
    IndexOutOfRange { index: u64, count: u64 },
    /// The proof does not have the number of siblings the index and count determine.
    #[error("proof has {actual} siblings, {expected} expected for this index and leaf count")]
    WrongProofLength { expected: usize, actual: usize },
    /// The proof leads to another root hash than the note's.
    #[error("the proof does not lead to the note's root hash for {asset}")]
    RootMismatch { asset: String },
    /// The proof leads to another total than the note's.
    #[error("the proof adds up to {computed}, the note's total for {asset} is {stated}")]
    TotalMismatch {
        asset: String,
        computed: String,
        stated: String,
    },
    /// The bundle's `format` is not [`BUNDLE_FORMAT`].
    #[error("format {0:?} is not {BUNDLE_FORMAT:?}")]
    WrongFormat(String),
    /// The signed note was refused (syntax or signature).
    #[error("note: {0}")]
    Note(#[from] NoteError),
    /// The note's first line is not the key's name followed by `/liabilities`.
    #[error("note origin line {line:?} is not the key name {key_name:?} + \"/liabilities\"")]
    OriginMismatch { line: String, key_name: String },
    /// The note text is not a liabilities note.
    #[error("malformed liabilities note: {0}")]
    MalformedNote(&'static str),
    /// A field of the bundle is not of its documented form.
    #[error("malformed bundle field {field}: {reason}")]
    MalformedBundle {
        field: &'static str,
        reason: &'static str,
    },
    /// The note has no line for the bundle's asset.
    #[error("the note has no line for asset {0:?}")]
    AssetNotInNote(String),
    /// The bundle's leaf count is not the note's.
    #[error("the bundle's leaf count {bundle} is not the note's {note} for {asset}")]
    LeafCountMismatch {
        asset: String,
        bundle: u64,
        note: u64,
    },
}

impl From<MerkleError> for LiabilitiesError {
    fn from(e: MerkleError) -> Self {
        match e {
            MerkleError::IndexOutOfRange { index, size } => {
                Self::IndexOutOfRange { index, count: size }
            }
            MerkleError::WrongProofLength { expected, actual } => {
                Self::WrongProofLength { expected, actual }
            }
            // `inclusion_proof_len` returns no other error.
            _ => Self::MalformedNote("unexpected tree error"),
        }
    }
}

/// One node of a sum tree: its hash and the sum of the balances below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SumNode {
    pub hash: Hash,
    pub sum: u128,
}

/// `SHA-256("cryptovault-liabilities-user-v1" ‖ salt ‖ user id)`: the salted hash a leaf
/// carries instead of the user id.
pub fn user_hash(salt: &Salt, user_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(USER_LABEL);
    h.update(salt);
    h.update(user_id.as_bytes());
    h.finalize().into()
}

/// The leaf of a user (by their salted hash) holding `balance` atto-units:
/// `hash = SHA-256(0x00 ‖ label ‖ user_hash ‖ balance_be16)`, `sum = balance`.
pub fn leaf(user_hash: &Hash, balance: u128) -> SumNode {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(TREE_LABEL);
    h.update(user_hash);
    h.update(balance.to_be_bytes());
    SumNode {
        hash: h.finalize().into(),
        sum: balance,
    }
}

/// The parent of two nodes: `sum = left.sum + right.sum` (checked),
/// `hash = SHA-256(0x01 ‖ label ‖ left.hash ‖ left.sum_be16 ‖ right.hash ‖ right.sum_be16)`.
pub fn parent(left: &SumNode, right: &SumNode) -> Result<SumNode, LiabilitiesError> {
    let sum = left
        .sum
        .checked_add(right.sum)
        .ok_or(LiabilitiesError::SumOverflow)?;
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(TREE_LABEL);
    h.update(left.hash);
    h.update(left.sum.to_be_bytes());
    h.update(right.hash);
    h.update(right.sum.to_be_bytes());
    Ok(SumNode {
        hash: h.finalize().into(),
        sum,
    })
}

/// The root of a tree with no leaves: `(SHA-256(""), 0)`.
pub fn empty_root() -> SumNode {
    SumNode {
        hash: merkle::empty_root(),
        sum: 0,
    }
}

/// A complete sum tree over one asset's balances, every level kept so that any proof is a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumTree {
    /// The sorted user hashes, one per leaf.
    users: Vec<Hash>,
    /// `levels[0]` are the leaves; each next level pairs neighbours and carries an unpaired last
    /// node up unchanged; the last level is the root alone (none when empty).
    levels: Vec<Vec<SumNode>>,
}

impl SumTree {
    /// The tree over `(user hash, balance)` pairs, in any order: sorts them by user hash.
    /// Refuses two equal user hashes and a total beyond `u128`.
    pub fn build(mut leaves: Vec<(Hash, u128)>) -> Result<Self, LiabilitiesError> {
        leaves.sort_unstable_by_key(|a| a.0);
        if leaves.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(LiabilitiesError::DuplicateUser);
        }
        let mut level: Vec<SumNode> = leaves.iter().map(|(u, b)| leaf(u, *b)).collect();
        let users = leaves.into_iter().map(|(u, _)| u).collect();
        let mut levels = Vec::new();
        while level.len() > 1 {
            let next = level
                .chunks(2)
                .map(|pair| match pair.get(1) {
                    Some(right) => parent(&pair[0], right),
                    None => Ok(pair[0]),
                })
                .collect::<Result<Vec<_>, _>>()?;
            levels.push(level);
            level = next;
        }
        if !level.is_empty() {
            levels.push(level);
        }
        Ok(Self { users, levels })
    }

    /// The root `(hash, total)`.
    pub fn root(&self) -> SumNode {
        self.levels
            .last()
            .and_then(|top| top.first())
            .copied()
            .unwrap_or_else(empty_root)
    }

    /// The number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.users.len() as u64
    }

    /// The leaf index of the user with this hash, if they have a leaf.
    pub fn index_of(&self, user_hash: &Hash) -> Option<u64> {
        self.users.binary_search(user_hash).ok().map(|i| i as u64)
    }

    /// The leaf at `index`.
    pub fn leaf(&self, index: u64) -> Option<SumNode> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The user hash of the leaf at `index`.
    pub fn user_hash(&self, index: u64) -> Option<&Hash> {
        self.users.get(usize::try_from(index).ok()?)
    }

    /// Every node as `(level, index in level, node)`, leaves (level 0) first: what a store
    /// keeps so that a proof is [`proof_positions`] read back.
    pub fn nodes(&self) -> impl Iterator<Item = (u32, u64, SumNode)> + '_ {
        self.levels.iter().enumerate().flat_map(|(level, nodes)| {
            nodes
                .iter()
                .enumerate()
                .map(move |(index, node)| (level as u32, index as u64, *node))
        })
    }

    /// The siblings `(hash, sum)` of the leaf at `index`, from the leaf towards the root.
    pub fn proof(&self, index: u64) -> Result<Vec<SumNode>, LiabilitiesError> {
        proof_positions(index, self.leaf_count())?
            .into_iter()
            .map(|(level, at)| {
                self.levels
                    .get(level as usize)
                    .and_then(|nodes| nodes.get(at as usize))
                    .copied()
                    .ok_or(LiabilitiesError::IndexOutOfRange {
                        index,
                        count: self.leaf_count(),
                    })
            })
            .collect()
    }
}

/// Where the siblings of leaf `index` in a tree of `count` leaves are, as `(level, index in
/// level)` in [`SumTree::nodes`]' numbering, from the leaf towards the root: at each level the
/// neighbour, when the node is not an unpaired last one (a level of `m` nodes has `⌈m/2⌉` above
/// it).
pub fn proof_positions(index: u64, count: u64) -> Result<Vec<(u32, u64)>, LiabilitiesError> {
    if index >= count {
        return Err(LiabilitiesError::IndexOutOfRange { index, count });
    }
    let mut positions = Vec::new();
    let (mut at, mut len, mut level) = (index, count, 0u32);
    while len > 1 {
        let sibling = at ^ 1;
        if sibling < len {
            positions.push((level, sibling));
        }
        at >>= 1;
        len = len.div_ceil(2);
        level += 1;
    }
    Ok(positions)
}

/// The root that `proof` leads to from `leaf` at `index` in a tree of `count` leaves: the RFC
/// 9162 §2.1.3.2 walk with [`parent`] as the node function (every sum checked).
pub fn root_from_proof(
    leaf: &SumNode,
    index: u64,
    count: u64,
    proof: &[SumNode],
) -> Result<SumNode, LiabilitiesError> {
    let expected = merkle::inclusion_proof_len(index, count)?;
    if proof.len() != expected {
        return Err(LiabilitiesError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    let mut fn_ = index;
    let mut sn = count - 1;
    let mut r = *leaf;
    for p in proof {
        if fn_ & 1 == 1 || fn_ == sn {
            r = parent(p, &r)?;
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = parent(&r, p)?;
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(LiabilitiesError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    Ok(r)
}

/// Checks that `proof` proves `leaf` is leaf `index` of the tree of `count` leaves with root hash
/// `root_hash` and total `total`.
pub fn verify(
    leaf: &SumNode,
    index: u64,
    count: u64,
    proof: &[SumNode],
    root_hash: &Hash,
    total: u128,
    asset: &str,
) -> Result<(), LiabilitiesError> {
    let root = root_from_proof(leaf, index, count, proof)?;
    if root.hash != *root_hash {
        return Err(LiabilitiesError::RootMismatch {
            asset: asset.to_owned(),
        });
    }
    if root.sum != total {
        return Err(LiabilitiesError::TotalMismatch {
            asset: asset.to_owned(),
            computed: format_amount(root.sum),
            stated: format_amount(total),
        });
    }
    Ok(())
}

/// The secret from which the service derives every user's salt; derived from the checkpoint
/// signing key, so there is no second secret to keep. Never revealed; `Debug` hides it.
#[derive(Clone)]
pub struct SaltKey([u8; 32]);

impl fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltKey(..)")
    }
}

impl SaltKey {
    /// `signer.derive_secret("cryptovault-liabilities-salt-key-v1")`.
    pub fn from_signer(signer: &SignerKey) -> Self {
        Self(signer.derive_secret(SALT_KEY_LABEL))
    }

    /// The salt of `user_id` in the issuance at `checkpoint_size`:
    /// `HMAC-SHA256(salt key, checkpoint_size_be8 ‖ user id)`. Deterministic, so an issuance's
    /// proofs can be served again without storing salts; a new issuance gives new salts, so user
    /// hashes cannot be linked across issuances.
    pub fn salt(&self, checkpoint_size: u64, user_id: &str) -> Salt {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(&checkpoint_size.to_be_bytes());
        mac.update(user_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The exact decimal text of `atto` atto-units: the shortest, no sign, no exponent (`"12.5"`,
/// `"0"`, `"0.000000000000000001"`).
pub fn format_amount(atto: u128) -> String {
    let whole = atto / ONE;
    let fraction = atto % ONE;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:018}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses the text [`format_amount`] writes, and only that (canonical: no leading zeros, no
/// trailing fractional zeros, at most 18 decimals, within `u128`).
pub fn parse_amount(text: &str) -> Option<u128> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let fraction = match fraction {
        None => 0,
        Some(f) => {
            if !digits(f) || f.len() > 18 || f.ends_with('0') {
                return None;
            }
            let scale = 10u128.pow(18 - f.len() as u32);
            f.parse::<u128>().ok()? * scale
        }
    };
    whole.checked_mul(ONE)?.checked_add(fraction)
}

/// Whether `code` may name an asset in a note: 1 to 16 ASCII upper-case letters or digits.
pub fn is_valid_asset(code: &str) -> bool {
    (1..=16).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn encode(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

fn decode_hash(s: &str) -> Option<Hash> {
    let bytes = STANDARD.decode(s).ok()?;
    if STANDARD.encode(&bytes) != s {
        return None;
    }
    bytes.try_into().ok()
}

/// One asset's line of a liabilities note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetLiabilities {
    /// The asset's code (`BTC`).
    pub asset: String,
    /// The number of leaves (holders counted).
    pub leaf_count: u64,
    /// The sum of the balances, in atto-units.
    pub total: u128,
    /// The sum tree's root hash.
    pub root: Hash,
}

impl AssetLiabilities {
    /// The line for `tree`'s root.
    pub fn of(asset: &str, tree: &SumTree) -> Self {
        let root = tree.root();
        Self {
            asset: asset.to_owned(),
            leaf_count: tree.leaf_count(),
            total: root.sum,
            root: root.hash,
        }
    }
}

/// The text of a liabilities note: the checkpoint it was computed at and one line per asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiabilitiesNote {
    origin: String,
    checkpoint_size: u64,
    checkpoint_root: Hash,
    assets: Vec<AssetLiabilities>,
}

impl LiabilitiesNote {
    /// The note of the log `origin` (the key's name) at the checkpoint `(size, root)`; sorts the
    /// assets by code and refuses invalid or repeated codes and an empty tree with a total or
    /// root.
    pub fn new(
        origin: &str,
        checkpoint_size: u64,
        checkpoint_root: Hash,
        mut assets: Vec<AssetLiabilities>,
    ) -> Result<Self, LiabilitiesError> {
        if origin.is_empty() || origin.chars().any(|c| c.is_control()) {
            return Err(LiabilitiesError::MalformedNote(
                "origin must be one non-empty line",
            ));
        }
        assets.sort_by(|a, b| a.asset.cmp(&b.asset));
        check_assets(&assets)?;
        Ok(Self {
            origin: origin.to_owned(),
            checkpoint_size,
            checkpoint_root,
            assets,
        })
    }

    /// The log's origin (without `/liabilities`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The size of the checkpoint the balances were computed at.
    pub fn checkpoint_size(&self) -> u64 {
        self.checkpoint_size
    }

    /// The root of that checkpoint.
    pub fn checkpoint_root(&self) -> &Hash {
        &self.checkpoint_root
    }

    /// The asset lines, sorted by code.
    pub fn assets(&self) -> &[AssetLiabilities] {
        &self.assets
    }

    /// The line of `asset`.
    pub fn asset(&self, asset: &str) -> Option<&AssetLiabilities> {
        self.assets.iter().find(|a| a.asset == asset)
    }

    /// The note text (every line ending in `\n`).
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}{ORIGIN_SUFFIX}\n{}\n{}\n",
            self.origin,
            self.checkpoint_size,
            encode(&self.checkpoint_root)
        );
        for a in &self.assets {
            out.push_str(&format!(
                "{} {} {} {}\n",
                a.asset,
                a.leaf_count,
                format_amount(a.total),
                encode(&a.root)
            ));
        }
        out
    }

    /// Parses a note text, refusing anything [`LiabilitiesNote::text`] would not write.
    pub fn parse(text: &str) -> Result<Self, LiabilitiesError> {
        let malformed = LiabilitiesError::MalformedNote;
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(first), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("fewer than three lines"));
        };
        let origin = first
            .strip_suffix(ORIGIN_SUFFIX)
            .filter(|o| !o.is_empty())
            .ok_or(malformed("the first line is not <origin>/liabilities"))?;
        let checkpoint_size = parse_count(size).ok_or(malformed(
            "checkpoint size is not a decimal without leading zeros",
        ))?;
        let checkpoint_root =
            decode_hash(root).ok_or(malformed("checkpoint root is not the base64 of 32 bytes"))?;
        let mut assets = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let [asset, count, total, root] = fields[..] else {
                return Err(malformed(
                    "an asset line is not <ASSET> <leaf count> <total> <root>",
                ));
            };
            if !is_valid_asset(asset) {
                return Err(malformed("an asset code is not 1-16 of A-Z, 0-9"));
            }
            assets.push(AssetLiabilities {
                asset: asset.to_owned(),
                leaf_count: parse_count(count).ok_or(malformed(
                    "a leaf count is not a decimal without leading zeros",
                ))?,
                total: parse_amount(total)
                    .ok_or(malformed("a total is not a canonical exact decimal"))?,
                root: decode_hash(root)
                    .ok_or(malformed("a root hash is not the base64 of 32 bytes"))?,
            });
        }
        if assets.windows(2).any(|w| w[0].asset >= w[1].asset) {
            return Err(malformed(
                "asset lines are not sorted by code without repeats",
            ));
        }
        check_assets(&assets)?;
        Ok(Self {
            origin: origin.to_owned(),
            checkpoint_size,
            checkpoint_root,
            assets,
        })
    }

    /// The note signed by `signer` (the checkpoint key, whose name should be the origin).
    pub fn sign(&self, signer: &SignerKey) -> Result<SignedNote, LiabilitiesError> {
        Ok(SignedNote::sign(&self.text(), &[signer])?)
    }

    /// Parses a signed liabilities note, requiring a valid signature by `key` and a first line of
    /// `key`'s name followed by `/liabilities`.
    pub fn open(msg: &str, key: &VerifierKey) -> Result<(Self, SignedNote), LiabilitiesError> {
        let note = SignedNote::open(msg, std::slice::from_ref(key))?;
        let first = note.text().split('\n').next().unwrap_or_default();
        if first.strip_suffix(ORIGIN_SUFFIX) != Some(key.name()) {
            return Err(LiabilitiesError::OriginMismatch {
                line: first.to_owned(),
                key_name: key.name().to_owned(),
            });
        }
        Ok((Self::parse(note.text())?, note))
    }
}

fn parse_count(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn check_assets(assets: &[AssetLiabilities]) -> Result<(), LiabilitiesError> {
    let malformed = LiabilitiesError::MalformedNote;
    if assets.iter().any(|a| !is_valid_asset(&a.asset)) {
        return Err(malformed("an asset code is not 1-16 of A-Z, 0-9"));
    }
    if assets.windows(2).any(|w| w[0].asset == w[1].asset) {
        return Err(malformed("an asset appears twice"));
    }
    let empty = empty_root();
    if assets
        .iter()
        .any(|a| a.leaf_count == 0 && (a.total != 0 || a.root != empty.hash))
    {
        return Err(malformed(
            "an asset without leaves has a total or a root other than the empty tree's",
        ));
    }
    Ok(())
}

/// One sibling of a bundle's proof, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofStep {
    /// Standard padded base64 of the sibling's 32-byte hash.
    pub hash: String,
    /// The sibling's sum, an exact decimal ([`format_amount`]).
    pub sum: String,
}

impl From<&SumNode> for ProofStep {
    fn from(node: &SumNode) -> Self {
        Self {
            hash: encode(&node.hash),
            sum: format_amount(node.sum),
        }
    }
}

/// A user's proof that their balance of one asset is counted (`cryptovault.liabilities.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiabilitiesBundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The whole signed liabilities note.
    pub note: String,
    /// The user id whose UTF-8 bytes are hashed into the leaf.
    pub user_id: String,
    /// The asset code, one of the note's lines.
    pub asset: String,
    /// Standard padded base64 of the user's 32-byte salt.
    pub salt: String,
    /// The user's balance (available + held), an exact decimal ([`format_amount`]).
    pub balance: String,
    /// The leaf's zero-based index in the tree ordered by user hash.
    pub leaf_index: u64,
    /// The tree's leaf count (equal to the note's).
    pub leaf_count: u64,
    /// The siblings from the leaf towards the root.
    pub proof: Vec<ProofStep>,
}

impl LiabilitiesBundle {
    /// The bundle of the user `user_id` whose leaf is `leaf_index` of `tree` (for `asset` in the
    /// signed `note`), with the salt the user hash was made with.
    pub fn new(
        note: &SignedNote,
        asset: &str,
        user_id: &str,
        salt: &Salt,
        tree: &SumTree,
        leaf_index: u64,
    ) -> Result<Self, LiabilitiesError> {
        let count = tree.leaf_count();
        let leaf = tree
            .leaf(leaf_index)
            .ok_or(LiabilitiesError::IndexOutOfRange {
                index: leaf_index,
                count,
            })?;
        let proof = tree.proof(leaf_index)?;
        Ok(Self {
            format: BUNDLE_FORMAT.to_owned(),
            note: note.to_string(),
            user_id: user_id.to_owned(),
            asset: asset.to_owned(),
            salt: STANDARD.encode(salt),
            balance: format_amount(leaf.sum),
            leaf_index,
            leaf_count: count,
            proof: proof.iter().map(ProofStep::from).collect(),
        })
    }
}

/// What a verified bundle states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLiabilities {
    /// The note (its checkpoint and every asset's line).
    pub note: LiabilitiesNote,
    /// The asset's line the proof leads to.
    pub asset: AssetLiabilities,
    /// The user's balance, in atto-units.
    pub balance: u128,
}

/// Verifies a bundle with only the public key: the note's signature and origin, its line for the
/// asset, and that the user's leaf (from the user id, salt and balance) with the proof leads to
/// that line's root hash and total.
pub fn verify_liabilities(
    bundle: &LiabilitiesBundle,
    key: &VerifierKey,
) -> Result<VerifiedLiabilities, LiabilitiesError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(LiabilitiesError::WrongFormat(bundle.format.clone()));
    }
    let (note, _) = LiabilitiesNote::open(&bundle.note, key)?;
    let line = note
        .asset(&bundle.asset)
        .ok_or_else(|| LiabilitiesError::AssetNotInNote(bundle.asset.clone()))?
        .clone();
    if bundle.leaf_count != line.leaf_count {
        return Err(LiabilitiesError::LeafCountMismatch {
            asset: line.asset,
            bundle: bundle.leaf_count,
            note: line.leaf_count,
        });
    }
    let bad = |field, reason| LiabilitiesError::MalformedBundle { field, reason };
    let salt: Salt = STANDARD
        .decode(&bundle.salt)
        .ok()
        .filter(|b| STANDARD.encode(b) == bundle.salt)
        .and_then(|b| b.try_into().ok())
        .ok_or(bad("salt", "not the standard base64 of 32 bytes"))?;
    let balance =
        parse_amount(&bundle.balance).ok_or(bad("balance", "not a canonical exact decimal"))?;
    let proof = bundle
        .proof
        .iter()
        .map(|step| {
            Ok(SumNode {
                hash: decode_hash(&step.hash)
                    .ok_or(bad("proof.hash", "not the standard base64 of 32 bytes"))?,
                sum: parse_amount(&step.sum)
                    .ok_or(bad("proof.sum", "not a canonical exact decimal"))?,
            })
        })
        .collect::<Result<Vec<_>, LiabilitiesError>>()?;
    let leaf = leaf(&user_hash(&salt, &bundle.user_id), balance);
    verify(
        &leaf,
        bundle.leaf_index,
        line.leaf_count,
        &proof,
        &line.root,
        line.total,
        &line.asset,
    )?;
    Ok(VerifiedLiabilities {
        note,
        asset: line,
        balance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(n: u8) -> Hash {
        [n; 32]
    }

    fn signer() -> SignerKey {
        SignerKey::from_seed("cryptovault.test/ledger", [9u8; 32]).unwrap()
    }

    /// The RFC 6962 recursive definition, as a reference for the bottom-up build.
    fn reference_root(leaves: &[SumNode]) -> SumNode {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                parent(&reference_root(&leaves[..k]), &reference_root(&leaves[k..])).unwrap()
            }
        }
    }

    #[test]
    fn leaf_and_node_hashes_are_the_documented_bytes() {
        let u = user(7);
        let mut bytes = vec![0x00];
        bytes.extend_from_slice(b"cryptovault-liabilities-v1");
        bytes.extend_from_slice(&u);
        bytes.extend_from_slice(&5u128.to_be_bytes());
        let l = leaf(&u, 5);
        assert_eq!(l.hash, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(l.sum, 5);

        let r = leaf(&user(8), 7);
        let mut bytes = vec![0x01];
        bytes.extend_from_slice(b"cryptovault-liabilities-v1");
        bytes.extend_from_slice(&l.hash);
        bytes.extend_from_slice(&5u128.to_be_bytes());
        bytes.extend_from_slice(&r.hash);
        bytes.extend_from_slice(&7u128.to_be_bytes());
        let p = parent(&l, &r).unwrap();
        assert_eq!(p.hash, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(p.sum, 12);

        // Not a log-tree leaf or node of the same bytes.
        assert_ne!(
            l.hash,
            merkle::leaf_hash(&[u.as_slice(), &5u128.to_be_bytes()].concat())
        );
        assert_ne!(p.hash, merkle::node_hash(&l.hash, &r.hash));
    }

    #[test]
    fn user_hash_is_the_documented_bytes() {
        let salt = [3u8; 32];
        let mut bytes = b"cryptovault-liabilities-user-v1".to_vec();
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(b"0190-abc");
        assert_eq!(
            user_hash(&salt, "0190-abc"),
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
    }

    #[test]
    fn three_leaves_by_hand() {
        // Given in reverse order: the tree sorts by user hash.
        let tree = SumTree::build(vec![(user(3), 30), (user(1), 10), (user(2), 20)]).unwrap();
        let (a, b, c) = (leaf(&user(1), 10), leaf(&user(2), 20), leaf(&user(3), 30));
        let ab = parent(&a, &b).unwrap();
        let root = parent(&ab, &c).unwrap();
        assert_eq!(tree.root(), root);
        assert_eq!(tree.root().sum, 60);
        assert_eq!(tree.leaf_count(), 3);
        assert_eq!(tree.index_of(&user(3)), Some(2));
        assert_eq!(tree.index_of(&user(4)), None);
        assert_eq!(tree.proof(0).unwrap(), vec![b, c]);
        assert_eq!(tree.proof(1).unwrap(), vec![a, c]);
        assert_eq!(tree.proof(2).unwrap(), vec![ab]);
        for i in 0..3 {
            verify(
                &tree.leaf(i).unwrap(),
                i,
                3,
                &tree.proof(i).unwrap(),
                &root.hash,
                60,
                "BTC",
            )
            .unwrap();
        }
        assert_eq!(
            tree.proof(3),
            Err(LiabilitiesError::IndexOutOfRange { index: 3, count: 3 })
        );
    }

    #[test]
    fn stored_nodes_serve_the_same_proofs() {
        let tree = SumTree::build((0..11u8).map(|i| (user(i), u128::from(i))).collect()).unwrap();
        let stored: std::collections::HashMap<(u32, u64), SumNode> =
            tree.nodes().map(|(l, i, n)| ((l, i), n)).collect();
        assert_eq!(stored[&(4, 0)], tree.root());
        for index in 0..11 {
            let read: Vec<SumNode> = proof_positions(index, 11)
                .unwrap()
                .iter()
                .map(|p| stored[p])
                .collect();
            assert_eq!(read, tree.proof(index).unwrap());
        }
        assert_eq!(tree.user_hash(3), Some(&user(3)));
    }

    #[test]
    fn empty_and_single_trees() {
        let empty = SumTree::build(vec![]).unwrap();
        assert_eq!(empty.root(), empty_root());
        assert_eq!(empty.leaf_count(), 0);
        assert!(empty.proof(0).is_err());
        let one = SumTree::build(vec![(user(1), 4)]).unwrap();
        assert_eq!(one.root(), leaf(&user(1), 4));
        assert_eq!(one.proof(0).unwrap(), vec![]);
    }

    #[test]
    fn overflow_and_duplicates_are_refused() {
        assert_eq!(
            SumTree::build(vec![(user(1), u128::MAX), (user(2), 1)]),
            Err(LiabilitiesError::SumOverflow)
        );
        assert_eq!(
            SumTree::build(vec![(user(1), 1), (user(1), 2)]),
            Err(LiabilitiesError::DuplicateUser)
        );
        // A verifier refuses a proof whose sums overflow too.
        let l = leaf(&user(1), u128::MAX);
        let sibling = leaf(&user(2), 1);
        assert_eq!(
            root_from_proof(&l, 0, 2, &[sibling]),
            Err(LiabilitiesError::SumOverflow)
        );
    }

    #[test]
    fn amounts_are_exact_and_canonical() {
        for (atto, text) in [
            (0, "0"),
            (12_500_000_000_000_000_000, "12.5"),
            (1, "0.000000000000000001"),
            (ONE, "1"),
            (u128::MAX, "340282366920938463463.374607431768211455"),
        ] {
            assert_eq!(format_amount(atto), text);
            assert_eq!(parse_amount(text), Some(atto));
        }
        for bad in [
            "",
            "-1",
            "+1",
            "01",
            "1.",
            ".5",
            "1.50",
            "1e3",
            "1.0000000000000000001",
            " 1",
            "340282366920938463463.374607431768211456",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }

    fn sample_note() -> LiabilitiesNote {
        let btc = SumTree::build(vec![(user(1), 10), (user(2), 2 * ONE + ONE / 2)]).unwrap();
        let eth = SumTree::build(vec![]).unwrap();
        LiabilitiesNote::new(
            "cryptovault.test/ledger",
            42,
            [5u8; 32],
            vec![
                AssetLiabilities::of("USDC", &eth),
                AssetLiabilities::of("BTC", &btc),
            ],
        )
        .unwrap()
    }

    #[test]
    fn note_text_round_trips() {
        let note = sample_note();
        let text = note.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cryptovault.test/ledger/liabilities");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], STANDARD.encode([5u8; 32]));
        assert!(
            lines[3].starts_with("BTC 2 2.50000000000000001 "),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines[4],
            "USDC 0 0 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(LiabilitiesNote::parse(&text).unwrap(), note);
    }

    #[test]
    fn malformed_notes_are_refused() {
        let text = sample_note().text();
        let root = STANDARD.encode([5u8; 32]);
        let bad = [
            text.trim_end().to_owned(),
            text.replacen("/liabilities", "", 1),
            text.replacen("\n42\n", "\n042\n", 1),
            text.replacen(" 2.50000000000000001 ", " 2.500000000000000010 ", 1),
            text.replacen("BTC", "btc", 1),
            text.replacen("USDC 0 0", "USDC 0 1", 1),
            format!("{text}BTC 0 0 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"),
            format!("x/liabilities\n1\n{root}\nBTC 1 1\n"),
            format!("x/liabilities\n1\n{root}\n\n"),
        ];
        for t in bad {
            assert!(LiabilitiesNote::parse(&t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn a_signed_note_opens_only_under_its_key_and_origin() {
        let key = signer();
        let signed = sample_note().sign(&key).unwrap().to_string();
        let (note, _) = LiabilitiesNote::open(&signed, &key.verifier()).unwrap();
        assert_eq!(note, sample_note());
        let other = SignerKey::from_seed("cryptovault.test/ledger", [8u8; 32]).unwrap();
        assert!(LiabilitiesNote::open(&signed, &other.verifier()).is_err());
        // Same key, another origin in the text.
        let renamed = SignerKey::from_seed("other", [9u8; 32]).unwrap();
        let signed = sample_note().sign(&renamed).unwrap().to_string();
        assert!(matches!(
            LiabilitiesNote::open(&signed, &renamed.verifier()),
            Err(LiabilitiesError::OriginMismatch { .. })
        ));
        // A liabilities note is not a checkpoint for the same key.
        let signed = sample_note().sign(&key).unwrap().to_string();
        assert!(crate::checkpoint::Checkpoint::open(&signed, &key.verifier(), &[]).is_err());
    }

    #[test]
    fn salts_are_deterministic_and_separate() {
        let key = SaltKey::from_signer(&signer());
        assert_eq!(key.salt(5, "u1"), key.salt(5, "u1"));
        assert_ne!(key.salt(5, "u1"), key.salt(6, "u1"));
        assert_ne!(key.salt(5, "u1"), key.salt(5, "u2"));
        let other = SaltKey::from_signer(&SignerKey::from_seed("x", [1u8; 32]).unwrap());
        assert_ne!(key.salt(5, "u1"), other.salt(5, "u1"));
        assert_eq!(format!("{key:?}"), "SaltKey(..)");
    }

    /// A signed bundle for `users[i]` with balances `balances`, and the verifier key.
    fn bundle_for(balances: &[u128], who: usize) -> (LiabilitiesBundle, VerifierKey) {
        let key = signer();
        let salts = SaltKey::from_signer(&key);
        let ids: Vec<String> = (0..balances.len()).map(|i| format!("user-{i}")).collect();
        let tree = SumTree::build(
            ids.iter()
                .zip(balances)
                .map(|(id, b)| (user_hash(&salts.salt(42, id), id), *b))
                .collect(),
        )
        .unwrap();
        let note = LiabilitiesNote::new(
            key.name(),
            42,
            [5u8; 32],
            vec![AssetLiabilities::of("BTC", &tree)],
        )
        .unwrap()
        .sign(&key)
        .unwrap();
        let salt = salts.salt(42, &ids[who]);
        let index = tree.index_of(&user_hash(&salt, &ids[who])).unwrap();
        let bundle = LiabilitiesBundle::new(&note, "BTC", &ids[who], &salt, &tree, index).unwrap();
        (bundle, key.verifier())
    }

    #[test]
    fn a_bundle_verifies_and_its_json_round_trips() {
        let (bundle, key) = bundle_for(&[5, 7 * ONE, ONE / 4, 9], 2);
        let json = serde_json::to_string(&bundle).unwrap();
        let back: LiabilitiesBundle = serde_json::from_str(&json).unwrap();
        let verified = verify_liabilities(&back, &key).unwrap();
        assert_eq!(verified.balance, ONE / 4);
        assert_eq!(verified.asset.total, 5 + 7 * ONE + ONE / 4 + 9);
        assert_eq!(bundle.balance, "0.25");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["format"], "cryptovault.liabilities.v1");
        assert!(
            serde_json::from_str::<LiabilitiesBundle>(&json.replacen("{", "{\"extra\":1,", 1))
                .is_err()
        );
    }

    #[test]
    fn tampered_bundles_fail() {
        let (good, key) = bundle_for(&[5, 7 * ONE, ONE / 4, 9, 11], 1);
        let tamper = |f: &dyn Fn(&mut LiabilitiesBundle)| {
            let mut b = good.clone();
            f(&mut b);
            verify_liabilities(&b, &key)
        };
        assert!(tamper(&|b| b.balance = "6".into()).is_err());
        assert!(tamper(&|b| b.user_id = "user-9".into()).is_err());
        assert!(tamper(&|b| b.salt = STANDARD.encode([0u8; 32])).is_err());
        assert!(tamper(&|b| b.format = "cryptovault.liabilities.v2".into()).is_err());
        assert!(tamper(&|b| b.asset = "ETH".into()).is_err());
        assert!(tamper(&|b| b.leaf_count = 4).is_err());
        assert!(tamper(&|b| b.leaf_index = 0).is_err());
        assert!(matches!(
            tamper(&|b| {
                b.proof.pop();
            }),
            Err(LiabilitiesError::WrongProofLength { .. })
        ));
        assert!(tamper(&|b| b.proof[0].sum = "0".into()).is_err());
        assert!(tamper(&|b| b.note = b.note.replacen("BTC 5", "BTC 6", 1)).is_err());
        assert!(matches!(
            tamper(&|b| b.balance = "1.0".into()),
            Err(LiabilitiesError::MalformedBundle {
                field: "balance",
                ..
            })
        ));
        assert!(verify_liabilities(&good, &key).is_ok());
    }

    fn balances() -> impl Strategy<Value = Vec<u128>> {
        prop::collection::vec(0u128..=u128::from(u64::MAX) * 1000, 1..70)
    }

    proptest! {
        #[test]
        fn every_proof_verifies_and_tampering_fails(balances in balances(), pick in any::<prop::sample::Index>()) {
            let leaves: Vec<(Hash, u128)> = balances
                .iter()
                .enumerate()
                .map(|(i, b)| (Sha256::digest((i as u64).to_be_bytes()).into(), *b))
                .collect();
            let tree = SumTree::build(leaves.clone()).unwrap();
            let n = tree.leaf_count();
            let root = tree.root();
            prop_assert_eq!(root.sum, balances.iter().sum::<u128>());
            let mut sorted = leaves.clone();
            sorted.sort();
            let leaf_nodes: Vec<SumNode> = sorted.iter().map(|(u, b)| leaf(u, *b)).collect();
            prop_assert_eq!(reference_root(&leaf_nodes), root);
            for i in 0..n {
                let l = tree.leaf(i).unwrap();
                let proof = tree.proof(i).unwrap();
                prop_assert_eq!(proof.len(), merkle::inclusion_proof_len(i, n).unwrap());
                prop_assert!(verify(&l, i, n, &proof, &root.hash, root.sum, "X").is_ok());
            }
            let i = pick.index(n as usize) as u64;
            let l = tree.leaf(i).unwrap();
            let proof = tree.proof(i).unwrap();
            let (user, balance) = sorted[i as usize];
            // A changed balance.
            let changed = leaf(&user, balance ^ 1);
            prop_assert!(verify(&changed, i, n, &proof, &root.hash, root.sum, "X").is_err());
            // A wrong total.
            prop_assert!(verify(&l, i, n, &proof, &root.hash, root.sum.wrapping_add(1), "X").is_err());
            if !proof.is_empty() {
                // A shrunk sibling sum.
                let mut shrunk = proof.clone();
                shrunk[0].sum = shrunk[0].sum.saturating_sub(1);
                if shrunk[0].sum != proof[0].sum {
                    prop_assert!(verify(&l, i, n, &shrunk, &root.hash, root.sum, "X").is_err());
                    prop_assert!(verify(&l, i, n, &shrunk, &root.hash, root.sum - 1, "X").is_err());
                }
                // A dropped sibling.
                prop_assert!(verify(&l, i, n, &proof[1..], &root.hash, root.sum, "X").is_err());
            }
            // A dropped leaf: the tree without it has another root.
            if n > 1 {
                let mut fewer = leaves.clone();
                fewer.remove(i as usize);
                let smaller = SumTree::build(fewer).unwrap();
                prop_assert_ne!(smaller.root().hash, root.hash);
                prop_assert!(verify(&l, i.min(n - 2), n - 1, &proof, &smaller.root().hash, smaller.root().sum, "X").is_err());
            }
        }
    }
}
