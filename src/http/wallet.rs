//! `/api/wallet`: deposits, withdrawals, transfers, balances. Thin: parse and validate the body
//! into domain values, run the ledger command under the idempotency rules, shape the answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use cryptovault_events::Units;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::idempotent::idempotent;
use super::json::ApiJson;
use super::paging::{number, parse_instant};
use super::query::ApiQuery;
use crate::identity::domain::{Email, InvalidInput};
use crate::ledger::amount::Assets;
use crate::ledger::service::TransferRequest;
use crate::startup::AppState;
use crate::store::read_models::runner::ProjectionHandle;
use crate::store::read_models::EntriesBefore;
use cryptovault_projections::history::TransactionKind;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/wallet/deposits", post(deposit))
        .route(
            "/api/wallet/withdrawals",
            post(withdraw).get(list_withdrawals),
        )
        .route("/api/wallet/transfers", post(transfer))
        .route("/api/wallet/balance", get(balance))
}

/// A required string field of a JSON object body.
pub fn text<'a>(body: &'a Value, field: &'static str) -> Result<&'a str, InvalidInput> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(InvalidInput {
            field,
            message: "must be a string".into(),
        }),
        None => Err(InvalidInput {
            field,
            message: "is required".into(),
        }),
    }
}

/// The `asset` and `amount` fields, validated against the configured assets.
fn asset_and_amount(
    assets: &Assets,
    body: &Value,
) -> Result<(String, rust_decimal::Decimal), InvalidInput> {
    let asset = assets.asset(text(body, "asset")?, "asset")?;
    let amount = assets.amount(body.get("amount").unwrap_or(&Value::Null), &asset, "amount")?;
    Ok((asset, amount))
}

fn object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::Validation {
            field: "body".into(),
            message: "must be a JSON object".into(),
        })
    }
}

async fn deposit(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async |ids| {
        object(&body)?;
        let assets = &state.ledger.assets;
        let (asset, amount) = asset_and_amount(assets, &body)?;
        let applied = state
            .ledger
            .deposit(user.user_id(), &asset, amount, ids, &meta)
            .await?;
        let deposit = json!({
            "id": applied.event.deposit_id,
            "asset": asset,
            "amount": assets.format(amount, &asset),
            "status": "completed",
        });
        Ok((
            StatusCode::CREATED,
            json!({ "deposit": deposit, "position": applied.position }),
        ))
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

async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async |ids| {
        object(&body)?;
        let assets = &state.ledger.assets;
        let (asset, amount) = asset_and_amount(assets, &body)?;
        let address = text(&body, "address")?.trim();
        if address.is_empty()
            || address.len() > 128
            || !address.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InvalidInput {
                field: "address",
                message: "must be 1 to 128 printable ASCII characters".into(),
            }
            .into());
        }
        let applied = state
            .ledger
            .request_withdrawal(user.user_id(), &asset, amount, address, ids, &meta)
            .await?;
        let withdrawal = json!({
            "id": applied.event.withdrawal_id,
            "asset": asset,
            "amount": assets.format(amount, &asset),
            "address": address,
            "status": "pending",
        });
        Ok((
            StatusCode::CREATED,
            json!({ "withdrawal": withdrawal, "position": applied.position }),
        ))
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

async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async |ids| {
        object(&body)?;
        let assets = &state.ledger.assets;
        let to_email = Email::parse(text(&body, "to_email")?, "to_email")?;
        let asset = assets.asset(text(&body, "asset")?, "asset")?;
        let amount = assets.amount(body.get("amount").unwrap_or(&Value::Null), &asset, "amount")?;
        let note = match body.get("note") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if s.chars().count() <= 280 && !s.chars().any(char::is_control) =>
            {
                Some(s.clone())
            }
            Some(_) => {
                return Err(InvalidInput {
                    field: "note",
                    message: "must be a string of at most 280 characters".into(),
                }
                .into())
            }
        };
        let recipient = state
            .identity
            .user_id_by_email(&to_email)
            .await?
            .ok_or_else(|| InvalidInput {
                field: "to_email",
                message: "no user has this email address".into(),
            })?;
        let request = TransferRequest {
            from: user.user_id(),
            to: recipient,
            asset: asset.clone(),
            amount,
            note,
        };
        let applied = state.ledger.transfer(&request, ids, &meta).await?;
        let transfer = json!({
            "id": applied.event.transfer_id,
            "asset": asset,
            "amount": assets.format(amount, &asset),
            "to_email": to_email.as_str(),
            "status": "completed",
        });
        Ok((
            StatusCode::CREATED,
            json!({ "transfer": transfer, "position": applied.position }),
        ))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    min_position: Option<String>,
    as_of: Option<String>,
}

/// One balance row of the API: exact text with the asset's decimal places (never rounded; a
/// total that cannot be held is an error, not a figure).
fn balance_json(
    assets: &Assets,
    asset: &str,
    available: Units,
    held: Units,
) -> Result<Value, ApiError> {
    let total = available.checked_add(held).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "{asset} balance {available} + {held} is beyond the range held exactly"
        ))
    })?;
    Ok(json!({
        "asset": asset,
        "available": assets.format_units(available, asset),
        "held": assets.format_units(held, asset),
        "total": assets.format_units(total, asset),
    }))
}

async fn balance(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> Result<Json<Value>, ApiError> {
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    match query.as_of.as_deref() {
        Some(raw) => {
            let as_of = parse_instant(raw, "as_of")?;
            read_your_writes(&state, &state.transactions, min_position).await?;
            Ok(Json(balance_as_of(&state, user.user_id(), as_of).await?))
        }
        None => {
            read_your_writes(&state, &state.balances, min_position).await?;
            Ok(Json(current_balance(&state, user.user_id()).await?))
        }
    }
}

/// Balances at `as_of`: the exact sum of the user's ledger entries (derived from the event
/// log's postings) with `occurred_at <= as_of`, up to the position the `transactions`
/// projection has applied.
pub async fn balance_as_of(
    state: &AppState,
    user_id: uuid::Uuid,
    as_of: chrono::DateTime<chrono::Utc>,
) -> Result<Value, ApiError> {
    let position = state.transactions.position();
    let sums = state
        .read_models
        .sum_entries(user_id, None, EntriesBefore::Inclusive(as_of), position)
        .await
        .map_err(anyhow::Error::from)?;
    let assets = &state.ledger.assets;
    let balances: Vec<Value> = assets
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
    Ok(json!({ "balances": balances, "as_of": as_of, "position": position }))
}

/// The user's balances from the `balances` read model, every configured asset.
pub async fn current_balance(state: &AppState, user_id: uuid::Uuid) -> Result<Value, ApiError> {
    let position = state.balances.position();
    let rows = state.read_models.balances_of(user_id).await?;
    let assets = &state.ledger.assets;
    let balances: Vec<Value> = assets
        .iter()
        .map(|(asset, _)| {
            let row = rows.iter().find(|r| r.asset == *asset);
            let stored = match row {
                None => Default::default(),
                Some(row) => row.balance.clone().map_err(|why| {
                    ApiError::Internal(anyhow::anyhow!("balance row of {user_id} {asset}: {why}"))
                })?,
            };
            balance_json(assets, asset, stored.available, stored.held)
        })
        .collect::<Result<_, _>>()?;
    Ok(json!({ "balances": balances, "position": position }))
}

/// `GET /api/wallet/withdrawals`: the caller's history filtered to withdrawals (same cursor
/// pages, filters and shape as `GET /api/transactions`; `status` follows approve / complete /
/// reject).
async fn list_withdrawals(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<super::transactions::ListQuery>,
) -> Result<Json<Value>, ApiError> {
    super::transactions::page(&state, &user, query, Some(TransactionKind::Withdrawal)).await
}

/// Waits until `projection` has applied `min_position` (if given), at most
/// `READ_YOUR_WRITES_TIMEOUT_MS`; then 503 `projection_lag`.
pub async fn read_your_writes(
    state: &AppState,
    projection: &ProjectionHandle,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    match min_position {
        Some(position)
            if !projection
                .wait_for(position, state.config.read_your_writes_timeout)
                .await =>
        {
            Err(ApiError::ProjectionLag(position))
        }
        _ => Ok(()),
    }
}

/// Withdrawal rows with `status` (any if `None`), newest first, at most 500.
pub async fn withdrawal_rows(
    state: &AppState,
    status: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let rows = state.read_models.withdrawals(status).await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "user_id": r.user_id,
                "asset": r.asset,
                "amount": r.amount,
                "address": r.address,
                "status": r.status,
                "requested_at": r.requested_at,
                "updated_at": r.updated_at,
            })
        })
        .collect())
}
