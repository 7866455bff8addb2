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
