//! The writer's pipeline under injected MongoDB failures. The server's `failCommand` fail point
//! (mongod started with `enableTestCommands`, as `scripts/test.sh` does) fails commands of one
//! client only, chosen by its `appName`: inserts that fail inside a pipelined transaction, and
//! connections dropped under inserts, head-slot updates and commits.

use std::collections::{BTreeMap, HashSet};

use bson::{doc, Document};
use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use futures::future::join_all;
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::helpers::{event, mongo_url, TestDb};

const CALLERS: u64 = 48;
const APPENDS_PER_CALLER: u64 = 8;

#[tokio::test]
async fn pipelined_groups_survive_failed_inserts_and_dropped_connections() {
    let t = TestDb::new("faults").await;
    let app_name = format!("cv-{}", t.name);
    let mut options = ClientOptions::parse(mongo_url()).await.unwrap();
    options.app_name = Some(app_name.clone());
    let faulty = Client::with_options(options).unwrap();
    // Small groups, so that the callers fill four transactions and a failing one has others
    // in flight behind it.
    let config = StoreConfig {
        pipeline_depth: 4,
        max_group_events: 6,
        ..StoreConfig::default()
    };
    let store = EventStore::open(&faulty, &t.name, config).await.unwrap();

    // Each fault fires at random, with the probability beside it, so that the failures land
    // anywhere in the pipeline. A round sends some 60 transactions: at a tenth, the first two
    // rounds fired about 6 times and none at all in one run of 400 (e^-6), which failed CI by
    // bad luck; at a quarter they fire 18 to 36 times. The third fails three commands of each
    // transaction and fires 20 to 30 times at a tenth; more would only slow it down.
    let faults = [
        // A write conflict on the insert: the transaction fails where the pipeline's next one
        // may already have inserted on top of it.
        (
            0.25,
            doc! { "failCommands": ["insert"], "errorCode": 112_i32,
            "errorLabels": ["TransientTransactionError"], "appName": &app_name },
        ),
        // A commit that is held up and then fails: the transactions behind it in the pipeline
        // have inserted by then, and must abort instead of committing.
        (
            0.25,
            doc! { "failCommands": ["commitTransaction"], "blockConnection": true,
            "blockTimeMS": 20_i32, "errorCode": 112_i32,
            "errorLabels": ["TransientTransactionError"], "appName": &app_name },
        ),
        // The connection drops before the command runs: inserts and head-slot updates fail,
        // commits come back with an unknown outcome and are retried.
        (
            0.1,
            doc! { "failCommands": ["insert", "update", "commitTransaction"],
            "closeConnection": true, "appName": &app_name },
        ),
    ];
    let mut sent = HashSet::new();
    for (round, (probability, data)) in faults.into_iter().enumerate() {
        let mode = doc! { "activationProbability": probability };
        let before = fail_point(&t, mode, data).await;
        let results = join_all((0..CALLERS).map(|caller| {
            let store = store.clone();
            async move {
                let mut ids = Vec::new();
                for n in 0..APPENDS_PER_CALLER {
                    let e = event("faults", (round as u64 * 1000 + caller) * 100 + n);
                    ids.push(e.event_id);
                    let batch = AppendBatch::single(
                        format!("f-{}", caller % 12),
                        ExpectedVersion::Any,
                        vec![e],
                    );
                    store
                        .append(batch)
                        .await
                        .expect("appends retry through the faults");
                }
                ids
            }
        }))
        .await;
        let after = fail_point(&t, doc! {}, doc! {}).await;
        assert!(after > before, "round {round}: the fail point never fired");
        sent.extend(results.into_iter().flatten());
    }

    let total = 3 * CALLERS * APPENDS_PER_CALLER;
    let log = store.read_all(1, 10_000).await.unwrap();
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "gapless, in order"
    );
    let stored: HashSet<_> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(stored.len() as u64, total, "no event stored twice");
    assert_eq!(stored, sent, "every acknowledged event stored");
    let mut versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &log {
        versions
            .entry(&e.stream_id)
            .or_default()
            .push(e.stream_version);
    }
    for (stream, versions) in versions {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "stream {stream} versions gapless");
    }
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.head_position, total);
    t.drop_database().await;
}

/// Sets `failCommand` to `mode` with `data` (an empty `mode` turns it off). Returns how often
/// the fail point has fired since mongod started.
async fn fail_point(t: &TestDb, mode: Document, data: Document) -> i64 {
    let mode = if mode.is_empty() {
        bson::Bson::from("off")
    } else {
        mode.into()
    };
    let reply = t
        .client
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
        .expect("fail points need mongod with enableTestCommands (scripts/test.sh starts it so)");
    reply
        .get_i64("count")
        .or_else(|_| reply.get_i32("count").map(i64::from))
        .unwrap_or(0)
}
