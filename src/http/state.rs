//! The state every handler shares: configuration, the event store, the services and the
//! projection handles. Built by `startup.rs`; the HTTP layer knows nothing of how.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::rate_limit::RateLimiters;
use crate::config::Config;
use crate::idempotency::IdempotencyKeys;
use crate::identity::csrf::CsrfTokens;
use crate::identity::Identity;
use crate::ledger::service::Ledger;
use crate::prices::Prices;
use crate::store::read_models::runner::ProjectionHandle;
use crate::store::read_models::ReadModels;
use crate::store::EventStore;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: EventStore,
    /// The read models' queries.
    pub read_models: ReadModels,
    pub metrics: PrometheusHandle,
    pub identity: Identity,
    pub csrf: CsrfTokens,
    pub limiters: Arc<RateLimiters>,
    pub ledger: Ledger,
    pub idempotency: IdempotencyKeys,
    pub balances: ProjectionHandle,
    pub withdrawals: ProjectionHandle,
    /// Transaction history and ledger entries (statements, balances as of an instant).
    pub transactions: ProjectionHandle,
    pub audit: ProjectionHandle,
    pub prices: Prices,
    /// The log's Merkle tree and checkpoints; `None` without `CHECKPOINT_SIGNING_KEY`.
    pub notary: Option<crate::notary::Notary>,
    /// The log head when the service started; `/ready` waits for projections to reach it.
    pub startup_head: u64,
}

impl AppState {
    /// Every projection this process runs.
    pub fn projections(&self) -> [&ProjectionHandle; 4] {
        [
            &self.balances,
            &self.withdrawals,
            &self.transactions,
            &self.audit,
        ]
    }
}
