//! Sessions that end (issue 14, findings 5, 11 and 12): logout, a password change, refresh-token
//! reuse and enabling 2FA end every affected access token, refresh token and `/ws/account`
//! socket within seconds on every instance; CSRF tokens are bound to their session; roles can
//! be revoked (API and CLI, audited) and the revocation applies to tokens already issued.
//! Every scenario runs two service instances on one database.

use std::time::Duration;

use cryptovault::identity::totp;
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::auth::{body, cookie};
use crate::helpers::{admin, signed_up, spawn_app, TestDb, PASSWORD};

/// A login's three credentials.
struct Login {
    access: String,
    refresh: String,
    csrf: String,
    user_id: String,
}

async fn login_on(base: &str, email: &str) -> Login {
    let response = Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refresh = cookie(&response, "refresh_token").expect("refresh cookie");
    let session = body(response).await;
    Login {
        access: session["access_token"].as_str().unwrap().to_owned(),
        refresh,
        csrf: session["csrf_token"].as_str().unwrap().to_owned(),
        user_id: session["user"]["id"].as_str().unwrap().to_owned(),
    }
}

/// Rotates `refresh` through the body (API-client style): the status and, on success, the new
/// credentials.
async fn refresh_on(base: &str, refresh: &str) -> (StatusCode, Option<Login>) {
    let response = Client::new()
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    if status != StatusCode::OK {
        return (status, None);
    }
    let refresh = cookie(&response, "refresh_token").expect("rotated refresh cookie");
    let session = body(response).await;
    (
        status,
        Some(Login {
            access: session["access_token"].as_str().unwrap().to_owned(),
            refresh,
            csrf: session["csrf_token"].as_str().unwrap().to_owned(),
            user_id: session["user"]["id"].as_str().unwrap().to_owned(),
        }),
    )
}

async fn me(base: &str, access: &str) -> StatusCode {
    Client::new()
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls `probe` until it answers `want` or `within` has passed; the last answer.
async fn eventually<F, Fut>(within: Duration, want: StatusCode, mut probe: F) -> StatusCode
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = probe().await;
        if got == want || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn logout_ends_every_access_token_of_the_session_on_every_instance() {
    let t = TestDb::new("sess_logout").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    signed_up(&a, "ann@example.com").await;
    let first = login_on(&a, "ann@example.com").await;
    // A second access token of the same session, issued by the other instance.
    let (status, second) = refresh_on(&b, &first.refresh).await;
    assert_eq!(status, StatusCode::OK);
    let second = second.unwrap();
    assert_eq!(me(&a, &first.access).await, StatusCode::OK);
    assert_eq!(me(&b, &second.access).await, StatusCode::OK);
    // Another session of the same user is not affected.
    let other = login_on(&b, "ann@example.com").await;

    let out = Client::new()
        .post(format!("{a}/api/auth/logout"))
        .bearer_auth(&second.access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    for base in [&a, &b] {
        for (what, token) in [("first", &first.access), ("second", &second.access)] {
            assert_eq!(
                me(base, token).await,
                StatusCode::UNAUTHORIZED,
                "the {what} access token of the ended session on {base}"
            );
        }
        assert_eq!(me(base, &other.access).await, StatusCode::OK);
    }
    assert_eq!(
        refresh_on(&b, &second.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    t.drop_database().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn account_socket(base: &str, access: &str) -> Socket {
    let mut request = format!("{}/ws/account", base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {access}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the first message arrives")
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "balance");
    socket
}

/// Waits up to `within` for the socket's close frame; its code and reason.
async fn closed_within(socket: &mut Socket, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_ends_the_other_sessions_and_their_sockets_on_every_instance() {
    let t = TestDb::new("sess_password").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    signed_up(&a, "ben@example.com").await;
    let session_a = login_on(&a, "ben@example.com").await;
    let session_b = login_on(&b, "ben@example.com").await;
    let mut socket = account_socket(&b, &session_b.access).await;

    let changed = Client::new()
        .post(format!("{a}/api/auth/change-password"))
        .bearer_auth(&session_a.access)
        .json(&json!({ "current_password": PASSWORD, "new_password": "a brand new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    assert_eq!(
        eventually(Duration::from_secs(2), StatusCode::UNAUTHORIZED, || me(
            &b,
            &session_b.access
        ))
        .await,
        StatusCode::UNAUTHORIZED,
        "session B's access token on instance 2 within 2 s"
    );
    let (code, reason) = closed_within(&mut socket, Duration::from_secs(3) - started.elapsed())
        .await
        .expect("session B's socket is closed with a close frame within 3 s");
    assert_eq!(code, 1008);
    assert!(reason.contains("session ended"), "{reason}");
    assert_eq!(
        refresh_on(&a, &session_b.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The old password is gone; the new one logs in.
    let old = Client::new()
        .post(format!("{b}/api/auth/login"))
        .json(&json!({ "email": "ben@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    t.drop_database().await;
}

#[tokio::test]
async fn refresh_token_reuse_ends_the_thief_s_access_token() {
    let t = TestDb::new("sess_reuse").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    signed_up(&a, "cat@example.com").await;
    let owner = login_on(&a, "cat@example.com").await;
    // The thief rotates the stolen refresh token first.
    let (status, thief) = refresh_on(&b, &owner.refresh).await;
    assert_eq!(status, StatusCode::OK);
    let thief = thief.unwrap();
    assert_eq!(me(&b, &thief.access).await, StatusCode::OK);
    // The owner presents it again: reuse.
    assert_eq!(
        refresh_on(&a, &owner.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    for base in [&a, &b] {
        assert_eq!(
            me(base, &thief.access).await,
            StatusCode::UNAUTHORIZED,
            "the thief's access token on {base}"
        );
        assert_eq!(me(base, &owner.access).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        refresh_on(&b, &thief.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    t.drop_database().await;
}

#[tokio::test]
async fn enabling_two_factor_ends_every_other_session() {
    let t = TestDb::new("sess_2fa").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    signed_up(&a, "dan@example.com").await;
    let session_a = login_on(&a, "dan@example.com").await;
    let session_b = login_on(&b, "dan@example.com").await;
    let http = Client::new();
    let setup = body(
        http.post(format!("{a}/api/auth/2fa/setup"))
            .bearer_auth(&session_a.access)
            .json(&json!({ "current_password": PASSWORD }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let code = totp::code_at(&secret, chrono::Utc::now().timestamp() as u64).unwrap();
    let verified = http
        .post(format!("{a}/api/auth/2fa/verify"))
        .bearer_auth(&session_a.access)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);

    // B, a session opened without the second factor, is over: refresh and access token.
    assert_eq!(
        refresh_on(&b, &session_b.refresh).await.0,
        StatusCode::UNAUTHORIZED,
        "a refresh token issued before 2FA was enabled"
    );
    assert_eq!(
        eventually(Duration::from_secs(2), StatusCode::UNAUTHORIZED, || me(
            &a,
            &session_b.access
        ))
        .await,
        StatusCode::UNAUTHORIZED
    );
    // A, the session that enabled it, goes on.
    assert_eq!(me(&b, &session_a.access).await, StatusCode::OK);
    assert_eq!(refresh_on(&b, &session_a.refresh).await.0, StatusCode::OK);
    t.drop_database().await;
}

/// A cookie-authenticated request with exactly these cookies and `X-CSRF-Token`.
fn with_cookies(
    request: reqwest::RequestBuilder,
    cookies: &[(&str, &str)],
    csrf_header: &str,
) -> reqwest::RequestBuilder {
    let jar = cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    request
        .header("cookie", jar)
        .header("x-csrf-token", csrf_header)
}

#[tokio::test]
async fn csrf_tokens_are_bound_to_their_session() {
    let t = TestDb::new("sess_csrf").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    signed_up(&a, "eve@example.com").await;
    signed_up(&a, "fay@example.com").await;
    // The attacker's own session gives them a validly signed token pair...
    let attacker = login_on(&a, "eve@example.com").await;
    let victim = login_on(&a, "fay@example.com").await;
    let http = Client::new();
    let profile = |base: &str, access: &str, csrf: &str| {
        with_cookies(
            http.put(format!("{base}/api/auth/profile"))
                .json(&json!({ "name": "Changed" })),
            &[("access_token", access), ("csrf_token", csrf)],
            csrf,
        )
        .send()
    };
    // ...which, planted next to the victim's cookies, must not pass.
    for base in [&a, &b] {
        let forged = profile(base, &victim.access, &attacker.csrf).await.unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "on {base}");
        assert_eq!(body(forged).await["error"]["code"], "csrf_failed");
    }
    let own = profile(&b, &victim.access, &victim.csrf).await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    // The cookie refresh path checks it against the refresh token's session.
    let refresh = |base: &str, refresh: &str, csrf: &str| {
        with_cookies(
            http.post(format!("{base}/api/auth/refresh")),
            &[("refresh_token", refresh), ("csrf_token", csrf)],
            csrf,
        )
        .send()
    };
    let forged = refresh(&b, &victim.refresh, &attacker.csrf).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(forged).await["error"]["code"], "csrf_failed");
    // So does the cookie logout: the attacker's token cannot log the victim out.
    let forged = with_cookies(
        http.post(format!("{a}/api/auth/logout")),
        &[
            ("access_token", &victim.access),
            ("refresh_token", &victim.refresh),
            ("csrf_token", &attacker.csrf),
        ],
        &attacker.csrf,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(&a, &victim.access).await, StatusCode::OK);

    // After a logout, the session's CSRF token is worth nothing, also with a new session of the
    // same user.
    let out = Client::new()
        .post(format!("{a}/api/auth/logout"))
        .bearer_auth(&victim.access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let again = login_on(&b, "fay@example.com").await;
    let stale = profile(&a, &again.access, &victim.csrf).await.unwrap();
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(stale).await["error"]["code"], "csrf_failed");
    let stale = profile(&a, &victim.access, &victim.csrf).await.unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::UNAUTHORIZED,
        "the ended session"
    );
    let fresh = refresh(&a, &again.refresh, &again.csrf).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    t.drop_database().await;
}

async fn role_events(t: &TestDb, user_id: &str) -> Vec<(String, Value)> {
    use futures::TryStreamExt;
    let events: Vec<bson::Document> = t
        .db()
        .collection::<bson::Document>("events")
        .find(bson::doc! { "stream_id": format!("user-{user_id}"),
        "event_type": { "$in": ["RoleGranted", "RoleRevoked"] } })
        .sort(bson::doc! { "position": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    events
        .into_iter()
        .map(|e| {
            let payload: Value = serde_json::to_value(e.get_document("payload").unwrap()).unwrap();
            (e.get_str("event_type").unwrap().to_owned(), payload)
        })
        .collect()
}

#[tokio::test]
async fn revoking_a_role_through_the_api_or_the_cli_applies_to_tokens_already_issued() {
    let t = TestDb::new("sess_roles").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    let boss = admin(&t, &a, "boss@example.com").await;
    let staff = signed_up(&a, "staff@example.com").await;
    let http = Client::new();
    let roles = |action: &'static str, id: String, role: &'static str| {
        let (http, a, token) = (http.clone(), a.clone(), boss.token.clone());
        async move {
            let suffix = if action == "revoke" { "/revoke" } else { "" };
            let response = http
                .post(format!("{a}/api/admin/users/{id}/roles{suffix}"))
                .bearer_auth(token)
                .json(&json!({ "role": role }))
                .send()
                .await
                .unwrap();
            (response.status(), body(response).await)
        }
    };
    let (status, _) = roles("grant", staff.id.clone(), "auditor").await;
    assert_eq!(status, StatusCode::OK);
    let auditor = login_on(&b, "staff@example.com").await;
    let audit = |base: String, token: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/api/audit/verify"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        audit(b.clone(), auditor.access.clone()).await,
        StatusCode::OK
    );

    // Through the API.
    let (status, revoked) = roles("revoke", staff.id.clone(), "auditor").await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["user"]["roles"], json!(["user"]));
    for base in [&a, &b] {
        assert_eq!(
            eventually(Duration::from_secs(2), StatusCode::FORBIDDEN, || audit(
                base.clone(),
                auditor.access.clone()
            ))
            .await,
            StatusCode::FORBIDDEN,
            "the token issued with the auditor role, on {base}"
        );
    }
    // The session itself goes on as a plain user.
    assert_eq!(me(&b, &auditor.access).await, StatusCode::OK);
    // Revoking a role the user does not have writes nothing.
    let (status, _) = roles("revoke", staff.id.clone(), "auditor").await;
    assert_eq!(status, StatusCode::OK);
    let events = role_events(&t, &staff.id).await;
    assert_eq!(
        events,
        vec![
            (
                "RoleGranted".to_owned(),
                json!({ "role": "auditor", "granted_by": boss.id })
            ),
            (
                "RoleRevoked".to_owned(),
                json!({ "role": "auditor", "revoked_by": boss.id })
            ),
        ]
    );

    // A grant applies to the open session too; then the CLI revokes it.
    let (status, _) = roles("grant", staff.id.clone(), "auditor").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        eventually(Duration::from_secs(2), StatusCode::OK, || audit(
            a.clone(),
            auditor.access.clone()
        ))
        .await,
        StatusCode::OK
    );
    let out = t
        .cli(&[
            "admin",
            "revoke",
            "--email",
            "staff@example.com",
            "--role",
            "auditor",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        eventually(Duration::from_secs(2), StatusCode::FORBIDDEN, || audit(
            b.clone(),
            auditor.access.clone()
        ))
        .await,
        StatusCode::FORBIDDEN
    );
    let events = role_events(&t, &staff.id).await;
    assert_eq!(
        events.last().unwrap(),
        &(
            "RoleRevoked".to_owned(),
            json!({ "role": "auditor", "revoked_by": "cli" })
        )
    );

    // Bad input: a clear 4xx and nothing written.
    let before = role_events(&t, &boss.id).await.len();
    let (status, answer) = roles("revoke", boss.id.clone(), "admin").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no admin removes their own admin role: {answer}"
    );
    assert_eq!(answer["error"]["code"], "invalid_state");
    let (status, answer) = roles("revoke", staff.id.clone(), "superuser").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["code"], "validation_error");
    let (status, answer) = roles("revoke", staff.id.clone(), "user").await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, _) = roles("revoke", "not-a-uuid".into(), "auditor").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = roles("revoke", uuid::Uuid::now_v7().to_string(), "auditor").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(role_events(&t, &boss.id).await.len(), before);
    // A plain user may not revoke anything.
    let refused = http
        .post(format!("{a}/api/admin/users/{}/roles/revoke", boss.id))
        .bearer_auth(&staff.token)
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(&a, &boss.token).await, StatusCode::OK);
    let _ = auditor.user_id;
    let _ = auditor.csrf;
    t.drop_database().await;
}

#[tokio::test]
async fn a_logout_that_cannot_reach_the_session_store_answers_503_not_logged_out() {
    use crate::helpers::mongo_url;
    let t = TestDb::new("sess_logout_fault").await;
    let app_name = format!("cv-{}", t.name);
    let url = mongo_url();
    let sep = if url.contains('?') { "&" } else { "/?" };
    let url = format!(
        "{}{sep}appName={app_name}&heartbeatFrequencyMS=500",
        if sep == "&" {
            url.as_str()
        } else {
            url.trim_end_matches('/')
        }
    );
    let base = spawn_app(&t, &[("MONGO_URL", url.as_str())]).await;
    signed_up(&base, "gus@example.com").await;
    let session = login_on(&base, "gus@example.com").await;
    let fail_point = |mode: &'static str| {
        let (client, app_name) = (t.client.clone(), app_name.clone());
        async move {
            let mut command = bson::doc! { "configureFailPoint": "failCommand", "mode": mode };
            if mode == "alwaysOn" {
                command.insert(
                    "data",
                    bson::doc! { "failCommands": ["find"], "errorCode": 91_i32, "appName": app_name },
                );
            }
            client
                .database("admin")
                .run_command(command)
                .await
                .expect("fail points need mongod with enableTestCommands");
        }
    };
    let logout = || {
        Client::new()
            .post(format!("{base}/api/auth/logout"))
            .bearer_auth(&session.access)
            .send()
    };
    fail_point("alwaysOn").await;
    let answer = logout().await.unwrap();
    fail_point("off").await;
    assert_eq!(
        answer.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a logout that could not check (and so not end) the session"
    );
    assert_eq!(body(answer).await["error"]["code"], "unavailable");
    assert_eq!(
        me(&base, &session.access).await,
        StatusCode::OK,
        "still live"
    );
    assert_eq!(logout().await.unwrap().status(), StatusCode::OK);
    assert_eq!(me(&base, &session.access).await, StatusCode::UNAUTHORIZED);
    t.drop_database().await;
}
