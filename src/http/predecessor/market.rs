//! The predecessor's market data and background pings.
//!
//! - `GET /api/crypto`: `{"cryptocurrencies":[{id, symbol, name, price, change_24h, market_cap,
//!   volume_24h, image}]}`, one entry per configured asset except `USD`, in the order of the
//!   latest price snapshot (`GET /api/prices`, which holds every configured asset: never an
//!   empty list while a non-dollar asset is configured). `price` is that snapshot's exact quote
//!   in USD as a JSON number literal with its digits. `change_24h` is a *display figure, not
//!   money*: the percent change from the oldest quote this process holds from the last 24 hours
//!   (from the same feed; one kept per minute, in memory: 0 right after start), rounded
//!   half-even to 2 places ([`crate::prices::percent_change`]). This service has no market
//!   capitalisation, volume or logo data: `market_cap`, `volume_24h` and `image` are `null`.
//! - `GET /csrf`, `GET /ping`, `GET /api/ping`: the old client calls them on every page load and
//!   ignores the answer; each is a constant 200 `{"status":"ok"}` that touches no database. (This
//!   service's CSRF token comes with login and refresh, see `http/extract.rs`.)

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::asset_identity;
use super::number::JsonNumber;
use crate::http::views::StatusBody;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crypto))
        .routes(routes!(csrf))
        .routes(routes!(ping))
        .routes(routes!(api_ping))
}

/// `GET /api/crypto`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CryptoList {
    /// Every configured asset except `USD`.
    pub cryptocurrencies: Vec<Cryptocurrency>,
}

/// One asset as the predecessor's Markets page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cryptocurrency {
    /// A lower-case slug: `bitcoin`, `ethereum`, `tether`, `usd-coin`, `binancecoin`,
    /// `solana`; for other assets the lower-case asset code.
    #[schema(example = "bitcoin")]
    pub id: String,
    /// The asset code, upper-case.
    #[schema(example = "BTC")]
    pub symbol: String,
    /// The asset's name (`Bitcoin`, …); for assets without a known name the asset code.
    #[schema(example = "Bitcoin")]
    pub name: String,
    /// The latest quote in USD, exactly as `GET /api/prices` has it.
    pub price: JsonNumber,
    /// Percent change over the last 24 hours (at most: from the oldest quote this process holds
    /// from them), rounded half-even to 2 places. A display figure, not money.
    pub change_24h: JsonNumber,
    /// Always `null`: this service has no market capitalisation data.
    #[schema(required = true)]
    pub market_cap: Option<JsonNumber>,
    /// Always `null`: this service has no trading volume data.
    #[schema(required = true)]
    pub volume_24h: Option<JsonNumber>,
    /// Always `null`: this service serves no logos.
    #[schema(required = true)]
    pub image: Option<String>,
}

/// Market data of every configured asset except `USD` (see the module docs).
#[utoipa::path(
    get,
    path = "/api/crypto",
    tag = super::TAG,
    responses((status = 200, description = "The latest quote and 24-hour change of every asset \
        except USD. `price` is the exact quote of `GET /api/prices` as a JSON number; \
        `change_24h` a percent rounded half-even to 2 places (0 right after start: the service \
        keeps its own history, in memory); `market_cap`, `volume_24h` and `image` are always \
        null.", body = CryptoList))
)]
async fn crypto(State(state): State<AppState>) -> Json<CryptoList> {
    let (latest, changes) = state.prices.latest_with_change();
    let cryptocurrencies = latest
        .prices
        .iter()
        .zip(changes)
        .filter(|(quote, _)| quote.asset != "USD")
        .map(|(quote, change)| {
            let (id, name) = asset_identity(&quote.asset);
            Cryptocurrency {
                id,
                symbol: quote.asset.to_ascii_uppercase(),
                name,
                price: JsonNumber(quote.usd),
                change_24h: JsonNumber(change),
                market_cap: None,
                volume_24h: None,
                image: None,
            }
        })
        .collect();
    Json(CryptoList { cryptocurrencies })
}

fn ok() -> Json<StatusBody> {
    Json(StatusBody {
        status: "ok".into(),
    })
}

/// The predecessor's CSRF warm-up call; answers `{"status":"ok"}` and sets nothing.
#[utoipa::path(
    get,
    path = "/csrf",
    tag = super::TAG,
    responses((status = 200, description = "`{\"status\":\"ok\"}`, always. The CSRF token of \
        this service comes with login and refresh (`csrf_token` cookie).", body = StatusBody))
)]
async fn csrf() -> Json<StatusBody> {
    ok()
}

/// The predecessor's footer ping; `{"status":"ok"}` without any database access.
#[utoipa::path(
    get,
    path = "/ping",
    tag = super::TAG,
    responses((status = 200, description = "`{\"status\":\"ok\"}`, always.", body = StatusBody))
)]
async fn ping() -> Json<StatusBody> {
    ok()
}

/// The predecessor's periodic API ping; `{"status":"ok"}` without any database access.
#[utoipa::path(
    get,
    path = "/api/ping",
    tag = super::TAG,
    responses((status = 200, description = "`{\"status\":\"ok\"}`, always.", body = StatusBody))
)]
async fn api_ping() -> Json<StatusBody> {
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn known_assets_have_the_predecessors_slugs_and_others_their_code() {
        let ids: Vec<(String, String)> = ["BTC", "ETH", "USDT", "USDC", "BNB", "SOL", "DOGE"]
            .into_iter()
            .map(asset_identity)
            .collect();
        let expected = [
            ("bitcoin", "Bitcoin"),
            ("ethereum", "Ethereum"),
            ("tether", "Tether"),
            ("usd-coin", "USD Coin"),
            ("binancecoin", "BNB"),
            ("solana", "Solana"),
            ("doge", "DOGE"),
        ];
        for ((id, name), (want_id, want_name)) in ids.iter().zip(expected) {
            assert_eq!((id.as_str(), name.as_str()), (want_id, want_name));
        }
    }

    #[test]
    fn an_entry_writes_exact_numbers_and_nulls() {
        let entry = Cryptocurrency {
            id: "ethereum".into(),
            symbol: "ETH".into(),
            name: "Ethereum".into(),
            price: JsonNumber("3012.345678901234567".parse::<Decimal>().unwrap()),
            change_24h: JsonNumber(Decimal::new(-125, 2)),
            market_cap: None,
            volume_24h: None,
            image: None,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"id":"ethereum","symbol":"ETH","name":"Ethereum","price":3012.345678901234567,"change_24h":-1.25,"market_cap":null,"volume_24h":null,"image":null}"#
        );
    }
}
