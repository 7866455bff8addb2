//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing over an append-only list of leaves, with
//! SHA-256.
//!
//! # Definitions
//!
//! - A **leaf hash** is `SHA-256(0x00 ‖ leaf bytes)` ([`leaf_hash`]); an interior **node hash**
//!   is `SHA-256(0x01 ‖ left ‖ right)` ([`node_hash`]). The domain-separation byte makes a leaf
//!   unable to pose as an interior node (no second-preimage trick with 64-byte leaves).
//! - The **Merkle tree hash** (MTH, the "root") of `n` leaves is `SHA-256("")` for `n = 0`
//!   ([`empty_root`]), the leaf hash for `n = 1`, and otherwise
//!   `node_hash(MTH(D[0..k]), MTH(D[k..n]))` with `k` the largest power of two below `n`.
//! - A **perfect subtree** ([`Subtree`]) is the MTH of `2^h` leaves starting at a multiple of
//!   `2^h`. Every node of an RFC 6962 tree of any size is either a perfect subtree or a node
//!   on the right edge, whose hash is a fold of perfect subtrees ([`range_subtrees`]); the
//!   perfect subtrees never change once complete, which is what makes them storable.
//!
//! **What a leaf is, is left to the caller.** This module hashes whatever bytes it is given
//! (or takes leaf hashes directly); the service decides what a leaf is (the event's chain
//! hash) and must document it, since an auditor recomputes leaf hashes from it.
//!
//! # Proofs, and what they prove
//!
//! - An **inclusion proof** for leaf `index` in a tree of `size` leaves is the list of sibling
//!   hashes from that leaf to the root ([`inclusion_proof`], verified by [`verify_inclusion`]).
//!   It proves that the tree whose root the verifier holds has, at position `index`, a leaf
//!   with the given leaf hash. It does **not** prove that the root is the genuine one (that
//!   is what a signed checkpoint is for), that the leaf's content is true or well-formed,
//!   that no other leaf says something contradicting it, or anything about leaves after
//!   `size`.
//! - A **consistency proof** between sizes `old_size ≤ new_size` ([`consistency_proof`],
//!   verified by [`verify_consistency`]) proves that the tree with the new root contains the
//!   tree with the old root as its first `old_size` leaves, unchanged: the log was only
//!   appended to in between. It does **not** prove that either root is genuine, that the
//!   appended leaves are valid, or that the log did not show a different tree to someone else
//!   (split view; witnesses and gossip of checkpoints address that).
//!
//! Neither proof pins the tree sizes by itself: the hashing only depends on the left/right
//! pattern of the path, which some nearby sizes share (an inclusion proof of leaf 0 in a tree
//! of 5 also "verifies" with size 6 against the *same* root). A verifier must therefore take
//! the size and the root together from one trusted source, a signed checkpoint, and never
//! combine a root with a size from elsewhere.
//!
//! Both proofs are lists of 32-byte hashes, ordered from the leaves towards the root, exactly
//! as RFC 6962 §2.1.1 / §2.1.2 (RFC 9162 §2.1.3 / §2.1.4) define them, so any CT-compatible
//! verifier accepts them.
//!
//! # Generation and storage
//!
//! Proof generation reads hashes through [`SubtreeHashes`], an abstract source of perfect
//! subtree hashes, so the service can back it with stored subtree hashes. Every proof node
//! and every root is a fold of at most 64 perfect subtrees, so a proof needs `O(log n)`
//! reads; [`inclusion_proof_nodes`], [`consistency_proof_nodes`] and [`root_nodes`] list
//! exactly which ones, so a store can fetch them in one query (into, e.g., a
//! [`BTreeMap<Subtree, Hash>`], which implements [`SubtreeHashes`]). [`Frontier`] is the
//! incremental builder that reports each perfect subtree as it completes, so the store can
//! persist them while appending. [`MemoryTree`] is a complete in-memory implementation (for
//! tests and small tools).
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) needs no tree at all: only the
//! hashes, sizes and proof. It is what an offline auditor runs.
//!
//! No I/O, no clock, no randomness.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Size of a hash in bytes (SHA-256).
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf hash, a node hash or a root.
pub type Hash = [u8; HASH_SIZE];

/// `SHA-256(0x00 ‖ leaf)`: the hash of one leaf's bytes (RFC 6962 §2.1).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree
/// (`e3b0c442…b855`).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a Merkle computation or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// An inclusion proof was asked for or checked with `index >= size` (this includes every
    /// index in the empty tree).
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked for or checked from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    /// The proof does not have the number of hashes its sizes and index determine.
    #[error("proof has {actual} hashes, {expected} expected for these sizes")]
    WrongProofLength { expected: usize, actual: usize },
    /// The root recomputed from the leaf hash and the inclusion proof is not the given root.
    #[error("inclusion proof does not lead to the given root")]
    RootMismatch,
    /// The old root recomputed from a consistency proof is not the given old root.
    #[error("consistency proof does not lead to the given old root")]
    OldRootMismatch,
    /// The new root recomputed from a consistency proof is not the given new root.
    #[error("consistency proof does not lead to the given new root")]
    NewRootMismatch,
    /// `(start, size)` is not a perfect aligned subtree: `size` must be a power of two,
    /// `start` a multiple of it, and `start + size` must not overflow.
    #[error("({start}, {size}) is not a perfect subtree aligned at a multiple of its size")]
    NotASubtree { start: u64, size: u64 },
    /// A frontier was resumed with the wrong number of hashes for its size (one per set bit).
    #[error("a frontier of size {size} has {expected} hashes, {actual} given")]
    WrongFrontierLength {
        size: u64,
        expected: usize,
        actual: usize,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full")]
    TreeFull,
}

/// A failure to generate a proof or root from a [`SubtreeHashes`] source.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError<E> {
    /// The request itself is invalid (index or sizes out of range).
    #[error(transparent)]
    Invalid(#[from] MerkleError),
    /// The source could not supply a subtree hash.
    #[error("subtree hash source failed: {0}")]
    Source(E),
}

/// A perfect subtree: the `size = 2^h` leaves starting at `start`, a multiple of `size`.
///
/// Ordered by `(start, size)`. Its hash never changes once its last leaf is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subtree {
    start: u64,
    size: u64,
}

impl Subtree {
    /// The subtree of `size` leaves from `start`; `size` must be a power of two, `start` a
    /// multiple of it, and `start + size <= u64::MAX`.
    pub fn new(start: u64, size: u64) -> Result<Self, MerkleError> {
        if !size.is_power_of_two()
            || !start.is_multiple_of(size)
            || start.checked_add(size).is_none()
        {
            return Err(MerkleError::NotASubtree { start, size });
        }
        Ok(Self { start, size })
    }

    /// The single-leaf subtree holding leaf `index`.
    pub fn leaf(index: u64) -> Self {
        Self {
            start: index,
            size: 1,
        }
    }

    /// Index of the first leaf.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Number of leaves (a power of two).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// One past the index of the last leaf.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Height above the leaves: `log2(size)` (0 for a leaf).
    pub fn level(&self) -> u32 {
        self.size.trailing_zeros()
    }

    /// Position among the subtrees of the same level: `start / size`.
    pub fn index_in_level(&self) -> u64 {
        self.start >> self.level()
    }
}

impl std::fmt::Display for Subtree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.start, self.end())
    }
}

/// A source of perfect subtree hashes, e.g. a store of the subtrees [`Frontier`] reported.
///
/// Proof generation only ever asks for subtrees that lie entirely within the tree size it was
/// given, so a source may answer only for complete subtrees.
pub trait SubtreeHashes {
    /// Why a hash could not be supplied.
    type Error;

    /// The MTH of the leaves `subtree.start() .. subtree.end()`.
    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, Self::Error>;
}

/// A subtree a source was asked for but does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("subtree {0} is not available")]
pub struct MissingSubtree(pub Subtree);

impl SubtreeHashes for BTreeMap<Subtree, Hash> {
    type Error = MissingSubtree;

    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, MissingSubtree> {
        self.get(&subtree).copied().ok_or(MissingSubtree(subtree))
    }
}

impl<S: std::hash::BuildHasher> SubtreeHashes for HashMap<Subtree, Hash, S> {
    type Error = MissingSubtree;

    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, MissingSubtree> {
        self.get(&subtree).copied().ok_or(MissingSubtree(subtree))
    }
}

/// The largest power of two strictly below `n` (`n >= 2`): RFC 6962's split point `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees whose fold is the hash of the tree node covering leaves `range`,
/// largest (leftmost) first.
///
/// `range` must be a node of an RFC 6962 tree: the whole tree `0..size`, or any range a proof
/// lists ([`inclusion_proof_ranges`], [`consistency_proof_ranges`]); for those, `range.start`
/// is a multiple of the largest power of two not above `range.end - range.start`, and the
/// node's hash is `node_hash(h0, node_hash(h1, … node_hash(h_{m-2}, h_{m-1})))` over the
/// returned subtrees' hashes `h0 … h_{m-1}` (one subtree per set bit of the length). An empty
/// range gives no subtrees.
pub fn range_subtrees(range: Range<u64>) -> Vec<Subtree> {
    let mut out = Vec::new();
    let mut start = range.start;
    let mut remaining = range.end.saturating_sub(range.start);
    while remaining > 0 {
        let size = 1 << (63 - remaining.leading_zeros());
        out.push(Subtree { start, size });
        start += size;
        remaining -= size;
    }
    out
}

/// The hash of the node covering `range` (see [`range_subtrees`]); [`empty_root`] for an
/// empty range.
fn range_hash<S: SubtreeHashes + ?Sized>(source: &S, range: Range<u64>) -> Result<Hash, S::Error> {
    let parts = range_subtrees(range);
    let mut parts = parts.iter().rev();
    let Some(last) = parts.next() else {
        return Ok(empty_root());
    };
    let mut acc = source.subtree_hash(*last)?;
    for part in parts {
        acc = node_hash(&source.subtree_hash(*part)?, &acc);
    }
    Ok(acc)
}

/// RFC 6962 `PATH(m, D[start..end])` with `m = index - start`, appended to `out`.
fn path(index: u64, start: u64, end: u64, out: &mut Vec<Range<u64>>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < start + k {
        path(index, start, start + k, out);
        out.push(start + k..end);
    } else {
        path(index, start + k, end, out);
        out.push(start..start + k);
    }
}

/// RFC 6962 `SUBPROOF(m, D[start..end], b)`, appended to `out`.
fn subproof(m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Range<u64>>) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(start..end);
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, complete, out);
        out.push(start + k..end);
    } else {
        subproof(m - k, start + k, end, false, out);
        out.push(start..start + k);
    }
}

/// The leaf ranges whose node hashes make up the inclusion proof of leaf `index` in a tree of
/// `size` leaves, in proof order (leaf to root).
pub fn inclusion_proof_ranges(index: u64, size: u64) -> Result<Vec<Range<u64>>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::with_capacity(64);
    path(index, 0, size, &mut out);
    Ok(out)
}

/// The leaf ranges whose node hashes make up the consistency proof from `old_size` to
/// `new_size` leaves, in proof order. Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof_ranges(
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Range<u64>>, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizesOutOfOrder { old_size, new_size });
    }
    let mut out = Vec::with_capacity(64);
    if old_size > 0 && old_size < new_size {
        subproof(old_size, 0, new_size, true, &mut out);
    }
    Ok(out)
}

fn nodes_of(ranges: &[Range<u64>]) -> Vec<Subtree> {
    ranges
        .iter()
        .flat_map(|r| range_subtrees(r.clone()))
        .collect()
}

/// Every perfect subtree the inclusion proof of `index` in a tree of `size` reads (no
/// duplicates; at most about `2·log2(size)`).
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Result<Vec<Subtree>, MerkleError> {
    Ok(nodes_of(&inclusion_proof_ranges(index, size)?))
}

/// Every perfect subtree the consistency proof from `old_size` to `new_size` reads (no
/// duplicates).
pub fn consistency_proof_nodes(old_size: u64, new_size: u64) -> Result<Vec<Subtree>, MerkleError> {
    Ok(nodes_of(&consistency_proof_ranges(old_size, new_size)?))
}

/// The perfect subtrees whose fold is the root of a tree of `size` leaves: one per set bit of
/// `size`, largest first. This is also the state of a [`Frontier`] of that size.
pub fn root_nodes(size: u64) -> Vec<Subtree> {
    range_subtrees(0..size)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves of `source`
/// (RFC 6962 §2.1.1 `PATH`).
pub fn inclusion_proof<S: SubtreeHashes + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    inclusion_proof_ranges(index, size)?
        .into_iter()
        .map(|r| range_hash(source, r).map_err(ProofError::Source))
        .collect()
}

/// The consistency proof from the tree of the first `old_size` leaves of `source` to the tree
/// of its first `new_size` leaves (RFC 6962 §2.1.2 `PROOF`); empty when `old_size` is 0 or
/// equals `new_size`.
pub fn consistency_proof<S: SubtreeHashes + ?Sized>(
    source: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    consistency_proof_ranges(old_size, new_size)?
        .into_iter()
        .map(|r| range_hash(source, r).map_err(ProofError::Source))
        .collect()
}

/// The root of the tree of the first `size` leaves of `source`.
pub fn tree_root<S: SubtreeHashes + ?Sized>(source: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(source, 0..size)
}

/// The Merkle tree hash (root) of `leaf_hashes`, computed directly from the definition.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaf_hashes.len() as u64) as usize;
            node_hash(&root(&leaf_hashes[..k]), &root(&leaf_hashes[k..]))
        }
    }
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size > index`.
pub fn inclusion_proof_len(index: u64, size: u64) -> Result<usize, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // Levels where the paths to `index` and to the last leaf part: full siblings there; above,
    // one sibling per left turn on the right edge.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    Ok((inner + border) as usize)
}

/// The number of hashes in the consistency proof from `old_size` to `new_size`.
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> Result<usize, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(0);
    }
    let inner = 64 - ((old_size - 1) ^ (new_size - 1)).leading_zeros();
    let border = (old_size - 1).checked_shr(inner).unwrap_or(0).count_ones();
    // The lowest levels, where the old tree's last subtree is perfect, are not in the proof;
    // nor is the old root itself when the old tree is perfect.
    let shift = old_size.trailing_zeros();
    let seed = usize::from(!old_size.is_power_of_two());
    Ok(seed + (inner - shift + border) as usize)
}

/// The root that `proof` leads to from `leaf_hash` at `index` in a tree of `size` leaves
/// (RFC 9162 §2.1.3.2 steps 1–5, without the final comparison with a root).
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    let expected = inclusion_proof_len(index, size)?;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            // Unreachable after the length check; kept to mirror the RFC.
            return Err(MerkleError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    Ok(r)
}

/// Checks that `proof` proves the leaf with hash `leaf_hash` is leaf number `index`
/// (zero-based) of the tree of `size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if root_from_inclusion_proof(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Cases outside the RFC's `0 < old_size < new_size`: equal sizes are consistent exactly when
/// the proof is empty and the roots are equal; from the empty tree, exactly when the proof is
/// empty and `old_root` is [`empty_root`] (every tree extends the empty one).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    let expected = consistency_proof_len(old_size, new_size)?;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    if old_size == 0 {
        return if *old_root == empty_root() {
            Ok(())
        } else {
            Err(MerkleError::OldRootMismatch)
        };
    }
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::NewRootMismatch)
        };
    }
    // 1. An empty proof fails (cannot happen after the length check when old < new).
    let wrong_length = MerkleError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.is_empty() {
        return Err(wrong_length);
    }
    // 2. If old_size is an exact power of two, the old root is the (implicit) first value.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    // 3.–4.
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let mut fr = seed;
    let mut sr = seed;
    // 6.
    for c in rest {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    if sn != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::NewRootMismatch);
    }
    Ok(())
}

/// A perfect subtree that became complete, with its hash: what a store persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedSubtree {
    pub subtree: Subtree,
    pub hash: Hash,
}

/// The incremental builder (a "compact range" of `[0, size)`): the hashes of the perfect
/// subtrees [`root_nodes`]`(size)`, largest first, at most 64 of them (one per set bit of
/// `size`).
///
/// Appending costs `O(1)` amortised hashes and `O(log n)` memory; the root at the current size
/// is a fold of the held hashes. It can be resumed from stored subtree hashes
/// ([`Frontier::resume`], [`Frontier::from_source`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of a tree of `size` leaves, from the hashes of [`root_nodes`]`(size)` in
    /// that order (largest first).
    pub fn resume(size: u64, hashes: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::WrongFrontierLength {
                size,
                expected,
                actual: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// The frontier of the first `size` leaves of `source`.
    pub fn from_source<S: SubtreeHashes + ?Sized>(source: &S, size: u64) -> Result<Self, S::Error> {
        let hashes = root_nodes(size)
            .into_iter()
            .map(|s| source.subtree_hash(s))
            .collect::<Result<_, _>>()?;
        Ok(Self { size, hashes })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The held subtrees ([`root_nodes`]`(size)`) with their hashes, largest first.
    pub fn subtrees(&self) -> impl Iterator<Item = CompletedSubtree> + '_ {
        root_nodes(self.size)
            .into_iter()
            .zip(self.hashes.iter().copied())
            .map(|(subtree, hash)| CompletedSubtree { subtree, hash })
    }

    /// Appends the leaf with hash `leaf_hash` (at index `size`) and returns every perfect
    /// subtree this completes, smallest first: the leaf itself, then one subtree per trailing
    /// one bit of the old size (sizes 1, 2, 4, …, all ending at the new size).
    pub fn append(&mut self, leaf_hash: Hash) -> Result<Vec<CompletedSubtree>, MerkleError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(MerkleError::TreeFull)?;
        let mut completed = vec![CompletedSubtree {
            subtree: Subtree::leaf(index),
            hash: leaf_hash,
        }];
        let mut hash = leaf_hash;
        let mut size = 1u64;
        while index & size != 0 {
            let left = self
                .hashes
                .pop()
                .expect("one held hash per set bit of the size");
            hash = node_hash(&left, &hash);
            size <<= 1;
            completed.push(CompletedSubtree {
                subtree: Subtree {
                    start: new_size - size,
                    size,
                },
                hash,
            });
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(completed)
    }

    /// The root of the tree of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut held = self.hashes.iter().rev();
        let Some(last) = held.next() else {
            return empty_root();
        };
        held.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// A whole tree in memory: every perfect subtree hash, level by level (`2n` hashes for `n`
/// leaves). For tests and small tools; the service stores subtrees instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// `levels[h][i]` is the hash of the perfect subtree of `2^h` leaves starting at `i·2^h`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tree of `leaf_hashes`, in order.
    pub fn from_leaf_hashes(leaf_hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for h in leaf_hashes {
            tree.push(h);
        }
        tree
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf_hash: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf_hash);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The root at the current size.
    pub fn root(&self) -> Hash {
        tree_root(self, self.size()).expect("every complete subtree is held")
    }
}

impl SubtreeHashes for MemoryTree {
    type Error = MissingSubtree;

    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, MissingSubtree> {
        usize::try_from(subtree.index_in_level())
            .ok()
            .and_then(|i| self.levels.get(subtree.level() as usize)?.get(i))
            .copied()
            .ok_or(MissingSubtree(subtree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn subtree_rejects_unaligned_and_non_power_sizes() {
        assert!(Subtree::new(0, 0).is_err());
        assert!(Subtree::new(0, 3).is_err());
        assert!(Subtree::new(2, 4).is_err());
        assert!(Subtree::new(u64::MAX - 1, 2).is_err());
        assert_eq!(Subtree::new(8, 4).unwrap().end(), 12);
        assert_eq!(Subtree::new(8, 4).unwrap().index_in_level(), 2);
    }

    #[test]
    fn range_subtrees_follow_the_set_bits() {
        let got: Vec<_> = range_subtrees(0..13)
            .iter()
            .map(|s| (s.start(), s.size()))
            .collect();
        assert_eq!(got, vec![(0, 8), (8, 4), (12, 1)]);
        assert!(range_subtrees(5..5).is_empty());
    }

    #[test]
    fn proof_lengths_match_the_ranges() {
        for size in 1..=70u64 {
            for index in 0..size {
                assert_eq!(
                    inclusion_proof_len(index, size).unwrap(),
                    inclusion_proof_ranges(index, size).unwrap().len(),
                    "inclusion {index} in {size}"
                );
            }
            for old in 0..=size {
                assert_eq!(
                    consistency_proof_len(old, size).unwrap(),
                    consistency_proof_ranges(old, size).unwrap().len(),
                    "consistency {old} -> {size}"
                );
            }
        }
    }

    #[test]
    fn frontier_resume_checks_length() {
        assert_eq!(
            Frontier::resume(5, vec![[0; 32]]),
            Err(MerkleError::WrongFrontierLength {
                size: 5,
                expected: 2,
                actual: 1
            })
        );
        assert!(Frontier::resume(5, vec![[0; 32], [1; 32]]).is_ok());
    }

    #[test]
    fn full_frontier_refuses_to_grow() {
        let mut f = Frontier::resume(u64::MAX, vec![[0; 32]; 64]).unwrap();
        assert_eq!(f.append([1; 32]), Err(MerkleError::TreeFull));
    }
}
