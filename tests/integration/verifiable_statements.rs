//! Verifiable statements (issue 16): a user's JSON statement with proofs and a CSV statement
//! with its signed digest, written through two instances and verified by the CLI in a
//! separate process with only the public key; tampering fails with exit 1.

use std::path::Path;
use std::process::{Command, Output};

use cryptovault::statement::CSV_HEADER;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{position, post, spawn_app, TestApp, TestUser};

async fn export(base: &str, user: &TestUser, path: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `cryptovault audit verify-statement ARGS… --key KEY`, environment cleared (no MongoDB, no
/// configuration).
fn verify(args: &[&Path], digest: Option<&Path>, key: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cryptovault"));
    command.args(["audit", "verify-statement"]);
    command.args(args);
    if let Some(digest) = digest {
        command.arg("--digest").arg(digest);
    }
    command
        .args(["--key", key])
        .env_clear()
        .output()
        .expect("the cryptovault binary runs")
}

fn described(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn verifiable_statements_json_and_csv_digest_verify_offline_across_two_instances() {
    let a = TestApp::spawn("verifiable_statements").await;
    let b = spawn_app(&a.db, &[]).await;
    let key_view: Value = reqwest::get(format!("{b}/api/audit/public-key"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key_view["verifier_key"].as_str().unwrap().to_owned();

    let alice = a.user("alice@example.com").await;
    let bob = a.user("bob@example.com").await;
    let boss = a.admin("boss@example.com").await;
    // Deposits, transfers both ways and a completed withdrawal, on both instances.
    let (status, body) = a.deposit(&alice, "BTC", "2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = a.deposit(&bob, "BTC", "1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &b,
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "bob@example.com", "asset": "BTC", "amount": "0.5" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = a.transfer(&bob, "alice@example.com", "BTC", "0.125").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &b,
        &alice,
        "/api/wallet/withdrawals",
        json!({ "asset": "BTC", "amount": "0.25", "address": "bc1qexample" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let withdrawal = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    let mut head = 0;
    for (base, action) in [(&a.base, "approve"), (&b, "complete")] {
        let (status, body) = post(
            base,
            &boss,
            &format!("/api/admin/withdrawals/{withdrawal}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        head = position(&body);
    }
    let (status, body) = a.deposit(&alice, "ETH", "3").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    head = head.max(position(&body));

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // A verifiable JSON statement from instance B: every movement with its event and proof.
    let response = export(
        &b,
        &alice,
        "/api/transactions/export",
        json!({ "format": "json", "verifiable": true, "min_position": head }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let size: u64 = response.headers()["cryptovault-checkpoint-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        size >= head,
        "the checkpoint {size} covers the writes {head}"
    );
    let statement: Value = response.json().await.unwrap();
    assert_eq!(statement["format"], "cryptovault.statement.v1");
    assert_eq!(statement["statement"]["up_to_position"], size);
    let btc = statement["statement"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["asset"] == "BTC")
        .unwrap()
        .clone();
    let kinds: Vec<&str> = btc["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["deposit", "transfer_out", "transfer_in", "withdrawal"],
        "{btc}"
    );
    assert_eq!(btc["closing_balance"], "1.37500000");
    for m in btc["movements"].as_array().unwrap() {
        assert_eq!(m["event"]["position"], m["position"]);
        assert_eq!(m["leaf_index"], m["position"].as_u64().unwrap() - 1);
    }
    std::fs::write(path("statement.json"), statement.to_string()).unwrap();
    let out = verify(&[&path("statement.json")], None, &key);
    assert_eq!(out.status.code(), Some(0), "{}", described(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Not proven: completeness"));

    // Tampered: a changed amount (with the balances made to add up), a dropped proof hash.
    let mut changed = statement.clone();
    let assets = changed["statement"]["assets"].as_array_mut().unwrap();
    let section = assets.iter_mut().find(|s| s["asset"] == "BTC").unwrap();
    section["movements"][0]["amount"] = json!("2.10000000");
    section["movements"][0]["balance"] = json!("2.10000000");
    std::fs::write(path("changed.json"), changed.to_string()).unwrap();
    let out = verify(&[&path("changed.json")], None, &key);
    assert_eq!(out.status.code(), Some(1), "{}", described(&out));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("asset BTC movement 0") && message.contains("amount 2.10000000"),
        "{message}"
    );
    let mut dropped = statement.clone();
    let assets = dropped["statement"]["assets"].as_array_mut().unwrap();
    let section = assets.iter_mut().find(|s| s["asset"] == "BTC").unwrap();
    let proof = section["movements"][2]["inclusion_proof"]
        .as_array_mut()
        .unwrap();
    assert!(!proof.is_empty());
    proof.pop();
    std::fs::write(path("dropped.json"), dropped.to_string()).unwrap();
    let out = verify(&[&path("dropped.json")], None, &key);
    assert_eq!(out.status.code(), Some(1), "{}", described(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("asset BTC movement 2"),
        "{}",
        described(&out)
    );
    // Another key: the checkpoint does not verify.
    let other = cryptovault_events::checkpoint::SignerKey::from_seed(
        crate::helpers::TEST_CHECKPOINT_ORIGIN,
        [9; 32],
    )
    .unwrap()
    .verifier()
    .to_string();
    let out = verify(&[&path("statement.json")], None, &other);
    assert_eq!(out.status.code(), Some(1), "{}", described(&out));
    // A plain statement is not a verifiable one.
    let plain = export(
        &a.base,
        &alice,
        "/api/transactions/export",
        json!({ "format": "json", "min_position": head }),
    )
    .await;
    assert!(plain.headers().get("cryptovault-checkpoint-size").is_none());
    std::fs::write(path("plain.json"), plain.bytes().await.unwrap()).unwrap();
    let out = verify(&[&path("plain.json")], None, &key);
    assert_eq!(out.status.code(), Some(2), "{}", described(&out));

    // CSV from instance A, its digest from instance B at the same checkpoint.
    let body =
        json!({ "format": "csv", "asset": "BTC", "verifiable": true, "checkpoint_size": size });
    let response = export(&a.base, &alice, "/api/transactions/export", body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cryptovault-checkpoint-size"],
        size.to_string().as_str()
    );
    let csv_bytes = response.bytes().await.unwrap();
    let header_line = format!("{}\n", CSV_HEADER.join(","));
    assert!(
        csv_bytes.starts_with(header_line.as_bytes()),
        "the CSV is the usual one"
    );
    let response = export(&b, &alice, "/api/transactions/export/digest", body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let digest: Value = response.json().await.unwrap();
    assert_eq!(digest["format"], "cryptovault.statement-digest.v1");
    let note = digest["digest"].as_str().unwrap();
    assert!(
        note.starts_with(&format!(
            "{}/statement\nformat csv\nuser ",
            crate::helpers::TEST_CHECKPOINT_ORIGIN
        )),
        "{note}"
    );
    assert!(note.contains(&format!("\nassets BTC\nfrom -\nto -\ncheckpoint {size} ")));
    std::fs::write(path("statement.csv"), &csv_bytes).unwrap();
    std::fs::write(path("digest.json"), digest.to_string()).unwrap();
    let out = verify(&[&path("statement.csv")], Some(&path("digest.json")), &key);
    assert_eq!(out.status.code(), Some(0), "{}", described(&out));
    // One byte changed.
    let mut tampered = csv_bytes.to_vec();
    let at = tampered.iter().rposition(|b| b.is_ascii_digit()).unwrap();
    tampered[at] = if tampered[at] == b'9' {
        b'8'
    } else {
        tampered[at] + 1
    };
    std::fs::write(path("tampered.csv"), &tampered).unwrap();
    let out = verify(&[&path("tampered.csv")], Some(&path("digest.json")), &key);
    assert_eq!(out.status.code(), Some(1), "{}", described(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256"),
        "{}",
        described(&out)
    );

    // Bad requests name the field.
    for (path, body, status, field) in [
        (
            "/api/transactions/export/digest",
            json!({ "format": "csv", "verifiable": false }),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("verifiable"),
        ),
        (
            "/api/transactions/export",
            json!({ "format": "csv", "checkpoint_size": size }),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("checkpoint_size"),
        ),
        (
            "/api/transactions/export/digest",
            json!({ "format": "csv", "checkpoint_size": size + 1000 }),
            StatusCode::NOT_FOUND,
            None,
        ),
    ] {
        let response = export(&b, &alice, path, body.clone()).await;
        assert_eq!(response.status(), status, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        if let Some(field) = field {
            assert_eq!(error["error"]["code"], "validation_error", "{error}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{field}:")), "{error}");
        }
    }

    // The same from the command line (`cryptovault export --verifiable`, its own process and
    // notary): a JSON statement with proofs, and a CSV with its signed digest file; both
    // verify offline, and a CSV of another user does not match the digest.
    let as_str = |p: &Path| p.to_str().unwrap().to_owned();
    let (json_file, csv_file, digest_file) =
        (path("cli.json"), path("cli.csv"), path("cli-digest.json"));
    let exported = |args: Vec<String>| {
        let db = &a.db;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = db.cli(&args).await;
            assert!(out.status.success(), "{}", described(&out));
        }
    };
    exported(
        [
            "export",
            "--email",
            "alice@example.com",
            "--format",
            "json",
            "--verifiable",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(["--output".to_owned(), as_str(&json_file)])
        .collect(),
    )
    .await;
    let out = verify(&[&json_file], None, &key);
    assert_eq!(out.status.code(), Some(0), "{}", described(&out));
    let statement: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(statement["format"], "cryptovault.statement.v1");
    let movements: usize = statement["statement"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["movements"].as_array().unwrap().len())
        .sum();
    assert!(movements >= 3, "{statement}");
    for (email, file) in [
        ("alice@example.com", &csv_file),
        ("bob@example.com", &path("bob.csv")),
    ] {
        let mut args: Vec<String> = [
            "export", "--email", email, "--format", "csv", "--asset", "BTC",
        ]
        .map(str::to_owned)
        .into();
        args.extend(["--output".to_owned(), as_str(file)]);
        if email.starts_with("alice") {
            args.extend([
                "--verifiable".to_owned(),
                "--digest".to_owned(),
                as_str(&digest_file),
            ]);
        }
        exported(args).await;
    }
    let out = verify(&[&csv_file], Some(&digest_file), &key);
    assert_eq!(out.status.code(), Some(0), "{}", described(&out));
    let out = verify(&[&path("bob.csv")], Some(&digest_file), &key);
    assert_eq!(out.status.code(), Some(1), "{}", described(&out));
    a.db.drop_database().await;
}
