//! Auditor API (auditor or admin role): the raw log with hashes, one stream, a verification of
//! the hash chain and the ledger's invariants at every position; and `GET /api/admin/audit-logs`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use bson::{doc, Document};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::AuthUser;
use super::paging::{newest_first, number, page_size, period, range};
use super::query::ApiQuery;
use super::read_your_writes;
use super::AppState;
use crate::identity::Role;
use crate::projection::audit::AUDIT_LOGS;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/audit/events", get(events))
        .route("/api/audit/streams/{stream_id}", get(stream))
        .route("/api/audit/verify", get(verify))
        .route("/api/admin/audit-logs", get(audit_logs))
}

fn auditor(caller: &AuthUser) -> Result<(), ApiError> {
    if caller.claims.roles.contains(&Role::Auditor) || caller.claims.roles.contains(&Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this requires the auditor or admin role".into(),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    from_position: Option<String>,
    limit: Option<String>,
}

/// `GET /api/audit/events?from_position=&limit=`: stored envelopes (with `prev_hash` and
/// `hash`) from `from_position` (default 1), at most `limit` (default 100, at most 1000).
async fn events(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let from = number(query.from_position.as_deref(), "from_position")?
        .unwrap_or(1)
        .max(1);
    let limit = page_size(query.limit.as_deref(), 100, 1000)?;
    let events = state.store.read_all(from, limit as usize).await?;
    let next = events.last().map(|e| e.position + 1);
    let head = state.store.head().await?;
    Ok(Json(json!({
        "events": events,
        "next_from_position": next,
        "head": { "position": head.0, "hash": head.1 },
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    from_version: Option<String>,
    limit: Option<String>,
}

/// `GET /api/audit/streams/{stream_id}?from_version=&limit=`: one stream's envelopes.
async fn stream(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(stream_id): Path<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let from = number(query.from_version.as_deref(), "from_version")?
        .unwrap_or(1)
        .max(1);
    let limit = page_size(query.limit.as_deref(), 100, 1000)?;
    let events = state
        .store
        .read_stream(&stream_id, from, limit as usize)
        .await?;
    if events.is_empty() && from == 1 {
        return Err(ApiError::NotFound(format!("no stream {stream_id:?}")));
    }
    let next = events.last().map(|e| e.stream_version + 1);
    Ok(Json(json!({
        "stream_id": stream_id,
        "events": events,
        "next_from_version": next,
    })))
}

/// `GET /api/audit/verify`: recomputes every hash from position 1, checks the ledger's
/// invariants at every position and folds the final balances; `intact` is true only when the
/// chain is unbroken, no position breaks an invariant and the final double entry holds.
async fn verify(State(state): State<AppState>, caller: AuthUser) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let report = state
        .store
        .verify_ledger(|asset| state.ledger.assets.precision(asset).unwrap_or(0))
        .await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.into()))?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /api/admin/audit-logs`: audited operations, newest first, filtered by `actor`,
/// `action` (event type), `outcome` (`success`/`failure`), `from`/`to`; cursor pages.
async fn audit_logs(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let limit = page_size(query.limit.as_deref(), 50, 200)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let mut filter = Document::new();
    if let Some(actor) = query.actor {
        filter.insert("actor", actor);
    }
    if let Some(action) = query.action {
        filter.insert("action", action);
    }
    match query.outcome.as_deref() {
        None => {}
        Some(outcome @ ("success" | "failure")) => {
            filter.insert("outcome", outcome);
        }
        Some(_) => {
            return Err(ApiError::Validation {
                field: "outcome".into(),
                message: "must be success or failure".into(),
            })
        }
    }
    if let Some(at) = range(period(query.from.as_deref(), query.to.as_deref())?) {
        filter.insert("occurred_at", at);
    }
    read_your_writes(&state, &state.audit, min_position).await?;
    let collection = state.db.collection::<Document>(AUDIT_LOGS);
    let (rows, next_cursor) =
        newest_first(&collection, filter, "_id", query.cursor.as_deref(), limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let text = |field| r.get_str(field).ok();
            json!({
                "position": r.get_i64("position").ok(),
                "occurred_at": r.get_datetime("occurred_at").ok().map(|d| d.to_chrono()),
                "action": text("action"),
                "stream_id": text("stream_id"),
                "actor": text("actor"),
                "ip": text("ip"),
                "user_agent": text("user_agent"),
                "request_id": text("request_id"),
                "outcome": text("outcome"),
                "reason": text("reason"),
            })
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next_cursor,
        "position": state.audit.position(),
    })))
}
