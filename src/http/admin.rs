//! `/api/admin/users`: user administration, admin role only.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::user_json;
use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::json::ApiJson;
use crate::identity::Role;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users/{id}", get(get_user))
        .route("/api/admin/users/{id}/roles", post(grant_role))
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
