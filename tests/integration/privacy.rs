//! Issue 14, findings 1 and 2: no credential in the immutable log, and personal data that can be
//! erased (crypto-shredding) while the chain still verifies.

use bson::Document;
use futures::TryStreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{get_json as get, logged_in, signed_up, spawn_app, TestDb, PASSWORD};

/// Every document of `collection`, as one JSON text (for "contains nowhere" checks).
async fn collection_text(t: &TestDb, collection: &str) -> String {
    let docs: Vec<Document> = t
        .db()
        .collection::<Document>(collection)
        .find(bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    serde_json::to_string(&docs).unwrap()
}

async fn login_status(base: &str, email: &str, password: &str) -> StatusCode {
    Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn no_password_hash_reaches_the_log_or_an_auditor() {
    let t = TestDb::new("nohash").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let new_password = "a brand new passphrase";
    let changed = Client::new()
        .post(format!("{base}/api/auth/change-password"))
        .bearer_auth(&alice.token)
        .json(&json!({ "current_password": PASSWORD, "new_password": new_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    signed_up(&base, "audrey@example.com").await;
    t.grant("audrey@example.com", "auditor").await;
    let auditor = logged_in(&base, "audrey@example.com").await;

    let (status, page) = get(&base, &auditor, "/api/audit/events?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"UserRegistered") && types.contains(&"PasswordChanged"));
    let text = page.to_string();
    assert!(!text.contains("$argon2"), "an auditor got a hash: {text}");
    assert!(!text.contains("password_hash"), "{text}");
    let (_, stream) = get(
        &base,
        &auditor,
        &format!("/api/audit/streams/user-{}", alice.id),
    )
    .await;
    assert!(!stream.to_string().contains("$argon2"), "{stream}");
    // Nor anywhere in the log or a read model: only in the deletable credentials.
    for collection in ["events", "audit_logs"] {
        let text = collection_text(&t, collection).await;
        assert!(!text.contains("$argon2"), "{collection}: {text}");
    }
    assert!(collection_text(&t, "credentials")
        .await
        .contains("$argon2id"));

    // The credential the user state names is the one checked.
    assert_eq!(
        login_status(&base, "alice@example.com", new_password).await,
        StatusCode::OK
    );
    assert_eq!(
        login_status(&base, "alice@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    t.drop_database().await;
}

/// A user of a development log written before credentials left the log: schema version 1
/// events with the hash in the payload still decode, and the user logs in.
#[tokio::test]
async fn a_schema_version_1_user_with_the_hash_in_the_log_still_logs_in() {
    use cryptovault::store::{AppendBatch, ExpectedVersion};
    use cryptovault_events::{EventMetadata, NewEvent};
    let t = TestDb::new("v1user").await;
    let store = t.store().await;
    let user_id = uuid::Uuid::now_v7();
    let hash = cryptovault::identity::password::hash(PASSWORD.to_owned())
        .await
        .unwrap();
    let v1 = |event_type: &str, payload: Value| {
        NewEvent::new(
            uuid::Uuid::now_v7(),
            event_type,
            1,
            chrono::Utc::now(),
            EventMetadata::default(),
            payload,
        )
    };
    let batch = AppendBatch::single(
        "email-old@example.com".to_owned(),
        ExpectedVersion::NoStream,
        vec![v1(
            "EmailClaimed",
            json!({ "user_id": user_id, "email": "old@example.com" }),
        )],
    )
    .with(
        format!("user-{user_id}"),
        ExpectedVersion::NoStream,
        vec![v1(
            "UserRegistered",
            json!({ "user_id": user_id, "email": "old@example.com", "name": "Old Timer",
                    "password_hash": hash, "roles": ["user"] }),
        )],
    );
    store.append(batch).await.unwrap();
    let base = spawn_app(&t, &[]).await;
    assert_eq!(
        login_status(&base, "old@example.com", PASSWORD).await,
        StatusCode::OK
    );
    assert_eq!(
        login_status(&base, "old@example.com", "not the password").await,
        StatusCode::UNAUTHORIZED
    );
    // A new signup cannot take the old address.
    let taken = Client::new()
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({ "email": "old@example.com", "password": PASSWORD, "name": "Impostor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    t.drop_database().await;
}

/// Every collection of the test database, as one JSON text each (name, text).
async fn all_collections(t: &TestDb) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in t.db().list_collection_names().await.unwrap() {
        let text = collection_text(t, &name).await;
        out.push((name, text));
    }
    out
}

#[tokio::test]
async fn erasing_a_user_shreds_their_personal_data_and_the_chain_still_verifies() {
    let t = TestDb::new("erase").await;
    let base = spawn_app(&t, &[]).await;
    let (email, name, renamed, agent) = (
        "alice.liddell@example.com",
        "Alice Liddell",
        "Alice Pleasance",
        "privacy-test-agent/1.0",
    );
    let signup = Client::new()
        .post(format!("{base}/api/auth/signup"))
        .header("user-agent", agent)
        .json(&json!({ "email": email, "password": PASSWORD, "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);
    let wrong = Client::new()
        .post(format!("{base}/api/auth/login"))
        .header("user-agent", agent)
        .json(&json!({ "email": email, "password": "not the password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = Client::new()
        .post(format!("{base}/api/auth/login"))
        .header("user-agent", agent)
        .json(&json!({ "email": "nobody.here@example.com", "password": "not the password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let alice = logged_in(&base, email).await;
    let profile = Client::new()
        .put(format!("{base}/api/auth/profile"))
        .bearer_auth(&alice.token)
        .header("user-agent", agent)
        .json(&json!({ "name": renamed }))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), StatusCode::OK);
    let deposit = Client::new()
        .post(format!("{base}/api/wallet/deposits"))
        .bearer_auth(&alice.token)
        .header("user-agent", agent)
        .json(&json!({ "asset": "USD", "amount": "12.50" }))
        .send()
        .await
        .unwrap();
    assert_eq!(deposit.status(), StatusCode::CREATED);
    let (_, me) = get(&base, &alice, "/api/auth/me").await;
    assert_eq!(me["user"]["email"], email, "{me}");
    assert_eq!(me["user"]["name"], renamed, "{me}");

    // New events carry personal data only encrypted: the log never holds it in plaintext.
    let events = collection_text(&t, "events").await;
    for secret in [email, name, renamed, agent, "nobody.here@example.com"] {
        assert!(
            !events.contains(secret),
            "the log holds {secret:?} in plaintext"
        );
    }

    signed_up(&base, "audrey@example.com").await;
    t.grant("audrey@example.com", "auditor").await;
    let auditor = logged_in(&base, "audrey@example.com").await;
    let user_stream = format!("/api/audit/streams/user-{}", alice.id);
    let (status, before) = get(&base, &auditor, &user_stream).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let registered = before["events"][0]["position"]
        .as_u64()
        .unwrap()
        .to_string();
    assert_eq!(
        before["personal_data"][&registered]["payload.email"], email,
        "auditors see the decrypted value beside the envelope: {before}"
    );

    let out = t
        .cli(&[
            "admin",
            "erase-user",
            email,
            "--reason",
            "GDPR art. 17 request",
        ])
        .await;
    assert!(
        out.status.success(),
        "erase-user: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shredded: nothing in MongoDB reveals the personal data, the key is gone.
    for (collection, text) in all_collections(&t).await {
        for secret in [email, name, renamed, agent] {
            assert!(
                !text.contains(secret),
                "{collection} still holds {secret:?}"
            );
        }
    }
    let (_, after) = get(&base, &auditor, &user_stream).await;
    let events_after = after["events"].as_array().unwrap();
    assert_eq!(
        events_after.last().unwrap()["event_type"],
        "PersonalDataErased"
    );
    assert_eq!(
        events_after.last().unwrap()["payload"]["reason"],
        "GDPR art. 17 request"
    );
    assert_eq!(
        after["personal_data"][&registered]["payload.email"],
        "[erased]"
    );
    assert_eq!(
        after["personal_data"][&registered]["payload.name"],
        "[erased]"
    );
    // The envelopes are unchanged, so the chain still verifies.
    let (_, verdict) = get(&base, &auditor, "/api/audit/verify").await;
    assert_eq!(verdict["intact"], true, "{verdict}");
    let out = t.cli(&["verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The audit log shows redacted values, and the erased user can no longer log in.
    let (_, logs) = get(
        &base,
        &auditor,
        &format!("/api/admin/audit-logs?actor={}", alice.id),
    )
    .await;
    let text = logs.to_string();
    assert!(!text.contains(agent), "{text}");
    assert!(text.contains("[erased]"), "{text}");
    assert_eq!(
        login_status(&base, email, PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    // Erasure ended every session: an access token issued before no longer authenticates.
    let late = Client::new()
        .put(format!("{base}/api/auth/profile"))
        .bearer_auth(&alice.token)
        .json(&json!({ "name": "Back Again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    // A rerun (by user id) repeats the deletions and records nothing new.
    let out = t
        .cli(&["admin", "erase-user", &alice.id, "--reason", "rerun"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, again) = get(&base, &auditor, &user_stream).await;
    let erasures = again["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "PersonalDataErased")
        .count();
    assert_eq!(erasures, 1, "{again}");
    let out = t
        .cli(&[
            "admin",
            "erase-user",
            "no.such.user@example.com",
            "--reason",
            "x",
        ])
        .await;
    assert!(!out.status.success());
    // The money stays: the account's balance is still in the ledger (read from the balances
    // read model: alice's own sessions ended with the erasure).
    let balances = crate::helpers::stored_balances(&t).await;
    let usd = balances.get(&(alice.id.clone(), "USD".to_owned()));
    assert_eq!(
        usd.map(|(available, held)| (available.to_string(), held.to_string())),
        Some(("12.5".to_owned(), "0".to_owned())),
        "{balances:?}"
    );
    let out = t.cli(&["verify", "--json"]).await;
    assert!(out.status.success());
    t.drop_database().await;
}
