//! Issue 14, finding 13: deposits are not self-service minting in production. With
//! `DEPOSITS_MODE=provider` only an admin (never into their own account) or the payment
//! provider's signed, replay-protected webhook credits money; every refusal writes nothing.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{position, post, TestApp};

const WEBHOOK_SECRET: &str = "provider-webhook-secret-0123456789abcdef";

fn signed(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    app: &TestApp,
    body: &str,
    timestamp: i64,
    signature: &str,
) -> (StatusCode, Value, bool) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/webhooks/deposits", app.base))
        .header("content-type", "application/json")
        .header("X-Webhook-Timestamp", timestamp.to_string())
        .header("X-Webhook-Signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (response.status(), response.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn in_provider_mode_only_admins_and_the_signed_webhook_credit_money() {
    let app = TestApp::spawn_with(
        "deposits_provider",
        &[
            ("DEPOSITS_MODE", "provider"),
            ("DEPOSIT_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    let alice = app.user("alice@example.com").await;
    let root = app.admin("root@example.com").await;

    // Self-service minting is off.
    let before = app.event_count().await;
    let (status, body) = app.deposit(&alice, "USD", "1000000").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    assert_eq!(app.event_count().await, before, "a refused deposit wrote");

    // An admin books a payment to alice; not to themselves.
    let booking = |user: &str| json!({ "user_id": user, "asset": "USD", "amount": "25.50", "reference": "bank-tx-1" });
    let (status, body) = post(&app.base, &root, "/api/admin/deposits", booking(&alice.id)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["deposit"]["amount"], "25.50");
    let before = app.event_count().await;
    let (status, body) = post(&app.base, &root, "/api/admin/deposits", booking(&root.id)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (status, body) = post(&app.base, &alice, "/api/admin/deposits", booking(&alice.id)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user booked a deposit: {body}"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, body) = post(&app.base, &root, "/api/admin/deposits", booking(&unknown)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("user_id"),
        "{body}"
    );
    assert_eq!(app.event_count().await, before, "a refused booking wrote");

    // The provider's webhook: signed, fresh, once per delivery id.
    let now = chrono::Utc::now().timestamp();
    let delivery =
        json!({ "id": "evt_1", "user_id": alice.id, "asset": "USD", "amount": "10" }).to_string();
    let (status, first, _) = deliver(
        &app,
        &delivery,
        now,
        &signed(WEBHOOK_SECRET, now, &delivery),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["deposit"]["amount"], "10.00");
    let after_first = app.event_count().await;
    // The same delivery again (the provider retries): the first answer, nothing credited.
    let (status, again, replayed) = deliver(
        &app,
        &delivery,
        now,
        &signed(WEBHOOK_SECRET, now, &delivery),
    )
    .await;
    assert_eq!(
        (status, &again, replayed),
        (StatusCode::CREATED, &first, true)
    );
    // The same id with another body: 409.
    let altered = json!({ "id": "evt_1", "user_id": alice.id, "asset": "USD", "amount": "10000" })
        .to_string();
    let (status, body, _) =
        deliver(&app, &altered, now, &signed(WEBHOOK_SECRET, now, &altered)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict")),
        "{body}"
    );
    // Forged, tampered and stale deliveries: 401.
    let other =
        json!({ "id": "evt_2", "user_id": alice.id, "asset": "USD", "amount": "5" }).to_string();
    let forged = signed("not-the-provider-secret-0123456789abcdef", now, &other);
    let tampered = signed(WEBHOOK_SECRET, now, &delivery);
    let stale = now - 3600;
    for (body, timestamp, signature) in [
        (&other, now, forged),
        (&other, now, tampered),
        (&other, stale, signed(WEBHOOK_SECRET, stale, &other)),
        (&other, now, "v1=00".to_owned()),
    ] {
        let (status, answer, _) = deliver(&app, body, timestamp, &signature).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{answer}"
        );
    }
    assert_eq!(
        app.event_count().await,
        after_first,
        "a refused delivery wrote"
    );

    // Alice holds exactly what the admin and the provider credited.
    assert_eq!(
        app.balance(&alice, "USD", position(&first)).await.0,
        "35.50"
    );
    app.finish().await;
}

#[tokio::test]
async fn without_a_webhook_secret_the_webhook_is_refused() {
    let app = TestApp::spawn("deposits_no_webhook").await;
    let alice = app.user("alice@example.com").await;
    let now = chrono::Utc::now().timestamp();
    let delivery =
        json!({ "id": "evt_1", "user_id": alice.id, "asset": "USD", "amount": "10" }).to_string();
    let before = app.event_count().await;
    let (status, body, _) = deliver(
        &app,
        &delivery,
        now,
        &signed(WEBHOOK_SECRET, now, &delivery),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(app.event_count().await, before);
    // Development and test keep self-service deposits.
    let (status, body) = app.deposit(&alice, "USD", "1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.finish().await;
}
