//! Identity and access over real HTTP against the real MongoDB.

use cryptovault::identity::totp;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{signed_up, spawn_app, TestDb, PASSWORD};

pub(crate) fn browser() -> Client {
    Client::builder().cookie_store(true).build().unwrap()
}

pub(crate) fn cookie(response: &Response, name: &str) -> Option<String> {
    response
        .cookies()
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

pub(crate) async fn body(response: Response) -> Value {
    response.json().await.unwrap_or(Value::Null)
}

pub(crate) async fn signup(client: &Client, base: &str, email: &str) -> Response {
    client
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({ "email": email, "password": PASSWORD, "name": "Test User" }))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn login(client: &Client, base: &str, email: &str, password: &str) -> Response {
    client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Signs up and logs in; returns the Bearer access token and user id.
pub(crate) async fn bearer_user(base: &str, email: &str) -> (String, String) {
    let user = signed_up(base, email).await;
    (user.token, user.id)
}

#[tokio::test]
async fn the_cookie_flow_signup_login_me_refresh_reuse_logout() {
    let t = TestDb::new("auth_cookie").await;
    let base = spawn_app(&t, &[]).await;
    let client = browser();

    let response = signup(&client, &base, "Alice@Example.com").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user = body(response).await;
    assert_eq!(user["user"]["email"], "alice@example.com");
    assert_eq!(user["user"]["roles"], json!(["user"]));
    assert!(user["user"].get("password_hash").is_none());

    let response = login(&client, &base, "alice@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first_refresh = cookie(&response, "refresh_token").expect("refresh cookie");
    assert!(cookie(&response, "access_token").is_some());
    let session = body(response).await;
    assert_eq!(session["token_type"], "Bearer");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();

    let me = client
        .get(format!("{base}/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(body(me).await["user"]["email"], "alice@example.com");

    // Refresh by cookie needs the CSRF header.
    let refused = client
        .post(format!("{base}/api/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refreshed = client
        .post(format!("{base}/api/auth/refresh"))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let second_refresh = cookie(&refreshed, "refresh_token").expect("rotated refresh cookie");
    assert_ne!(first_refresh, second_refresh);
    let csrf = body(refreshed).await["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The rotated-out token is refused, and presenting it revokes its successor too.
    let reuse = Client::new()
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({ "refresh_token": first_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let successor = Client::new()
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({ "refresh_token": second_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED);

    let logout = client
        .post(format!("{base}/api/auth/logout"))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let me = client
        .get(format!("{base}/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    t.drop_database().await;
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_csrf_token() {
    let t = TestDb::new("auth_csrf").await;
    let base = spawn_app(&t, &[]).await;
    let client = browser();
    signup(&client, &base, "dave@example.com").await;
    let csrf = body(login(&client, &base, "dave@example.com", PASSWORD).await).await["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |token: Option<&str>| {
        let mut request = client
            .put(format!("{base}/api/auth/profile"))
            .json(&json!({ "name": "Dave" }));
        if let Some(token) = token {
            request = request.header("X-CSRF-Token", token);
        }
        request.send()
    };
    let missing = put(None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(missing).await["error"]["code"], "csrf_failed");
    let wrong = put(Some("forged.token")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(put(Some(&csrf)).await.unwrap().status(), StatusCode::OK);
    // Safe methods need none.
    assert_eq!(
        client
            .get(format!("{base}/api/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_signups_with_one_email_exactly_one_succeeds() {
    let t = TestDb::new("auth_race").await;
    let base = spawn_app(&t, &[]).await;
    let attempts = (0..12).map(|i| {
        let base = base.clone();
        async move {
            Client::new()
                .post(format!("{base}/api/auth/signup"))
                .json(&json!({ "email": "race@example.com", "password": PASSWORD, "name": format!("racer {i}") }))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT));
    let registered = t
        .db()
        .collection::<bson::Document>("events")
        .count_documents(bson::doc! { "event_type": "UserRegistered" })
        .await
        .unwrap();
    assert_eq!(registered, 1);
    t.drop_database().await;
}

#[tokio::test]
async fn two_factor_setup_verify_login_and_disable() {
    let t = TestDb::new("auth_2fa").await;
    let base = spawn_app(&t, &[]).await;
    let (token, _) = bearer_user(&base, "frank@example.com").await;
    let client = Client::new();
    let now = || chrono::Utc::now().timestamp() as u64;

    let setup = body(
        client
            .post(format!("{base}/api/auth/2fa/setup"))
            .bearer_auth(&token)
            .json(&json!({ "current_password": PASSWORD }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(setup["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    let wrong = client
        .post(format!("{base}/api/auth/2fa/verify"))
        .bearer_auth(&token)
        .json(&json!({ "code": "000000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // A code is accepted once (RFC 6238 §5.2): verify, login and disable each use their own time
    // step, s - 1, s and s + 1 (all within the ±1 step of skew). Start early in a step so that
    // the three requests are done before it ends.
    if now() % 30 > 20 {
        tokio::time::sleep(std::time::Duration::from_secs(30 - now() % 30)).await;
    }
    let s = now() / 30;
    let code_of = |step: u64| totp::code_at(&secret, step * 30).unwrap();
    let code = code_of(s - 1);
    let verified = client
        .post(format!("{base}/api/auth/2fa/verify"))
        .bearer_auth(&token)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
    let status = body(
        client
            .get(format!("{base}/api/auth/2fa/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["enabled"], true);

    let without = login(&client, &base, "frank@example.com", PASSWORD).await;
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(without).await["error"]["code"], "totp_required");
    let bad_code = client
        .post(format!("{base}/api/auth/login"))
        .json(
            &json!({ "email": "frank@example.com", "password": PASSWORD, "totp_code": "123456x" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body(bad_code).await["error"]["code"], "invalid_totp");
    let login_with = |code: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/api/auth/login"))
                .json(&json!({ "email": "frank@example.com", "password": PASSWORD, "totp_code": code }))
                .send()
                .await
                .unwrap()
        }
    };
    let replayed = login_with(code_of(s - 1)).await;
    assert_eq!(
        replayed.status(),
        StatusCode::UNAUTHORIZED,
        "the enrolment code again"
    );
    assert_eq!(body(replayed).await["error"]["code"], "invalid_totp");
    // The same fresh code twice at once: exactly one login.
    let (first, second) = tokio::join!(login_with(code_of(s)), login_with(code_of(s)));
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);

    let disabled = client
        .post(format!("{base}/api/auth/2fa/disable"))
        .bearer_auth(&token)
        .json(&json!({ "current_password": PASSWORD, "code": code_of(s) }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        disabled.status(),
        StatusCode::UNAUTHORIZED,
        "a used code does not disable 2FA"
    );
    let disabled = client
        .post(format!("{base}/api/auth/2fa/disable"))
        .bearer_auth(&token)
        .json(&json!({ "current_password": PASSWORD, "code": code_of(s + 1) }))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(
        login(&client, &base, "frank@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    t.drop_database().await;
}

#[tokio::test]
async fn users_see_only_their_own_data_and_admin_routes_need_the_admin_role() {
    let t = TestDb::new("auth_roles").await;
    let base = spawn_app(&t, &[]).await;
    let (alice, alice_id) = bearer_user(&base, "hank@example.com").await;
    let (_, bob_id) = bearer_user(&base, "ivy@example.com").await;
    let client = Client::new();

    let me = body(
        client
            .get(format!("{base}/api/auth/me"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["user"]["id"], alice_id.as_str());
    let other = client
        .get(format!("{base}/api/admin/users/{bob_id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(other).await["error"]["code"], "forbidden");

    // Bootstrap the first admin from the command line, then log in again for a token with it.
    t.grant("hank@example.com", "admin").await;
    let admin = body(login(&client, &base, "hank@example.com", PASSWORD).await).await
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = client
        .get(format!("{base}/api/admin/users/{bob_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), StatusCode::OK);
    assert_eq!(body(seen).await["user"]["email"], "ivy@example.com");
    let granted = client
        .post(format!("{base}/api/admin/users/{bob_id}/roles"))
        .bearer_auth(&admin)
        .json(&json!({ "role": "auditor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body(granted).await["user"]["roles"],
        json!(["user", "auditor"])
    );
    t.drop_database().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_responses_carry_security_headers() {
    let t = TestDb::new("auth_input").await;
    let base = spawn_app(
        &t,
        &[
            ("MAX_BODY_BYTES", "1024"),
            ("CORS_ORIGINS", "https://app.example"),
        ],
    )
    .await;
    let client = Client::new();
    let post = |raw: String| {
        client
            .post(format!("{base}/api/auth/signup"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    let malformed = post("{\"email\": ".into()).await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(malformed).await["error"]["code"], "malformed_json");
    let wrong_type = post(json!({ "email": 3, "password": PASSWORD, "name": "x" }).to_string())
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error = body(wrong_type).await;
    assert_eq!(error["error"]["code"], "validation_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("email"),
        "{error}"
    );
    let missing = body(
        post(json!({ "email": "a@example.com", "password": PASSWORD }).to_string())
            .await
            .unwrap(),
    )
    .await;
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{missing}"
    );
    let short = body(
        post(json!({ "email": "a@example.com", "password": "short", "name": "A" }).to_string())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(short["error"]["code"], "validation_error");
    assert!(
        short["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("password"),
        "{short}"
    );
    let huge = post(
        json!({ "email": "a@example.com", "password": PASSWORD, "name": "x".repeat(5000) })
            .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body(huge).await["error"]["code"], "payload_too_large");

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    for (name, _) in cryptovault::http::security::SECURITY_HEADERS {
        assert!(health.headers().contains_key(name), "missing {name}");
    }
    assert_eq!(health.headers()["x-frame-options"], "DENY");

    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/api/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    // Nothing was written by any rejected request.
    let events = t
        .db()
        .collection::<bson::Document>("events")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(events, 0);
    t.drop_database().await;
}

/// A user stream longer than one read page (10,000 events) is folded whole: the state a
/// decision sees is the latest one, so a change appended after the first page takes effect.
#[tokio::test]
async fn a_user_stream_longer_than_a_page_is_folded_whole() {
    let t = TestDb::new("auth_long_stream").await;
    let base = spawn_app(&t, &[]).await;
    let user = crate::helpers::signed_up(&base, "long@example.com").await;
    let store = t.store().await;
    let stream = format!("user-{}", user.id);
    for chunk in 0..10 {
        let events = (0..1000)
            .map(|i| {
                cryptovault_events::NewEvent::new(
                    uuid::Uuid::now_v7(),
                    "ProfileUpdated",
                    1,
                    chrono::Utc::now(),
                    cryptovault_events::EventMetadata::default(),
                    json!({ "name": format!("name {}", chunk * 1000 + i + 1) }),
                )
            })
            .collect();
        store
            .append(cryptovault::store::AppendBatch::single(
                stream.clone(),
                cryptovault::store::ExpectedVersion::Any,
                events,
            ))
            .await
            .unwrap();
    }
    let me = |base: String, token: String| async move {
        let response = Client::new()
            .get(format!("{base}/api/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let (status, body) = me(base.clone(), user.token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["name"], "name 10000", "{body}");
    // A command on the 10,002nd version appends after the whole stream.
    let renamed = Client::new()
        .put(format!("{base}/api/auth/profile"))
        .bearer_auth(&user.token)
        .json(&json!({ "name": "Last Name" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let (_, body) = me(base.clone(), user.token.clone()).await;
    assert_eq!(body["user"]["name"], "Last Name", "{body}");
    t.drop_database().await;
}
