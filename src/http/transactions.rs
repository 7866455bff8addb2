//! `/api/transactions`: the signed-in user's transaction history (cursor pages, filters), one
//! transaction, statements; and `GET /api/wallet/deposits` (the history filtered to deposits).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bson::{doc, Document};
use cryptovault_projections::history::TransactionKind;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::AuthUser;
use super::json::ApiJson;
use super::paging::{newest_first, number, page_size, period, range};
use super::query::ApiQuery;
use super::read_models::{item, transaction};
use super::{read_your_writes, AppState};
use crate::identity::domain::InvalidInput;
use crate::projection::transactions::TRANSACTIONS;
use crate::statement::{Format, StatementRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/transactions", get(list))
        .route("/api/transactions/export", post(export))
        .route("/api/transactions/{id}", get(one))
        .route("/api/wallet/deposits", get(list_deposits))
        .route("/api/wallet/withdrawals", get(list_withdrawals))
}

/// Query of a history listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    asset: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// One page of `user`'s history, newest first, filtered by `query` (and `kind` if forced).
pub async fn page(
    state: &AppState,
    user: &AuthUser,
    query: ListQuery,
    forced_kind: Option<TransactionKind>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(query.limit.as_deref(), 50, 200)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let mut filter = doc! { "user_id": user.user_id().to_string() };
    let kind = match (forced_kind, query.kind.as_deref()) {
        (Some(kind), _) => Some(kind),
        (None, None) => None,
        (None, Some(raw)) => Some(TransactionKind::parse(raw).ok_or_else(|| InvalidInput {
            field: "type",
            message: "must be one of deposit, withdrawal, transfer_in, transfer_out".into(),
        })?),
    };
    if let Some(kind) = kind {
        filter.insert("type", kind.as_str());
    }
    if let Some(raw) = query.asset.as_deref() {
        filter.insert("asset", state.ledger.assets.asset(raw, "asset")?);
    }
    if let Some(created) = range(period(query.from.as_deref(), query.to.as_deref())?) {
        filter.insert("created_at", created);
    }
    read_your_writes(state, &state.transactions, min_position).await?;
    let collection = state.db.collection::<Document>(TRANSACTIONS);
    let (rows, next_cursor) = newest_first(
        &collection,
        filter,
        "position",
        query.cursor.as_deref(),
        limit,
    )
    .await?;
    let items: Vec<Value> = rows.iter().map(|r| item(state, r)).collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next_cursor,
        "position": state.transactions.position(),
    })))
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    page(&state, &user, query, None).await
}

async fn list_deposits(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    page(&state, &user, query, Some(TransactionKind::Deposit)).await
}

/// `GET /api/wallet/withdrawals`: the caller's history filtered to withdrawals (same cursor
/// pages, filters and shape as `GET /api/transactions`; `status` follows approve / complete /
/// reject).
async fn list_withdrawals(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    page(&state, &user, query, Some(TransactionKind::Withdrawal)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OneQuery {
    min_position: Option<String>,
}

async fn one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OneQuery>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("no such transaction".into());
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    read_your_writes(&state, &state.transactions, min_position).await?;
    let row = transaction(&state, user.user_id(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({ "transaction": row })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    format: String,
    from: Option<String>,
    to: Option<String>,
    asset: Option<String>,
    min_position: Option<u64>,
}

/// `POST /api/transactions/export`: a statement, streamed as an attachment.
async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<ExportBody>,
) -> Result<Response, ApiError> {
    let format = Format::parse(&body.format).ok_or_else(|| InvalidInput {
        field: "format",
        message: "must be csv or json".into(),
    })?;
    let (from, to) = period(body.from.as_deref(), body.to.as_deref())?;
    let assets = match body.asset.as_deref() {
        Some(raw) => vec![state.ledger.assets.asset(raw, "asset")?],
        None => state
            .ledger
            .assets
            .iter()
            .map(|(a, _)| a.to_owned())
            .collect(),
    };
    read_your_writes(&state, &state.transactions, body.min_position).await?;
    let email = state.identity.user(user.user_id()).await?.email;
    let request = StatementRequest {
        user_id: user.user_id(),
        email: Some(email),
        assets,
        from,
        to,
        format,
        up_to_position: state.transactions.position(),
    };
    let filename = format!(
        "statement-{}-{}.{}",
        body.asset.as_deref().unwrap_or("all"),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let stream = crate::statement::stream(state.db.clone(), state.ledger.assets.clone(), request);
    let mut response = Body::from_stream(stream).into_response();
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(|e| ApiError::Internal(e.into()))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
