//! The predecessor's wallet calls as thin adapters over the native wallet commands
//! (`crate::http::wallet::{run_deposit, run_withdrawal, run_transfer}`) and balance query:
//! `POST /api/wallet/deposit/create`, `POST /api/wallet/withdraw`, `POST /api/wallet/transfer`,
//! `GET /api/portfolio`, and the `wallet` key of `GET /api/wallet/balance`.
//!
//! Each write parses the old body (a JSON-number `amount` read from its literal text, a
//! `currency` in any letter case) into the native domain values and runs the native command
//! under the same `Idempotency-Key` rules (the old client sends none; a client that does gets
//! the native guarantees). Rejections are the native ones, in the same error shape. One
//! difference: a body of the wrong shape (a missing or unknown field, a wrong type) is refused
//! before the key is looked at, so it is not remembered under the key (it wrote nothing; the
//! native routes remember it and answer a later, valid body under the key 409).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::number::{amount_schema, JsonNumber, JsonNumberText, Literal, LiteralJson};
use crate::http::commands::{
    run_deposit, run_transfer, run_withdrawal, self_service_deposits, Transfer, Withdrawal,
};
use crate::http::error::ApiError;
use crate::http::extract::{AuthUser, Meta};
use crate::http::idempotent::{idempotent, IdempotencyKey};
use crate::http::read_models::current_balance;
use crate::http::views::{BalancesBody, ErrorBody};
use crate::http::AppState;
use crate::identity::domain::InvalidInput;
use crate::ledger::amount::Assets;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deposit_create))
        .routes(routes!(withdraw))
        .routes(routes!(transfer))
        .routes(routes!(portfolio))
}

/// The asset every predecessor deposit credits: its deposits were USD invoices.
const USD: &str = "USD";

/// The predecessor's smallest invoice, in USD.
const MIN_DEPOSIT_USD: Decimal = Decimal::TEN;

/// `POST /api/wallet/deposit/create`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositCreateRequest {
    /// US dollars to credit: a JSON number (or a decimal string) of at least 10 with at most
    /// USD's decimal places; no exponent.
    #[schema(schema_with = amount_schema, example = 100)]
    amount: Literal,
    /// The cryptocurrency the invoice would be paid in (`btc`, `eth`, `usdt`, `usdc`; any
    /// letter case): a configured asset.
    #[schema(example = "btc")]
    currency: String,
}

/// The answer to a deposit: the predecessor's invoice keys, then the native deposit.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositInvoice {
    /// Always `true` (a refusal is an error answer).
    success: bool,
    /// The deposit's id.
    #[serde(rename = "orderId")]
    order_id: Uuid,
    /// The US dollars credited.
    amount: JsonNumber,
    /// The invoice's currency as asked for, in lower case.
    currency: String,
    /// `completed`: self-service deposits are credited at once.
    status: String,
    /// Always `null`: no payment provider invoice is opened.
    #[serde(rename = "payAddress")]
    pay_address: Option<String>,
    /// Always `null`, as `payAddress`.
    #[serde(rename = "paymentUrl")]
    payment_url: Option<String>,
    /// Always `true`: a self-service (development and demo) deposit, not a payment.
    mock: bool,
    deposit: crate::http::views::DepositView,
    /// The log position of the event (pass as `min_position` to read your write).
    position: u64,
}

/// Credits the caller with `amount` US dollars at once: the predecessor's invoice flow with
/// a mock payment. Self-service like `POST /api/wallet/deposits` (403 with
/// `DEPOSITS_MODE=provider`, where money is credited by the payment provider's webhook or an
/// admin).
#[utoipa::path(
    post,
    path = "/api/wallet/deposit/create",
    tag = "predecessor",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = DepositCreateRequest,
    responses(
        (status = 201, description = "Credited.", body = DepositInvoice),
        (status = 403, description = "`forbidden`: self-service deposits are off.", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict` or `conflict`.", body = ErrorBody),
        (status = 422, description = "`validation_error` naming `amount` or `currency`, or `balance_limit`.", body = ErrorBody),
    )
)]
async fn deposit_create(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    LiteralJson(body): LiteralJson<DepositCreateRequest>,
) -> Response {
    if let Err(refused) = self_service_deposits(&state) {
        return refused.into_response();
    }
    let request = json!({ "amount": body.amount.get(), "currency": body.currency });
    let run = async |ids| {
        let assets = &state.ledger.assets;
        let currency = assets
            .asset_any_case(&body.currency, "currency")?
            .to_ascii_lowercase();
        let amount = usd_amount(assets, &body.amount)?;
        let created = run_deposit(&state, user.user_id(), USD.into(), amount, ids, &meta).await?;
        let invoice = DepositInvoice {
            success: true,
            order_id: created.deposit.id,
            amount: JsonNumber(amount),
            currency,
            status: created.deposit.status.clone(),
            pay_address: None,
            payment_url: None,
            mock: true,
            deposit: created.deposit,
            position: created.position,
        };
        Ok((StatusCode::CREATED, invoice))
    };
    let route = "/api/wallet/deposit/create";
    idempotent(&state, user.user_id(), &headers, route, &request, run).await
}

/// A deposit's `amount`: US dollars, at least [`MIN_DEPOSIT_USD`].
fn usd_amount(assets: &Assets, literal: &Literal) -> Result<Decimal, InvalidInput> {
    if assets.precision(USD).is_none() {
        return Err(InvalidInput {
            field: "amount",
            message: "is in US dollars, and USD is not a configured asset".into(),
        });
    }
    let amount = assets.amount_literal(literal.get(), USD, "amount")?;
    if amount < MIN_DEPOSIT_USD {
        return Err(InvalidInput {
            field: "amount",
            message: format!("must be at least {MIN_DEPOSIT_USD} USD"),
        });
    }
    Ok(amount)
}

/// `POST /api/wallet/withdraw`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    /// A JSON number (or a decimal string) with at most the asset's decimal places.
    #[schema(schema_with = amount_schema, example = 0.0015)]
    amount: Literal,
    /// A configured asset, any letter case (`btc`).
    #[schema(example = "btc")]
    currency: String,
    /// The destination: 1 to 128 printable ASCII characters.
    address: String,
}

/// A withdrawal as the predecessor's client sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyWithdrawal {
    id: Uuid,
    amount: JsonNumber,
    /// The asset code (upper case).
    currency: String,
    address: String,
    /// `pending` until an admin approves and completes or rejects it.
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawAnswer {
    /// Always `true` (a refusal is an error answer).
    success: bool,
    message: String,
    withdrawal: LegacyWithdrawal,
    /// The log position of the event.
    position: u64,
}

/// Requests a withdrawal (the amount is held until an admin approves and completes or
/// rejects it): `POST /api/wallet/withdrawals` with the predecessor's body.
#[utoipa::path(
    post,
    path = "/api/wallet/withdraw",
    tag = "predecessor",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = WithdrawRequest,
    responses(
        (status = 201, description = "Requested; the amount is held.", body = WithdrawAnswer),
        (status = 409, description = "`idempotency_conflict` or `conflict`.", body = ErrorBody),
        (status = 422, description = "`validation_error`, `insufficient_funds` or `balance_limit`.", body = ErrorBody),
    )
)]
async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    LiteralJson(body): LiteralJson<WithdrawRequest>,
) -> Response {
    let request = json!({
        "amount": body.amount.get(), "currency": body.currency, "address": body.address,
    });
    let run = async |ids| {
        let asset_amount = asset_and_amount(&state.ledger.assets, &body.currency, &body.amount)?;
        let withdrawal = Withdrawal::new(asset_amount.0, asset_amount.1, &body.address)?;
        let created = run_withdrawal(&state, user.user_id(), withdrawal, ids, &meta).await?;
        let w = created.withdrawal;
        let answer = WithdrawAnswer {
            success: true,
            message: format!("Withdrawal of {} {} requested", w.amount, w.asset),
            withdrawal: LegacyWithdrawal {
                id: w.id,
                amount: exact(&w.amount)?,
                currency: w.asset,
                address: w.address,
                status: w.status,
            },
            position: created.position,
        };
        Ok((StatusCode::CREATED, answer))
    };
    let route = "/api/wallet/withdraw";
    idempotent(&state, user.user_id(), &headers, route, &request, run).await
}

/// `POST /api/wallet/transfer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The recipient's email address (a registered user other than the caller).
    recipient_email: String,
    /// A JSON number (or a decimal string) with at most the asset's decimal places.
    #[schema(schema_with = amount_schema, example = 25)]
    amount: Literal,
    /// A configured asset, any letter case (`USD`).
    #[schema(example = "USD")]
    currency: String,
    /// At most 280 characters, no control characters.
    #[serde(default)]
    note: Option<String>,
}

/// A transfer as the predecessor's client sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyTransfer {
    id: Uuid,
    amount: JsonNumber,
    /// The asset code (upper case).
    currency: String,
    recipient_email: String,
    /// `completed`.
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferAnswer {
    /// Always `true` (a refusal is an error answer).
    success: bool,
    /// For people: what was sent to whom.
    message: String,
    transfer: LegacyTransfer,
    /// The log position of the event.
    position: u64,
}

/// Moves available funds to another user, atomically: `POST /api/wallet/transfers` with the
/// predecessor's body.
#[utoipa::path(
    post,
    path = "/api/wallet/transfer",
    tag = "predecessor",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = TransferRequest,
    responses(
        (status = 201, description = "Transferred.", body = TransferAnswer),
        (status = 409, description = "`idempotency_conflict` or `conflict`.", body = ErrorBody),
        (status = 422, description = "`validation_error` (also: no user has `recipient_email`, or it is the caller's), `insufficient_funds` or `balance_limit`.", body = ErrorBody),
    )
)]
async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    LiteralJson(body): LiteralJson<TransferRequest>,
) -> Response {
    let request = json!({
        "recipient_email": body.recipient_email, "amount": body.amount.get(),
        "currency": body.currency, "note": body.note,
    });
    let run = async |ids| {
        let assets = &state.ledger.assets;
        let recipient = body.recipient_email.as_str();
        // The recipient first, as the native route: a request wrong in both names the address.
        crate::identity::domain::Email::parse(recipient, "recipient_email")?;
        let asset_amount = asset_and_amount(assets, &body.currency, &body.amount)?;
        let request = Transfer::new(
            recipient,
            "recipient_email",
            asset_amount,
            body.note.as_deref(),
        )?;
        let created = run_transfer(&state, user.user_id(), request, ids, &meta).await?;
        let t = created.transfer;
        let answer = TransferAnswer {
            success: true,
            message: format!("Sent {} {} to {}", t.amount, t.asset, t.to_email),
            transfer: LegacyTransfer {
                id: t.id,
                amount: exact(&t.amount)?,
                currency: t.asset,
                recipient_email: t.to_email,
                status: t.status,
            },
            position: created.position,
        };
        Ok((StatusCode::CREATED, answer))
    };
    let route = "/api/wallet/transfer";
    idempotent(&state, user.user_id(), &headers, route, &request, run).await
}

/// `currency` (any letter case) and the `amount` literal, validated against the assets.
fn asset_and_amount(
    assets: &Assets,
    currency: &str,
    amount: &Literal,
) -> Result<(String, Decimal), InvalidInput> {
    let asset = assets.asset_any_case(currency, "currency")?;
    let amount = assets.amount_literal(amount.get(), &asset, "amount")?;
    Ok((asset, amount))
}

/// An amount the native view wrote (plain decimal text, at most 28 digits) as a number.
fn exact(text: &str) -> Result<JsonNumber, ApiError> {
    text.parse()
        .map(JsonNumber)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("amount {text:?}: {e}")))
}

/// `{"portfolio": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortfolioBody {
    portfolio: Portfolio,
}

/// The caller's holdings valued in US dollars at the latest quotes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Portfolio {
    /// The sum of the holdings' `value`s (USD).
    #[serde(rename = "totalBalance")]
    total_balance: JsonNumber,
    /// Every asset with a non-zero balance, in the order of `GET /api/wallet/balance`.
    holdings: Vec<Holding>,
    /// The log position the balances read model had applied.
    position: u64,
    /// The instant of the quotes used.
    prices_as_of: chrono::DateTime<chrono::Utc>,
}

/// One asset the caller holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holding {
    /// The asset code.
    symbol: String,
    /// The asset's name (`Bitcoin`), or its code.
    name: String,
    /// The balance, available plus held, exactly (as `total` in `GET /api/wallet/balance`).
    amount: JsonNumberText,
    /// The latest quote in USD.
    price: JsonNumber,
    /// A valuation, not a balance: `amount × price` in USD, rounded half-even to cents.
    value: JsonNumber,
}

/// The caller's portfolio: balances (from the balances read model, as
/// `GET /api/wallet/balance`) valued at the latest quotes (`GET /api/prices`).
#[utoipa::path(
    get,
    path = "/api/portfolio",
    tag = "predecessor",
    security(("bearer" = [])),
    responses((status = 200, description = "Holdings and their USD value.", body = PortfolioBody))
)]
async fn portfolio(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<PortfolioBody>, ApiError> {
    let balances = current_balance(&state, user.user_id()).await?;
    let prices = state.prices.latest();
    let quotes: BTreeMap<&str, Decimal> = prices
        .prices
        .iter()
        .map(|q| (q.asset.as_str(), q.usd))
        .collect();
    let mut holdings = Vec::new();
    let mut total = Decimal::ZERO;
    for row in &balances.balances {
        let zero = row.total.bytes().all(|b| b == b'0' || b == b'.');
        if zero {
            continue;
        }
        let price = quotes.get(row.asset.as_str()).copied().unwrap_or_default();
        let value = valuation(&row.total, price).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "{} {} at {price} USD is beyond a valuation",
                row.total,
                row.asset
            ))
        })?;
        total = total.checked_add(value).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("a portfolio total beyond a valuation"))
        })?;
        holdings.push(Holding {
            symbol: row.asset.clone(),
            name: super::asset_identity(&row.asset).1,
            amount: JsonNumberText::new(row.total.clone()).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("balance text {:?}", row.total))
            })?,
            price: JsonNumber(price),
            value: JsonNumber(value),
        });
    }
    Ok(Json(PortfolioBody {
        portfolio: Portfolio {
            total_balance: JsonNumber(total),
            holdings,
            position: balances.position,
            prices_as_of: prices.as_of,
        },
    }))
}

/// `amount × price` rounded half-even to cents, for a non-negative `amount` in plain decimal
/// text (a balance: up to 39 digits). Digits a `Decimal` cannot hold are dropped from the end
/// of the fraction first (they are below 10⁻⁸ of the asset for any balance the ledger can hold,
/// far below a cent at any quote); `None` when the value itself is beyond a `Decimal`.
pub fn valuation(amount: &str, price: Decimal) -> Option<Decimal> {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let whole = whole.trim_start_matches('0');
    let keep = 28usize.saturating_sub(whole.len()).min(fraction.len());
    let text = format!(
        "{}.{}",
        if whole.is_empty() { "0" } else { whole },
        &fraction[..keep]
    );
    let text = text.trim_end_matches('.');
    let amount: Decimal = text.parse().ok()?;
    let value = amount.checked_mul(price)?;
    Some(value.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven))
}

/// The `wallet` key `GET /api/wallet/balance` adds for the predecessor's client:
/// `{"balances": {"USD": 12.50, …}}`, each asset's *available* amount as an exact number.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyWallet {
    /// Available amounts by asset code, exact JSON numbers with the asset's places.
    #[schema(value_type = BTreeMap<String, f64>)]
    balances: BTreeMap<String, JsonNumberText>,
}

impl LegacyWallet {
    pub fn of(body: &BalancesBody) -> Result<Self, ApiError> {
        let balances = body
            .balances
            .iter()
            .map(|row| {
                let available = JsonNumberText::new(row.available.clone()).ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("balance text {:?}", row.available))
                })?;
                Ok((row.asset.clone(), available))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Self { balances })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valuation_is_the_exact_product_rounded_half_even_to_cents() {
        let price = Decimal::new(6_425_012, 2); // 64,250.12
        assert_eq!(
            valuation("0.50000000", price),
            Some(Decimal::new(3_212_506, 2))
        );
        assert_eq!(valuation("0.00000001", price), Some(Decimal::new(0, 2)));
        assert_eq!(
            valuation("12.50", Decimal::ONE),
            Some(Decimal::new(1250, 2))
        );
        // Half-even: 0.125 → 0.12, 0.135 → 0.14.
        assert_eq!(valuation("0.125", Decimal::ONE), Some(Decimal::new(12, 2)));
        assert_eq!(valuation("0.135", Decimal::ONE), Some(Decimal::new(14, 2)));
        // A balance of 39 digits (beyond a Decimal) is valued from its leading 28.
        let big = "170141183460469231731.687303715884105727"; // Units::MAX
        assert_eq!(
            valuation(big, Decimal::from(3_000)),
            Some("510423550381407695195061.91".parse().unwrap())
        );
        assert_eq!(valuation("0", price), Some(Decimal::ZERO));
    }

    #[test]
    fn the_legacy_wallet_maps_available_amounts_by_asset() {
        let body = BalancesBody {
            balances: vec![crate::http::views::BalanceRow {
                asset: "USD".into(),
                available: "12.50".into(),
                held: "1.00".into(),
                total: "13.50".into(),
            }],
            as_of: None,
            position: 3,
        };
        let wallet = LegacyWallet::of(&body).unwrap();
        assert_eq!(
            serde_json::to_string(&wallet).unwrap(),
            r#"{"balances":{"USD":12.50}}"#
        );
    }
}
