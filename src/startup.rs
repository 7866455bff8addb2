//! Builds the application: connects to MongoDB, opens the event store, assembles the router,
//! binds the listener (port 0 in tests) and serves until shutdown.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use mongodb::{Client, Database};
use tokio::net::TcpListener;

use crate::config::{Config, StoreSettings};
use crate::store::{EventStore, StoreConfig};
use crate::telemetry;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: EventStore,
    pub db: Database,
    pub metrics: PrometheusHandle,
}

/// Connects to MongoDB with the settings' URL. Fails fast (5 s) if no server answers.
pub async fn connect(settings: &StoreSettings) -> anyhow::Result<Client> {
    let mut options = mongodb::options::ClientOptions::parse(&settings.mongo_url)
        .await
        .context("MONGO_URL is not a valid MongoDB connection string")?;
    options.app_name = Some("cryptovault".into());
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let client = Client::with_options(options).context("MONGO_URL")?;
    Ok(client)
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: AppState,
}

impl Application {
    /// Connects, opens the store and binds `config.host:config.port`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let client = connect(&config.store).await?;
        let store = EventStore::open(&client, &config.store.db_name, StoreConfig::default())
            .await
            .context("opening the event store (is MongoDB running as a replica set?)")?;
        let state = AppState {
            db: client.database(&config.store.db_name),
            store,
            metrics: telemetry::metrics_handle(),
            config: Arc::new(config),
        };
        let address = (state.config.host, state.config.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {}:{}", address.0, address.1))?;
        let router = crate::http::router(state.clone());
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
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("http server")
    }
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
