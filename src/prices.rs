//! Market prices for `/api/prices` and `/ws/prices`.
//!
//! A background task refreshes a [`PriceSnapshot`] every `PRICE_INTERVAL_MS` and publishes it
//! on a watch channel. The source is the deterministic simulated feed by default; with
//! `PRICE_FEED=coincap` it asks CoinCap and, when CoinCap cannot be reached or answers
//! nonsense, serves the simulated quotes for that tick with `degraded: true`. Quotes are
//! informational (nothing in the ledger depends on them) but still exact decimals.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::PriceSettings;

/// One asset's price in US dollars.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quote {
    pub asset: String,
    /// A decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "64250.12")]
    pub usd: Decimal,
}

/// Every asset's quote at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PriceSnapshot {
    /// `simulated` or `coincap`.
    #[schema(value_type = String)]
    pub source: &'static str,
    /// True when the configured provider failed and these are simulated quotes.
    pub degraded: bool,
    pub as_of: DateTime<Utc>,
    pub prices: Vec<Quote>,
}

/// The starting price of the simulated feed, in USD.
fn base_price(asset: &str) -> Decimal {
    match asset {
        "BTC" => Decimal::from(60_000),
        "ETH" => Decimal::from(3_000),
        "BNB" => Decimal::from(600),
        "SOL" => Decimal::from(150),
        _ => Decimal::ONE,
    }
}

/// Stable-coins and dollars do not move in the simulation.
fn is_pegged(asset: &str) -> bool {
    matches!(asset, "USD" | "USDT" | "USDC")
}

/// A deterministic step in basis points, in [-25, 25], for `asset` at `tick` (a hash, so the
/// walk looks random but every run and every process sees the same prices).
fn step_bps(asset: &str, tick: u64) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in asset.bytes().chain(tick.to_le_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 51) as i64 - 25
}

/// The simulated feed: a deterministic random walk from [`base_price`], one step per tick.
/// Every run and every process sees the same prices at the same tick.
#[derive(Debug, Clone)]
pub struct SimulatedWalk {
    tick: u64,
    /// Unrounded prices, so that rounding never accumulates.
    prices: Vec<(String, Decimal)>,
}

impl SimulatedWalk {
    pub fn new<'a>(assets: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            tick: 0,
            prices: assets
                .into_iter()
                .map(|a| (a.to_owned(), base_price(a)))
                .collect(),
        }
    }

    pub fn advance(&mut self) {
        self.tick += 1;
        for (asset, price) in &mut self.prices {
            if !is_pegged(asset) {
                *price += (*price * Decimal::new(step_bps(asset, self.tick), 4)).round_dp(12);
            }
        }
    }

    /// The current quotes, rounded to cents.
    pub fn quotes(&self) -> Vec<Quote> {
        self.prices
            .iter()
            .map(|(asset, price)| Quote {
                asset: asset.clone(),
                usd: price.round_dp(2),
            })
            .collect()
    }
}

/// The simulated quotes at `tick`.
pub fn simulated_prices<'a>(assets: impl IntoIterator<Item = &'a str>, tick: u64) -> Vec<Quote> {
    let mut walk = SimulatedWalk::new(assets);
    for _ in 0..tick {
        walk.advance();
    }
    walk.quotes()
}

/// CoinCap's id of an asset symbol.
fn coincap_id(asset: &str) -> Option<&'static str> {
    Some(match asset {
        "BTC" => "bitcoin",
        "ETH" => "ethereum",
        "BNB" => "binance-coin",
        "SOL" => "solana",
        "USDT" => "tether",
        _ => return None,
    })
}

#[derive(Debug, serde::Deserialize)]
struct CoinCapAssets {
    data: Vec<CoinCapAsset>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CoinCapAsset {
    id: String,
    price_usd: String,
}

/// Quotes from CoinCap's `GET /assets?ids=…`; `USD` is 1 by definition.
async fn coincap_prices(
    client: &reqwest::Client,
    settings: &PriceSettings,
    assets: &[String],
) -> anyhow::Result<Vec<Quote>> {
    let ids: Vec<&str> = assets.iter().filter_map(|a| coincap_id(a)).collect();
    let url = format!(
        "{}/assets?ids={}",
        settings.coincap_url.trim_end_matches('/'),
        ids.join(",")
    );
    let mut request = client.get(url);
    if let Some(key) = &settings.coincap_api_key {
        request = request.bearer_auth(key.expose());
    }
    let body: CoinCapAssets = request.send().await?.error_for_status()?.json().await?;
    assets
        .iter()
        .map(|asset| {
            let usd = match coincap_id(asset) {
                None => Decimal::ONE,
                Some(id) => {
                    let found = body
                        .data
                        .iter()
                        .find(|a| a.id == id)
                        .ok_or_else(|| anyhow::anyhow!("CoinCap sent no price for {asset}"))?;
                    Decimal::from_str_exact(&found.price_usd)
                        .or_else(|_| found.price_usd.parse::<Decimal>())?
                        .round_dp(8)
                }
            };
            Ok(Quote {
                asset: asset.clone(),
                usd,
            })
        })
        .collect()
}

/// The latest prices; cheap to clone.
#[derive(Clone)]
pub struct Prices {
    latest: watch::Receiver<Arc<PriceSnapshot>>,
}

impl Prices {
    /// Starts the refresh task for `assets`.
    pub fn spawn(settings: PriceSettings, assets: Vec<String>) -> Self {
        // reqwest is built without a bundled TLS provider; use ring (already used by the
        // MongoDB driver). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let first = PriceSnapshot {
            source: "simulated",
            degraded: settings.coincap,
            as_of: Utc::now(),
            prices: simulated_prices(assets.iter().map(String::as_str), 0),
        };
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(refresh(settings, assets, tx));
        Self { latest: rx }
    }

    pub fn latest(&self) -> Arc<PriceSnapshot> {
        self.latest.borrow().clone()
    }

    /// Wakes on every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<PriceSnapshot>> {
        self.latest.clone()
    }
}

async fn refresh(
    settings: PriceSettings,
    assets: Vec<String>,
    tx: watch::Sender<Arc<PriceSnapshot>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build();
    let mut interval = tokio::time::interval(settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut walk = SimulatedWalk::new(assets.iter().map(String::as_str));
    interval.tick().await; // the first tick completes at once; the initial snapshot covers it
    loop {
        interval.tick().await;
        walk.advance();
        let simulated = walk.quotes();
        let snapshot = if settings.coincap {
            let fetched = match &client {
                Ok(client) => coincap_prices(client, &settings, &assets).await,
                Err(e) => Err(anyhow::anyhow!("building the HTTP client: {e}")),
            };
            match fetched {
                Ok(prices) => PriceSnapshot {
                    source: "coincap",
                    degraded: false,
                    as_of: Utc::now(),
                    prices,
                },
                Err(error) => {
                    tracing::warn!(%error, "CoinCap unavailable; serving simulated prices");
                    metrics::counter!("price_feed_failures_total").increment(1);
                    PriceSnapshot {
                        source: "simulated",
                        degraded: true,
                        as_of: Utc::now(),
                        prices: simulated,
                    }
                }
            }
        } else {
            PriceSnapshot {
                source: "simulated",
                degraded: false,
                as_of: Utc::now(),
                prices: simulated,
            }
        };
        if tx.send(Arc::new(snapshot)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_feed_is_deterministic_and_pegs_dollars() {
        let a = simulated_prices(["BTC", "USD", "USDT"], 50);
        let b = simulated_prices(["BTC", "USD", "USDT"], 50);
        assert_eq!(a, b);
        assert_eq!(a[1].usd, Decimal::ONE);
        assert_eq!(a[2].usd, Decimal::ONE);
        assert_ne!(a[0].usd, simulated_prices(["BTC"], 0)[0].usd);
        assert!(a[0].usd > Decimal::ZERO);
    }
}
