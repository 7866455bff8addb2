//! Watches the MongoDB driver's connection pools, so that a stall on the client side (an
//! exhausted or cleared pool) shows up in the logs and metrics rather than only as a slow request.
//! (Command events are left off: the driver clones every reply for them.)
//!
//! Metrics: `mongodb_connections_checked_out` (gauge), `mongodb_connection_checkouts_waiting`
//! (gauge), `mongodb_connection_checkout_seconds` (histogram).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mongodb::event::cmap::CmapEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;

/// A checkout slower than this is logged as a warning.
const SLOW: Duration = Duration::from_secs(1);

/// Connection counts of one client's pool.
#[derive(Default)]
struct PoolStats {
    max: u32,
    checked_out: AtomicI64,
    /// Checkouts started and not finished. A checkout abandoned by its caller (a cancelled
    /// request) never finishes, so this can over-count; `checked_out` is exact.
    waiting: AtomicI64,
    open: AtomicI64,
    /// Connections created but not yet ready (TCP connect + handshake), with their start.
    establishing: Mutex<std::collections::HashMap<u32, std::time::Instant>>,
}

/// Every live client's pool in this process (a test process runs many).
static POOLS: Mutex<Vec<Weak<PoolStats>>> = Mutex::new(Vec::new());

/// One line per live pool: `checked_out/max (waiting, open)`, for "still waiting" warnings.
pub fn pool_snapshot() -> String {
    let mut pools = POOLS.lock().expect("pool registry poisoned");
    pools.retain(|p| p.strong_count() > 0);
    pools
        .iter()
        .filter_map(Weak::upgrade)
        .map(|p| {
            let establishing = p.establishing.lock().expect("pool stats poisoned");
            let oldest = establishing.values().map(|t| t.elapsed().as_millis()).max();
            format!(
                "{}/{} checked out, {} waiting, {} open, {} establishing (oldest {} ms)",
                p.checked_out.load(Ordering::Relaxed),
                p.max,
                p.waiting.load(Ordering::Relaxed),
                p.open.load(Ordering::Relaxed),
                establishing.len(),
                oldest.unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Installs the pool watcher on `options`.
pub fn install(options: &mut ClientOptions) {
    let stats = Arc::new(PoolStats {
        max: options.max_pool_size.unwrap_or(10),
        ..PoolStats::default()
    });
    POOLS
        .lock()
        .expect("pool registry poisoned")
        .push(Arc::downgrade(&stats));
    options.cmap_event_handler = Some(EventHandler::callback(move |event: CmapEvent| {
        let s = &stats;
        match event {
            CmapEvent::ConnectionCheckoutStarted(_) => {
                let waiting = s.waiting.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!("mongodb_connection_checkouts_waiting").set(waiting as f64);
            }
            CmapEvent::ConnectionCheckedOut(e) => {
                s.waiting.fetch_sub(1, Ordering::Relaxed);
                let now = s.checked_out.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!("mongodb_connections_checked_out").set(now as f64);
                metrics::histogram!("mongodb_connection_checkout_seconds")
                    .record(e.duration.as_secs_f64());
                if e.duration > SLOW {
                    tracing::warn!(
                        waited_ms = e.duration.as_millis() as u64,
                        checked_out = now,
                        max_pool = s.max,
                        "slow MongoDB connection checkout"
                    );
                }
            }
            CmapEvent::ConnectionCheckoutFailed(e) => {
                s.waiting.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(reason = ?e.reason, "MongoDB connection checkout failed");
            }
            CmapEvent::ConnectionCheckedIn(_) => {
                let now = s.checked_out.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!("mongodb_connections_checked_out").set(now as f64);
            }
            CmapEvent::ConnectionCreated(e) => {
                s.open.fetch_add(1, Ordering::Relaxed);
                s.establishing
                    .lock()
                    .expect("pool stats poisoned")
                    .insert(e.connection_id, std::time::Instant::now());
            }
            CmapEvent::ConnectionReady(e) => {
                s.establishing
                    .lock()
                    .expect("pool stats poisoned")
                    .remove(&e.connection_id);
            }
            CmapEvent::ConnectionClosed(e) => {
                s.open.fetch_sub(1, Ordering::Relaxed);
                s.establishing
                    .lock()
                    .expect("pool stats poisoned")
                    .remove(&e.connection_id);
            }
            CmapEvent::PoolCleared(_) => tracing::warn!("MongoDB connection pool cleared"),
            _ => {}
        }
    }));
}
