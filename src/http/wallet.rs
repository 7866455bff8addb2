//! `/api/wallet`: deposits, withdrawals, transfers, balances. Thin: parse and validate the body
//! into domain values, run the ledger command under the idempotency rules, shape the answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bson::doc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::idempotent::idempotent;
use super::json::ApiJson;
use super::paging::{number, parse_instant};
use super::query::ApiQuery;
use super::read_models::{balance_json, current_balance};
use super::{read_your_writes, AppState};
use crate::identity::domain::{Email, InvalidInput};
use crate::ledger::amount::Assets;
use crate::ledger::service::TransferRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/wallet/deposits", post(deposit))
        .route("/api/wallet/withdrawals", post(withdraw))
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
    let sums = crate::statement::sum_entries(
        &state.db,
        doc! {
            "user_id": user_id.to_string(),
            "occurred_at": { "$lte": bson::DateTime::from_chrono(as_of) },
            "position": { "$lte": crate::store::document::to_i64(position) },
        },
    )
    .await?;
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
