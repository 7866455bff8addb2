//! Proof of liabilities (issue 16): users move money through two service instances; the
//! liabilities issued at a checkpoint of the whole log sum to the balances read model per
//! asset, and every user's bundle verifies with only the public key through the
//! `cryptovault audit verify-liabilities` binary in a separate process; a shrunk balance or a
//! dropped sibling fails it.
//! Issuance and the bundles go through the HTTP routes of the two instances; the note's
//! checkpoint root is checked against the RFC 6962 root computed here from the log.

use std::collections::BTreeMap;

use cryptovault::store::codec::limbs_document;
use cryptovault_events::checkpoint::{SignerKey, VerifierKey};
use cryptovault_events::liabilities::{format_amount, LiabilitiesBundle, LiabilitiesNote};
use cryptovault_events::merkle::{leaf_hash, MemoryTree};
use cryptovault_events::Units;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    admin, get_json, post, signed_up, spawn_app, stored_balances, test_checkpoint_key,
    wait_for_projection, TestDb, TestUser,
};

const ASSETS: [&str; 3] = ["BTC", "ETH", "USD"];

/// `cryptovault audit verify-liabilities FILE --key KEY` in a separate process: exit code and
/// the combined output.
async fn verify_with_cli(bundle: &LiabilitiesBundle, key: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!(
        "liabilities-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bundle.json");
    std::fs::write(&file, serde_json::to_vec_pretty(bundle).unwrap()).unwrap();
    let key = key.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cryptovault"))
            .args(["audit", "verify-liabilities"])
            .arg(&file)
            .args(["--key", &key])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the cryptovault binary")
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The Python script of the README's "Proof of liabilities", run on `bundle` with `key`.
async fn readme_python_check(bundle: &LiabilitiesBundle, key: &str) -> (i32, String) {
    let readme = include_str!("../../README.md");
    let script = readme
        .split_once("<!-- liabilities-check -->\n```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(script, _)| script.to_owned())
        .expect("the README has the liabilities check");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bundle.json"),
        serde_json::to_vec(bundle).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("key.txt"), format!("{key}\n")).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        // The Python with `cryptography` that scripts/test.sh prepares (scripts/audit-venv.sh).
        let python = std::env::var("CV_AUDIT_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = std::process::Command::new(python)
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .expect("the audit Python runs");
        drop(dir);
        out
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `user`'s BTC bundle.
async fn good_bundle(base: &str, user: &TestUser) -> LiabilitiesBundle {
    let (status, body) = get_json(base, user, "/api/wallet/liabilities-proof?asset=BTC").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn liabilities_sum_to_the_balances_and_every_users_proof_verifies_offline() {
    let t = TestDb::new("liabilities").await;
    let bases = [spawn_app(&t, &[]).await, spawn_app(&t, &[]).await];
    let boss = admin(&t, &bases[0], "boss@example.com").await;
    let mut users: Vec<(TestUser, String)> = Vec::new();
    for i in 0..6 {
        let email = format!("holder{i}@example.com");
        users.push((signed_up(&bases[i % 2], &email).await, email));
    }
    // Deposits on both instances, transfers between users across them, a withdrawal held and one
    // paid out, and one user who never deposits.
    for (i, (user, _)) in users.iter().enumerate().take(5) {
        let base = &bases[i % 2];
        let deposits = [
            ("BTC", format!("{}.5", i + 1)),
            ("USD", format!("{}00.25", i + 1)),
        ];
        for (asset, amount) in deposits {
            let (status, body) = post(
                base,
                user,
                "/api/wallet/deposits",
                json!({ "asset": asset, "amount": amount }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    let (status, body) = post(
        &bases[1],
        &users[0].0,
        "/api/wallet/deposits",
        json!({ "asset": "ETH", "amount": "0.000000000000000001" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (from, to, amount) in [(0, 1, "0.25"), (3, 2, "1.125"), (1, 4, "0.00000001")] {
        let (status, body) = post(
            &bases[(from + 1) % 2],
            &users[from].0,
            "/api/wallet/transfers",
            json!({ "to_email": users[to].1, "asset": "BTC", "amount": amount }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut withdrawals = Vec::new();
    for (who, amount) in [(2, "50"), (4, "0.25")] {
        let (status, body) = post(
            &bases[who % 2],
            &users[who].0,
            "/api/wallet/withdrawals",
            json!({ "asset": "USD", "amount": amount, "address": "acct-x" }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        withdrawals.push(body["withdrawal"]["id"].as_str().unwrap().to_owned());
    }
    for action in ["approve", "complete"] {
        let path = format!("/api/admin/withdrawals/{}/{action}", withdrawals[0]);
        let (status, body) = post(&bases[1], &boss, &path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // Issuance (admin, instance 0) at a checkpoint the notary signs for the log as it is now.
    let (status, body) = post(&bases[0], &users[3].0, "/api/audit/liabilities", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, issued) = post(&bases[0], &boss, "/api/audit/liabilities", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let size = issued["checkpoint_size"].as_u64().unwrap();
    // Issuing again (from the other instance, no event since) answers the same issuance.
    let (status, again) = post(&bases[1], &boss, "/api/audit/liabilities", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["note"], issued["note"]);
    let note_text = issued["note"].as_str().unwrap().to_owned();

    // The public key, as a user pins it; the note's checkpoint is the log's RFC 6962 root.
    let (status, public) = get_json(&bases[1], &users[0].0, "/api/audit/public-key").await;
    assert_eq!(status, StatusCode::OK, "{public}");
    let key = public["verifier_key"].as_str().unwrap().to_owned();
    let verifier = VerifierKey::parse(&key).unwrap();
    assert_eq!(verifier, test_checkpoint_key().verifier());
    let store = t.store().await;
    let mut tree = MemoryTree::new();
    while tree.size() < size {
        let events = store.read_all(tree.size() + 1, 5000).await.unwrap();
        for e in events.into_iter().take((size - tree.size()) as usize) {
            tree.push(leaf_hash(&hex::decode(&e.hash).unwrap()));
        }
    }
    wait_for_projection(&t, "balances").await;

    // Totals equal the balances read model's users' sums, per asset.
    let (note, _) = LiabilitiesNote::open(&note_text, &verifier).unwrap();
    assert_eq!(note.checkpoint_size(), size);
    assert_eq!(note.checkpoint_root(), &tree.root());
    let mut ids: Vec<String> = users.iter().map(|(u, _)| u.id.clone()).collect();
    ids.push(boss.id.clone());
    let balances = stored_balances(&t).await;
    let mut expected: BTreeMap<String, (Units, u64)> = BTreeMap::new();
    for ((owner, asset), (available, held)) in &balances {
        if !ids.contains(owner) {
            continue; // a system account (external deposits, paid-out withdrawals)
        }
        let total = available.checked_add(*held).unwrap();
        assert!(!total.is_negative());
        if total.is_zero() {
            continue;
        }
        let entry = expected.entry(asset.clone()).or_insert((Units::ZERO, 0));
        entry.0 = entry.0.checked_add(total).unwrap();
        entry.1 += 1;
    }
    for asset in ASSETS {
        let line = note.asset(asset).unwrap();
        let (total, holders) = expected.get(asset).copied().unwrap_or((Units::ZERO, 0));
        assert_eq!(
            format_amount(line.total),
            total.to_string(),
            "total of {asset}"
        );
        assert_eq!(line.leaf_count, holders, "holders of {asset}");
    }
    assert_eq!(note.asset("BTC").unwrap().leaf_count, 5);
    assert_eq!(
        format_amount(note.asset("ETH").unwrap().total),
        "0.000000000000000001"
    );

    // Every user's proof (from either instance) verifies in a separate process with only the
    // public key.
    let mut checked = 0;
    let mut everyone: Vec<&TestUser> = users.iter().map(|(u, _)| u).collect();
    everyone.push(&boss);
    for (n, user) in everyone.iter().enumerate() {
        for asset in ASSETS {
            let counted = balances.contains_key(&(user.id.clone(), asset.to_owned()));
            let path = format!("/api/wallet/liabilities-proof?asset={asset}");
            let (status, body) = get_json(&bases[n % 2], user, &path).await;
            if !counted {
                assert_eq!(status, StatusCode::NOT_FOUND, "{} {asset}: {body}", user.id);
                assert_eq!(body["error"]["code"], "not_found");
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{} {asset}: {body}", user.id);
            let b: LiabilitiesBundle = serde_json::from_value(body).unwrap();
            assert_eq!(b.user_id, user.id);
            assert_eq!(b.note, note_text);
            let (code, out) = verify_with_cli(&b, &key).await;
            assert_eq!(code, 0, "{out}");
            assert!(out.contains("verified"), "{out}");
            let (available, held) = balances[&(user.id.clone(), asset.to_owned())];
            assert_eq!(b.balance, available.checked_add(held).unwrap().to_string());
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        5 + 5 + 1,
        "BTC and USD for five users, ETH for one"
    );

    let good = good_bundle(&bases[0], &users[1].0).await;
    // The README's Python check, as written there, accepts the bundle and refuses a shrunk one.
    let (code, out) = readme_python_check(&good, &key).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("verified:"), "{out}");
    let mut shrunk = good.clone();
    shrunk.balance = "0.1".into();
    let (code, out) = readme_python_check(&shrunk, &key).await;
    assert_ne!(code, 0, "{out}");

    // A shrunk balance, a dropped sibling, a smaller sibling sum, another key: each fails.
    let (code, out) = verify_with_cli(&shrunk, &key).await;
    assert_eq!(code, 1, "{out}");
    let mut dropped = good.clone();
    dropped.proof.remove(0);
    let (code, out) = verify_with_cli(&dropped, &key).await;
    assert_eq!(code, 1, "{out}");
    let mut smaller_sibling = good.clone();
    smaller_sibling.proof[0].sum = "0".into();
    let (code, out) = verify_with_cli(&smaller_sibling, &key).await;
    assert_eq!(code, 1, "{out}");
    let other = SignerKey::from_seed("cryptovault.test/ledger", [7u8; 32]).unwrap();
    let (code, out) = verify_with_cli(&good, &other.verifier().to_string()).await;
    assert_eq!(code, 1, "{out}");
    let (code, out) = verify_with_cli(&good, "not a key").await;
    assert_eq!(code, 2, "{out}");

    // The published issuance over HTTP, from either instance.
    for base in &bases {
        let (status, body) = get_json(base, &users[3].0, "/api/audit/liabilities").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["note"], note_text);
        assert_eq!(body["checkpoint_size"], size);
        let btc = body["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == "BTC")
            .unwrap();
        assert_eq!(btc["leaf_count"], 5);
        assert_eq!(
            btc["total"],
            format_amount(note.asset("BTC").unwrap().total)
        );
    }
    let (status, body) = get_json(
        &bases[0],
        &users[3].0,
        "/api/wallet/liabilities-proof?asset=DOGE",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("asset"),
        "{body}"
    );
    let (status, body) = get_json(&bases[1], &users[3].0, "/api/wallet/liabilities-proof").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("asset"),
        "{body}"
    );

    // A negative user balance (only a damaged read model or log has one) refuses the next
    // issuance, naming the user and asset; nothing is stored for that checkpoint.
    let damaged = &users[5].0;
    t.db()
        .collection::<bson::Document>("ledger_entries")
        .insert_one(bson::doc! {
            "_id": format!("1:{}:BTC", damaged.id),
            "user_id": &damaged.id,
            "asset": "BTC",
            "kind": "deposit",
            "movement": true,
            "available": limbs_document("-0.5".parse().unwrap()),
            "held": limbs_document(Units::ZERO),
            "occurred_at": bson::DateTime::now(),
            "position": 1i64,
        })
        .await
        .unwrap();
    let (status, body) = post(
        &bases[1],
        &users[0].0,
        "/api/wallet/deposits",
        json!({ "asset": "BTC", "amount": "1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(&bases[1], &boss, "/api/audit/liabilities", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&damaged.id) && message.contains("BTC") && message.contains("-0.5"),
        "{message}"
    );
    let (_, latest) = get_json(&bases[0], &users[3].0, "/api/audit/liabilities").await;
    assert_eq!(
        latest["checkpoint_size"], size,
        "nothing issued past the refusal"
    );

    // After a key rotation (same origin, new key; the old one retired), the stored issuance's
    // salts cannot be derived: a user's proof is 409 until an auditor issues again, never 500.
    let rotated = SignerKey::from_seed(crate::helpers::TEST_CHECKPOINT_ORIGIN, [61; 32]).unwrap();
    let retired = test_checkpoint_key().verifier().to_string();
    let new_key = rotated.to_private_string();
    let third = spawn_app(
        &t,
        &[
            ("CHECKPOINT_SIGNING_KEY", new_key.as_str()),
            ("CHECKPOINT_RETIRED_KEYS", retired.as_str()),
        ],
    )
    .await;
    let (status, body) = get_json(
        &third,
        &users[3].0,
        "/api/wallet/liabilities-proof?asset=BTC",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    let (_, key_view) = get_json(&third, &users[3].0, "/api/audit/public-key").await;
    assert_eq!(
        key_view["retired_verifier_keys"],
        json!([retired]),
        "{key_view}"
    );
    t.drop_database().await;
}
