//! `cryptovault audit verify-liabilities FILE --key K`: checks a user's liabilities bundle
//! (`cryptovault.liabilities.v1`) with only the log's verifier key — no MongoDB, no
//! configuration, no network. The checks are `cryptovault_events::liabilities::verify_liabilities`;
//! this reads the inputs, runs them and reports.
//!
//! Exit codes: 0 verified, 1 a check failed (the message names it), 2 unusable input (an
//! unreadable file, JSON that is not such a bundle, a malformed key).

use std::path::Path;

use cryptovault_events::checkpoint::VerifierKey;
use cryptovault_events::liabilities::{
    format_amount, verify_liabilities, LiabilitiesBundle, LiabilitiesError,
};

/// What a verification prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 0 verified, 1 a check failed, 2 unusable input.
    pub exit_code: i32,
    /// One human line: the summary, or the check that failed.
    pub message: String,
    /// The JSON report (`--json`).
    pub report: serde_json::Value,
}

/// Verifies the bundle in `file` under the verifier key `key` (the key string, or `@path` to a
/// file holding it).
pub fn verify_file(file: &Path, key: &str) -> Outcome {
    let key = match load_key(key) {
        Ok(key) => key,
        Err(message) => return unusable(message),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return unusable(format!("cannot read {}: {e}", file.display())),
    };
    let mut de = serde_json::Deserializer::from_str(&text);
    let bundle: LiabilitiesBundle = match serde_path_to_error::deserialize(&mut de) {
        Ok(bundle) => bundle,
        Err(e) => {
            return unusable(format!(
                "{} is not a liabilities bundle: {e}",
                file.display()
            ))
        }
    };
    verify_bundle(&bundle, &key)
}

/// Verifies a parsed bundle (see [`verify_file`]).
pub fn verify_bundle(bundle: &LiabilitiesBundle, key: &VerifierKey) -> Outcome {
    match verify_liabilities(bundle, key) {
        Ok(verified) => {
            let total = format_amount(verified.asset.total);
            let message = format!(
                "verified: {} of {} for user {} is counted in the total {} {} over {} holders, \
                 signed by {} at checkpoint size {}",
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
                "verified": true,
                "origin": verified.note.origin(),
                "checkpoint_size": verified.note.checkpoint_size(),
                "user_id": bundle.user_id,
                "asset": verified.asset.asset,
                "balance": format_amount(verified.balance),
                "total": total,
                "leaf_count": verified.asset.leaf_count,
            });
            Outcome {
                exit_code: 0,
                message,
                report,
            }
        }
        Err(e) => failed(&e),
    }
}

fn failed(e: &LiabilitiesError) -> Outcome {
    let message = format!("FAILED: {e}");
    Outcome {
        exit_code: 1,
        report: serde_json::json!({ "verified": false, "exit_code": 1, "error": message }),
        message,
    }
}

fn unusable(why: String) -> Outcome {
    let message = format!("error: {why}");
    Outcome {
        exit_code: 2,
        report: serde_json::json!({ "verified": false, "exit_code": 2, "error": message }),
        message,
    }
}

/// The verifier key from the argument, or from the file `@path` names (surrounding white space
/// ignored).
pub fn load_key(arg: &str) -> Result<VerifierKey, String> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {path}: {e}"))?,
        None => arg.to_owned(),
    };
    VerifierKey::parse(text.trim()).map_err(|e| format!("--key: {e}"))
}

/// Prints `outcome` (stdout when verified, stderr otherwise; the JSON report on stdout with
/// `json`) and returns its exit code.
pub fn print(outcome: &Outcome, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.report).unwrap_or_default()
        );
    } else if outcome.exit_code == 0 {
        println!("{}", outcome.message);
    } else {
        eprintln!("{}", outcome.message);
    }
    outcome.exit_code
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

    #[test]
    fn exit_codes() {
        let (good, key) = bundle();
        let verifier = key.verifier();
        let ok = verify_bundle(&good, &verifier);
        assert_eq!(ok.exit_code, 0, "{}", ok.message);
        assert_eq!(ok.report["balance"], "0.00000000000000002");
        let mut bad = good.clone();
        bad.balance = "0.00000000000000001".into();
        assert_eq!(verify_bundle(&bad, &verifier).exit_code, 1);

        let dir = std::env::temp_dir().join(format!("liabilities-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bundle.json");
        std::fs::write(&file, serde_json::to_string(&good).unwrap()).unwrap();
        let key_file = dir.join("key.txt");
        std::fs::write(&key_file, format!("{verifier}\n")).unwrap();
        let at = format!("@{}", key_file.display());
        assert_eq!(verify_file(&file, &at).exit_code, 0);
        assert_eq!(verify_file(&file, &verifier.to_string()).exit_code, 0);
        assert_eq!(verify_file(&file, "not-a-key").exit_code, 2);
        assert_eq!(verify_file(&dir.join("missing.json"), &at).exit_code, 2);
        std::fs::write(&file, "{\"format\": 1}").unwrap();
        let outcome = verify_file(&file, &at);
        assert_eq!(outcome.exit_code, 2);
        assert!(outcome.message.contains("format"), "{}", outcome.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
