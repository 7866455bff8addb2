//! Wallet bodies are typed: each names its fields, and a field the endpoint does not know is
//! refused (422 `validation_error` naming it) with nothing written.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{position, post, TestApp};

#[tokio::test]
async fn wallet_commands_answer_typed_bodies_and_refuse_unknown_fields() {
    let app = TestApp::spawn("wallet_typed").await;
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let root = app.admin("root@example.com").await;

    let (status, body) = app.deposit(&alice, "USD", "100.50").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["deposit"]["amount"], "100.50");
    let (status, body) = app.withdraw(&alice, "USD", "10", "acct-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["withdrawal"]["amount"], "10.00");
    assert_eq!(body["withdrawal"]["status"], "pending");
    let withdrawal = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    let (status, body) = app.transfer(&alice, "bob@example.com", "USD", "0.50").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["transfer"]["to_email"], "bob@example.com");
    assert_eq!(
        app.balance(&alice, "USD", position(&body)).await,
        ("90.00".into(), "10.00".into(), "100.00".into())
    );
    assert_eq!(app.balance(&bob, "USD", position(&body)).await.0, "0.50");

    let before = app.event_count().await;
    for (path, request) in [
        (
            "/api/wallet/deposits",
            json!({ "asset": "USD", "amount": "1", "memo": "x" }),
        ),
        (
            "/api/wallet/withdrawals",
            json!({ "asset": "USD", "amount": "1", "address": "a", "memo": "x" }),
        ),
        (
            "/api/wallet/transfers",
            json!({ "to_email": "bob@example.com", "asset": "USD", "amount": "1", "memo": "x" }),
        ),
    ] {
        let (status, answer) = post(&app.base, &alice, path, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "validation_error");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("memo"), "{path}: {message}");
    }
    let (status, answer) = app
        .withdrawal_action(&root, &withdrawal, "reject", json!({ "why": "no" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("why"));
    assert_eq!(app.event_count().await, before, "a refusal writes nothing");

    let (status, body) = app
        .withdrawal_action(&root, &withdrawal, "reject", json!({ "reason": "closed" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["withdrawal"]["status"], "rejected");
    assert_eq!(body["withdrawal"]["amount"], "10.00");
    app.finish().await;
}

/// Four eyes (issue 14, finding 12): an admin cannot approve or complete a withdrawal of their
/// own; another admin can. A refusal is 403 `forbidden` and writes nothing.
#[tokio::test]
async fn an_admin_cannot_approve_or_complete_their_own_withdrawal() {
    let app = TestApp::spawn("wallet_four_eyes").await;
    let root = app.admin("root@example.com").await;
    let boss = app.admin("boss@example.com").await;
    let (status, body) = app.deposit(&root, "USD", "100").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.withdraw(&root, "USD", "40", "acct-root").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let withdrawal = body["withdrawal"]["id"].as_str().unwrap().to_owned();

    let refused = |(status, answer): (StatusCode, serde_json::Value)| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("own withdrawal"), "{message}");
    };
    let before = app.event_count().await;
    refused(
        app.withdrawal_action(&root, &withdrawal, "approve", json!({}))
            .await,
    );
    assert_eq!(app.event_count().await, before, "a refused approval wrote");
    let (status, body) = app
        .withdrawal_action(&boss, &withdrawal, "approve", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = app.event_count().await;
    refused(
        app.withdrawal_action(&root, &withdrawal, "complete", json!({}))
            .await,
    );
    assert_eq!(
        app.event_count().await,
        before,
        "a refused completion wrote"
    );
    let (status, body) = app
        .withdrawal_action(&boss, &withdrawal, "complete", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["withdrawal"]["status"], "completed");
    app.finish().await;
}
