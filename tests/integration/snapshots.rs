//! Account snapshots: a ledger that does not have an account cached starts from its snapshot and
//! folds only the events after it; snapshots never disagree with a fold of the whole log.

use std::time::Duration;

use bson::{doc, Document};
use cryptovault::identity::RequestMeta;
use cryptovault::ledger::account::AccountState;
use cryptovault::ledger::amount::Assets;
use cryptovault::ledger::service::{CommandIds, Ledger, TransferRequest};
use cryptovault::store::snapshots::{SnapshotStore, COLLECTION};
use cryptovault_events::ledger::{account_stream, credits_stream};
use cryptovault_events::Units;
use mongodb::Collection;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::TestDb;

const EVERY: u64 = 20;

async fn ledger(t: &TestDb) -> Ledger {
    Ledger::new(
        t.store().await,
        Assets::default(),
        SnapshotStore::new(&t.db()),
    )
    .with_snapshot_every(EVERY)
}

fn snapshots(t: &TestDb) -> Collection<Document> {
    t.db().collection(COLLECTION)
}

/// The account folded from both of its streams, from version 1.
async fn full_fold(t: &TestDb, user: Uuid) -> AccountState {
    let store = t.store().await;
    let mut events = store
        .read_stream(&account_stream(user, "SOL"), 1, usize::MAX >> 1)
        .await
        .unwrap();
    events.extend(
        store
            .read_stream(&credits_stream(user, "SOL"), 1, usize::MAX >> 1)
            .await
            .unwrap(),
    );
    AccountState::fold(user, "SOL", &events)
}

/// The stored snapshot of `user`'s SOL account once `ready` accepts it (snapshots are written
/// in the background).
async fn snapshot_when(t: &TestDb, user: Uuid, ready: impl Fn(&Document) -> bool) -> Document {
    let id = account_stream(user, "SOL");
    for _ in 0..100 {
        if let Some(found) = snapshots(t).find_one(doc! { "_id": &id }).await.unwrap() {
            if ready(&found) {
                return found;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no snapshot of {id} as expected");
}

/// `deposits` deposits of 0.1 SOL to `user`, then `transfers` transfers of 0.01 SOL from `user`
/// to a second user, one after another (each decided on the ledger's cached account).
async fn history(ledger: &Ledger, user: Uuid, deposits: usize, transfers: usize) {
    let meta = RequestMeta::default();
    futures::future::join_all(
        (0..deposits)
            .map(|_| ledger.deposit(user, "SOL", Decimal::new(1, 1), CommandIds::fresh(), &meta)),
    )
    .await
    .into_iter()
    .for_each(|d| {
        d.unwrap();
    });
    let other = Uuid::now_v7();
    for _ in 0..transfers {
        let request = TransferRequest {
            from: user,
            to: other,
            asset: "SOL".into(),
            amount: Decimal::new(1, 2),
            note: None,
        };
        ledger
            .transfer(&request, CommandIds::fresh(), &meta)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_not_in_the_cache_starts_from_its_snapshot_and_folds_only_what_follows() {
    let t = TestDb::new("snapshot_load").await;
    let user = Uuid::now_v7();
    let first = ledger(&t).await;
    history(&first, user, 60, 5).await;
    let full = full_fold(&t, user).await;
    assert_eq!((full.version(), full.credits_version()), (5, 60));

    // Folding 60 deposits on the first transfer's load (a fold of committed events) stored it.
    let stored = snapshot_when(&t, user, |_| true).await;
    assert!(stored.get_i64("credits_version").unwrap() >= 60);

    // A second process (empty cache) gets the same state as a fold of the whole log.
    assert_eq!(ledger(&t).await.account(user, "SOL").await.unwrap(), full);

    // It did start from the snapshot: an altered snapshot shows through (snapshots are derived
    // data, trusted like the database that holds them).
    let stored_available: Units = stored.get_str("available").unwrap().parse().unwrap();
    let thousand: Units = "1000".parse().unwrap();
    snapshots(&t)
        .update_one(
            doc! { "_id": account_stream(user, "SOL") },
            doc! { "$set": { "available": stored_available.checked_add(thousand).unwrap().to_string() } },
        )
        .await
        .unwrap();
    let from_altered = ledger(&t).await.account(user, "SOL").await.unwrap();
    assert_eq!(
        from_altered.available(),
        full.available().checked_add(thousand).unwrap()
    );
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_ahead_of_the_log_or_of_another_format_is_ignored_and_replaced() {
    let t = TestDb::new("snapshot_ignore").await;
    let user = Uuid::now_v7();
    history(&ledger(&t).await, user, 30, 2).await;
    let full = full_fold(&t, user).await;
    snapshot_when(&t, user, |_| true).await;
    let id = account_stream(user, "SOL");

    // A database restored to an earlier point than its snapshots: versions the log lacks.
    snapshots(&t)
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": { "version": 40_i64, "available": "1000000" } },
        )
        .await
        .unwrap();
    assert_eq!(ledger(&t).await.account(user, "SOL").await.unwrap(), full);

    // A snapshot written by a version whose fold meant something else.
    snapshots(&t)
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": { "format": 0, "version": 2_i64, "available": "1000000" } },
        )
        .await
        .unwrap();
    assert_eq!(ledger(&t).await.account(user, "SOL").await.unwrap(), full);
    // Folding the log from the start stored a snapshot of the current format in its place.
    let renewed = snapshot_when(&t, user, |s| {
        s.get_i32("format") == Ok(cryptovault::store::snapshots::codec::FORMAT)
    })
    .await;
    assert_eq!(
        renewed
            .get_str("available")
            .unwrap()
            .parse::<Units>()
            .unwrap(),
        full.available()
    );
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_cached_account_renews_its_snapshot_from_committed_events() {
    let t = TestDb::new("snapshot_renew").await;
    let user = Uuid::now_v7();
    let busy = ledger(&t).await;
    // Ten deposits, then transfers decided on the cached account (no reads): the snapshot is
    // renewed in the background every EVERY events, from the log, never from the cache.
    history(&busy, user, 10, 3 * EVERY as usize).await;
    let full = full_fold(&t, user).await;
    let renewed = snapshot_when(&t, user, |s| {
        s.get_i64("version").unwrap_or(0) >= 2 * EVERY as i64
    })
    .await;
    let id = account_stream(user, "SOL");
    let version = u64::try_from(renewed.get_i64("version").unwrap()).unwrap();
    let credits_version = u64::try_from(renewed.get_i64("credits_version").unwrap()).unwrap();
    let store = t.store().await;
    let mut prefix = store.read_stream(&id, 1, version as usize).await.unwrap();
    prefix.extend(
        store
            .read_stream(&credits_stream(user, "SOL"), 1, credits_version as usize)
            .await
            .unwrap(),
    );
    assert_eq!(
        cryptovault::store::snapshots::codec::decode(&renewed, user, "SOL").unwrap(),
        AccountState::fold(user, "SOL", &prefix),
        "a snapshot is exactly the fold of the events up to its versions"
    );
    assert_eq!(ledger(&t).await.account(user, "SOL").await.unwrap(), full);
    t.drop_database().await;
}
