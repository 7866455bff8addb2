//! Tampering directly in MongoDB is caught by `verify`, which names the position.

use bson::{doc, Document};
use cryptovault::store::{AppendBatch, ExpectedVersion};
use cryptovault_events::ChainBreakKind;
use mongodb::Collection;

use crate::helpers::{event, TestDb};

/// A database holding a valid chain of 20 events.
async fn log_of_twenty(prefix: &str) -> (TestDb, cryptovault::store::EventStore) {
    let t = TestDb::new(prefix).await;
    let store = t.store().await;
    for n in 0..20 {
        store
            .append(AppendBatch::single(
                format!("s{}", n % 3),
                ExpectedVersion::Any,
                vec![event("t", n)],
            ))
            .await
            .unwrap();
    }
    assert!(store.verify().await.unwrap().is_intact());
    (t, store)
}

fn events(t: &TestDb) -> Collection<Document> {
    t.db().collection("events")
}

#[tokio::test]
async fn a_changed_payload_is_named() {
    let (t, store) = log_of_twenty("tamper_payload").await;
    events(&t)
        .update_one(
            doc! { "position": 7_i64 },
            doc! { "$set": { "payload.amount": "1000000.00" } },
        )
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    let broken = report.first_break.expect("tampering detected");
    assert_eq!(broken.position, 7);
    assert!(matches!(broken.kind, ChainBreakKind::HashMismatch { .. }));
    assert_eq!(report.events_verified, 6);
    t.drop_database().await;
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let (t, store) = log_of_twenty("tamper_delete").await;
    events(&t)
        .delete_one(doc! { "position": 9_i64 })
        .await
        .unwrap();
    let broken = store
        .verify()
        .await
        .unwrap()
        .first_break
        .expect("deletion detected");
    assert_eq!(broken.position, 9);
    assert_eq!(broken.kind, ChainBreakKind::MissingPosition);
    t.drop_database().await;
}

#[tokio::test]
async fn a_deleted_last_event_is_named() {
    let (t, store) = log_of_twenty("tamper_tail").await;
    events(&t)
        .delete_one(doc! { "position": 20_i64 })
        .await
        .unwrap();
    let broken = store
        .verify()
        .await
        .unwrap()
        .first_break
        .expect("truncation detected");
    assert_eq!(broken.position, 20);
    assert_eq!(broken.kind, ChainBreakKind::MissingPosition);
    t.drop_database().await;
}

#[tokio::test]
async fn two_swapped_events_are_named() {
    let (t, store) = log_of_twenty("tamper_swap").await;
    let coll = events(&t);
    // Exchange the positions of events 5 and 6 (through a free slot, the index is unique).
    coll.update_one(
        doc! { "position": 5_i64 },
        doc! { "$set": { "position": 1_000_000_i64 } },
    )
    .await
    .unwrap();
    coll.update_one(
        doc! { "position": 6_i64 },
        doc! { "$set": { "position": 5_i64 } },
    )
    .await
    .unwrap();
    coll.update_one(
        doc! { "position": 1_000_000_i64 },
        doc! { "$set": { "position": 6_i64 } },
    )
    .await
    .unwrap();
    let broken = store
        .verify()
        .await
        .unwrap()
        .first_break
        .expect("swap detected");
    assert_eq!(broken.position, 5);
    t.drop_database().await;
}

#[tokio::test]
async fn the_verify_command_exits_non_zero_and_names_the_position() {
    let (t, store) = log_of_twenty("tamper_cli").await;
    let intact = t.cli(&["verify"]).await;
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("OK: 20 events"));

    events(&t)
        .update_one(
            doc! { "position": 12_i64 },
            doc! { "$set": { "metadata.actor": "mallory" } },
        )
        .await
        .unwrap();
    let broken = t.cli(&["verify"]).await;
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("position 12"));
    drop(store);
    t.drop_database().await;
}

#[tokio::test]
async fn the_verify_command_reports_a_negative_balance_written_around_the_ledger() {
    use cryptovault_events::ledger::{account_stream, TransferSent};
    use cryptovault_events::{DomainEvent, EventMetadata};
    let t = TestDb::new("verify_ledger").await;
    let store = t.store().await;
    // Appended straight to the store, bypassing the ledger's checks: a chain-valid log whose
    // ledger is not (the sender never had the money).
    let (from, to) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let sent = TransferSent {
        transfer_id: uuid::Uuid::now_v7(),
        from_user: from,
        to_user: to,
        asset: "USD".into(),
        amount: "5.00".parse().unwrap(),
        note: None,
    };
    store
        .append(AppendBatch::single(
            account_stream(from, "USD"),
            ExpectedVersion::Any,
            vec![sent.into_new_event(
                uuid::Uuid::now_v7(),
                chrono::Utc::now(),
                EventMetadata::default(),
            )],
        ))
        .await
        .unwrap();
    let out = t.cli(&["verify"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("OK: 1 events"), "{stdout}");
    assert!(
        stdout.contains(&format!("DOUBLE ENTRY: {from} USD: available -5.00")),
        "{stdout}"
    );
    assert!(
        stdout.contains("INVARIANT: position 1: negative_balance (TransferSent, account"),
        "{stdout}"
    );
    t.drop_database().await;
}
