//! RFC 6962 Merkle trees: the Certificate Transparency reference vectors, and properties over
//! random tree sizes (every generated proof verifies; any change to a leaf, proof hash, index
//! or size is refused; the incremental builder agrees with the definition).

use std::collections::BTreeMap;

use cryptovault_events::merkle::{
    consistency_proof, consistency_proof_nodes, empty_root, inclusion_proof, inclusion_proof_nodes,
    leaf_hash, node_hash, root, root_from_inclusion_proof, root_nodes, tree_root,
    verify_consistency, verify_inclusion, Frontier, Hash, MemoryTree, MerkleError, ProofError,
    Subtree,
};
use proptest::prelude::*;

fn h(hex_str: &str) -> Hash {
    hex::decode(hex_str)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

// ---------------------------------------------------------------------------------------------
// Vectors copied from github.com/transparency-dev/merkle, `testonly/constants.go`
// (LeafInputs, NodeHashes, RootHashes; the same data as google/certificate-transparency's
// cpp/merkletree/merkle_tree_test.cc) and `proof/verify_test.go` (inclusionProofs,
// consistencyProofs).
// ---------------------------------------------------------------------------------------------

/// `LeafInputs()`: the 8 standard leaves.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `RootHashes()[1..=8]`: the root of the first `n` leaves, for `n = 1..=8`.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `EmptyRootHash()`.
const EMPTY_ROOT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `NodeHashes()`: level by level, every perfect subtree of the 8-leaf tree.
const NODE_HASHES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// `inclusionProofs` (the Go vectors' `leaf` is 1-based; here `index` is 0-based).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// `consistencyProofs`: (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_leaf_hashes() -> Vec<Hash> {
    LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).unwrap()))
        .collect()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn vector_root(size: u64) -> Hash {
    if size == 0 {
        h(EMPTY_ROOT)
    } else {
        h(ROOTS[size as usize - 1])
    }
}

#[test]
fn empty_tree_root_is_the_vector() {
    assert_eq!(empty_root(), h(EMPTY_ROOT));
    assert_eq!(root(&[]), h(EMPTY_ROOT));
    assert_eq!(Frontier::new().root(), h(EMPTY_ROOT));
    assert_eq!(MemoryTree::new().root(), h(EMPTY_ROOT));
}

#[test]
fn roots_of_every_prefix_match_the_vectors() {
    let leaves = vector_leaf_hashes();
    let tree = MemoryTree::from_leaf_hashes(leaves.clone());
    let mut frontier = Frontier::new();
    for size in 1..=8u64 {
        frontier.append(leaves[size as usize - 1]).unwrap();
        let want = vector_root(size);
        assert_eq!(root(&leaves[..size as usize]), want, "root() at {size}");
        assert_eq!(tree_root(&tree, size).unwrap(), want, "tree_root at {size}");
        assert_eq!(frontier.root(), want, "frontier at {size}");
    }
}

#[test]
fn every_perfect_subtree_matches_the_node_vectors() {
    let tree = MemoryTree::from_leaf_hashes(vector_leaf_hashes());
    for (level, nodes) in NODE_HASHES.iter().enumerate() {
        let size = 1u64 << level;
        for (i, node) in nodes.iter().enumerate() {
            let subtree = Subtree::new(i as u64 * size, size).unwrap();
            use cryptovault_events::merkle::SubtreeHashes;
            assert_eq!(tree.subtree_hash(subtree).unwrap(), h(node), "{subtree}");
        }
    }
}

#[test]
fn inclusion_vectors_are_generated_and_verify() {
    let leaves = vector_leaf_hashes();
    let tree = MemoryTree::from_leaf_hashes(leaves.clone());
    for (index, size, proof) in INCLUSION {
        let want = hashes(proof);
        assert_eq!(
            inclusion_proof(&tree, index, size).unwrap(),
            want,
            "proof of {index} in {size}"
        );
        let leaf = leaves[index as usize];
        verify_inclusion(&leaf, index, size, &want, &vector_root(size)).unwrap();
        assert_eq!(
            root_from_inclusion_proof(&leaf, index, size, &want).unwrap(),
            vector_root(size)
        );
    }
}

#[test]
fn consistency_vectors_are_generated_and_verify() {
    let tree = MemoryTree::from_leaf_hashes(vector_leaf_hashes());
    for (old, new, proof) in CONSISTENCY {
        let want = hashes(proof);
        assert_eq!(
            consistency_proof(&tree, old, new).unwrap(),
            want,
            "proof {old} -> {new}"
        );
        verify_consistency(old, new, &vector_root(old), &vector_root(new), &want).unwrap();
    }
}

/// The corruptions of transparency-dev/merkle `proof/verify_test.go` (`corruptInclusionProof`),
/// applied to the reference inclusion proofs.
#[test]
fn corrupted_inclusion_vectors_are_refused() {
    let leaves = vector_leaf_hashes();
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, proof) in INCLUSION {
        let proof = hashes(proof);
        let root = vector_root(size);
        let leaf = leaves[index as usize];
        let refused = |i: u64, s: u64, l: &Hash, p: &[Hash], r: &Hash| {
            verify_inclusion(l, i, s, p, r).is_err()
        };
        if index > 0 {
            assert!(refused(index - 1, size, &leaf, &proof, &root));
        }
        assert!(refused(index + 1, size, &leaf, &proof, &root));
        assert!(refused(index ^ 2, size, &leaf, &proof, &root));
        assert!(refused(index, size * 2, &leaf, &proof, &root));
        assert!(refused(index, size / 2, &leaf, &proof, &root));
        assert!(refused(index, size, &some_hash, &proof, &root));
        assert!(refused(index, size, &leaf, &proof, &empty_root()));
        assert!(refused(index, size, &leaf, &proof, &some_hash));
        let mut longer = proof.clone();
        longer.push(root);
        assert!(refused(index, size, &leaf, &longer, &root));
        let mut longer = vec![root];
        longer.extend_from_slice(&proof);
        assert!(refused(index, size, &leaf, &longer, &root));
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            assert!(refused(index, size, &leaf, &wrong, &root));
        }
        if !proof.is_empty() {
            assert!(refused(
                index,
                size,
                &leaf,
                &proof[..proof.len() - 1],
                &root
            ));
        }
    }
}

/// The corruptions of transparency-dev/merkle `proof/verify_test.go`
/// (`corruptConsistencyProof`), applied to the non-trivial reference consistency proofs.
#[test]
fn corrupted_consistency_vectors_are_refused() {
    for (old, new, proof) in CONSISTENCY {
        let proof = hashes(proof);
        if proof.is_empty() {
            continue;
        }
        let (r1, r2) = (vector_root(old), vector_root(new));
        let refused = |o: u64, n: u64, a: &Hash, b: &Hash, p: &[Hash]| {
            verify_consistency(o, n, a, b, p).is_err()
        };
        assert!(refused(old - 1, new, &r1, &r2, &proof));
        assert!(refused(old + 1, new, &r1, &r2, &proof));
        assert!(refused(old ^ 2, new, &r1, &r2, &proof));
        assert!(refused(old, new * 2, &r1, &r2, &proof));
        assert!(refused(old, new / 2, &r1, &r2, &proof));
        assert!(refused(old, new, &[7; 32], &r2, &proof));
        assert!(refused(old, new, &r1, &[7; 32], &proof));
        assert!(refused(old, new, &r2, &r1, &proof));
        assert!(refused(old, new, &r1, &r2, &[]));
        for extra in [r1, r2] {
            let mut longer = proof.clone();
            longer.push(extra);
            assert!(refused(old, new, &r1, &r2, &longer));
            let mut longer = vec![extra];
            longer.extend_from_slice(&proof);
            assert!(refused(old, new, &r1, &r2, &longer));
        }
        let mut longer = vec![proof[0]];
        longer.extend_from_slice(&proof);
        assert!(refused(old, new, &r1, &r2, &longer));
        assert!(refused(old, new, &r1, &r2, &proof[..proof.len() - 1]));
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 16;
            assert!(refused(old, new, &r1, &r2, &wrong));
        }
    }
}

/// transparency-dev/merkle `proof/verify_test.go` `TestVerifyConsistency`'s edge cases, with
/// this crate's stricter rule that the empty tree's root is `SHA-256("")`.
#[test]
fn consistency_edge_cases() {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let e = empty_root();
    assert!(verify_consistency(0, 0, &e, &e, &[]).is_ok());
    assert!(verify_consistency(0, 1, &e, &b, &[]).is_ok());
    assert_eq!(
        verify_consistency(0, 1, &a, &b, &[]),
        Err(MerkleError::OldRootMismatch)
    );
    assert!(verify_consistency(1, 1, &b, &b, &[]).is_ok());
    assert_eq!(
        verify_consistency(1, 1, &a, &b, &[]),
        Err(MerkleError::NewRootMismatch)
    );
    assert_eq!(
        verify_consistency(1, 0, &a, &b, &[]),
        Err(MerkleError::SizesOutOfOrder {
            old_size: 1,
            new_size: 0
        })
    );
    assert!(verify_consistency(2, 1, &a, &b, &[]).is_err());
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(MerkleError::WrongProofLength {
            expected: 1,
            actual: 0
        })
    );
    for (o, n) in [(0, 0), (0, 1), (1, 1)] {
        assert!(matches!(
            verify_consistency(o, n, &e, &e, &[e]),
            Err(MerkleError::WrongProofLength { .. })
        ));
    }
}

/// transparency-dev/merkle `proof/verify_test.go` `TestVerifyInclusion` probes: no index is
/// in an empty tree, and out-of-range indexes are refused.
#[test]
fn inclusion_edge_cases() {
    let some = [9u8; 32];
    for (index, size) in [(0, 0), (1, 0), (2, 1)] {
        assert_eq!(
            verify_inclusion(&some, index, size, &[], &empty_root()),
            Err(MerkleError::IndexOutOfRange { index, size })
        );
    }
    let tree = MemoryTree::from_leaf_hashes(vector_leaf_hashes());
    assert!(matches!(
        inclusion_proof(&tree, 8, 8),
        Err(ProofError::Invalid(MerkleError::IndexOutOfRange { .. }))
    ));
    // A single-entry tree: the root is the leaf hash and the proof is empty.
    let one = leaf_hash(b"data");
    assert!(verify_inclusion(&one, 0, 1, &[], &one).is_ok());
    assert!(verify_inclusion(&one, 0, 1, &[], &some).is_err());
}

#[test]
fn proofs_from_fetched_nodes_equal_proofs_from_the_whole_tree() {
    let leaves: Vec<Hash> = (0u32..37).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(leaves);
    use cryptovault_events::merkle::SubtreeHashes;
    let fetch = |nodes: Vec<Subtree>| -> BTreeMap<Subtree, Hash> {
        nodes
            .into_iter()
            .map(|s| (s, tree.subtree_hash(s).unwrap()))
            .collect()
    };
    let only = fetch(inclusion_proof_nodes(13, 37).unwrap());
    assert_eq!(
        inclusion_proof(&only, 13, 37).unwrap(),
        inclusion_proof(&tree, 13, 37).unwrap()
    );
    let only = fetch(consistency_proof_nodes(13, 37).unwrap());
    assert_eq!(
        consistency_proof(&only, 13, 37).unwrap(),
        consistency_proof(&tree, 13, 37).unwrap()
    );
    let only = fetch(root_nodes(37));
    assert_eq!(tree_root(&only, 37).unwrap(), tree.root());
    // A source lacking a node reports which.
    let empty = BTreeMap::new();
    assert!(matches!(
        inclusion_proof(&empty, 13, 37),
        Err(ProofError::Source(_))
    ));
}

#[test]
fn node_hash_and_leaf_hash_are_domain_separated() {
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let mut concat = a.to_vec();
    concat.extend_from_slice(&b);
    assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
}

// ---------------------------------------------------------------------------------------------
// Properties over random trees.
// ---------------------------------------------------------------------------------------------

fn tree_of(size: u64) -> (Vec<Hash>, MemoryTree) {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(leaves.clone());
    (leaves, tree)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails(
        size in 1u64..=300, index_seed in any::<u64>(), flip in any::<(usize, u8)>()
    ) {
        let index = index_seed % size;
        let (leaves, tree) = tree_of(size);
        let root_hash = root(&leaves);
        prop_assert_eq!(tree.root(), root_hash);
        let leaf = leaves[index as usize];
        let proof = inclusion_proof(&tree, index, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root_hash).is_ok());

        // A changed leaf.
        let mut other = leaf;
        other[flip.0 % 32] ^= flip.1 | 1;
        prop_assert!(verify_inclusion(&other, index, size, &proof, &root_hash).is_err());
        // Another leaf of the same tree at this index.
        if size > 1 {
            let j = (index + 1) % size;
            prop_assert!(verify_inclusion(&leaves[j as usize], index, size, &proof, &root_hash).is_err());
        }
        // A changed proof node.
        if !proof.is_empty() {
            let mut wrong = proof.clone();
            let i = flip.0 % wrong.len();
            wrong[i][(flip.0 / 7) % 32] ^= flip.1 | 1;
            prop_assert!(verify_inclusion(&leaf, index, size, &wrong, &root_hash).is_err());
        }
        // A wrong index (every other index).
        for wrong_index in 0..size.min(64) {
            if wrong_index != index {
                prop_assert!(verify_inclusion(&leaf, wrong_index, size, &proof, &root_hash).is_err());
            }
        }
        // A wrong size, with the root of the tree at that size (the checkpoint binds size and
        // root together; the proof alone does not pin the size, see the module docs).
        let longer: Vec<Hash> = (0..size * 2).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for wrong_size in [size - 1, size + 1, size * 2, size / 2] {
            if wrong_size == size || wrong_size <= index {
                continue;
            }
            let other_root = root(&longer[..wrong_size as usize]);
            prop_assert!(verify_inclusion(&leaf, index, wrong_size, &proof, &other_root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_fails(
        new_size in 1u64..=300, old_seed in any::<u64>(), flip in any::<(usize, u8)>()
    ) {
        let old_size = old_seed % (new_size + 1);
        let (leaves, tree) = tree_of(new_size);
        let old_root = root(&leaves[..old_size as usize]);
        let new_root = root(&leaves);
        let proof = consistency_proof(&tree, old_size, new_size).unwrap();
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof).is_ok());

        if old_size == 0 || old_size == new_size {
            prop_assert!(proof.is_empty());
            return Ok(());
        }
        // A changed proof node.
        let mut wrong = proof.clone();
        let i = flip.0 % wrong.len();
        wrong[i][(flip.0 / 7) % 32] ^= flip.1 | 1;
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &wrong).is_err());
        // A changed old leaf: the old tree is no longer a prefix.
        let mut changed = leaves.clone();
        let j = (flip.0 as u64 % old_size) as usize;
        changed[j][0] ^= 1;
        let changed_old_root = root(&changed[..old_size as usize]);
        prop_assert!(verify_consistency(old_size, new_size, &changed_old_root, &new_root, &proof).is_err());
        let changed_new_root = root(&changed);
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &changed_new_root, &proof).is_err());
        // Wrong sizes, each with the root of the tree at that size.
        let longer: Vec<Hash> = (0..new_size * 2).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let root_at = |n: u64| root(&longer[..n as usize]);
        for (o, n) in [
            (old_size - 1, new_size),
            (old_size + 1, new_size),
            (old_size, new_size + 1),
            (old_size, new_size - 1),
            (old_size, new_size * 2),
        ] {
            if (o, n) == (old_size, new_size) || o > n {
                continue;
            }
            let refused = verify_consistency(o, n, &root_at(o), &root_at(n), &proof).is_err();
            // Only a proof that is trivially valid for those sizes may pass.
            let trivial = o == 0 || o == n;
            prop_assert!(refused || (trivial && proof.is_empty()), "{} -> {}", o, n);
        }
        // Swapped roots.
        prop_assert!(verify_consistency(old_size, new_size, &new_root, &old_root, &proof).is_err());
    }

}

proptest! {
    // Each case checks every prefix of its tree: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frontier_agrees_with_root_and_reports_exactly_the_perfect_subtrees(size in 0u64..=300) {
        let (leaves, tree) = tree_of(size);
        let mut frontier = Frontier::new();
        let mut reported = BTreeMap::new();
        prop_assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in leaves.iter().enumerate() {
            for done in frontier.append(*leaf).unwrap() {
                // Each completes exactly at this append, and is new.
                prop_assert_eq!(done.subtree.end(), i as u64 + 1);
                prop_assert!(reported.insert(done.subtree, done.hash).is_none());
            }
            let n = i + 1;
            prop_assert_eq!(frontier.size(), n as u64);
            prop_assert_eq!(frontier.root(), root(&leaves[..n]));
            prop_assert_eq!(frontier.root(), tree_root(&tree, n as u64).unwrap());
            // The held subtrees are the root nodes of this size.
            let held: Vec<Subtree> = frontier.subtrees().map(|c| c.subtree).collect();
            prop_assert_eq!(held, root_nodes(n as u64));
        }
        // Reported: exactly every perfect aligned subtree within the size, with its hash.
        let mut expected = BTreeMap::new();
        let mut s = 1u64;
        while s <= size {
            let mut start = 0;
            while start + s <= size {
                let subtree = Subtree::new(start, s).unwrap();
                expected.insert(subtree, root(&leaves[start as usize..(start + s) as usize]));
                start += s;
            }
            s <<= 1;
        }
        prop_assert_eq!(&reported, &expected);
        // The reported subtrees suffice to generate every proof and resume the frontier.
        let resumed = Frontier::from_source(&reported, size).unwrap();
        prop_assert_eq!(resumed.root(), frontier.root());
        let again = Frontier::resume(size, frontier.subtrees().map(|c| c.hash).collect()).unwrap();
        prop_assert_eq!(&again, &frontier);
        if size > 0 {
            let index = size / 3;
            prop_assert_eq!(
                inclusion_proof(&reported, index, size).unwrap(),
                inclusion_proof(&tree, index, size).unwrap()
            );
            prop_assert_eq!(
                consistency_proof(&reported, index, size).unwrap(),
                consistency_proof(&tree, index, size).unwrap()
            );
        }
    }

    #[test]
    fn proof_nodes_are_exactly_what_generation_reads(size in 1u64..=300, seed in any::<u64>()) {
        let index = seed % size;
        let (_, tree) = tree_of(size);
        use cryptovault_events::merkle::SubtreeHashes;
        let only: BTreeMap<Subtree, Hash> = inclusion_proof_nodes(index, size)
            .unwrap()
            .into_iter()
            .map(|s| (s, tree.subtree_hash(s).unwrap()))
            .collect();
        prop_assert_eq!(
            inclusion_proof(&only, index, size).unwrap(),
            inclusion_proof(&tree, index, size).unwrap()
        );
        let nodes = consistency_proof_nodes(index, size).unwrap();
        let only: BTreeMap<Subtree, Hash> =
            nodes.iter().map(|s| (*s, tree.subtree_hash(*s).unwrap())).collect();
        prop_assert_eq!(only.len(), nodes.len(), "no duplicates");
        prop_assert_eq!(
            consistency_proof(&only, index, size).unwrap(),
            consistency_proof(&tree, index, size).unwrap()
        );
    }
}
