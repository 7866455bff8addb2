//! The predecessor's web client (`predecessor-api.md`: React + Vite, cookie sessions with CSRF)
//! against this service, unchanged. Every route here is a thin adapter: it translates the old
//! client's body (JSON-number amounts, lower-case currencies, `skip` offsets) into the native
//! domain values and calls the same ledger commands, queries and idempotency rules as the native
//! API — no rule is implemented twice. Where the old client calls a native path
//! (`GET /api/wallet/balance`, `GET /api/transactions`, `/ws/prices`, `/api/config`), the native
//! handler answers with additive keys instead (see those modules).
//!
//! Money leaves these routes as JSON *number* literals with the exact decimal digits
//! ([`number::JsonNumber`]) and arrives as JSON numbers read from their literal text
//! ([`number::LiteralJson`]), never through `f64`.

/// The history in the old client's shape: offset pages, its `type` values, its rows.
pub mod history;
/// `GET /api/crypto`, `GET /csrf`, `GET /ping`, `GET /api/ping`.
mod market;
/// Exact JSON number literals in and out.
pub mod number;
/// `GET /api/wallet/transfers`.
mod transfers;
/// `POST /api/wallet/deposit/create`, `POST /api/wallet/withdraw`, `POST /api/wallet/transfer`,
/// `GET /api/portfolio`, and the `wallet` key of `GET /api/wallet/balance`.
pub mod wallet;

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "predecessor";

/// The predecessor's slug and display name of `asset` (an upper-case code).
pub fn asset_identity(asset: &str) -> (String, String) {
    let known = match asset {
        "BTC" => Some(("bitcoin", "Bitcoin")),
        "ETH" => Some(("ethereum", "Ethereum")),
        "USDT" => Some(("tether", "Tether")),
        "USDC" => Some(("usd-coin", "USD Coin")),
        "BNB" => Some(("binancecoin", "BNB")),
        "SOL" => Some(("solana", "Solana")),
        "USD" => Some(("usd", "US Dollar")),
        _ => None,
    };
    match known {
        Some((id, name)) => (id.to_owned(), name.to_owned()),
        None => (asset.to_ascii_lowercase(), asset.to_owned()),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(market::router())
        .merge(transfers::router())
        .merge(wallet::router())
}
