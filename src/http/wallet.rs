//! `/api/wallet`: deposits, withdrawals, transfers, balances. Thin: parse the body into domain
//! values once ([`DepositRequest::parse`], …), run the ledger command under the idempotency
//! rules, answer with a typed body.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::commands::{
    run_deposit, run_transfer, run_withdrawal, self_service_deposits, Transfer, Withdrawal,
};
use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::idempotent::{idempotent, IdempotencyKey};
use super::json::{typed_body, ApiJson};
use super::paging::{number, parse_instant};
use super::predecessor::wallet::LegacyWallet;
use super::query::ApiQuery;
use super::read_models::{balance_json, current_balance};
use super::views::{
    BalanceRow, BalancesBody, DepositCreated, ErrorBody, TransferCreated, WithdrawalCreated,
};
use super::{read_your_writes, AppState};
use crate::identity::domain::{Email, InvalidInput};
use crate::ledger::amount::Assets;
use crate::store::read_models::EntriesBefore;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deposit))
        .routes(routes!(withdraw))
        .routes(routes!(transfer))
        .routes(routes!(balance))
}

/// `POST /api/wallet/deposits`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// A configured asset (`GET /api/config`), e.g. `BTC`.
    #[schema(example = "BTC")]
    asset: String,
    /// A decimal string with at most the asset's decimal places, above zero, at most
    /// `max_amount`; never a JSON number, never exponent notation.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    amount: Value,
}

impl DepositRequest {
    /// The asset and the exact amount.
    fn parse(&self, assets: &Assets) -> Result<(String, Decimal), InvalidInput> {
        asset_and_amount(assets, &self.asset, &self.amount)
    }
}

/// `POST /api/wallet/withdrawals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    #[schema(example = "BTC")]
    asset: String,
    /// As for a deposit.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    amount: Value,
    /// The destination: 1 to 128 printable ASCII characters (surrounding spaces trimmed).
    address: String,
}

impl WithdrawalRequest {
    fn parse(&self, assets: &Assets) -> Result<Withdrawal, InvalidInput> {
        let (asset, amount) = asset_and_amount(assets, &self.asset, &self.amount)?;
        Withdrawal::new(asset, amount, &self.address)
    }
}

/// `POST /api/wallet/transfers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequestBody {
    /// The recipient's email address (a registered user other than the caller).
    to_email: String,
    #[schema(example = "USDT")]
    asset: String,
    /// As for a deposit.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.000000")]
    amount: Value,
    /// At most 280 characters, no control characters.
    #[serde(default)]
    note: Option<String>,
}

impl TransferRequestBody {
    fn parse(&self, assets: &Assets) -> Result<Transfer, InvalidInput> {
        // The recipient first, as before: a request wrong in both reports the address.
        Email::parse(&self.to_email, "to_email")?;
        let asset_amount = asset_and_amount(assets, &self.asset, &self.amount)?;
        Transfer::new(
            &self.to_email,
            "to_email",
            asset_amount,
            self.note.as_deref(),
        )
    }
}

/// The `asset` and `amount` fields, validated against the configured assets.
fn asset_and_amount(
    assets: &Assets,
    asset: &str,
    amount: &Value,
) -> Result<(String, Decimal), InvalidInput> {
    let asset = assets.asset(asset, "asset")?;
    let amount = assets.amount(amount, &asset, "amount")?;
    Ok((asset, amount))
}

/// Credits the caller (self-service: development and demos; 403 with `DEPOSITS_MODE=provider`).
#[utoipa::path(
    post,
    path = "/api/wallet/deposits",
    tag = "wallet",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = DepositRequest,
    responses(
        (status = 201, description = "Deposited.", body = DepositCreated),
        (status = 409, description = "`idempotency_conflict` (the key was used with another request) or `conflict` (a request with this key is still running).", body = ErrorBody),
        (status = 422, description = "`validation_error` (a field, or the Idempotency-Key; the message starts with its name) or `balance_limit` (the balance could not be held exactly).", body = ErrorBody),
    )
)]
async fn deposit(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    if let Err(refused) = self_service_deposits(&state) {
        return refused.into_response();
    }
    let run = async |ids| {
        let (asset, amount) = typed_body::<DepositRequest>(&body)?.parse(&state.ledger.assets)?;
        let created = run_deposit(&state, user.user_id(), asset, amount, ids, &meta).await?;
        Ok((StatusCode::CREATED, created))
    };
    idempotent(
        &state,
        user.user_id(),
        &headers,
        "/api/wallet/deposits",
        &body,
        run,
    )
    .await
}

/// Places a hold for a withdrawal (status `pending` until an admin approves and completes or
/// rejects it).
#[utoipa::path(
    post,
    path = "/api/wallet/withdrawals",
    tag = "wallet",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = WithdrawalRequest,
    responses(
        (status = 201, description = "Requested; the amount is held.", body = WithdrawalCreated),
        (status = 409, description = "`idempotency_conflict` or `conflict` (a request with this key is still running).", body = ErrorBody),
        (status = 422, description = "`validation_error`, `insufficient_funds` or `balance_limit`.", body = ErrorBody),
    )
)]
async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async |ids| {
        let request = typed_body::<WithdrawalRequest>(&body)?.parse(&state.ledger.assets)?;
        let created = run_withdrawal(&state, user.user_id(), request, ids, &meta).await?;
        Ok((StatusCode::CREATED, created))
    };
    idempotent(
        &state,
        user.user_id(),
        &headers,
        "/api/wallet/withdrawals",
        &body,
        run,
    )
    .await
}

/// Moves available funds to another user, atomically.
#[utoipa::path(
    post,
    path = "/api/wallet/transfers",
    tag = "wallet",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body = TransferRequestBody,
    responses(
        (status = 201, description = "Transferred.", body = TransferCreated),
        (status = 409, description = "`idempotency_conflict` or `conflict` (a request with this key is still running).", body = ErrorBody),
        (status = 422, description = "`validation_error` (also: no user has `to_email`, or it is the caller's), `insufficient_funds` or `balance_limit`.", body = ErrorBody),
    )
)]
async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async |ids| {
        let request = typed_body::<TransferRequestBody>(&body)?.parse(&state.ledger.assets)?;
        let created = run_transfer(&state, user.user_id(), request, ids, &meta).await?;
        Ok((StatusCode::CREATED, created))
    };
    idempotent(
        &state,
        user.user_id(),
        &headers,
        "/api/wallet/transfers",
        &body,
        run,
    )
    .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// Wait (at most `read_your_writes_timeout_ms`) until the read model has applied this
    /// position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
    /// The balances at this instant (RFC 3339), from the ledger entries.
    #[param(value_type = Option<DateTime<Utc>>)]
    as_of: Option<String>,
}

/// The caller's balances, every configured asset: now, or `as_of` an instant.
#[utoipa::path(
    get,
    path = "/api/wallet/balance",
    tag = "wallet",
    security(("bearer" = [])),
    params(BalanceQuery),
    responses((status = 200, description = "Balances; `as_of` present only when asked for.", body = BalanceAnswer))
)]
async fn balance(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> Result<Json<BalanceAnswer>, ApiError> {
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let native = match query.as_of.as_deref() {
        Some(raw) => {
            let as_of = parse_instant(raw, "as_of")?;
            read_your_writes(&state, &state.transactions, min_position).await?;
            balance_as_of(&state, user.user_id(), as_of).await?
        }
        None => {
            read_your_writes(&state, &state.balances, min_position).await?;
            current_balance(&state, user.user_id()).await?
        }
    };
    let wallet = LegacyWallet::of(&native)?;
    Ok(Json(BalanceAnswer { native, wallet }))
}

/// `GET /api/wallet/balance`: the native balances plus, for the predecessor's client, the same
/// available amounts as a map of exact numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceAnswer {
    #[serde(flatten)]
    native: BalancesBody,
    wallet: LegacyWallet,
}

/// Balances at `as_of`: the exact sum of the user's ledger entries (derived from the event
/// log's postings) with `occurred_at <= as_of`, up to the position the `transactions`
/// projection has applied.
pub async fn balance_as_of(
    state: &AppState,
    user_id: uuid::Uuid,
    as_of: DateTime<Utc>,
) -> Result<BalancesBody, ApiError> {
    let position = state.transactions.position();
    let sums = state
        .read_models
        .sum_entries(user_id, None, EntriesBefore::Inclusive(as_of), position)
        .await?;
    let assets = &state.ledger.assets;
    let balances: Vec<BalanceRow> = assets
        .iter()
        .map(|(asset, _)| {
            let (available, held) = sums
                .iter()
                .find(|(a, _, _)| a == asset)
                .map(|(_, a, h)| (*a, *h))
                .unwrap_or_default();
            balance_json(assets, asset, available, held)
        })
        .collect::<Result<_, _>>()?;
    Ok(BalancesBody {
        balances,
        as_of: Some(as_of),
        position,
    })
}
