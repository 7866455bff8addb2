//! `/api/admin/users`: user administration, admin role only.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bson::doc;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::json::ApiJson;
use super::paging::number;
use super::query::ApiQuery;
use super::{read_your_writes, user_json, AppState};
use crate::identity::Role;
use crate::projection::withdrawals::COLLECTION as WITHDRAWALS;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users/{id}", get(get_user))
        .route("/api/admin/users/{id}/roles", post(grant_role))
        .route("/api/admin/withdrawals", get(list_withdrawals))
        .route(
            "/api/admin/withdrawals/{id}/{action}",
            post(withdrawal_action),
        )
}

#[derive(Deserialize)]
struct WithdrawalFilter {
    status: Option<String>,
    min_position: Option<String>,
}

async fn list_withdrawals(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<WithdrawalFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    read_your_writes(&state, &state.withdrawals, min_position).await?;
    let filter = match query.status.as_deref() {
        None => bson::doc! {},
        Some(status @ ("pending" | "approved" | "completed" | "rejected")) => {
            bson::doc! { "status": status }
        }
        Some(_) => {
            return Err(ApiError::Validation {
                field: "status".into(),
                message: "must be one of pending, approved, completed, rejected".into(),
            })
        }
    };
    let items = withdrawal_rows(&state, filter).await?;
    Ok(Json(
        json!({ "items": items, "position": state.withdrawals.position() }),
    ))
}

/// `approve`, `complete` or `reject` (body optional: `{"reason"}` for reject).
async fn withdrawal_action(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let id = parse_id(&id)?;
    if !matches!(action.as_str(), "approve" | "complete" | "reject") {
        return Err(ApiError::NotFound("no such withdrawal action".into()));
    }
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?
    };
    let admin = caller.user_id();
    let route = format!("/api/admin/withdrawals/{id}/{action}");
    let run = async |ids| {
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(280).collect::<String>());
        let ledger = &state.ledger;
        let (status, position, amount, asset) = match action.as_str() {
            "approve" => {
                let applied = ledger
                    .transition(id, admin, ids, &meta, |a| a.approve(id, admin))
                    .await?;
                let w = ledger
                    .account(applied.event.user_id, &applied.event.asset)
                    .await?
                    .withdrawals
                    .get(&id)
                    .map(|w| w.amount)
                    .unwrap_or_default();
                ("approved", applied.position, w, applied.event.asset)
            }
            "complete" => {
                let applied = ledger
                    .transition(id, admin, ids, &meta, |a| a.complete(id, admin))
                    .await?;
                (
                    "completed",
                    applied.position,
                    applied.event.amount,
                    applied.event.asset,
                )
            }
            _ => {
                let applied = ledger
                    .transition(id, admin, ids, &meta, |a| {
                        a.reject(id, admin, reason.clone())
                    })
                    .await?;
                (
                    "rejected",
                    applied.position,
                    applied.event.amount,
                    applied.event.asset,
                )
            }
        };
        let withdrawal = json!({ "id": id, "asset": asset, "amount": ledger.assets.format(amount, &asset), "status": status });
        Ok((
            StatusCode::OK,
            json!({ "withdrawal": withdrawal, "position": position }),
        ))
    };
    Ok(super::idempotent::idempotent(&state, admin, &headers, &route, &body, run).await)
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::Validation {
        field: "id".into(),
        message: "must be a UUID".into(),
    })
}

async fn get_user(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let user = state.identity.user(parse_id(&id)?).await?;
    Ok(Json(json!({ "user": user_json(&user) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    role: String,
}

async fn grant_role(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&body.role, "role")?;
    let user = state
        .identity
        .grant_role(parse_id(&id)?, role, &caller.user_id().to_string(), &meta)
        .await?;
    Ok(Json(json!({ "user": user_json(&user) })))
}

/// Withdrawal rows matching `filter`, newest first, at most 500.
pub async fn withdrawal_rows(
    state: &AppState,
    filter: bson::Document,
) -> Result<Vec<Value>, ApiError> {
    let rows: Vec<bson::Document> = state
        .db
        .collection::<bson::Document>(WITHDRAWALS)
        .find(filter)
        .sort(doc! { "position": -1 })
        .limit(500)
        .await?
        .try_collect()
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get_str("_id").unwrap_or_default(),
                "user_id": r.get_str("user_id").unwrap_or_default(),
                "asset": r.get_str("asset").unwrap_or_default(),
                "amount": r.get_str("amount").unwrap_or_default(),
                "address": r.get_str("address").unwrap_or_default(),
                "status": r.get_str("status").unwrap_or_default(),
                "requested_at": r.get_datetime("requested_at").ok().map(|d| d.to_chrono()),
                "updated_at": r.get_datetime("updated_at").ok().map(|d| d.to_chrono()),
            })
        })
        .collect())
}
