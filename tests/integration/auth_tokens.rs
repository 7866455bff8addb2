//! Access tokens: forged, expired, wrongly signed and logged-out tokens are refused.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::auth::bearer_user;
use crate::helpers::{spawn_app, TestDb, TEST_JWT_SECRET};

#[tokio::test]
async fn a_logged_out_access_token_is_refused_even_as_bearer() {
    let t = TestDb::new("auth_logout").await;
    let base = spawn_app(&t, &[]).await;
    let (token, _) = bearer_user(&base, "bob@example.com").await;
    let client = Client::new();
    let out = client
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let me = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    t.drop_database().await;
}

fn forge(header: &jsonwebtoken::Header, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bearer_tokens_work_and_forged_ones_do_not() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let t = TestDb::new("auth_bearer").await;
    let base = spawn_app(&t, &[]).await;
    let (token, user_id) = bearer_user(&base, "carol@example.com").await;
    let client = Client::new();
    let me = |token: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/api/auth/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, StatusCode::OK);
    // Bearer requests need no CSRF token, even for unsafe methods.
    let put = client
        .put(format!("{base}/api/auth/profile"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Carol C." }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);

    let now = chrono::Utc::now().timestamp();
    // A forged token must name a live session (the real token's) to be accepted at all.
    let payload = token.split('.').nth(1).unwrap();
    let sid = serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        ["sid"]
        .clone();
    let claims = |exp: i64, aud: &str| {
        json!({ "sub": user_id, "roles": ["user", "admin"], "iss": "cryptovault", "aud": aud,
                "exp": exp, "iat": now, "jti": uuid::Uuid::now_v7(), "sid": sid })
    };
    let hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    // Sanity: a token forged with the right secret and claims is accepted, so the refusals
    // below are about the one thing each changes.
    assert_eq!(
        me(forge(
            &hs256,
            &claims(now + 600, "cryptovault-api"),
            TEST_JWT_SECRET
        ))
        .await,
        StatusCode::OK
    );

    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        me(tampered).await,
        StatusCode::UNAUTHORIZED,
        "tampered signature"
    );

    let hs512 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
    assert_eq!(
        me(forge(
            &hs512,
            &claims(now + 600, "cryptovault-api"),
            TEST_JWT_SECRET
        ))
        .await,
        StatusCode::UNAUTHORIZED,
        "wrong algorithm"
    );
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none_claims = URL_SAFE_NO_PAD.encode(claims(now + 600, "cryptovault-api").to_string());
    assert_eq!(
        me(format!("{none_header}.{none_claims}.")).await,
        StatusCode::UNAUTHORIZED,
        "alg none"
    );
    assert_eq!(
        me(forge(
            &hs256,
            &claims(now - 5, "cryptovault-api"),
            TEST_JWT_SECRET
        ))
        .await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    assert_eq!(
        me(forge(
            &hs256,
            &claims(now + 600, "another-api"),
            TEST_JWT_SECRET
        ))
        .await,
        StatusCode::UNAUTHORIZED,
        "wrong audience"
    );
    assert_eq!(
        me(forge(
            &hs256,
            &claims(now + 600, "cryptovault-api"),
            "some-other-secret-0123456789abcdef"
        ))
        .await,
        StatusCode::UNAUTHORIZED,
        "wrong key"
    );
    t.drop_database().await;
}
