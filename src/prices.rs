//! Market prices for `/api/prices` and `/ws/prices`.
//!
//! A background task refreshes a [`PriceSnapshot`] every `PRICE_INTERVAL_MS` and publishes it
//! on a watch channel. The source is the deterministic simulated feed by default; with
//! `PRICE_FEED=coincap` it asks CoinCap and, when CoinCap cannot be reached or answers
//! nonsense, serves the simulated quotes for that tick with `degraded: true`. Quotes are
//! informational (nothing in the ledger depends on them) but still exact decimals.
//!
//! The task also keeps a bounded [`PriceHistory`] (one snapshot per [`HISTORY_SPACING`] over
//! [`HISTORY_WINDOW`], held in memory only) for the 24-hour change that the predecessor's
//! client shows (`GET /api/crypto`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
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

/// How far apart the snapshots of a [`PriceHistory`] are, at least.
pub const HISTORY_SPACING: Duration = Duration::from_secs(60);
/// How far back a [`PriceHistory`] reaches: 24 hours.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Past snapshots, oldest first: at most one per `spacing`, none older than `window` before
/// the newest, so never more than `window / spacing + 1` (1,441 for a day of minutes). In
/// memory only: a restarted process starts a new history (its first snapshot).
#[derive(Debug, Clone)]
pub struct PriceHistory {
    samples: VecDeque<Arc<PriceSnapshot>>,
    spacing: chrono::Duration,
    window: chrono::Duration,
    capacity: usize,
}

impl Default for PriceHistory {
    fn default() -> Self {
        Self::new(HISTORY_SPACING, HISTORY_WINDOW)
    }
}

impl PriceHistory {
    /// A history keeping one snapshot per `spacing` (at least 1 ms) over `window`.
    pub fn new(spacing: Duration, window: Duration) -> Self {
        let spacing = spacing.max(Duration::from_millis(1));
        let capacity = usize::try_from(window.as_millis() / spacing.as_millis())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let to_chrono =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self {
            samples: VecDeque::new(),
            spacing: to_chrono(spacing),
            window: to_chrono(window),
            capacity,
        }
    }

    /// Keeps `snapshot` when it is at least `spacing` younger than the newest kept one (or the
    /// first), and forgets what is older than `window` before it. A snapshot dated before the
    /// newest kept one (a clock stepping back) is not kept.
    pub fn record(&mut self, snapshot: Arc<PriceSnapshot>) {
        let due = self
            .samples
            .back()
            .is_none_or(|last| snapshot.as_of - last.as_of >= self.spacing);
        if !due {
            return;
        }
        let horizon = snapshot.as_of - self.window;
        while self.samples.front().is_some_and(|s| s.as_of < horizon) {
            self.samples.pop_front();
        }
        self.samples.push_back(snapshot);
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `asset`'s quote in the oldest kept snapshot within `window` before `latest` (and not
    /// after it) from the same `source` as `latest` — quotes of the simulated feed and of
    /// CoinCap are not compared with each other. `None` when there is none.
    pub fn reference(&self, latest: &PriceSnapshot, asset: &str) -> Option<Decimal> {
        let horizon = latest.as_of - self.window;
        self.samples
            .iter()
            .filter(|s| s.source == latest.source && s.as_of >= horizon && s.as_of <= latest.as_of)
            .find_map(|s| s.prices.iter().find(|q| q.asset == asset))
            .map(|q| q.usd)
    }

    /// The percent change of `asset` from [`Self::reference`] to its quote in `latest`
    /// ([`percent_change`]); 0 without a reference or a quote.
    pub fn change_percent(&self, latest: &PriceSnapshot, asset: &str) -> Decimal {
        let current = latest.prices.iter().find(|q| q.asset == asset);
        match (self.reference(latest, asset), current) {
            (Some(reference), Some(current)) => percent_change(reference, current.usd),
            _ => percent_change(Decimal::ZERO, Decimal::ZERO),
        }
    }
}

/// `(new - old) / old × 100`, rounded half-even to 2 decimal places and written with exactly
/// 2 (`1.50`, `-0.25`, `0.00`; never `-0.00`). A display figure, not money. 0 when `old` is
/// not positive or the figure is beyond `Decimal`'s range.
pub fn percent_change(old: Decimal, new: Decimal) -> Decimal {
    let exact = if old > Decimal::ZERO {
        new.checked_sub(old)
            .and_then(|d| d.checked_div(old))
            .and_then(|r| r.checked_mul(Decimal::ONE_HUNDRED))
    } else {
        None
    };
    let mut rounded = exact
        .unwrap_or(Decimal::ZERO)
        .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    if rounded.is_zero() {
        rounded = Decimal::ZERO;
    }
    rounded.rescale(2);
    rounded
}

/// The latest prices and their recent history; cheap to clone.
#[derive(Clone)]
pub struct Prices {
    latest: watch::Receiver<Arc<PriceSnapshot>>,
    history: Arc<Mutex<PriceHistory>>,
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
        let first = Arc::new(first);
        let mut history = PriceHistory::default();
        history.record(first.clone());
        let history = Arc::new(Mutex::new(history));
        let (tx, rx) = watch::channel(first);
        tokio::spawn(refresh(settings, assets, tx, history.clone()));
        Self {
            latest: rx,
            history,
        }
    }

    pub fn latest(&self) -> Arc<PriceSnapshot> {
        self.latest.borrow().clone()
    }

    /// The latest snapshot and, for each of its quotes in order, the percent change over the
    /// last 24 hours ([`PriceHistory::change_percent`]): 0 right after start.
    pub fn latest_with_change(&self) -> (Arc<PriceSnapshot>, Vec<Decimal>) {
        let latest = self.latest();
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = latest
            .prices
            .iter()
            .map(|q| history.change_percent(&latest, &q.asset))
            .collect();
        (latest, changes)
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
    history: Arc<Mutex<PriceHistory>>,
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
        let snapshot = Arc::new(snapshot);
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(snapshot.clone());
        if tx.send(snapshot).is_err() {
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

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn percent_change_rounds_half_even_to_two_places() {
        assert_eq!(percent_change(d("100"), d("101.5")).to_string(), "1.50");
        assert_eq!(percent_change(d("60000"), d("60000")).to_string(), "0.00");
        assert_eq!(percent_change(d("200"), d("150")).to_string(), "-25.00");
        // Exactly halfway: to the even neighbour.
        assert_eq!(percent_change(d("1000"), d("1000.05")).to_string(), "0.00");
        assert_eq!(percent_change(d("1000"), d("1000.15")).to_string(), "0.02");
        assert_eq!(percent_change(d("1000"), d("1000.25")).to_string(), "0.02");
        assert_eq!(percent_change(d("1000"), d("1000.35")).to_string(), "0.04");
        assert_eq!(percent_change(d("1000"), d("999.85")).to_string(), "-0.02");
        // A change that rounds to nothing is 0.00, never -0.00.
        assert_eq!(percent_change(d("1000"), d("999.95")).to_string(), "0.00");
        assert_eq!(percent_change(d("1000"), d("999.99")).to_string(), "0.00");
        // No meaningful reference: 0.
        assert_eq!(percent_change(d("0"), d("5")).to_string(), "0.00");
        assert_eq!(percent_change(d("-1"), d("5")).to_string(), "0.00");
        // Beyond Decimal's range: 0, no panic.
        assert_eq!(
            percent_change(d("0.0000000000000000000000000001"), Decimal::MAX).to_string(),
            "0.00"
        );
    }

    fn snapshot(source: &'static str, secs: i64, btc: &str) -> Arc<PriceSnapshot> {
        Arc::new(PriceSnapshot {
            source,
            degraded: false,
            as_of: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            prices: vec![
                Quote {
                    asset: "BTC".into(),
                    usd: d(btc),
                },
                Quote {
                    asset: "USD".into(),
                    usd: Decimal::ONE,
                },
            ],
        })
    }

    #[test]
    fn the_history_keeps_one_snapshot_a_minute_for_a_day() {
        let mut history = PriceHistory::default();
        let first = snapshot("simulated", 0, "100");
        history.record(first.clone());
        // Right after start the reference is the latest itself: no change.
        assert_eq!(history.change_percent(&first, "BTC").to_string(), "0.00");
        // Sooner than a minute after the last kept one: not kept.
        history.record(snapshot("simulated", 30, "150"));
        assert_eq!(history.len(), 1);
        let later = snapshot("simulated", 59, "110");
        assert_eq!(history.change_percent(&later, "BTC").to_string(), "10.00");
        // Two days of 2-second ticks: bounded, and the reference is about a day old.
        for tick in 1..=(2 * 24 * 1800) {
            history.record(snapshot("simulated", tick * 2, &format!("{}", 100 + tick)));
        }
        assert!(history.len() <= 24 * 60 + 1, "{}", history.len());
        let latest = snapshot("simulated", 2 * 24 * 3600, "200");
        // Kept: every whole minute; the oldest within the day before the latest is the one
        // exactly 24 h before it (tick 43,200).
        assert_eq!(history.len(), 24 * 60 + 1);
        assert_eq!(history.reference(&latest, "BTC"), Some(d("43300")));
        assert_eq!(history.change_percent(&latest, "BTC").to_string(), "-99.54");
        // An asset the history never quoted: 0.
        assert_eq!(history.change_percent(&latest, "ETH").to_string(), "0.00");
        // Another source's quotes are no reference.
        let coincap = snapshot("coincap", 2 * 24 * 3600 + 60, "200");
        assert_eq!(history.reference(&coincap, "BTC"), None);
        assert_eq!(history.change_percent(&coincap, "BTC").to_string(), "0.00");
        history.record(coincap.clone());
        assert_eq!(history.reference(&coincap, "BTC"), Some(d("200")));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_history_bounded_and_ordered() {
        let mut history = PriceHistory::new(Duration::from_secs(60), Duration::from_secs(600));
        history.record(snapshot("simulated", 1_000, "100"));
        history.record(snapshot("simulated", 10, "50"));
        assert_eq!(history.len(), 1);
        for minute in 1..100 {
            history.record(snapshot("simulated", 1_000 + minute * 60, "100"));
        }
        assert_eq!(history.len(), 11);
    }
}
