//! CryptoVault Ledger service: the only crate that knows MongoDB, HTTP, clocks and
//! configuration. See ARCHITECTURE.md for the map.

/// `cryptovault audit …`: the offline verifier of receipts and consistency bundles (no MongoDB,
/// no configuration); the checks are in `cryptovault_events::bundle`.
pub mod audit_cli;
/// Command-line interface (`serve`, `verify`).
pub mod cli;
/// Configuration from the environment.
pub mod config;
/// HTTP routers, middleware and the HTTP error type.
pub mod http;
/// Idempotency-Key records.
pub mod idempotency;
/// Users, sessions, CSRF, TOTP, roles.
pub mod identity;
/// The continuous invariant checker (follows the log; metrics and error logs).
pub mod invariant_monitor;
/// Assets, accounts and the commands that move money.
pub mod ledger;
/// Proof of liabilities: issuance at a checkpoint, users' bundles, the offline verifier.
pub mod liabilities;
/// The log's Merkle tree and its signed checkpoints (issue 16).
pub mod notary;
/// Client-given periods and instants (RFC 3339) and their MongoDB range.
pub mod period;
/// Market prices (simulated feed, CoinCap adapter).
pub mod prices;
pub mod privacy;
/// Connecting, building and serving the application.
pub mod startup;
/// Account statements (CSV / JSON export).
pub mod statement;
/// Everything that knows MongoDB: the event store, read models, snapshots, sessions,
/// idempotency records.
pub mod store;
/// Logging and metrics set-up.
pub mod telemetry;

/// mimalloc instead of the system allocator: under `cargo bench --bench ledger_load`, perf put
/// about a third of the service's samples in glibc's malloc and free (arena locks, chunk
/// consolidation). Declared here so the binary, the tests and the benchmarks all use it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
