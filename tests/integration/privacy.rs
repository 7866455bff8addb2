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
