//! A writer process killed with `kill -9` inside an append transaction leaves that transaction
//! open on the server, its inserted positions blocking every other writer's inserts. The
//! survivors must get past it within seconds, without waiting for the server's
//! `transactionLifetimeLimitSeconds` (here raised to 60, MongoDB's default, to prove it).
//!
//! The test runs a private mongod (so raising the limit and the fail point disturb no other
//! test), a victim writer in a second OS process whose `commitTransaction` the `failCommand`
//! fail point holds up (its transaction open, positions inserted), kills it with SIGKILL at that
//! moment, and times the survivor's appends from the kill.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use futures::TryStreamExt;
use mongodb::Client;

use crate::helpers::event;

/// Longest the survivor's appends may be held up by the dead writer's open transaction.
const MAX_STALL: Duration = Duration::from_secs(3);

/// A private single node with test commands, on a port the system found free and with its data
/// in a directory of its own (deleted with it), so that concurrent runs of this test never share
/// it.
struct PrivateNode {
    port: u16,
    root: tempfile::TempDir,
}

impl PrivateNode {
    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let base = std::env::var("CV_MONGO_RUN_ROOT").unwrap_or_else(|_| "/tmp".into());
        std::fs::create_dir_all(&base).unwrap();
        let root = tempfile::Builder::new()
            .prefix("crashed-writer-")
            .tempdir_in(base)
            .expect("a data directory");
        Self { port, root }
    }
}

/// Runs `scripts/mongo.sh` for the private node.
fn private_mongo(node: &PrivateNode, command: &str) -> String {
    let root = node.root.path().to_string_lossy().into_owned();
    crate::helpers::mongo_sh(
        &[command],
        &[
            ("CV_MONGO_PORT", node.port.to_string()),
            ("CV_MONGO_RUN_ROOT", root),
            ("CV_MONGO_CACHE_GB", "0.25".into()),
            ("CV_MONGO_TEST_COMMANDS", "1".into()),
            // A single node, whatever the caller's environment says.
            ("CV_MONGO_MEMBERS", "1".into()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Not a test by itself: the victim writer process that
/// `a_writer_killed_inside_its_transaction_does_not_stall_the_others` spawns. Opens a store
/// and appends; the fail point holds its first commit until it is killed. Does nothing unless
/// `CV_VICTIM_URL` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, spawned by a_writer_killed_inside_its_transaction_does_not_stall_the_others"]
async fn victim_writer_process() {
    let (Ok(url), Ok(db)) = (
        std::env::var("CV_VICTIM_URL"),
        std::env::var("CV_VICTIM_DB"),
    ) else {
        return;
    };
    let client = Client::with_uri_str(url).await.unwrap();
    let store = EventStore::open(&client, &db, StoreConfig::default())
        .await
        .unwrap();
    let _ = store
        .append(AppendBatch::single(
            "victim",
            ExpectedVersion::Any,
            vec![event("victim", 0)],
        ))
        .await;
    // Killed long before this.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_inside_its_transaction_does_not_stall_the_others() {
    let node = std::sync::Arc::new(PrivateNode::new());
    let url = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || private_mongo(&node, "start"))
            .await
            .unwrap()
    };
    let admin = Client::with_uri_str(&url).await.unwrap();
    set_transaction_lifetime(&admin, 60).await;
    let db = format!(
        "t_crash_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let outcome = tokio::spawn(killed_writer_scenario(url.clone(), db.clone())).await;
    // Clean up whatever happened.
    let _ = fail_point(&admin, bson::Bson::from("off"), doc! {}).await;
    set_transaction_lifetime(&admin, 10).await;
    let _ = admin.database(&db).drop().await;
    {
        let node = node.clone();
        tokio::task::spawn_blocking(move || private_mongo(&node, "stop"))
            .await
            .unwrap();
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn killed_writer_scenario(url: String, db: String) {
    let admin = Client::with_uri_str(&url).await.unwrap();
    let survivor_client = Client::with_uri_str(format!("{url}&appName=cv-survivor"))
        .await
        .unwrap();
    let survivor = EventStore::open(&survivor_client, &db, StoreConfig::default())
        .await
        .unwrap();
    for n in 0..3 {
        append_one(&survivor, n)
            .await
            .expect("appends before the crash");
    }

    // The victim's commit is held up: its transaction stays open with position 4 inserted.
    let victim_app = format!("cv-victim-{db}");
    fail_point(
        &admin,
        doc! { "times": 1_i32 }.into(),
        doc! { "failCommands": ["commitTransaction"], "blockConnection": true,
        "blockTimeMS": 120_000_i32, "appName": &victim_app },
    )
    .await
    .expect("fail points need mongod with enableTestCommands");
    let mut victim = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crashed_writer::victim_writer_process",
            "--test-threads=1",
        ])
        .env("CV_VICTIM_URL", format!("{url}&appName={victim_app}"))
        .env("CV_VICTIM_DB", &db)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the victim writer process");
    let waiting_since = Instant::now();
    while !commit_blocked(&admin, &victim_app).await {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(60),
            "the victim's commit never reached the fail point"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its heartbeats (if any) are fresh now; it dies mid-commit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.start_kill().expect("kill -9 the victim");
    victim.wait().await.unwrap();
    let killed_at = Instant::now();

    // The survivor's appends: eight callers, five appends each.
    let callers: Vec<_> = (0..8u64)
        .map(|caller| {
            let survivor = survivor.clone();
            tokio::spawn(async move {
                for n in 0..5 {
                    append_one(&survivor, 100 + caller * 10 + n).await?;
                }
                Ok::<_, String>(killed_at.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for caller in callers {
        match tokio::time::timeout(Duration::from_secs(30), caller).await {
            Ok(Ok(Ok(done))) => slowest = slowest.max(done),
            Ok(Ok(Err(error))) => panic!(
                "a survivor's append failed {:?} after the kill: {error}",
                killed_at.elapsed()
            ),
            Ok(Err(join)) => panic!("a survivor's caller panicked: {join}"),
            Err(_) => panic!("the survivor's appends did not finish within 30 s of the kill"),
        }
    }
    eprintln!("survivor's 40 appends done {slowest:?} after the kill");
    assert!(
        slowest < MAX_STALL,
        "the dead writer's transaction held the survivor's appends up for {slowest:?}"
    );

    // The dead writer's event was never committed; the log is gapless and intact.
    let log = survivor.read_all(1, 1000).await.unwrap();
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=43).collect::<Vec<_>>());
    assert!(log.iter().all(|e| e.stream_id != "victim"));
    assert!(survivor.verify().await.unwrap().is_intact());
}

async fn append_one(store: &EventStore, n: u64) -> Result<(), String> {
    store
        .append(AppendBatch::single(
            "survivor",
            ExpectedVersion::Any,
            vec![event("survivor", n)],
        ))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether a `commitTransaction` of `app_name` is running (held by the fail point).
async fn commit_blocked(admin: &Client, app_name: &str) -> bool {
    let ops: Vec<Document> = admin
        .database("admin")
        .aggregate([
            doc! { "$currentOp": { "allUsers": true } },
            doc! { "$match": { "appName": app_name, "command.commitTransaction": { "$exists": true } } },
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    !ops.is_empty()
}

async fn set_transaction_lifetime(admin: &Client, seconds: i32) {
    admin
        .database("admin")
        .run_command(doc! { "setParameter": 1, "transactionLifetimeLimitSeconds": seconds })
        .await
        .expect("setParameter transactionLifetimeLimitSeconds");
}

async fn fail_point(
    admin: &Client,
    mode: bson::Bson,
    data: Document,
) -> mongodb::error::Result<Document> {
    admin
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
}

/// The other side of the rule: a writer that is alive but slow (its commit held up for 4 s,
/// longer than a dead writer's heartbeat may be silent) keeps its transaction. The survivor's
/// appends wait for it instead of ending its session, and it commits at the positions it
/// planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_writer_with_a_slow_commit_is_not_taken_for_dead() {
    let t = crate::helpers::TestDb::new("slowlive").await;
    let survivor = t.store().await;
    append_one(&survivor, 0).await.unwrap();
    let slow_app = format!("cv-slow-{}", t.name);
    let slow_client = Client::with_uri_str(format!(
        "{}&appName={slow_app}",
        crate::helpers::mongo_url()
    ))
    .await
    .unwrap();
    let slow = EventStore::open(&slow_client, &t.name, StoreConfig::default())
        .await
        .unwrap();
    fail_point(
        &t.client,
        doc! { "times": 1_i32 }.into(),
        doc! { "failCommands": ["commitTransaction"], "blockConnection": true,
        "blockTimeMS": 4000_i32, "appName": &slow_app },
    )
    .await
    .expect("fail points need mongod with enableTestCommands (scripts/test.sh starts it so)");
    let slow_append = tokio::spawn(async move {
        slow.append(AppendBatch::single(
            "slow",
            ExpectedVersion::Any,
            vec![event("slow", 0)],
        ))
        .await
    });
    while !commit_blocked(&t.client, &slow_app).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    append_one(&survivor, 1)
        .await
        .expect("the survivor's append waits for the slow commit");
    let waited = started.elapsed();
    let slow_result = slow_append.await.unwrap().expect("the slow writer commits");
    let _ = fail_point(&t.client, bson::Bson::from("off"), doc! {}).await;

    eprintln!("survivor waited {waited:?} for the live writer's slow commit");
    // Had the survivor ended the slow writer's session (which the slow writer survives: it
    // reruns its append), it would have got through after about 1.5 s.
    assert!(
        waited > Duration::from_secs(3),
        "the survivor got through after {waited:?}: it ended a live writer's transaction"
    );
    assert_eq!(slow_result.events[0].position, 2, "{slow_result:?}");
    let log = survivor.read_all(1, 10).await.unwrap();
    let streams: Vec<&str> = log.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["survivor", "slow", "survivor"]);

    // The slow store is gone (its task dropped the last handle): its writer removed its
    // registration; the survivor's, with its session ids, remains.
    let registrations = t.db().collection::<Document>("writer_sessions");
    let waiting_since = Instant::now();
    loop {
        let left: Vec<Document> = registrations
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        if left.len() == 1 {
            assert!(!left[0].get_array("lsids").unwrap().is_empty(), "{left:?}");
            break;
        }
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "registrations left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.drop_database().await;
}
