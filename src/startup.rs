//! Builds the application: connects to MongoDB, opens the event store, assembles the router,
//! binds the listener (port 0 in tests) and serves until shutdown.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::rate_limit::{spawn_cleanup, RateLimiters};
use crate::http::AppState;
use crate::idempotency::IdempotencyKeys;
use crate::identity::csrf::CsrfTokens;
use crate::identity::service::IdentityStores;
use crate::identity::throttle::ThrottlePolicy;
use crate::identity::tokens::AccessTokens;
use crate::identity::{Identity, IdentitySettings};
use crate::ledger::service::Ledger;
use crate::prices::Prices;
use crate::privacy::BlindIndex;
use crate::store::credentials::Credentials;
use crate::store::login_throttle::LoginThrottle;
use crate::store::personal_keys::PersonalKeys;
use crate::store::read_models::audit::AuditModel;
use crate::store::read_models::balances::BalancesModel;
use crate::store::read_models::runner;
use crate::store::read_models::transactions::TransactionsModel;
use crate::store::read_models::withdrawals::WithdrawalsModel;
use crate::store::read_models::ReadModels;
use crate::store::sessions::Sessions;
use crate::store::snapshots::SnapshotStore;
use crate::store::{Database, EventStore, StoreConfig};
use crate::telemetry;

/// The identity service for `config` on `store`'s database.
pub async fn identity(
    config: &Config,
    store: EventStore,
    db: &Database,
) -> anyhow::Result<Identity> {
    let sessions = Sessions::open(db)
        .await
        .context("creating session collections")?;
    let issuer = config
        .public_api_url
        .clone()
        .unwrap_or_else(|| "cryptovault".to_owned());
    let tokens = AccessTokens::new(
        config.jwt_secret.expose(),
        &config.jwt_algorithm,
        issuer,
        config.auth.access_token_ttl,
    )?;
    let settings = IdentitySettings {
        throttle: ThrottlePolicy {
            free_failures: config.auth.login_max_failures,
            first_block: config.auth.login_lockout,
            max_block: config.auth.login_lockout_max,
            account_failures: config.auth.login_account_max_failures,
            account_window: config.auth.login_account_window,
        },
        refresh_ttl: config.auth.refresh_token_ttl,
    };
    let throttle = LoginThrottle::open(db)
        .await
        .context("creating the login throttle collection")?;
    let credentials = Credentials::open(db)
        .await
        .context("creating the credentials collection")?;
    let keys = PersonalKeys::open(db);
    let email_index = BlindIndex::new(config.email_index_key.expose());
    let stores = IdentityStores {
        sessions,
        throttle,
        credentials,
        keys,
    };
    Ok(Identity::new(store, stores, email_index, tokens, settings))
}

pub use crate::store::connect;

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: AppState,
}

impl Application {
    /// Connects, opens the store and binds `config.host:config.port`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.environment_defaulted {
            warn_environment_unset();
        }
        let client = connect(&config.store).await?;
        let store = EventStore::open(&client, &config.store.db_name, StoreConfig::default())
            .await
            .context("opening the event store (is MongoDB running as a replica set?)")?;
        let db = client.database(&config.store.db_name);
        let limiters = RateLimiters::new(config.rate_limits);
        spawn_cleanup(limiters.clone());
        let startup_head = store.head().await?.0;
        let balances =
            runner::spawn(client.clone(), db.clone(), store.clone(), BalancesModel).await?;
        let withdrawals =
            runner::spawn(client.clone(), db.clone(), store.clone(), WithdrawalsModel).await?;
        let transactions =
            runner::spawn(client.clone(), db.clone(), store.clone(), TransactionsModel).await?;
        let audit = runner::spawn(client.clone(), db.clone(), store.clone(), AuditModel).await?;
        // Follows the log from position 0 with the invariant checker (metrics, error logs).
        crate::invariant_monitor::spawn(store.clone());
        let notary = crate::notary::Notary::start(store.clone(), &db, &config.checkpoints);
        if notary.is_none() {
            tracing::warn!(
                "CHECKPOINT_SIGNING_KEY is not set: no Merkle tree is kept and no checkpoint is \
                 signed (the proof routes answer 503 checkpoints_disabled)"
            );
        }
        let asset_names = config.assets.iter().map(|(a, _)| a.to_owned()).collect();
        let state = AppState {
            prices: Prices::spawn(config.prices.clone(), asset_names),
            transactions,
            audit,
            ledger: Ledger::new(
                store.clone(),
                config.assets.clone(),
                SnapshotStore::new(&db),
            ),
            idempotency: IdempotencyKeys::open(&db).await?,
            balances,
            withdrawals,
            startup_head,
            notary,
            identity: identity(&config, store.clone(), &db).await?,
            csrf: CsrfTokens::new(config.csrf_secret.expose()),
            limiters,
            read_models: ReadModels::new(db),
            store,
            metrics: telemetry::metrics_handle(),
            config: Arc::new(config),
        };
        let address = (state.config.host, state.config.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {}:{}", address.0, address.1))?;
        let router = crate::http::router(state.clone())?;
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "listening");
        let edge = self.state.config.edge.clone();
        crate::http::server::serve(self.listener, self.router, &edge, shutdown).await;
        Ok(())
    }
}

/// `ENVIRONMENT` unset means development: open operational endpoints, weak secrets accepted.
/// Said loudly, in the log and on stderr (the log may go somewhere nobody reads at start-up).
fn warn_environment_unset() {
    const BANNER: &str = "ENVIRONMENT is not set: running as DEVELOPMENT (weak secrets accepted, \
                          /metrics and /ready details open). Set ENVIRONMENT=production for a \
                          real deployment, or ENVIRONMENT=development to silence this warning.";
    tracing::warn!("{}", "*".repeat(72));
    tracing::warn!("{BANNER}");
    tracing::warn!("{}", "*".repeat(72));
    eprintln!("WARNING: {BANNER}");
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}
