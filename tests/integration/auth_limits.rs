//! Lockout after repeated failures, and the rate limits (per IP, per user, on login).

use std::time::Duration;

use cryptovault_events::identity::LoginFailed;
use cryptovault_events::DomainEvent;
use reqwest::{Client, StatusCode};

use crate::auth::{body, login, signup};
use crate::helpers::{spawn_app, TestDb, PASSWORD};

#[tokio::test]
async fn repeated_failures_lock_the_account_until_the_window_passes() {
    let t = TestDb::new("auth_lockout").await;
    let base = spawn_app(
        &t,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "2")],
    )
    .await;
    let client = Client::new();
    signup(&client, &base, "erin@example.com").await;

    // Unknown address and wrong password look the same.
    let unknown = login(&client, &base, "nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown = body(unknown).await["error"]["message"].clone();
    for _ in 0..3 {
        let wrong = login(&client, &base, "erin@example.com", "not the password").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body(wrong).await["error"]["message"], unknown);
    }
    let locked = login(&client, &base, "erin@example.com", PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::LOCKED);
    assert!(locked.headers().get("retry-after").is_some());
    assert_eq!(body(locked).await["error"]["code"], "account_locked");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login(&client, &base, "erin@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );

    // Every attempt is in the log, with the client's IP.
    let store = t.store().await;
    let user_id = store
        .read_stream(
            &format!(
                "email-{}",
                cryptovault::privacy::BlindIndex::new(crate::helpers::TEST_EMAIL_INDEX_KEY)
                    .of("erin@example.com")
            ),
            1,
            1,
        )
        .await
        .unwrap()[0]
        .payload["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let logins = store
        .read_stream(&format!("logins-{user_id}"), 1, 100)
        .await
        .unwrap();
    let failures: Vec<LoginFailed> = logins
        .iter()
        .filter_map(|e| LoginFailed::from_envelope(e).ok())
        .collect();
    assert_eq!(
        failures
            .iter()
            .filter(|f| f.reason == "invalid_password")
            .count(),
        3
    );
    assert_eq!(
        failures
            .iter()
            .filter(|f| f.reason == "account_locked")
            .count(),
        1
    );
    // The ip is recorded sealed under the user's data key (issue 14): opened with it.
    let key = cryptovault::store::personal_keys::PersonalKeys::open(&t.db())
        .get(&user_id.to_string())
        .await
        .unwrap()
        .expect("the user's data key");
    let opened = |sealed: Option<&str>| sealed.and_then(|s| key.open(s));
    assert!(failures
        .iter()
        .all(|f| opened(f.ip.as_ref().map(|p| p.as_stored())).as_deref() == Some("127.0.0.1")));
    assert_eq!(logins.last().unwrap().event_type, "LoginSucceeded");
    assert_eq!(
        opened(logins.last().unwrap().metadata.ip.as_deref()).as_deref(),
        Some("127.0.0.1")
    );
    t.drop_database().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_ip_per_user_and_on_login() {
    let t = TestDb::new("auth_rate").await;
    let base = spawn_app(
        &t,
        &[
            ("RATE_LIMIT_PER_IP_PER_MIN", "8"),
            ("RATE_LIMIT_LOGIN_PER_MIN", "3"),
            ("RATE_LIMIT_PER_USER_PER_MIN", "2"),
        ],
    )
    .await;
    let from = |ip: [u8; 4]| {
        Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    // Login: 3 per minute per IP (signup counts too).
    let a = from([127, 0, 0, 1]);
    assert_eq!(
        signup(&a, &base, "gina@example.com").await.status(),
        StatusCode::CREATED
    );
    let token = body(login(&a, &base, "gina@example.com", PASSWORD).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    login(&a, &base, "gina@example.com", "wrong password!").await;
    let limited = login(&a, &base, "gina@example.com", PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(body(limited).await["error"]["code"], "rate_limited");

    // Per user on wallet routes (limited before routing, so even an unknown path counts).
    let wallet = |client: &Client| {
        client
            .get(format!("{base}/api/wallet/balance"))
            .bearer_auth(&token)
            .send()
    };
    let second_ip = from([127, 0, 0, 2]);
    assert_ne!(
        wallet(&a).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_ne!(
        wallet(&second_ip).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        wallet(&second_ip).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "per user, across IPs"
    );

    // Overall per IP: 8 per minute; this IP has used 5 (signup, three logins, one wallet call).
    for _ in 0..3 {
        assert_ne!(
            a.get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        a.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another IP is unaffected.
    let c = from([127, 0, 0, 3]);
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    t.drop_database().await;
}
