//! Property tests over signup and login bodies: whatever a client sends, no 5xx, and a rejected
//! request writes nothing (a refused login with a well-formed body writes only its `LoginFailed`).

use bson::doc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Client, StatusCode};
use serde_json::{json, Map, Value};

use crate::helpers::{spawn_app, TestDb};

/// A JSON value of any shape, strings biased towards ones that look like real input.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z]{1,8}@[a-z]{1,8}\\.(com|io)".prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,10}", inner), 0..3)
                .prop_map(|p| Value::Object(p.into_iter().collect())),
        ]
    })
}

/// A body: usually an object with some of the expected fields (any JSON in them) and maybe
/// extra ones; sometimes a value of another type; sometimes bytes that are not JSON at all.
fn body(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let object = (
        prop::collection::vec(proptest::option::of(any_json()), fields.len()),
        proptest::option::of(("[a-z_]{1,10}", any_json())),
    )
        .prop_map(move |(values, extra)| {
            let mut map = Map::new();
            for (name, value) in fields.iter().zip(values) {
                if let Some(value) = value {
                    map.insert((*name).to_owned(), value);
                }
            }
            if let Some((k, v)) = extra {
                map.insert(k, v);
            }
            serde_json::to_vec(&Value::Object(map)).unwrap()
        });
    prop_oneof![
        6 => object,
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

async fn count(t: &TestDb, filter: bson::Document) -> u64 {
    t.db()
        .collection::<bson::Document>("events")
        .count_documents(filter)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signup_or_login_body_causes_a_5xx_or_a_write_on_rejection() {
    let t = TestDb::new("auth_fuzz").await;
    let base = spawn_app(&t, &[]).await;
    let client = Client::new();
    // A real user, so that some login bodies reach the password check.
    client
        .post(format!("{base}/api/auth/signup"))
        .json(
            &json!({ "email": "fuzz@example.com", "password": "a good password", "name": "Fuzz" }),
        )
        .send()
        .await
        .unwrap();
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });

    let result = tokio::task::block_in_place(|| {
        runner.run(
            &(
                body(&["email", "password", "name"]),
                body(&["email", "password", "totp_code"]),
            ),
            |(signup, login)| {
                handle.block_on(async {
                    let before = count(&t, doc! {}).await;
                    let response = client
                        .post(format!("{base}/api/auth/signup"))
                        .header("content-type", "application/json")
                        .body(signup.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    prop_assert!(
                        !status.is_server_error(),
                        "signup {status} for {:?}",
                        String::from_utf8_lossy(&signup)
                    );
                    if status != StatusCode::CREATED {
                        prop_assert_eq!(
                            count(&t, doc! {}).await,
                            before,
                            "a refused signup wrote events"
                        );
                    }

                    let before = count(&t, doc! {}).await;
                    let failures_before = count(&t, doc! { "event_type": "LoginFailed" }).await;
                    let response = client
                        .post(format!("{base}/api/auth/login"))
                        .header("content-type", "application/json")
                        .body(login.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    prop_assert!(
                        !status.is_server_error(),
                        "login {status} for {:?}",
                        String::from_utf8_lossy(&login)
                    );
                    let written = count(&t, doc! {}).await - before;
                    let failures =
                        count(&t, doc! { "event_type": "LoginFailed" }).await - failures_before;
                    match status {
                        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                            prop_assert_eq!(written, 0)
                        }
                        StatusCode::UNAUTHORIZED | StatusCode::LOCKED => {
                            prop_assert_eq!(written, 1);
                            prop_assert_eq!(failures, 1);
                        }
                        other => prop_assert!(false, "unexpected login status {other}"),
                    }
                    Ok(())
                })
            },
        )
    });
    result.unwrap();
    t.drop_database().await;
}
