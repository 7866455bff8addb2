//! Catch-up subscriptions: order, completeness and resumption, with several writers.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use cryptovault_events::EventEnvelope;
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::helpers::{event, TestDb};

/// Collects `count` events from `subscription`, failing the test after `limit`.
async fn collect(
    subscription: impl Stream<Item = Result<EventEnvelope, cryptovault::store::StoreError>>,
    count: usize,
    limit: Duration,
) -> Vec<EventEnvelope> {
    let taken = subscription
        .take(count)
        .map(|r| r.expect("subscription item"))
        .collect::<Vec<_>>();
    tokio::time::timeout(limit, taken)
        .await
        .unwrap_or_else(|_| panic!("subscriber did not receive {count} events within {limit:?}"))
}

fn assert_gapless_from(events: &[EventEnvelope], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.position,
            first + i as u64,
            "delivered out of order or with a gap"
        );
    }
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "an event was delivered twice");
}

/// `tasks` concurrent tasks on `store`, each appending `per_task` single events to its own stream.
async fn append_load(store: EventStore, writer: &str, tasks: u64, per_task: u64) -> Vec<Uuid> {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            let writer = writer.to_owned();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..per_task {
                    let e = event(&writer, n);
                    ids.push(e.event_id);
                    store
                        .append(AppendBatch::single(
                            format!("{writer}-{task}"),
                            ExpectedVersion::Any,
                            vec![e],
                        ))
                        .await
                        .expect("append");
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_store_instances_append_while_a_subscriber_receives_every_event_once_in_order() {
    let t = TestDb::new("order").await;
    let (a, b) = (t.store().await, t.store().await);
    let reader = t.store().await;
    let subscriber = tokio::spawn(collect(reader.subscribe(0), 4000, Duration::from_secs(120)));

    let (ids_a, ids_b) = tokio::join!(append_load(a, "a", 8, 250), append_load(b, "b", 8, 250));
    let received = subscriber.await.unwrap();

    assert_gapless_from(&received, 1);
    let appended: HashSet<Uuid> = ids_a.into_iter().chain(ids_b).collect();
    let delivered: HashSet<Uuid> = received.iter().map(|e| e.event_id).collect();
    assert_eq!(appended, delivered);
    assert!(reader.verify().await.unwrap().is_intact());
    t.drop_database().await;
}

/// Not a test by itself: the body of each writer process that
/// `two_writer_processes_...` spawns. Does nothing unless `CV_CHILD_DB` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, spawned by two_writer_processes_append_while_a_subscriber_runs"]
async fn child_append_worker() {
    let (Ok(db), Ok(writer)) = (
        std::env::var("CV_CHILD_DB"),
        std::env::var("CV_CHILD_WRITER"),
    ) else {
        return;
    };
    let client = crate::helpers::client().await;
    let store = EventStore::open(&client, &db, StoreConfig::default())
        .await
        .unwrap();
    let ids = append_load(store, &writer, 16, 100).await;
    assert_eq!(ids.len(), 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writer_processes_append_while_a_subscriber_runs() {
    let t = TestDb::new("procs").await;
    let reader = t.store().await;
    let subscriber = tokio::spawn(collect(reader.subscribe(0), 3200, Duration::from_secs(180)));

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["p1", "p2"]
        .into_iter()
        .map(|writer| {
            tokio::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "subscription::child_append_worker",
                    "--test-threads=1",
                ])
                .env("CV_CHILD_DB", &t.name)
                .env("CV_CHILD_WRITER", writer)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn writer process")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().await.unwrap().success(),
            "a writer process failed"
        );
    }
    let received = subscriber.await.unwrap();
    assert_gapless_from(&received, 1);
    for writer in ["p1", "p2"] {
        let from_writer = received
            .iter()
            .filter(|e| e.payload["writer"] == writer)
            .count();
        assert_eq!(from_writer, 1600, "events of process {writer}");
    }
    assert!(reader.verify().await.unwrap().is_intact());
    t.drop_database().await;
}

#[tokio::test]
async fn a_subscription_resumes_from_its_checkpoint_after_subscriber_and_client_restart() {
    let t = TestDb::new("resume").await;
    let store = t.store().await;
    append_load(store.clone(), "r", 4, 25).await;

    let first = collect(store.subscribe(0), 40, Duration::from_secs(30)).await;
    assert_gapless_from(&first, 1);
    let checkpoint = first.last().unwrap().position;
    drop(store);
    drop(t.client.clone());

    // A brand-new client and store, as after a process restart.
    let client = crate::helpers::client().await;
    let store = EventStore::open(&client, &t.name, StoreConfig::default())
        .await
        .unwrap();
    let resumed = tokio::spawn(collect(
        store.subscribe(checkpoint),
        110,
        Duration::from_secs(30),
    ));
    append_load(store.clone(), "r2", 2, 25).await;
    let rest = resumed.await.unwrap();
    assert_gapless_from(&rest, checkpoint + 1);
    assert_eq!(rest.last().unwrap().position, 150);
    t.drop_database().await;
}

/// Runs `scripts/mongo.sh` for a private node on `port`, so restarting it disturbs no other test.
fn private_mongo(command: &str, port: u16) -> String {
    crate::helpers::mongo_sh(&[command], &[("CV_MONGO_PORT", port.to_string())])
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_mongod_restart() {
    const PORT: u16 = 27119;
    let url = tokio::task::spawn_blocking(|| private_mongo("start", PORT))
        .await
        .unwrap();
    let client = mongodb::Client::with_uri_str(format!("{url}&serverSelectionTimeoutMS=1000"))
        .await
        .unwrap();
    let db = format!("t_restart_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let store = EventStore::open(&client, &db, StoreConfig::default())
        .await
        .unwrap();
    append_load(store.clone(), "before", 2, 10).await;
    let subscriber = tokio::spawn(collect(store.subscribe(0), 40, Duration::from_secs(120)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    tokio::task::spawn_blocking(|| private_mongo("stop", PORT))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(|| private_mongo("start", PORT))
        .await
        .unwrap();

    // Appends after the restart reach the same subscriber.
    let mut appended = 0;
    while appended < 20 {
        let n = appended;
        match store
            .append(AppendBatch::single(
                "after",
                ExpectedVersion::Any,
                vec![event("after", n)],
            ))
            .await
        {
            Ok(_) => appended += 1,
            Err(e) => {
                eprintln!("append after restart not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let received = subscriber.await.unwrap();
    assert_gapless_from(&received, 1);
    client.database(&db).drop().await.unwrap();
    tokio::task::spawn_blocking(|| private_mongo("stop", PORT))
        .await
        .unwrap();
}
