//! Append semantics: conflicts, atomicity, idempotent retries, durability shape, schema.

use std::collections::HashSet;

use bson::doc;
use cryptovault::store::{AppendBatch, AppendError, ExpectedVersion};
use futures::future::join_all;

use crate::helpers::{event, TestDb};

#[tokio::test]
async fn same_expected_version_exactly_one_of_two_appends_wins() {
    let t = TestDb::new("conflict").await;
    // Two store instances: their appends meet in two competing transactions, not in one group.
    let (a, b) = (t.store().await, t.store().await);
    a.append(AppendBatch::single(
        "acct-1",
        ExpectedVersion::NoStream,
        vec![event("setup", 0)],
    ))
    .await
    .unwrap();

    for round in 1..=20u64 {
        let first = a.append(AppendBatch::single(
            "acct-1",
            ExpectedVersion::Exact(round),
            vec![event("a", round)],
        ));
        let second = b.append(AppendBatch::single(
            "acct-1",
            ExpectedVersion::Exact(round),
            vec![event("b", round)],
        ));
        let (first, second) = tokio::join!(first, second);
        let wins = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {first:?} / {second:?}");
        let loser = if first.is_ok() { second } else { first };
        assert!(
            matches!(loser, Err(AppendError::Conflict { ref stream_id, actual, .. }) if stream_id == "acct-1" && actual == round + 1),
            "{loser:?}"
        );
    }
    let stream = a.read_stream("acct-1", 1, 1000).await.unwrap();
    assert_eq!(stream.len(), 21);
    assert!(stream
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == i as u64 + 1));
    t.drop_database().await;
}

#[tokio::test]
async fn many_concurrent_appends_with_one_expected_version_only_one_wins() {
    let t = TestDb::new("conflict_many").await;
    let store = t.store().await;
    let attempts = (0..32).map(|i| {
        store.append(AppendBatch::single(
            "hot",
            ExpectedVersion::NoStream,
            vec![event("w", i)],
        ))
    });
    let results = join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, AppendError::Conflict { .. })));
    assert_eq!(
        t.db()
            .collection::<bson::Document>("events")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
    t.drop_database().await;
}

#[tokio::test]
async fn a_batch_over_two_streams_with_one_wrong_version_writes_nothing() {
    let t = TestDb::new("atomic").await;
    let store = t.store().await;
    store
        .append(AppendBatch::single(
            "b",
            ExpectedVersion::NoStream,
            vec![event("x", 1)],
        ))
        .await
        .unwrap();
    let (head_before, hash_before) = store.head().await.unwrap();

    let batch = AppendBatch::single(
        "a",
        ExpectedVersion::NoStream,
        vec![event("x", 2), event("x", 3)],
    )
    .with("b", ExpectedVersion::Exact(7), vec![event("x", 4)]);
    let err = store.append(batch).await.unwrap_err();
    assert!(
        matches!(err, AppendError::Conflict { ref stream_id, actual: 1, .. } if stream_id == "b"),
        "{err:?}"
    );

    assert!(store.read_stream("a", 1, 10).await.unwrap().is_empty());
    assert_eq!(store.read_stream("b", 1, 10).await.unwrap().len(), 1);
    assert_eq!(store.head().await.unwrap(), (head_before, hash_before));
    let db = t.db();
    assert_eq!(
        db.collection::<bson::Document>("events")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.collection::<bson::Document>("event_streams")
            .count_documents(doc! { "_id": "a" })
            .await
            .unwrap(),
        0
    );

    // The same two streams with correct versions commit together, in one contiguous run.
    let ok = AppendBatch::single("a", ExpectedVersion::NoStream, vec![event("x", 5)]).with(
        "b",
        ExpectedVersion::Exact(1),
        vec![event("x", 6)],
    );
    let result = store.append(ok).await.unwrap();
    let positions: Vec<u64> = result.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![2, 3]);
    t.drop_database().await;
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_same_positions_and_writes_nothing() {
    let t = TestDb::new("idempotent").await;
    let store = t.store().await;
    let batch = AppendBatch::single(
        "s1",
        ExpectedVersion::NoStream,
        vec![event("r", 1), event("r", 2)],
    )
    .with("s2", ExpectedVersion::Any, vec![event("r", 3)]);
    let first = store.append(batch.clone()).await.unwrap();
    assert!(!first.already_appended);
    // Other appends in between, so the retry cannot be confused with "append at the head".
    store
        .append(AppendBatch::single(
            "s3",
            ExpectedVersion::Any,
            vec![event("r", 4)],
        ))
        .await
        .unwrap();

    let retry = store.append(batch.clone()).await.unwrap();
    assert!(retry.already_appended);
    assert_eq!(retry.events, first.events);
    // The retry still succeeds although `NoStream` no longer holds: it is recognised first.
    let other_instance = t.store().await.append(batch.clone()).await.unwrap();
    assert_eq!(other_instance.events, first.events);
    // Concurrent retries of one batch all get the same answer.
    let concurrent = join_all((0..16).map(|_| store.append(batch.clone()))).await;
    assert!(concurrent
        .iter()
        .all(|r| r.as_ref().unwrap().events == first.events));

    let count = t
        .db()
        .collection::<bson::Document>("events")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(count, 4);

    // A batch that reuses only some ids is not a retry.
    let mixed = AppendBatch::single(
        "s1",
        ExpectedVersion::Any,
        vec![batch.streams[0].events[0].clone(), event("r", 9)],
    );
    assert!(matches!(
        store.append(mixed).await,
        Err(AppendError::IdempotencyMismatch { .. })
    ));
    t.drop_database().await;
}

#[tokio::test]
async fn malformed_batches_are_refused_before_reaching_mongodb() {
    let t = TestDb::new("invalid").await;
    let store = t.store().await;
    let e = event("v", 1);
    let cases = [
        AppendBatch::default(),
        AppendBatch::single("", ExpectedVersion::Any, vec![event("v", 2)]),
        AppendBatch::single("s", ExpectedVersion::Any, vec![e.clone(), e.clone()]),
        AppendBatch::single("s", ExpectedVersion::Any, vec![event("v", 3)]).with(
            "s",
            ExpectedVersion::Any,
            vec![event("v", 4)],
        ),
    ];
    for batch in cases {
        assert!(matches!(
            store.append(batch).await,
            Err(AppendError::Invalid(_))
        ));
    }
    assert_eq!(store.head().await.unwrap().0, 0);
    t.drop_database().await;
}

#[tokio::test]
async fn concurrent_appends_are_group_committed_into_a_gapless_log() {
    let t = TestDb::new("group").await;
    let store = t.store().await;
    let results = join_all((0..500u64).map(|i| {
        let store = store.clone();
        async move {
            store
                .append(AppendBatch::single(
                    format!("g-{}", i % 50),
                    ExpectedVersion::Any,
                    vec![event("g", i)],
                ))
                .await
                .unwrap()
        }
    }))
    .await;
    let positions: HashSet<u64> = results.iter().map(|r| r.last_position()).collect();
    assert_eq!(positions, (1..=500).collect());
    let log = store.read_all(1, 1000).await.unwrap();
    assert_eq!(log.len(), 500);
    for stream in 0..50 {
        let events = store
            .read_stream(&format!("g-{stream}"), 1, 100)
            .await
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    }
    assert!(store.verify().await.unwrap().is_intact());
    t.drop_database().await;
}

#[tokio::test]
async fn schema_set_up_is_idempotent_and_the_validator_rejects_malformed_documents() {
    let t = TestDb::new("schema").await;
    let _first = t.store().await;
    let _second = t.store().await; // ensure() again on an existing database
    let events = t.db().collection::<bson::Document>("events");
    let names: HashSet<String> = events
        .list_index_names()
        .await
        .unwrap()
        .into_iter()
        .collect();
    for expected in ["_id_", "position_unique", "stream_version_unique"] {
        assert!(
            names.contains(expected),
            "missing index {expected}: {names:?}"
        );
    }
    let malformed = doc! { "_id": "not-a-uuid", "stream_id": "s", "position": 1_i64 };
    let err = events.insert_one(malformed).await.unwrap_err();
    assert!(
        err.to_string().contains("Document failed validation"),
        "{err}"
    );
    t.drop_database().await;
}

#[tokio::test]
async fn stored_events_round_trip_with_their_envelope() {
    let t = TestDb::new("roundtrip").await;
    let store = t.store().await;
    let mut sent = event("rt", 1);
    sent.metadata.request_id = Some("req-1".into());
    sent.metadata.ip = Some("127.0.0.1".into());
    sent.payload = serde_json::json!({ "nested": { "b": [1, 2, {"z": null}], "a": "ü" }, "amount": "0.00150000" });
    let placed = store
        .append(AppendBatch::single(
            "rt",
            ExpectedVersion::NoStream,
            vec![sent.clone()],
        ))
        .await
        .unwrap();
    let stored = store.read_stream("rt", 1, 1).await.unwrap().remove(0);
    assert_eq!(stored.event_id, sent.event_id);
    assert_eq!(stored.position, placed.last_position());
    assert_eq!(stored.payload, sent.payload);
    assert_eq!(stored.metadata, sent.metadata);
    assert_eq!(stored.occurred_at, sent.occurred_at);
    assert_eq!(
        stored.hash,
        cryptovault_events::canonical::event_hash(&stored)
    );
    t.drop_database().await;
}

#[tokio::test]
async fn two_instances_appending_any_to_one_stream_keep_its_versions_gapless() {
    // Each instance caches stream versions; the other's appends make that cache stale, which the
    // unique (stream_id, stream_version) index must catch and the retry must repair.
    let t = TestDb::new("stale_cache").await;
    let (a, b) = (t.store().await, t.store().await);
    let run = |store: cryptovault::store::EventStore, name: &'static str| async move {
        for n in 0..60 {
            store
                .append(AppendBatch::single(
                    "shared",
                    ExpectedVersion::Any,
                    vec![event(name, n)],
                ))
                .await
                .expect("an Any append never fails on a stale cache");
        }
    };
    tokio::join!(run(a.clone(), "a"), run(b.clone(), "b"));
    let versions: Vec<u64> = a
        .read_stream("shared", 1, 500)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=120).collect::<Vec<_>>());
    assert!(b.verify().await.unwrap().is_intact());
    t.drop_database().await;
}

#[tokio::test]
async fn a_writer_behind_another_process_continues_the_log_and_the_chain() {
    // Writer `a` plans on the head and stream versions its own commits left. Here both are
    // stale in turn: the head (b appended since a's last commit), then a stream version (b's
    // append to "s" came before a's last commit, which touched another stream).
    let t = TestDb::new("stale_head").await;
    let (a, b) = (t.store().await, t.store().await);
    let one = |stream: &str, n: u64| {
        AppendBatch::single(stream, ExpectedVersion::Any, vec![event(stream, n)])
    };
    let placed =
        |r: cryptovault::store::AppendResult| (r.events[0].position, r.events[0].stream_version);
    assert_eq!(placed(a.append(one("s", 1)).await.unwrap()), (1, 1));
    assert_eq!(placed(b.append(one("s", 2)).await.unwrap()), (2, 2));
    assert_eq!(placed(a.append(one("t", 3)).await.unwrap()), (3, 1));
    assert_eq!(placed(a.append(one("s", 4)).await.unwrap()), (4, 3));
    let conflict = a
        .append(AppendBatch::single(
            "s",
            ExpectedVersion::Exact(2),
            vec![event("s", 5)],
        ))
        .await;
    assert!(
        matches!(conflict, Err(AppendError::Conflict { actual: 3, .. })),
        "{conflict:?}"
    );
    assert_eq!(placed(b.append(one("s", 6)).await.unwrap()), (5, 4));
    let report = a.verify().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events_verified, report.head_position), (5, 5));
    t.drop_database().await;
}
