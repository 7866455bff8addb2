//! Shared set-up: the MongoDB client, per-test databases, stores and events.

use cryptovault::store::{EventStore, StoreConfig};
use cryptovault_events::{EventMetadata, NewEvent};
use mongodb::{Client, Database};
use serde_json::json;

/// The MongoDB URL the test run was started with.
pub fn mongo_url() -> String {
    std::env::var("CRYPTOVAULT_TEST_MONGO_URL")
        .or_else(|_| std::env::var("MONGO_URL"))
        .expect("integration tests need MongoDB: run them with scripts/test.sh (it starts one)")
}

pub async fn client() -> Client {
    Client::with_uri_str(mongo_url())
        .await
        .expect("MONGO_URL is a valid connection string")
}

/// A database of its own for one test; dropped by [`TestDb::drop_database`] at the end.
pub struct TestDb {
    pub client: Client,
    pub name: String,
}

impl TestDb {
    pub async fn new(prefix: &str) -> Self {
        let name = format!(
            "t_{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self {
            client: client().await,
            name,
        }
    }

    pub fn db(&self) -> Database {
        self.client.database(&self.name)
    }

    /// A new store instance (its own writer task) on this database.
    pub async fn store(&self) -> EventStore {
        self.store_with(StoreConfig::default()).await
    }

    pub async fn store_with(&self, config: StoreConfig) -> EventStore {
        EventStore::open(&self.client, &self.name, config)
            .await
            .expect("store opens")
    }

    pub async fn drop_database(self) {
        self.db().drop().await.expect("drop test database");
    }
}

/// An event with a small payload identifying its writer and sequence number.
pub fn event(writer: &str, n: u64) -> NewEvent {
    NewEvent::new(
        uuid::Uuid::now_v7(),
        "TestEventRecorded",
        1,
        chrono::Utc::now(),
        EventMetadata {
            actor: Some(writer.to_owned()),
            ..EventMetadata::default()
        },
        json!({ "writer": writer, "n": n, "amount": "10.50" }),
    )
}

/// Secrets of every test app (tests sign their own forged tokens with the JWT one).
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
pub const TEST_CSRF_SECRET: &str = "test-csrf-secret-0123456789abcdef012345678";
pub const TEST_EMAIL_INDEX_KEY: &str = "test-email-index-key-0123456789abcdef0123";
/// The origin (key name) of the test apps' checkpoints.
pub const TEST_CHECKPOINT_ORIGIN: &str = "test.cryptovault.local/ledger";

/// The checkpoint signer key of every test app (`CHECKPOINT_SIGNING_KEY`), from a fixed seed.
pub fn test_checkpoint_key() -> &'static cryptovault_events::checkpoint::SignerKey {
    static KEY: std::sync::OnceLock<cryptovault_events::checkpoint::SignerKey> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        cryptovault_events::checkpoint::SignerKey::from_seed(TEST_CHECKPOINT_ORIGIN, [16; 32])
            .expect("a valid key name")
    })
}

/// Sends the service's warnings and errors (`RUST_LOG` overrides the level) to the test
/// harness's captured output, which is printed only when a test fails: a failed assertion then
/// comes with the service's own account of what went wrong.
fn capture_service_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Starts the application on an ephemeral loopback port with `overrides` on top of the test
/// configuration (generous rate limits unless overridden); returns its base URL.
pub async fn spawn_app(t: &TestDb, overrides: &[(&str, &str)]) -> String {
    use cryptovault::config::Config;
    use cryptovault::startup::Application;
    capture_service_logs();
    let mut vars: std::collections::HashMap<String, String> = [
        ("MONGO_URL", mongo_url()),
        ("DB_NAME", t.name.clone()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("JWT_SECRET", TEST_JWT_SECRET.into()),
        ("CSRF_SECRET", TEST_CSRF_SECRET.into()),
        ("EMAIL_INDEX_KEY", TEST_EMAIL_INDEX_KEY.into()),
        (
            "CHECKPOINT_SIGNING_KEY",
            test_checkpoint_key().to_private_string(),
        ),
        ("ENVIRONMENT", "test".into()),
        ("RATE_LIMIT_PER_IP_PER_MIN", "100000".into()),
        ("RATE_LIMIT_LOGIN_PER_MIN", "100000".into()),
        ("RATE_LIMIT_PER_USER_PER_MIN", "100000".into()),
        // Load tests open many connections from 127.0.0.1; `edge.rs` tests the bound.
        ("MAX_CONNECTIONS_PER_CLIENT", "4096".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config =
        Config::from_lookup(move |name: &str| vars.get(name).cloned()).expect("test config");
    let app = Application::build(config).await.expect("app builds");
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    base
}

impl TestDb {
    /// Runs the `cryptovault` binary with `args` against this database (test secrets, quiet
    /// logs) and returns its output.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (url, db) = (mongo_url(), self.name.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cryptovault"))
                .args(&args)
                .env("MONGO_URL", url)
                .env("DB_NAME", db)
                .env("JWT_SECRET", TEST_JWT_SECRET)
                .env("CSRF_SECRET", TEST_CSRF_SECRET)
                .env("EMAIL_INDEX_KEY", TEST_EMAIL_INDEX_KEY)
                .env(
                    "CHECKPOINT_SIGNING_KEY",
                    test_checkpoint_key().to_private_string(),
                )
                .env("RUST_LOG", "warn")
                .output()
                .expect("run the cryptovault binary")
        })
        .await
        .unwrap()
    }

    /// Grants `role` to `email` with `cryptovault admin grant`, asserting success.
    pub async fn grant(&self, email: &str, role: &str) {
        let out = self
            .cli(&["admin", "grant", "--email", email, "--role", role])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The password every test user signs up with.
pub const PASSWORD: &str = "correct horse battery staple";

/// A signed-up user with a Bearer access token.
#[derive(Clone)]
pub struct TestUser {
    pub token: String,
    pub id: String,
    pub email: String,
}

/// Signs `email` up (asserting 201) and logs in.
pub async fn signed_up(base: &str, email: &str) -> TestUser {
    let signup = reqwest::Client::new()
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({ "email": email, "password": PASSWORD, "name": "Test User" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), reqwest::StatusCode::CREATED);
    logged_in(base, email).await
}

/// Logs `email` in with [`PASSWORD`] (asserting 200).
pub async fn logged_in(base: &str, email: &str) -> TestUser {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    TestUser {
        token: body["access_token"].as_str().unwrap().to_owned(),
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
    }
}

// ---- Ledger helpers shared by the ledger and read-side tests ----

use std::collections::BTreeMap;
use std::time::Duration;

use bson::doc;
use cryptovault::store::read_models::balances::stored_row;
use cryptovault::store::read_models::runner;
use cryptovault_events::Units;
use cryptovault_projections::balances::Balances;
use reqwest::{Client as Http, StatusCode};
use serde_json::Value;

/// Signs `email` up, makes it an admin through the CLI, and logs in again (roles travel in the
/// token).
pub async fn admin(t: &TestDb, base: &str, email: &str) -> TestUser {
    signed_up(base, email).await;
    t.grant(email, "admin").await;
    logged_in(base, email).await
}

pub async fn post(base: &str, user: &TestUser, path: &str, body: Value) -> (StatusCode, Value) {
    let response = Http::new()
        .post(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn balance(
    base: &str,
    user: &TestUser,
    asset: &str,
    min_position: u64,
) -> (String, String, String) {
    let body: Value = Http::new()
        .get(format!(
            "{base}/api/wallet/balance?min_position={min_position}"
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = body["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .unwrap()
        .clone();
    let s = |k: &str| row[k].as_str().unwrap().to_owned();
    (s("available"), s("held"), s("total"))
}

pub async fn event_count(t: &TestDb) -> u64 {
    t.db()
        .collection::<bson::Document>("events")
        .count_documents(doc! {})
        .await
        .unwrap()
}

pub fn position(body: &Value) -> u64 {
    body["position"]
        .as_u64()
        .expect("write answers carry the position")
}

/// The balances read model as stored (exactly: `available` and `held` recombined from their
/// integer limbs), excluding rows that are all zero. Panics on a row that cannot be read
/// exactly.
pub async fn stored_balances(t: &TestDb) -> BTreeMap<(String, String), (Units, Units)> {
    use futures::TryStreamExt;
    let rows: Vec<bson::RawDocumentBuf> = t
        .db()
        .collection("balances")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let row = stored_row(r).unwrap_or_else(|why| panic!("{why}"));
            (
                (
                    r.get_str("owner").unwrap().to_owned(),
                    r.get_str("asset").unwrap().to_owned(),
                ),
                (row.available, row.held),
            )
        })
        .filter(|(_, (a, h))| !a.is_zero() || !h.is_zero())
        .collect()
}

/// A fresh fold of the whole log.
pub async fn fold_log(t: &TestDb) -> Balances {
    let store = t.store().await;
    let mut balances = Balances::default();
    let mut from = 1;
    loop {
        let events = store.read_all(from, 5000).await.unwrap();
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        for event in &events {
            balances.apply(event);
        }
    }
    balances
}

pub fn nonzero(fold: &Balances) -> BTreeMap<(String, String), (Units, Units)> {
    assert!(
        fold.unrepresentable.is_empty(),
        "{:?}",
        fold.unrepresentable
    );
    fold.rows
        .iter()
        .filter(|(_, r)| !r.available.is_zero() || !r.held.is_zero())
        .map(|(k, r)| (k.clone(), (r.available, r.held)))
        .collect()
}

pub async fn wait_for_projection(t: &TestDb, name: &str) {
    let head = t.store().await.head().await.unwrap().0;
    // Generous bound (two minutes): large tests project 100,000 events on a shared CI machine.
    for _ in 0..2400 {
        if runner::stored_checkpoint(&t.db(), name).await.unwrap() >= head {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("projection {name} did not reach {head}");
}

/// `GET base+path` as `user`: the status and the JSON body (`null` when there is none).
pub async fn get_json(base: &str, user: &TestUser, path: &str) -> (StatusCode, Value) {
    let response = Http::new()
        .get(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs `scripts/mongo.sh ARGS` with `env` on top of the test's environment: its stdout, or
/// its stderr as the error. For tests that run a node or set of their own (on their own port),
/// so that stopping or killing it disturbs no other test.
pub fn mongo_sh(args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mongo.sh");
    let mut command = std::process::Command::new(script);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run scripts/mongo.sh");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(format!(
            "mongo.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---- TestApp: a running service with typed request methods ----

/// A service on its own database, with one method per API call the tests make often.
pub struct TestApp {
    pub db: TestDb,
    pub base: String,
}

impl TestApp {
    pub async fn spawn(prefix: &str) -> Self {
        Self::spawn_with(prefix, &[]).await
    }

    pub async fn spawn_with(prefix: &str, overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::new(prefix).await;
        let base = spawn_app(&db, overrides).await;
        Self { db, base }
    }

    /// A signed-up, logged-in user.
    pub async fn user(&self, email: &str) -> TestUser {
        signed_up(&self.base, email).await
    }

    /// A signed-up admin (granted through the CLI), logged in.
    pub async fn admin(&self, email: &str) -> TestUser {
        admin(&self.db, &self.base, email).await
    }

    /// `POST /api/wallet/deposits`.
    pub async fn deposit(&self, user: &TestUser, asset: &str, amount: &str) -> (StatusCode, Value) {
        let body = serde_json::json!({ "asset": asset, "amount": amount });
        post(&self.base, user, "/api/wallet/deposits", body).await
    }

    /// `POST /api/wallet/withdrawals`.
    pub async fn withdraw(
        &self,
        user: &TestUser,
        asset: &str,
        amount: &str,
        address: &str,
    ) -> (StatusCode, Value) {
        let body = serde_json::json!({ "asset": asset, "amount": amount, "address": address });
        post(&self.base, user, "/api/wallet/withdrawals", body).await
    }

    /// `POST /api/wallet/transfers`.
    pub async fn transfer(
        &self,
        user: &TestUser,
        to_email: &str,
        asset: &str,
        amount: &str,
    ) -> (StatusCode, Value) {
        let body = serde_json::json!({ "to_email": to_email, "asset": asset, "amount": amount });
        post(&self.base, user, "/api/wallet/transfers", body).await
    }

    /// `POST /api/admin/withdrawals/{id}/{action}` with `body`.
    pub async fn withdrawal_action(
        &self,
        admin: &TestUser,
        id: &str,
        action: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let path = format!("/api/admin/withdrawals/{id}/{action}");
        post(&self.base, admin, &path, body).await
    }

    /// `(available, held, total)` of `asset` once the balances reach `min_position`.
    pub async fn balance(
        &self,
        user: &TestUser,
        asset: &str,
        min_position: u64,
    ) -> (String, String, String) {
        balance(&self.base, user, asset, min_position).await
    }

    /// Events in the log.
    pub async fn event_count(&self) -> u64 {
        event_count(&self.db).await
    }

    pub async fn finish(self) {
        self.db.drop_database().await;
    }
}
