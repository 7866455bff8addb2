//! The verifiable log (issue 16): the Merkle tree kept by every instance, signed checkpoints,
//! inclusion and consistency proofs, receipts — over two instances — and tampering in MongoDB
//! that the notary refuses to sign.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bson::{doc, Document};
use cryptovault::store::tree::TreeStore;
use cryptovault_events::checkpoint::{Checkpoint, VerifierKey};
use cryptovault_events::merkle::{self, Hash};
use cryptovault_events::EventEnvelope;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    get_json, logged_in, position, post, spawn_app, test_checkpoint_key, TestApp, TestDb, TestUser,
};

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array()
        .expect("a list of hashes")
        .iter()
        .map(|h| {
            let bytes = STANDARD.decode(h.as_str().unwrap()).unwrap();
            <Hash>::try_from(bytes.as_slice()).unwrap()
        })
        .collect()
}

/// Opens a signed checkpoint note with `key`: `(size, root)`.
fn open(note: &str, key: &VerifierKey) -> Result<(u64, Hash), String> {
    let (checkpoint, _) = Checkpoint::open(note, key, &[]).map_err(|e| e.to_string())?;
    Ok((checkpoint.size(), *checkpoint.root()))
}

/// Every check an offline verifier makes on a receipt or inclusion bundle; the positions.
fn verify_bundle(bundle: &Value, key: &VerifierKey) -> Result<Vec<u64>, String> {
    let (size, root) = open(bundle["checkpoint"].as_str().unwrap(), key)?;
    let mut positions = Vec::new();
    for entry in bundle["entries"].as_array().unwrap() {
        let event: EventEnvelope = serde_json::from_value(entry["event"].clone()).unwrap();
        let computed = cryptovault_events::canonical::event_hash(&event);
        if computed != event.hash {
            return Err(format!("position {}: event altered", event.position));
        }
        let index = entry["leaf_index"].as_u64().unwrap();
        if index + 1 != event.position || index >= size {
            return Err(format!(
                "position {}: wrong leaf index {index}",
                event.position
            ));
        }
        let leaf = merkle::leaf_hash(&hex::decode(&event.hash).unwrap());
        merkle::verify_inclusion(
            &leaf,
            index,
            size,
            &hashes(&entry["inclusion_proof"]),
            &root,
        )
        .map_err(|e| format!("position {}: {e}", event.position))?;
        positions.push(event.position);
    }
    Ok(positions)
}

/// Runs `program args` (a separate process, no configuration, no database): `(exit code,
/// output)`.
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .expect("run the verifier");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The offline verifiers — the `cryptovault audit` binary and the README's Python script —
/// on `bundle` (a receipt or inclusion bundle), with only the verifier key: their exit codes.
fn verify_offline(bundle: &Value, key: &VerifierKey) -> (i32, i32) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, serde_json::to_vec_pretty(bundle).unwrap()).unwrap();
    let file = file.to_str().unwrap();
    let key = key.to_string();
    let (cli, cli_out) = run(
        env!("CARGO_BIN_EXE_cryptovault"),
        &["audit", "verify-receipt", file, "--key", &key],
    );
    let python = std::env::var("CV_AUDIT_PYTHON")
        .expect("CV_AUDIT_PYTHON (scripts/test.sh sets it up) runs the README's Python verifier");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_receipt.py");
    let (py, py_out) = run(&python, &[script, file, &key]);
    eprintln!("cli: {cli_out}\npython: {py_out}");
    (cli, py)
}

async fn auditor(app: &TestApp, email: &str) -> TestUser {
    app.user(email).await;
    app.db.grant(email, "auditor").await;
    logged_in(&app.base, email).await
}

/// The root of every event of the log, recomputed from the auditor API's envelopes.
async fn root_of_log(base: &str, auditor: &TestUser, size: u64) -> Hash {
    let mut leaves = Vec::new();
    let mut from = 1;
    while (leaves.len() as u64) < size {
        let (status, page) = get_json(
            base,
            auditor,
            &format!("/api/audit/events?from_position={from}&limit=1000"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            if (leaves.len() as u64) < size {
                leaves.push(merkle::leaf_hash(
                    &hex::decode(e["hash"].as_str().unwrap()).unwrap(),
                ));
            }
        }
        from = page["next_from_position"].as_u64().unwrap();
    }
    merkle::root(&leaves)
}

async fn sign_now(base: &str, who: &TestUser) -> (StatusCode, Value) {
    post(base, who, "/api/audit/checkpoints", json!(null)).await
}

#[tokio::test]
async fn checkpoints_proofs_and_receipts_verify_with_only_the_public_key_across_two_instances() {
    let a = TestApp::spawn("checkpoints_two").await;
    let b = spawn_app(&a.db, &[]).await;
    let key_view: Value = reqwest::get(format!("{b}/api/audit/public-key"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = VerifierKey::parse(key_view["verifier_key"].as_str().unwrap()).unwrap();
    assert_eq!(key, test_checkpoint_key().verifier());
    assert_eq!(key_view["origin"], crate::helpers::TEST_CHECKPOINT_ORIGIN);
    assert_eq!(key_view["algorithm"], "ed25519");

    let alice = a.user("alice@example.com").await;
    let bob = a.user("bob@example.com").await;
    let boss = a.admin("boss@example.com").await;
    let audit = auditor(&a, "audit@example.com").await;
    let (status, _) = sign_now(&a.base, &alice).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user cannot sign checkpoints"
    );

    // Writes on both instances.
    let (status, body) = a.deposit(&alice, "BTC", "1.5").await;
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
    let (status, first) = sign_now(&b, &audit).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (old_size, old_root) = open(first["note"].as_str().unwrap(), &key).unwrap();
    assert_eq!(old_size, first["size"].as_u64().unwrap());
    assert_eq!(
        old_size,
        a.event_count().await,
        "the checkpoint covers the whole log"
    );
    assert_eq!(root_of_log(&a.base, &audit, old_size).await, old_root);
    let (status, again) = sign_now(&a.base, &audit).await;
    assert_eq!(status, StatusCode::OK, "nothing new to sign: {again}");
    assert_eq!(again["size"], first["size"]);

    for action in ["approve", "complete"] {
        let (status, body) = post(
            &a.base,
            &boss,
            &format!("/api/admin/withdrawals/{withdrawal}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = post(
        &b,
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "bob@example.com", "asset": "BTC", "amount": "0.5" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let transfer = body["transfer"]["id"].as_str().unwrap().to_owned();
    let head = position(&body);

    // The receipt of the withdrawal names its three events and verifies offline; the
    // checkpoint it carries was signed on demand by the instance asked.
    let (status, receipt) = get_json(
        &b,
        &alice,
        &format!("/api/transactions/{withdrawal}/receipt?min_position={head}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["format"], "cryptovault.receipt.v1");
    let positions = verify_bundle(&receipt, &key).unwrap();
    assert_eq!(
        positions.len(),
        3,
        "request, approval, completion: {receipt}"
    );
    let types: Vec<&str> = receipt["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "WithdrawalRequested",
            "WithdrawalApproved",
            "WithdrawalCompleted"
        ]
    );
    assert_eq!(
        verify_offline(&receipt, &key),
        (0, 0),
        "both offline verifiers accept it"
    );
    let mut forged = receipt.clone();
    forged["entries"][2]["event"]["payload"]["amount"] = json!("0.26");
    assert_eq!(
        verify_offline(&forged, &key),
        (1, 1),
        "both refuse a changed amount"
    );
    let other = cryptovault_events::checkpoint::SignerKey::from_seed(
        crate::helpers::TEST_CHECKPOINT_ORIGIN,
        [99; 32],
    )
    .unwrap()
    .verifier();
    assert_eq!(
        verify_offline(&receipt, &other),
        (1, 1),
        "both refuse another key"
    );
    // Bob's side of the transfer is his receipt; Alice cannot fetch another user's.
    let (status, bobs) = get_json(
        &a.base,
        &bob,
        &format!("/api/transactions/{transfer}/receipt?min_position={head}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bobs}");
    assert_eq!(verify_bundle(&bobs, &key).unwrap(), [head]);
    let (status, _) = get_json(
        &a.base,
        &bob,
        &format!("/api/transactions/{withdrawal}/receipt"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The newer checkpoint extends the older one: the consistency proof, fetched from the
    // other instance, verifies with both signed roots.
    let (status, latest) = get_json(&a.base, &audit, "/api/audit/checkpoints/latest").await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    let (new_size, new_root) = open(latest["note"].as_str().unwrap(), &key).unwrap();
    assert!(new_size >= head && new_size > old_size);
    let (status, proof) = get_json(
        &b,
        &audit,
        &format!("/api/audit/proofs/consistency?from={old_size}&to={new_size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    assert_eq!(proof["format"], "cryptovault.consistency.v1");
    assert_eq!(
        open(proof["old_checkpoint"].as_str().unwrap(), &key).unwrap(),
        (old_size, old_root)
    );
    merkle::verify_consistency(
        old_size,
        new_size,
        &old_root,
        &new_root,
        &hashes(&proof["proof"]),
    )
    .unwrap();
    // A wrong old root does not verify with the same proof.
    let mut wrong = old_root;
    wrong[0] ^= 1;
    assert!(merkle::verify_consistency(
        old_size,
        new_size,
        &wrong,
        &new_root,
        &hashes(&proof["proof"])
    )
    .is_err());
    assert_eq!(root_of_log(&b, &audit, new_size).await, new_root);
    // The CLI checks it with the old note the auditor kept.
    let dir = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (dir.path().join("old.note"), dir.path().join("new.json"));
    std::fs::write(&old_file, first["note"].as_str().unwrap()).unwrap();
    std::fs::write(&new_file, proof.to_string()).unwrap();
    let (code, out) = run(
        env!("CARGO_BIN_EXE_cryptovault"),
        &[
            "audit",
            "verify-consistency",
            old_file.to_str().unwrap(),
            new_file.to_str().unwrap(),
            "--key",
            &key.to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}");

    // Inclusion of any event, by position or by id, in a past or the latest checkpoint.
    let (status, by_position) = get_json(
        &a.base,
        &audit,
        &format!("/api/audit/proofs/inclusion?position=2&size={old_size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_position}");
    assert_eq!(by_position["format"], "cryptovault.inclusion.v1");
    assert_eq!(verify_bundle(&by_position, &key).unwrap(), [2]);
    let id = by_position["entries"][0]["event"]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, by_id) = get_json(
        &b,
        &audit,
        &format!("/api/audit/proofs/inclusion?event_id={id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert_eq!(verify_bundle(&by_id, &key).unwrap(), [2]);
    assert_eq!(
        open(by_id["checkpoint"].as_str().unwrap(), &key).unwrap().0,
        new_size
    );

    // Bad requests are clear errors.
    for (path, status, code) in [
        ("/api/audit/proofs/inclusion", 422, "validation_error"),
        (
            "/api/audit/proofs/inclusion?position=1&event_id=x",
            422,
            "validation_error",
        ),
        (
            "/api/audit/proofs/inclusion?position=999999",
            404,
            "not_found",
        ),
        (
            "/api/audit/proofs/inclusion?position=5&size=2",
            422,
            "validation_error",
        ),
        (
            "/api/audit/proofs/inclusion?position=1&size=999999",
            404,
            "not_found",
        ),
        ("/api/audit/proofs/consistency", 422, "validation_error"),
        ("/api/audit/proofs/consistency?from=3", 404, "not_found"),
        (
            "/api/audit/proofs/consistency?from=999999",
            422,
            "validation_error",
        ),
        ("/api/audit/checkpoints/999999", 404, "not_found"),
        ("/api/audit/checkpoints/x", 404, "not_found"),
    ] {
        let (got, body) = get_json(&a.base, &audit, path).await;
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let (status, _) = get_json(&a.base, &alice, "/api/audit/proofs/inclusion?position=1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Past checkpoints, newest first, and the tree's state.
    let (status, page) = get_json(&a.base, &audit, "/api/audit/checkpoints?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sizes: Vec<u64> = page["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] > w[1]) && sizes.contains(&old_size),
        "{sizes:?}"
    );
    let (status, tree) = get_json(&b, &audit, "/api/audit/tree").await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert!(tree["refusal"].is_null(), "{tree}");
    let metrics = reqwest::get(format!("{}/metrics", a.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ledger_tree_behind_events",
        "ledger_checkpoint_age_seconds",
        "ledger_tree_size",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    a.finish().await;
}

fn events(t: &TestDb) -> mongodb::Collection<Document> {
    t.db().collection("events")
}

/// A service with a few events and a checkpoint over them; `(app, auditor, size, root)`.
async fn checkpointed(prefix: &str) -> (TestApp, TestUser, u64, Hash) {
    let app = TestApp::spawn(prefix).await;
    let carol = app.user("carol@example.com").await;
    for amount in ["1", "2", "3", "4"] {
        let (status, body) = app.deposit(&carol, "USD", amount).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let audit = auditor(&app, "audit@example.com").await;
    let (status, checkpoint) = sign_now(&app.base, &audit).await;
    assert_eq!(status, StatusCode::CREATED, "{checkpoint}");
    let (size, root) = open(
        checkpoint["note"].as_str().unwrap(),
        &test_checkpoint_key().verifier(),
    )
    .unwrap();
    (app, audit, size, root)
}

/// Waits until `/api/audit/tree` reports a refusal containing `reason`; returns the status.
/// (An earlier refusal of another kind may come first: a running notary can meet tampering
/// before the rebuild a test asks for, e.g. a changed event hash under a stored root.)
async fn refused(app: &TestApp, audit: &TestUser, reason: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, tree) = get_json(&app.base, audit, "/api/audit/tree").await;
        assert_eq!(status, StatusCode::OK, "{tree}");
        if tree["refusal"].as_str().is_some_and(|r| r.contains(reason)) {
            return tree;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal naming {reason:?}: {tree}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After tampering: the tree is rebuilt from the log (as an operator would), the notary stops
/// at the broken position, nothing new is signed, and the latest checkpoint is the old one.
async fn assert_refused_at(app: &TestApp, audit: &TestUser, size: u64, at: u64, reason: &str) {
    let out = app.db.cli(&["admin", "rebuild-tree"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = refused(app, audit, reason).await;
    assert_eq!(tree["refusal_position"].as_u64(), Some(at), "{tree}");
    let (status, body) = sign_now(&app.base, audit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "checkpoint_pending", "{body}");
    let (_, latest) = get_json(&app.base, audit, "/api/audit/checkpoints/latest").await;
    assert_eq!(
        latest["size"].as_u64(),
        Some(size),
        "nothing new was signed: {latest}"
    );
}

#[tokio::test]
async fn a_changed_event_fails_its_receipt_offline_and_the_rebuilt_tree_is_never_signed() {
    let (app, audit, size, _) = checkpointed("checkpoints_changed").await;
    let key = test_checkpoint_key().verifier();
    let (_, good) = get_json(&app.base, &audit, "/api/audit/proofs/inclusion?position=3").await;
    verify_bundle(&good, &key).unwrap();
    events(&app.db)
        .update_one(
            doc! { "position": 3_i64 },
            doc! { "$set": { "payload.amount": "1000000.00" } },
        )
        .await
        .unwrap();
    // The receipt an auditor kept no longer matches the stored envelope: with the stored one in
    // it, it fails offline, naming position 3 — and the service itself refuses to hand out a
    // proof that does not verify (500: damage, alarmed by `ledger_proof_failures_total`).
    let stored_envelope = |app: &TestApp| {
        let collection = events(&app.db);
        async move {
            let document = collection
                .find_one(doc! { "position": 3_i64 })
                .await
                .unwrap()
                .unwrap();
            cryptovault::store::document::from_document(document).unwrap()
        }
    };
    let mut forged = good.clone();
    forged["entries"][0]["event"] = serde_json::to_value(stored_envelope(&app).await).unwrap();
    let error = verify_bundle(&forged, &key).unwrap_err();
    assert!(error.contains("position 3"), "{error}");
    let (status, served) =
        get_json(&app.base, &audit, "/api/audit/proofs/inclusion?position=3").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{served}");
    // Re-hashed too: the content verifies but the leaf is not in the signed tree.
    let altered: EventEnvelope = stored_envelope(&app).await;
    let rehashed = cryptovault_events::canonical::event_hash(&altered);
    events(&app.db)
        .update_one(
            doc! { "position": 3_i64 },
            doc! { "$set": { "hash": &rehashed } },
        )
        .await
        .unwrap();
    let mut forged = good.clone();
    forged["entries"][0]["event"] = serde_json::to_value(stored_envelope(&app).await).unwrap();
    let error = verify_bundle(&forged, &key).unwrap_err();
    assert!(error.contains("position 3"), "{error}");
    let (status, served) =
        get_json(&app.base, &audit, "/api/audit/proofs/inclusion?position=3").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{served}");
    // The next event's prev_hash no longer matches: the rebuilt tree stops at 4.
    assert_refused_at(&app, &audit, size, 4, "prev_hash").await;
    app.finish().await;
}

#[tokio::test]
async fn a_dropped_or_reordered_event_stops_the_tree_at_its_position() {
    let (app, audit, size, _) = checkpointed("checkpoints_dropped").await;
    events(&app.db)
        .delete_one(doc! { "position": 2_i64 })
        .await
        .unwrap();
    assert_refused_at(&app, &audit, size, 2, "missing").await;
    app.finish().await;

    let (app, audit, size, _) = checkpointed("checkpoints_reordered").await;
    let collection = events(&app.db);
    // Swap positions 3 and 4 (through a free position: `position` is unique).
    collection
        .update_one(
            doc! { "position": 3_i64 },
            doc! { "$set": { "position": 1_000_000_i64 } },
        )
        .await
        .unwrap();
    collection
        .update_one(
            doc! { "position": 4_i64 },
            doc! { "$set": { "position": 3_i64 } },
        )
        .await
        .unwrap();
    collection
        .update_one(
            doc! { "position": 1_000_000_i64 },
            doc! { "$set": { "position": 4_i64 } },
        )
        .await
        .unwrap();
    assert_refused_at(&app, &audit, size, 3, "position 3").await;
    app.finish().await;
}

#[tokio::test]
async fn a_wholesale_rewrite_that_rehashes_the_chain_is_refused_as_inconsistent() {
    let (app, audit, size, _) = checkpointed("checkpoints_rewrite").await;
    // Rewrite from position 3 on: change the payload, re-hash it and every later event, so the
    // chain verifies from position 1 to the head (what an operator rewriting history would do).
    let collection = events(&app.db);
    let mut documents: Vec<Document> = {
        use futures::TryStreamExt;
        collection
            .find(doc! { "position": { "$gte": 3_i64 } })
            .sort(doc! { "position": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let mut prev: String = {
        let second = collection
            .find_one(doc! { "position": 2_i64 })
            .await
            .unwrap()
            .unwrap();
        second.get_str("hash").unwrap().to_owned()
    };
    for (i, document) in documents.iter_mut().enumerate() {
        let mut envelope = cryptovault::store::document::from_document(document.clone()).unwrap();
        if i == 0 {
            envelope.payload["amount"] = json!("1000000.00");
        }
        envelope.prev_hash = prev.clone();
        envelope.hash = cryptovault_events::canonical::event_hash(&envelope);
        prev = envelope.hash.clone();
        collection
            .update_one(
                doc! { "position": i64::try_from(envelope.position).unwrap() },
                doc! { "$set": {
                    "payload": bson::to_bson(&envelope.payload).unwrap(),
                    "prev_hash": &envelope.prev_hash,
                    "hash": &envelope.hash,
                } },
            )
            .await
            .unwrap();
    }
    TreeStore::new(&app.db.db()).clear_tree().await.unwrap();
    // The rebuilt tree is the rewritten log's (the chain holds), but it does not extend the
    // signed checkpoint, so nothing is signed.
    refused(&app, &audit, "not consistent").await;
    let (status, body) = sign_now(&app.base, &audit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, latest) = get_json(&app.base, &audit, "/api/audit/checkpoints/latest").await;
    assert_eq!(latest["size"].as_u64(), Some(size));
    app.finish().await;
}

#[tokio::test]
async fn a_rotated_key_signs_on_from_the_old_keys_last_checkpoint_and_an_unknown_key_is_refused() {
    let (app, audit, old_size, old_root) = checkpointed("checkpoints_rotation").await;
    let rotated = cryptovault_events::checkpoint::SignerKey::from_seed(
        crate::helpers::TEST_CHECKPOINT_ORIGIN,
        [62; 32],
    )
    .unwrap();
    let private = rotated.to_private_string();
    // Without the old key retired, the new one does not recognise the stored checkpoints as
    // this service's: it refuses to sign on.
    let stranger = spawn_app(&app.db, &[("CHECKPOINT_SIGNING_KEY", private.as_str())]).await;
    let carol = logged_in(&app.base, "carol@example.com").await;
    let (status, body) = post(
        &stranger,
        &carol,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "5" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = sign_now(&stranger, &audit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "checkpoint_pending", "{body}");
    let (_, tree) = get_json(&stranger, &audit, "/api/audit/tree").await;
    assert!(
        tree["refusal"]
            .as_str()
            .unwrap_or_default()
            .contains("does not verify"),
        "{tree}"
    );
    // With it retired, the new key signs a checkpoint consistent with the old key's last one.
    let retired = test_checkpoint_key().verifier().to_string();
    let rotated_app = spawn_app(
        &app.db,
        &[
            ("CHECKPOINT_SIGNING_KEY", private.as_str()),
            ("CHECKPOINT_RETIRED_KEYS", retired.as_str()),
        ],
    )
    .await;
    let (status, signed) = sign_now(&rotated_app, &audit).await;
    assert_eq!(status, StatusCode::CREATED, "{signed}");
    let new_key = rotated.verifier();
    let (new_size, new_root) = open(signed["note"].as_str().unwrap(), &new_key).unwrap();
    assert!(new_size > old_size);
    assert!(open(
        signed["note"].as_str().unwrap(),
        &test_checkpoint_key().verifier()
    )
    .is_err());
    let (status, proof) = get_json(
        &rotated_app,
        &audit,
        &format!("/api/audit/proofs/consistency?from={old_size}&to={new_size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    assert_eq!(
        open(
            proof["old_checkpoint"].as_str().unwrap(),
            &test_checkpoint_key().verifier()
        )
        .unwrap(),
        (old_size, old_root)
    );
    merkle::verify_consistency(
        old_size,
        new_size,
        &old_root,
        &new_root,
        &hashes(&proof["proof"]),
    )
    .unwrap();
    // Offline: the CLI checks it with the retired key for the old note and the new key for the
    // bundle; with the new key alone the old note does not verify.
    let dir = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (dir.path().join("old.note"), dir.path().join("new.json"));
    std::fs::write(&old_file, proof["old_checkpoint"].as_str().unwrap()).unwrap();
    std::fs::write(&new_file, proof.to_string()).unwrap();
    let (old_file, new_file) = (old_file.to_str().unwrap(), new_file.to_str().unwrap());
    let new_key = new_key.to_string();
    let args = [
        "audit",
        "verify-consistency",
        old_file,
        new_file,
        "--key",
        &new_key,
    ];
    let (code, out) = run(
        env!("CARGO_BIN_EXE_cryptovault"),
        &[&args[..], &["--old-key", &retired]].concat(),
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(env!("CARGO_BIN_EXE_cryptovault"), &args);
    assert_eq!(code, 1, "{out}");
    app.finish().await;
}

#[tokio::test]
async fn forged_subtrees_and_a_raised_stored_head_are_never_signed() {
    let (app, audit, size, _) = checkpointed("checkpoints_forged_tree").await;
    // An attacker with database access (no key) writes subtrees of a history of their own
    // beyond the checkpoint and moves the stored head over them: a stored level (16 leaves,
    // the first whole block after the checkpoint) and two leaves, a level the store does not
    // keep (those are computed from the events, so the forged documents are never read).
    let block = size.div_ceil(16);
    let block_end = (block + 1) * 16;
    let forged_hash = || bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![0xAB; 32],
    };
    let mut forged: Vec<Document> = (0..2_i64)
        .map(|i| {
            doc! {
                "_id": { "level": 0_i64, "index": i64::try_from(size).unwrap() + i },
                "hash": forged_hash(),
            }
        })
        .collect();
    forged.push(doc! {
        "_id": { "level": 4_i64, "index": i64::try_from(block).unwrap() },
        "hash": forged_hash(),
    });
    let db = app.db.db();
    db.collection::<Document>("merkle_subtrees")
        .insert_many(forged)
        .await
        .unwrap();
    db.collection::<Document>("merkle_state")
        .update_one(
            doc! { "_id": "tree" },
            doc! { "$set": { "size": i64::try_from(block_end).unwrap() } },
        )
        .await
        .unwrap();
    // Real events at those positions: the notary computes the block's subtree from the log,
    // meets the forged one and refuses; it never signs the forged tree.
    let carol = logged_in(&app.base, "carol@example.com").await;
    for amount in 1..=40 {
        let (_, tree) = get_json(&app.base, &audit, "/api/audit/tree").await;
        if tree["log_head"].as_u64().unwrap() >= block_end {
            break;
        }
        let (status, body) = app.deposit(&carol, "USD", &amount.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    refused(&app, &audit, "differs").await;
    let (status, body) = sign_now(&app.base, &audit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Checkpoints of the real log short of the forged block may have been signed meanwhile
    // (every 10 s); none covers the block, and each is the real log's root.
    let (_, latest) = get_json(&app.base, &audit, "/api/audit/checkpoints/latest").await;
    let latest_size = latest["size"].as_u64().unwrap();
    assert!(latest_size >= size && latest_size < block_end, "{latest}");
    let (signed_size, signed_root) = open(
        latest["note"].as_str().unwrap(),
        &test_checkpoint_key().verifier(),
    )
    .unwrap();
    assert_eq!(signed_size, latest_size);
    assert_eq!(
        signed_root,
        root_of_log(&app.base, &audit, latest_size).await,
        "only the log's own tree is signed"
    );
    app.finish().await;
}

#[tokio::test]
async fn deleted_checkpoints_are_a_rollback_and_nothing_is_signed() {
    let (app, audit, size, _) = checkpointed("checkpoints_rollback").await;
    app.db
        .db()
        .collection::<Document>("log_checkpoints")
        .delete_many(doc! {})
        .await
        .unwrap();
    let carol = logged_in(&app.base, "carol@example.com").await;
    let (status, body) = app.deposit(&carol, "USD", "7").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    refused(&app, &audit, "cut back").await;
    let (status, body) = sign_now(&app.base, &audit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, latest) = get_json(&app.base, &audit, "/api/audit/checkpoints/latest").await;
    assert_eq!(
        latest["error"]["code"], "not_found",
        "nothing was signed again: {latest} (had {size})"
    );
    app.finish().await;
}

/// `count` deposits at once, spread over `users` and alternately over both instances.
async fn interleaved_deposits(bases: [&str; 2], users: &[TestUser], count: usize) {
    let calls = (0..count).map(|i| {
        let base = bases[i % 2];
        let user = &users[i % users.len()];
        async move {
            let (status, body) = post(
                base,
                user,
                "/api/wallet/deposits",
                json!({ "asset": "USD", "amount": format!("{}", i + 1) }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    });
    futures::future::join_all(calls).await;
}

#[tokio::test]
async fn concurrent_appends_on_two_instances_give_each_notary_the_logs_own_tree() {
    // Each notary takes its own process's commits from memory and reads the other's from the
    // log; with their appends interleaved, each signs the root of the whole log, and each
    // signature extends the other's.
    let a = TestApp::spawn("checkpoints_interleaved").await;
    let b = spawn_app(&a.db, &[]).await;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(a.user(&format!("user{i}@example.com")).await);
    }
    let audit = auditor(&a, "audit@example.com").await;
    let key = test_checkpoint_key().verifier();
    let mut signed = Vec::new();
    for (round, signer) in [&a.base, &b, &a.base, &b].into_iter().enumerate() {
        interleaved_deposits([&a.base, &b], &users, 60).await;
        let (status, checkpoint) = sign_now(signer, &audit).await;
        assert_eq!(status, StatusCode::CREATED, "round {round}: {checkpoint}");
        let (size, root) = open(checkpoint["note"].as_str().unwrap(), &key).unwrap();
        assert_eq!(size, a.event_count().await, "round {round}: the whole log");
        assert_eq!(
            root,
            root_of_log(&a.base, &audit, size).await,
            "round {round}: the log's own root"
        );
        signed.push((size, root));
    }
    for pair in signed.windows(2) {
        let [(old_size, old_root), (new_size, new_root)] = pair else {
            unreachable!()
        };
        let (status, proof) = get_json(
            &a.base,
            &audit,
            &format!("/api/audit/proofs/consistency?from={old_size}&to={new_size}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{proof}");
        merkle::verify_consistency(
            *old_size,
            *new_size,
            old_root,
            new_root,
            &hashes(&proof["proof"]),
        )
        .unwrap();
    }
    a.finish().await;
}
