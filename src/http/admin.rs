//! `/api/admin/users` and `/api/admin/withdrawals`: user and withdrawal administration, admin
//! role only.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{AuthUser, Meta};
use super::idempotent::IdempotencyKey;
use super::json::{typed_body, ApiJson, RawBody};
use super::paging::number;
use super::query::ApiQuery;
use super::views::{ErrorBody, UserBody};
use super::{read_your_writes, AppState};
use crate::identity::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_user))
        .routes(routes!(grant_role))
        .routes(routes!(revoke_role))
        .routes(routes!(list_withdrawals))
        .routes(routes!(withdrawal_action))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WithdrawalFilter {
    /// Only withdrawals in this state.
    #[param(inline, value_type = Option<WithdrawalStatus>)]
    status: Option<String>,
    /// Wait until the read model has applied this position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
}

/// The state of a withdrawal.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only describes the parameter.
enum WithdrawalStatus {
    Pending,
    Approved,
    Completed,
    Rejected,
}

/// A row of the `withdrawals` read model.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalRow {
    pub id: String,
    pub user_id: String,
    pub asset: String,
    #[schema(pattern = r"^[0-9]*(\.[0-9]+)?$", example = "0.00150000")]
    pub amount: String,
    pub address: String,
    /// `pending`, `approved`, `completed` or `rejected`.
    pub status: String,
    #[schema(required = true)]
    pub requested_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Withdrawals, newest first, at most 500.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalList {
    pub items: Vec<WithdrawalRow>,
    pub position: u64,
}

/// Every user's withdrawals, newest first (at most 500).
#[utoipa::path(
    get,
    path = "/api/admin/withdrawals",
    tag = "admin",
    security(("bearer" = [])),
    params(WithdrawalFilter),
    responses((status = 200, description = "Withdrawals.", body = WithdrawalList))
)]
async fn list_withdrawals(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<WithdrawalFilter>,
) -> Result<Json<WithdrawalList>, ApiError> {
    caller.require(Role::Admin)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    read_your_writes(&state, &state.withdrawals, min_position).await?;
    let status = match query.status.as_deref() {
        None => None,
        Some(status @ ("pending" | "approved" | "completed" | "rejected")) => Some(status),
        Some(_) => {
            return Err(ApiError::Validation {
                field: "status".into(),
                message: "must be one of pending, approved, completed, rejected".into(),
            })
        }
    };
    let items = withdrawal_rows(&state, status).await?;
    Ok(Json(WithdrawalList {
        items,
        position: state.withdrawals.position(),
    }))
}

/// The body of a withdrawal action: optional; `reason` is kept by `reject` (its first 280
/// characters) and ignored by the others.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    reason: Option<String>,
}

/// What an admin does with a withdrawal.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only describes the parameter.
enum WithdrawalAction {
    Approve,
    Complete,
    Reject,
}

/// A withdrawal after an admin's action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActedWithdrawal {
    pub id: Uuid,
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    pub amount: String,
    /// `approved`, `completed` or `rejected`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalActionBody {
    pub withdrawal: ActedWithdrawal,
    pub position: u64,
}

/// `approve`, `complete` or `reject` (body optional: `{"reason"}` for reject).
#[utoipa::path(
    post,
    path = "/api/admin/withdrawals/{id}/{action}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The withdrawal's id (a UUID)."),
        ("action" = inline(WithdrawalAction), Path, description = "`approve` (pending → approved), `complete` (approved → completed: the hold becomes a debit) or `reject` (pending or approved → rejected: the hold is released). Four eyes: an admin cannot approve or complete a withdrawal of their own (403 `forbidden`)."),
        IdempotencyKey,
    ),
    request_body(content = Option<ActionRequest>, description = "Optional."),
    responses(
        (status = 200, description = "Done.", body = WithdrawalActionBody),
        (status = 404, description = "`not_found`: no such withdrawal, or no such action.", body = ErrorBody),
        (status = 409, description = "`invalid_state` (the withdrawal is not in a state that allows this), `idempotency_conflict` or `conflict`.", body = ErrorBody),
    )
)]
async fn withdrawal_action(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    RawBody(body): RawBody,
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
        let request = match &body {
            Value::Null => ActionRequest::default(),
            body => typed_body::<ActionRequest>(body)?,
        };
        let reason = request
            .reason
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
                    .withdrawals()
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
        let withdrawal = ActedWithdrawal {
            id,
            amount: ledger.assets.format(amount, &asset),
            asset,
            status: status.into(),
        };
        Ok((
            StatusCode::OK,
            WithdrawalActionBody {
                withdrawal,
                position,
            },
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

/// One user.
#[utoipa::path(
    get,
    path = "/api/admin/users/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id (a UUID).")),
    responses(
        (status = 200, description = "The user.", body = UserBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<UserBody>, ApiError> {
    caller.require(Role::Admin)?;
    let user = state.identity.user(parse_id(&id)?).await?;
    Ok(Json(UserBody::from(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// `user`, `auditor` or `admin`.
    role: String,
}

/// Grants a role.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/roles",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id (a UUID).")),
    request_body = GrantBody,
    responses(
        (status = 200, description = "The user with the role.", body = UserBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    )
)]
async fn grant_role(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Json<UserBody>, ApiError> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&body.role, "role")?;
    let user = state
        .identity
        .grant_role(parse_id(&id)?, role, &caller.user_id().to_string(), &meta)
        .await?;
    Ok(Json(UserBody::from(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// `auditor` or `admin` (`user` is every account's base role and cannot be revoked).
    role: String,
}

/// Revokes a role (`RoleRevoked` on the user's stream, `revoked_by` the caller). It applies to
/// the user's open sessions from their next request on, on every instance; the sessions go on.
/// Revoking a role the user lacks writes nothing. An admin cannot revoke their own admin role,
/// so an admin always remains.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/roles/revoke",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id (a UUID).")),
    request_body = RevokeBody,
    responses(
        (status = 200, description = "The user without the role.", body = UserBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the `user` role, or the caller's own admin role.", body = ErrorBody),
    )
)]
async fn revoke_role(
    State(state): State<AppState>,
    caller: AuthUser,
    Meta(meta): Meta,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<UserBody>, ApiError> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&body.role, "role")?;
    let user_id = parse_id(&id)?;
    let admin = caller.user_id();
    let user = state
        .identity
        .revoke_role(user_id, role, &admin.to_string(), Some(admin), &meta)
        .await?;
    Ok(Json(UserBody::from(&user)))
}

/// Withdrawal rows (only those in `status`, if given), newest first, at most 500.
pub async fn withdrawal_rows(
    state: &AppState,
    status: Option<&str>,
) -> Result<Vec<WithdrawalRow>, ApiError> {
    let rows = state.read_models.withdrawals(status).await?;
    Ok(rows
        .into_iter()
        .map(|r| WithdrawalRow {
            id: r.id,
            user_id: r.user_id,
            asset: r.asset,
            amount: r.amount,
            address: r.address,
            status: r.status,
            requested_at: r.requested_at,
            updated_at: r.updated_at,
        })
        .collect())
}
