//! Proof of liabilities, the service side (issue 16): at a signed checkpoint, per asset, a Merkle
//! sum tree over every user's balance (`cryptovault_events::liabilities`, which documents the
//! construction and what it proves), its signed note, and each user's bundle.
//!
//! - **Balances**: every user's total (available + held) per asset after the checkpoint's last
//!   position, summed exactly from the `ledger_entries` read model
//!   (`ReadModels::balances_at`). Only users' accounts have entries: a deposit's balancing
//!   external account and the paid-out withdrawals account are not liabilities and are not
//!   counted. Zero balances get no leaf. A negative balance refuses the issuance, naming the user
//!   and asset (the ledger's invariant forbids one; a leaf never holds one).
//! - **Salts**: `SaltKey::from_signer(checkpoint key).salt(checkpoint size, user id)`:
//!   deterministic, so two instances issuing at the same checkpoint store the same trees, and a
//!   proof is served again without storing a secret; after a key rotation, issue again.
//! - **Storage**: `store::liabilities` (the issuance keyed by checkpoint size, every node), so a
//!   user's proof is `O(log n)` reads of what was signed. Issuance is `O(users)`.
//!
//! [`offline`] is `cryptovault audit verify-liabilities`.

pub mod offline;

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use cryptovault_events::checkpoint::{SignedNote, SignerKey};
use cryptovault_events::liabilities::{
    self, format_amount, proof_positions, user_hash, verify_liabilities, AssetLiabilities,
    LiabilitiesBundle, LiabilitiesError, LiabilitiesNote, ProofStep, SaltKey, SumTree,
    BUNDLE_FORMAT,
};
use cryptovault_events::merkle::Hash;

use crate::store::liabilities::{IssuanceRow, IssuedAsset, NodeToStore};
use crate::store::read_models::{ReadModels, SumError, UserBalance};
use crate::store::StoreError;

/// What an issuance needs from the notary: the checkpoint key (its name is the log's origin) and
/// a signed checkpoint's size and root.
pub struct CheckpointSource {
    pub signer: SignerKey,
    pub size: u64,
    pub root: Hash,
}

/// Why no liabilities were issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A user's balance is below zero at the checkpoint: the ledger's invariant is broken.
    #[error(
        "user {user_id} has a negative balance of {asset} ({balance}) at position {position}: \
         the ledger's invariant is broken, no liabilities are issued"
    )]
    NegativeBalance {
        user_id: String,
        asset: String,
        balance: String,
        position: u64,
    },
    /// The entries cannot be summed exactly, or the database failed.
    #[error(transparent)]
    Sum(#[from] SumError),
    /// The balances of an asset add up beyond what a tree holds.
    #[error("liabilities of {asset}: {source}")]
    Tree {
        asset: String,
        source: LiabilitiesError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One asset's tree of an issuance and the user id of each leaf (by leaf index).
pub struct AssetTree {
    pub asset: String,
    pub tree: SumTree,
    pub users: Vec<String>,
}

/// An issuance computed from balances: the signed note and the trees.
pub struct Computed {
    pub note: LiabilitiesNote,
    pub signed: SignedNote,
    pub trees: Vec<AssetTree>,
}

/// The trees and the signed note of `balances` (after position `source.size`), with a line for
/// each of `assets` and each asset that has a balance. Pure.
pub fn compute(
    source: &CheckpointSource,
    balances: &[UserBalance],
    assets: &[String],
) -> Result<Computed, IssueError> {
    let salts = SaltKey::from_signer(&source.signer);
    let mut per_asset: BTreeMap<String, Vec<(Hash, u128, &str)>> = assets
        .iter()
        .map(|asset| (asset.clone(), Vec::new()))
        .collect();
    for b in balances {
        if b.total.is_negative() {
            return Err(IssueError::NegativeBalance {
                user_id: b.user_id.clone(),
                asset: b.asset.clone(),
                balance: b.total.to_string(),
                position: source.size,
            });
        }
        if b.total.is_zero() {
            continue;
        }
        let atto = u128::try_from(b.total.raw()).unwrap_or_default();
        let hash = user_hash(&salts.salt(source.size, &b.user_id), &b.user_id);
        per_asset
            .entry(b.asset.clone())
            .or_default()
            .push((hash, atto, &b.user_id));
    }
    let mut trees = Vec::new();
    for (asset, leaves) in per_asset {
        let tree_error = |source| IssueError::Tree {
            asset: asset.clone(),
            source,
        };
        let ids: HashMap<Hash, &str> = leaves.iter().map(|(h, _, id)| (*h, *id)).collect();
        let tree = SumTree::build(leaves.iter().map(|(h, b, _)| (*h, *b)).collect())
            .map_err(tree_error)?;
        let users = (0..tree.leaf_count())
            .filter_map(|i| tree.user_hash(i).and_then(|h| ids.get(h)))
            .map(|id| (*id).to_owned())
            .collect();
        trees.push(AssetTree { asset, tree, users });
    }
    let lines = trees
        .iter()
        .map(|t| AssetLiabilities::of(&t.asset, &t.tree))
        .collect();
    let tree_error = |source| IssueError::Tree {
        asset: "*".into(),
        source,
    };
    let note = LiabilitiesNote::new(source.signer.name(), source.size, source.root, lines)
        .map_err(tree_error)?;
    let signed = note.sign(&source.signer).map_err(tree_error)?;
    Ok(Computed {
        note,
        signed,
        trees,
    })
}

/// Issues (or returns the earlier issuance of) the liabilities at `source`'s checkpoint. The
/// caller has made sure the `transactions` projection (which writes `ledger_entries`) has
/// applied `source.size`.
pub async fn issue(
    read_models: &ReadModels,
    source: &CheckpointSource,
    assets: &[String],
    now: DateTime<Utc>,
) -> Result<IssuanceRow, IssueError> {
    let store = read_models.liabilities();
    if let Some(existing) = store.issuance(source.size).await? {
        return Ok(existing);
    }
    let balances = read_models.balances_at(source.size).await?;
    let computed = compute(source, &balances, assets)?;
    let row = IssuanceRow {
        checkpoint_size: i64::try_from(source.size).unwrap_or(i64::MAX),
        checkpoint_root: STANDARD.encode(source.root),
        note: computed.signed.to_string(),
        assets: computed
            .note
            .assets()
            .iter()
            .map(|a| IssuedAsset {
                asset: a.asset.clone(),
                leaf_count: i64::try_from(a.leaf_count).unwrap_or(i64::MAX),
                total: format_amount(a.total),
                root: STANDARD.encode(a.root),
            })
            .collect(),
        issued_at: now,
    };
    let mut nodes = Vec::new();
    for t in &computed.trees {
        for (level, index, node) in t.tree.nodes() {
            nodes.push(NodeToStore {
                asset: &t.asset,
                level,
                index,
                node,
                user_id: (level == 0)
                    .then(|| t.users.get(index as usize).map(String::as_str))
                    .flatten(),
            });
        }
    }
    Ok(store.save(&row, &nodes).await?)
}

/// Why a user's bundle cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// No liabilities have been issued yet.
    #[error("no liabilities have been issued yet")]
    NoIssuance,
    /// The user has no leaf in the asset's tree (no balance of it at the checkpoint).
    #[error("no balance of {asset} is counted for you in the liabilities at checkpoint {size}")]
    NotCounted { asset: String, size: u64 },
    /// The latest issuance was signed with another key (the signing key was rotated since):
    /// its salts cannot be derived any more; an auditor issues again.
    #[error(
        "the latest liabilities (checkpoint {size}) were signed with a retired key; an auditor \
         must issue them again (POST /api/audit/liabilities)"
    )]
    RetiredKey { size: u64 },
    /// The stored issuance does not verify (damaged).
    #[error("the stored liabilities at checkpoint {size} do not verify: {why}")]
    Damaged { size: u64, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bundle of `user_id`'s balance of `asset` in the latest issuance, checked before it is
/// given (`signer` is the key the issuance was signed with).
pub async fn bundle(
    read_models: &ReadModels,
    signer: &SignerKey,
    user_id: &str,
    asset: &str,
) -> Result<LiabilitiesBundle, ProofError> {
    let store = read_models.liabilities();
    let issuance = store.latest().await?.ok_or(ProofError::NoIssuance)?;
    let size = u64::try_from(issuance.checkpoint_size).unwrap_or_default();
    if cryptovault_events::checkpoint::SignedNote::open(&issuance.note, &[signer.verifier()])
        .is_err()
    {
        return Err(ProofError::RetiredKey { size });
    }
    let not_counted = || ProofError::NotCounted {
        asset: asset.to_owned(),
        size,
    };
    let line = issuance
        .assets
        .iter()
        .find(|a| a.asset == asset)
        .ok_or_else(not_counted)?;
    let count = u64::try_from(line.leaf_count).unwrap_or_default();
    let leaf = store
        .leaf(size, asset, user_id)
        .await?
        .ok_or_else(not_counted)?;
    let damaged = |why: String| ProofError::Damaged { size, why };
    let positions = proof_positions(leaf.index, count).map_err(|e| damaged(e.to_string()))?;
    let siblings = store.nodes(size, asset, &positions).await?;
    let salt = SaltKey::from_signer(signer).salt(size, user_id);
    let bundle = LiabilitiesBundle {
        format: BUNDLE_FORMAT.to_owned(),
        note: issuance.note.clone(),
        user_id: user_id.to_owned(),
        asset: asset.to_owned(),
        salt: STANDARD.encode(salt),
        balance: format_amount(leaf.node.sum),
        leaf_index: leaf.index,
        leaf_count: count,
        proof: siblings.iter().map(ProofStep::from).collect(),
    };
    if liabilities::leaf(&user_hash(&salt, user_id), leaf.node.sum) != leaf.node {
        return Err(damaged(
            "the stored leaf is not this user's (was the signing key rotated?)".into(),
        ));
    }
    verify_liabilities(&bundle, &signer.verifier()).map_err(|e| damaged(e.to_string()))?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::Units;

    fn source() -> CheckpointSource {
        CheckpointSource {
            signer: SignerKey::from_seed("cryptovault.test/ledger", [2u8; 32]).unwrap(),
            size: 17,
            root: [6u8; 32],
        }
    }

    fn balance(user: &str, asset: &str, total: &str) -> UserBalance {
        UserBalance {
            user_id: user.into(),
            asset: asset.into(),
            total: total.parse::<Units>().unwrap(),
        }
    }

    #[test]
    fn totals_are_the_sums_and_zero_balances_get_no_leaf() {
        let balances = [
            balance("a", "BTC", "1.5"),
            balance("b", "BTC", "0.000000000000000001"),
            balance("c", "BTC", "0"),
            balance("a", "ETH", "2"),
        ];
        let assets = ["BTC".to_owned(), "ETH".to_owned(), "USDC".to_owned()];
        let computed = compute(&source(), &balances, &assets).unwrap();
        let text = computed.signed.text();
        assert!(
            text.starts_with("cryptovault.test/ledger/liabilities\n17\n"),
            "{text}"
        );
        let btc = computed.note.asset("BTC").unwrap();
        assert_eq!(
            (btc.leaf_count, format_amount(btc.total)),
            (2, "1.500000000000000001".into())
        );
        assert_eq!(computed.note.asset("ETH").unwrap().leaf_count, 1);
        assert_eq!(computed.note.asset("USDC").unwrap().leaf_count, 0);
        let btc_tree = &computed.trees[0];
        assert_eq!(btc_tree.users.len(), 2);
        for (i, user) in btc_tree.users.iter().enumerate() {
            let salt = SaltKey::from_signer(&source().signer).salt(17, user);
            assert_eq!(
                btc_tree.tree.index_of(&user_hash(&salt, user)),
                Some(i as u64)
            );
        }
    }

    #[test]
    fn a_negative_balance_refuses_the_issuance_naming_user_and_asset() {
        let balances = [balance("a", "BTC", "1"), balance("b", "BTC", "-0.5")];
        let error = compute(&source(), &balances, &[]).err().unwrap();
        let message = error.to_string();
        assert!(
            message.contains("user b") && message.contains("BTC"),
            "{message}"
        );
        assert!(message.contains("-0.5"), "{message}");
    }
}
