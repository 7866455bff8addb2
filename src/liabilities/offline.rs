//! `cryptovault audit verify-liabilities FILE --key K`: checks a user's liabilities bundle
//! (`cryptovault.liabilities.v1`) with only the log's verifier key — no MongoDB, no
//! configuration, no network. The checks are `cryptovault_events::liabilities::verify_liabilities`;
//! this reads the inputs with `audit_cli`'s helpers and maps the outcome to its exit codes
//! (0 verified, 1 a check failed, 2 unusable input).

use std::path::Path;

use cryptovault_events::checkpoint::VerifierKey;
use cryptovault_events::liabilities::{format_amount, verify_liabilities, LiabilitiesBundle};

use crate::audit_cli::{read_json, Failure, KeyArg, Verified};

/// Verifies the bundle in `file` under the `--key` argument.
pub fn verify_file(file: &Path, key: &KeyArg) -> Result<Verified, Failure> {
    let key = key.load()?;
    let bundle: LiabilitiesBundle = read_json(file, "liabilities bundle")?;
    verify_bundle(&bundle, &key)
}

/// Verifies a parsed bundle (see [`verify_file`]); every refusal is a failed check.
pub fn verify_bundle(bundle: &LiabilitiesBundle, key: &VerifierKey) -> Result<Verified, Failure> {
    let verified =
        verify_liabilities(bundle, key).map_err(|e| Failure::Check(format!("liabilities: {e}")))?;
    let total = format_amount(verified.asset.total);
    let summary = format!(
        "verified: {} of {} for user {} is counted in the total {} {} over {} holders, signed by \
         {} at checkpoint size {}",
        bundle.balance,
        verified.asset.asset,
        bundle.user_id,
        total,
        verified.asset.asset,
        verified.asset.leaf_count,
        key.name(),
        verified.note.checkpoint_size(),
    );
    let report = serde_json::json!({
        "origin": verified.note.origin(),
        "checkpoint_size": verified.note.checkpoint_size(),
        "user_id": bundle.user_id,
        "asset": verified.asset.asset,
        "balance": format_amount(verified.balance),
        "total": total,
        "leaf_count": verified.asset.leaf_count,
    });
    Ok(Verified { summary, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::checkpoint::SignerKey;
    use cryptovault_events::liabilities::{
        user_hash, AssetLiabilities, LiabilitiesNote, SaltKey, SumTree,
    };

    fn bundle() -> (LiabilitiesBundle, SignerKey) {
        let key = SignerKey::from_seed("cryptovault.test/ledger", [4u8; 32]).unwrap();
        let salts = SaltKey::from_signer(&key);
        let ids = ["a", "b", "c"];
        let tree = SumTree::build(
            ids.iter()
                .enumerate()
                .map(|(i, id)| (user_hash(&salts.salt(9, id), id), (i as u128 + 1) * 10))
                .collect(),
        )
        .unwrap();
        let note = LiabilitiesNote::new(
            key.name(),
            9,
            [1u8; 32],
            vec![AssetLiabilities::of("ETH", &tree)],
        )
        .unwrap()
        .sign(&key)
        .unwrap();
        let salt = salts.salt(9, "b");
        let index = tree.index_of(&user_hash(&salt, "b")).unwrap();
        let bundle = LiabilitiesBundle::new(&note, "ETH", "b", &salt, &tree, index).unwrap();
        (bundle, key)
    }

    fn code(outcome: Result<Verified, Failure>) -> i32 {
        match outcome {
            Ok(_) => 0,
            Err(Failure::Check(_)) => 1,
            Err(Failure::Unusable(_)) => 2,
        }
    }

    #[test]
    fn exit_codes() {
        let (good, key) = bundle();
        let verifier = key.verifier();
        let ok = verify_bundle(&good, &verifier).ok().unwrap();
        assert_eq!(ok.report["balance"], "0.00000000000000002");
        assert!(ok.summary.starts_with("verified: "), "{}", ok.summary);
        let mut bad = good.clone();
        bad.balance = "0.00000000000000001".into();
        assert_eq!(code(verify_bundle(&bad, &verifier)), 1);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bundle.json");
        std::fs::write(&file, serde_json::to_string(&good).unwrap()).unwrap();
        let key_file = dir.path().join("key.txt");
        std::fs::write(&key_file, format!("{verifier}\n")).unwrap();
        let arg = |key: String| KeyArg { key };
        let at = arg(format!("@{}", key_file.display()));
        assert_eq!(code(verify_file(&file, &at)), 0);
        assert_eq!(code(verify_file(&file, &arg(verifier.to_string()))), 0);
        assert_eq!(code(verify_file(&file, &arg("not-a-key".into()))), 2);
        assert_eq!(code(verify_file(&dir.path().join("missing.json"), &at)), 2);
        std::fs::write(&file, "{\"format\": 1}").unwrap();
        match verify_file(&file, &at) {
            Err(Failure::Unusable(message)) => assert!(message.contains("format"), "{message}"),
            _ => panic!("a bundle with a numeric format is unusable input"),
        }
    }
}
