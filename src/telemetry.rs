//! Structured logs (tracing, JSON lines) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber once; `RUST_LOG` filters (default `info`). Each line carries
/// the fields of the current span, so every line logged inside a request has its `request_id`.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide metrics recorder (installed on first use) and its render handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed already (e.g. by a test harness);
            // the handle then renders an empty registry rather than crashing the service.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// How long an awaited step may take before [`warn_if_slow`] reports it.
pub const SLOW_STEP: std::time::Duration = std::time::Duration::from_secs(2);

/// Awaits `step`; if it has not finished after [`SLOW_STEP`], logs a warning naming `what`
/// (and again when it finally finishes), so a stalled dependency is visible while it stalls.
/// The step itself is neither cancelled nor retried.
pub async fn warn_if_slow<F: std::future::IntoFuture>(what: &'static str, step: F) -> F::Output {
    let started = std::time::Instant::now();
    let mut step = std::pin::pin!(step.into_future());
    tokio::select! {
        output = &mut step => return output,
        () = tokio::time::sleep(SLOW_STEP) => {
            tracing::warn!(
                step = what,
                mongodb_pools = %crate::store::mongo_monitor::pool_snapshot(),
                "still waiting after {} s",
                SLOW_STEP.as_secs()
            );
        }
    }
    let output = step.await;
    tracing::warn!(
        step = what,
        took_ms = started.elapsed().as_millis() as u64,
        "slow step finished"
    );
    output
}
