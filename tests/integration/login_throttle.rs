//! The login throttle (ARCHITECTURE.md, "Identity and access", the throttle rule): attempts are
//! reserved atomically before the password is checked, across service instances; a stranger
//! who knows only an address cannot keep its owner out; unknown and known addresses answer
//! alike; sensitive changes need the current password (step-up), counted and audited.
//!
//! Client addresses: the service listens on 127.0.0.1 and the tests bind their clients to other
//! loopback addresses (127.0.0.x), so every source is a real peer address (no proxy headers).

use std::time::Duration;

use cryptovault::identity::totp;
use cryptovault_events::identity::LoginFailed;
use cryptovault_events::DomainEvent;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use crate::auth::{body, cookie, login, signup};
use crate::helpers::{spawn_app, TestDb, PASSWORD};

/// A client whose connections come from `127.0.0.<last>`, optionally keeping cookies.
fn from(last: u8, cookies: bool) -> Client {
    Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, last]))
        .cookie_store(cookies)
        .build()
        .unwrap()
}

/// The `LoginFailed` events of `email`'s logins stream (`logins-unknown` for an unknown one).
/// Addresses are sealed in the log (issue 14): each is opened with the key its text names.
async fn failures(t: &TestDb, email: &str) -> Vec<LoginFailed> {
    use cryptovault_events::personal::{key_id, Personal};
    let store = t.store().await;
    let index = cryptovault::privacy::BlindIndex::new(crate::helpers::TEST_EMAIL_INDEX_KEY);
    let claim = store
        .read_stream(&format!("email-{}", index.of(email)), 1, 1)
        .await
        .unwrap();
    let stream = match claim.first() {
        Some(claim) => format!("logins-{}", claim.payload["user_id"].as_str().unwrap()),
        None => "logins-unknown".to_owned(),
    };
    let keys = cryptovault::store::personal_keys::PersonalKeys::open(&t.db());
    let mut found = Vec::new();
    for event in store.read_stream(&stream, 1, 10_000).await.unwrap() {
        let Ok(failed) = LoginFailed::from_envelope(&event) else {
            continue;
        };
        let address = match &failed.email {
            Personal::Legacy(text) => Some(text.clone()),
            Personal::Sealed(text) => match key_id(text) {
                Some(id) => keys.get(id).await.unwrap().and_then(|key| key.open(text)),
                None => None,
            },
        };
        if address.as_deref() == Some(email) {
            found.push(failed);
        }
    }
    found
}

fn count(failures: &[LoginFailed], reason: &str) -> usize {
    failures.iter().filter(|f| f.reason == reason).count()
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// `n` wrong logins for `email` at once, alternating between the `bases`; their statuses.
async fn parallel_wrong_logins(bases: &[String], email: &str, n: usize) -> Vec<StatusCode> {
    let client = from(1, false);
    let attempts = (0..n).map(|i| {
        let (client, base) = (client.clone(), bases[i % bases.len()].clone());
        let email = email.to_owned();
        async move {
            login(&client, &base, &email, "not the password")
                .await
                .status()
        }
    });
    futures::future::join_all(attempts).await
}

/// Finding 4: 30 parallel wrong logins over two instances on one database check at most
/// `LOGIN_MAX_FAILURES` passwords; right after the block ends, 30 more check at most one.
#[tokio::test]
async fn parallel_wrong_logins_over_two_instances_check_at_most_the_limit() {
    let t = TestDb::new("throttle_parallel").await;
    let settings = [("LOGIN_MAX_FAILURES", "5"), ("LOGIN_LOCKOUT_SECS", "2")];
    let bases = [
        spawn_app(&t, &settings).await,
        spawn_app(&t, &settings).await,
    ];
    signup(&Client::new(), &bases[0], "pat@example.com").await;

    let statuses = parallel_wrong_logins(&bases, "pat@example.com", 30).await;
    let checked = count(&failures(&t, "pat@example.com").await, "invalid_password");
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(checked <= 5, "{checked} passwords checked (limit 5)");
    assert_eq!(unauthorized, checked, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::UNAUTHORIZED, StatusCode::LOCKED].contains(s)),
        "{statuses:?}"
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    parallel_wrong_logins(&bases, "pat@example.com", 30).await;
    let again = count(&failures(&t, "pat@example.com").await, "invalid_password") - checked;
    assert!(
        again <= 1,
        "{again} passwords checked right after the block ended (limit 1)"
    );
    t.drop_database().await;
}

/// Finding 3: a stranger's wrong passwords (from several addresses, beyond the per-account
/// cap) do not keep the owner out: the owner's device (its cookie) and the address of the
/// owner's last successful login are still accepted with the right password, also from the
/// attacker's own address; a fresh address waits at most the account window.
#[tokio::test]
async fn a_stranger_who_knows_the_address_cannot_keep_the_owner_out() {
    let t = TestDb::new("throttle_stranger").await;
    let base = spawn_app(
        &t,
        &[
            ("LOGIN_MAX_FAILURES", "3"),
            ("LOGIN_LOCKOUT_SECS", "600"),
            ("LOGIN_LOCKOUT_MAX_SECS", "3600"),
            ("LOGIN_ACCOUNT_MAX_FAILURES", "8"),
            ("LOGIN_ACCOUNT_WINDOW_SECS", "120"),
        ],
    )
    .await;
    signup(&Client::new(), &base, "owner@example.com").await;
    // The owner signs in once from 127.0.0.2; the answer sets the device cookie.
    let first = login(&from(2, false), &base, "owner@example.com", PASSWORD).await;
    assert_eq!(first.status(), StatusCode::OK);
    let device = cookie(&first, "device_id");

    // The attacker guesses from 127.0.0.3, .4, .5 and .6 until every one is refused.
    for last in 3..=6 {
        let attacker = from(last, false);
        let mut refused = false;
        for _ in 0..6 {
            let answer = login(&attacker, &base, "owner@example.com", "guess guess guess").await;
            if answer.status() == StatusCode::LOCKED {
                refused = true;
                let wait = retry_after(&answer).expect("Retry-After");
                assert!(wait <= 600, "{wait} s");
            }
        }
        assert!(refused, "127.0.0.{last} was never refused");
    }
    // At most 3 per address and 8 in all were checked.
    assert!(count(&failures(&t, "owner@example.com").await, "invalid_password") <= 8);

    // The address of the last successful login, without the cookie.
    assert_eq!(
        login(&from(2, false), &base, "owner@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "the owner's address"
    );
    // The owner's device, even from the attacker's address: its cookie makes it known.
    let with_device = from(3, false)
        .post(format!("{base}/api/auth/login"))
        .header(
            "cookie",
            format!("device_id={}", device.expect("a device cookie")),
        )
        .json(&json!({ "email": "owner@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_device.status(),
        StatusCode::OK,
        "the owner's device from the attacker's address"
    );
    // A fresh address: refused while the account-wide cap is exhausted, for at most its window.
    let fresh = login(&from(9, false), &base, "owner@example.com", PASSWORD).await;
    assert_eq!(fresh.status(), StatusCode::LOCKED);
    assert!(retry_after(&fresh).unwrap() <= 120);
    t.drop_database().await;
}

/// Finding 16: after the same failures, an unknown address and a registered one get the same
/// answers: status, code, message, and Retry-After (to the second).
#[tokio::test]
async fn unknown_and_known_addresses_answer_alike_after_the_same_failures() {
    let t = TestDb::new("throttle_enumeration").await;
    let base = spawn_app(
        &t,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "60")],
    )
    .await;
    let client = Client::new();
    signup(&client, &base, "erin@example.com").await;
    let mut answers: [Vec<(StatusCode, Value, Option<u64>)>; 2] = Default::default();
    for _ in 0..5 {
        for (i, email) in ["erin@example.com", "nobody@example.com"]
            .iter()
            .enumerate()
        {
            let answer = login(&client, &base, email, "not the password").await;
            let status = answer.status();
            let wait = retry_after(&answer);
            let mut error = body(answer).await["error"].clone();
            error.as_object_mut().unwrap().remove("request_id");
            answers[i].push((status, error, wait));
        }
    }
    let [known, unknown] = answers;
    for (k, u) in known.iter().zip(&unknown) {
        assert_eq!((k.0, &k.1), (u.0, &u.1), "{known:?}\n{unknown:?}");
        match (k.2, u.2) {
            (Some(a), Some(b)) => assert!(a.abs_diff(b) <= 1, "{a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    assert_eq!(known[3].0, StatusCode::LOCKED, "{known:?}");
    t.drop_database().await;
}

/// Finding 10: with a stolen access token alone, 2FA cannot be enrolled or disabled and the
/// password cannot be changed; wrong current passwords are throttled like logins and audited.
#[tokio::test]
async fn sensitive_changes_need_the_current_password_counted_and_audited() {
    let t = TestDb::new("throttle_step_up").await;
    let base = spawn_app(
        &t,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "600")],
    )
    .await;
    let client = Client::new();
    signup(&client, &base, "sam@example.com").await;
    let token = body(login(&client, &base, "sam@example.com", PASSWORD).await).await
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}/api/auth/{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    // The token alone: refused, naming the missing field, and nothing written.
    let setup = post("2fa/setup", json!({})).await.unwrap();
    assert_eq!(setup.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refusal = body(setup).await;
    assert_eq!(refusal["error"]["code"], "validation_error");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("current_password"),
        "{refusal}"
    );
    let secrets = t
        .db()
        .collection::<bson::Document>("totp_secrets")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(secrets, 0, "no secret was stored");

    // With the password: enrolment works; disabling then needs password and code.
    let setup = body(
        post("2fa/setup", json!({ "current_password": PASSWORD }))
            .await
            .unwrap(),
    )
    .await;
    let secret = setup["secret"].as_str().expect("a secret").to_owned();
    let now = || chrono::Utc::now().timestamp() as u64;
    if now() % 30 > 20 {
        tokio::time::sleep(Duration::from_secs(30 - now() % 30)).await;
    }
    let s = now() / 30;
    let code_of = |step: u64| totp::code_at(&secret, step * 30).unwrap();
    let verified = post("2fa/verify", json!({ "code": code_of(s - 1) }))
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
    let disable = post("2fa/disable", json!({ "code": code_of(s) }))
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let change = post(
        "change-password",
        json!({ "current_password": PASSWORD, "new_password": "another long password" }),
    )
    .await
    .unwrap();
    assert_eq!(change.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(change).await["error"]["code"], "totp_required");

    // Guessing the current password: the throttle of logins counts every step-up (the missing
    // code above was the first of 3), so 2 guesses are checked, the rest refused; all audited.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let guess = post(
            "change-password",
            json!({ "current_password": "a wrong guess", "new_password": "another long password",
                    "totp_code": code_of(s) }),
        )
        .await
        .unwrap();
        statuses.push(guess.status());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::LOCKED)
        .count();
    assert_eq!((checked, locked), (2, 8), "{statuses:?}");
    let failed = failures(&t, "sam@example.com").await;
    assert_eq!(count(&failed, "step_up_failed"), 3, "{failed:?}");
    assert_eq!(count(&failed, "step_up_locked"), 8, "{failed:?}");
    // Also the login is now refused from here (the same throttle).
    assert_eq!(
        login(&client, &base, "sam@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::LOCKED
    );
    t.drop_database().await;
}
