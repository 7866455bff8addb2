//! Auditor API (auditor or admin role): the raw log with hashes, one stream, a verification of
//! the hash chain and the ledger's invariants at every position; and `GET /api/admin/audit-logs`.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use cryptovault_events::EventEnvelope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::AuthUser;
use super::paging::{cursor_key, encode_cursor, number, page_size, period};
use super::query::ApiQuery;
use super::read_your_writes;
use super::views::ErrorBody;
use super::AppState;
use crate::identity::Role;
use crate::store::read_models::AuditFilter;
use crate::store::verify::LedgerVerification;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events))
        .routes(routes!(stream))
        .routes(routes!(verify))
        .routes(routes!(audit_logs))
}

/// 403 `forbidden` unless the caller has the auditor or admin role (every auditor route).
pub(crate) fn auditor(caller: &AuthUser) -> Result<(), ApiError> {
    if caller.claims.roles.contains(&Role::Auditor) || caller.claims.roles.contains(&Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this requires the auditor or admin role".into(),
        ))
    }
}

/// A stored event as the log holds it (`events/src/envelope.rs`): hashing the canonical
/// encoding of these fields gives `hash`.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `EventEnvelope`'s JSON.
pub struct Envelope {
    event_id: uuid::Uuid,
    stream_id: String,
    stream_version: u64,
    position: u64,
    event_type: String,
    schema_version: u32,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as hashed.
    occurred_at: DateTime<Utc>,
    metadata: EnvelopeMetadata,
    /// The event's data; its shape depends on `event_type` and `schema_version`.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Hex SHA-256 of the previous event.
    prev_hash: String,
    /// Hex SHA-256 over the canonical encoding and `prev_hash`.
    hash: String,
}

/// Who caused an event and through which request.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `EventMetadata`'s JSON.
pub struct EnvelopeMetadata {
    #[schema(required = true)]
    request_id: Option<String>,
    #[schema(required = true)]
    correlation_id: Option<String>,
    #[schema(required = true)]
    causation_id: Option<String>,
    #[schema(required = true)]
    actor: Option<String>,
    #[schema(required = true)]
    ip: Option<String>,
    #[schema(required = true)]
    user_agent: Option<String>,
}

/// The head of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Head {
    pub position: u64,
    pub hash: String,
}

/// Per event position, its personal fields as an auditor may read them: each sealed field
/// (`payload.email`, `metadata.ip`, …) opened, or `[erased]` once its subject's key was erased.
/// Beside the envelopes, which stay exactly as stored (ciphertext) so that they still hash.
type PersonalData = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// A page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<Envelope>)]
    pub events: Vec<EventEnvelope>,
    /// Position → field path → decrypted value or `[erased]` (see `PersonalData`).
    #[schema(value_type = Object)]
    pub personal_data: PersonalData,
    /// Where the next page starts; `null` when this page is empty.
    #[schema(required = true)]
    pub next_from_position: Option<u64>,
    pub head: Head,
}

/// A page of one stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPage {
    pub stream_id: String,
    #[schema(value_type = Vec<Envelope>)]
    pub events: Vec<EventEnvelope>,
    /// Position → field path → decrypted value or `[erased]`.
    #[schema(value_type = Object)]
    pub personal_data: PersonalData,
    #[schema(required = true)]
    pub next_from_version: Option<u64>,
}

/// The result of a whole-log verification (`store/verify.rs`, `LedgerVerification`).
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `LedgerVerification`'s JSON.
pub struct Verification {
    /// The chain is unbroken, the final fold balances and no position breaks an invariant.
    intact: bool,
    chain: ChainReport,
    /// What the final balances break.
    double_entry_problems: Vec<String>,
    /// Counts and first positions of each kind of violation, and the first violations.
    #[schema(value_type = Object)]
    invariants: serde_json::Value,
}

/// The hash chain's verification.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `VerifyReport`'s JSON.
pub struct ChainReport {
    events_verified: u64,
    head_position: u64,
    /// The first position where the chain does not hold (`position` and the kind of break).
    #[schema(value_type = Option<Object>, required = true)]
    first_break: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The first position (default 1).
    #[param(value_type = Option<u64>)]
    from_position: Option<String>,
    /// At most this many events, 1 to 1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /api/audit/events?from_position=&limit=`: stored envelopes (with `prev_hash` and
/// `hash`) from `from_position` (default 1), at most `limit` (default 100, at most 1000).
#[utoipa::path(
    get,
    path = "/api/audit/events",
    tag = "audit",
    security(("bearer" = [])),
    params(EventsQuery),
    responses((status = 200, description = "Envelopes in position order.", body = EventsPage))
)]
async fn events(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    auditor(&caller)?;
    let from = number(query.from_position.as_deref(), "from_position")?
        .unwrap_or(1)
        .max(1);
    let limit = page_size(query.limit.as_deref(), 100, 1000)?;
    let events = state.store.read_all(from, limit as usize).await?;
    let next = events.last().map(|e| e.position + 1);
    let head = state.store.head().await?;
    let personal_data = state.identity.personal_data(&events).await?;
    Ok(Json(EventsPage {
        events,
        personal_data,
        next_from_position: next,
        head: Head {
            position: head.0,
            hash: head.1,
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The first stream version (default 1).
    #[param(value_type = Option<u64>)]
    from_version: Option<String>,
    /// At most this many events, 1 to 1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /api/audit/streams/{stream_id}?from_version=&limit=`: one stream's envelopes.
#[utoipa::path(
    get,
    path = "/api/audit/streams/{stream_id}",
    tag = "audit",
    security(("bearer" = [])),
    params(("stream_id" = String, Path, description = "e.g. `account-<user id>`."), StreamQuery),
    responses(
        (status = 200, description = "The stream's envelopes in version order.", body = StreamPage),
        (status = 404, description = "`not_found`: no such stream.", body = ErrorBody),
    )
)]
async fn stream(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(stream_id): Path<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Json<StreamPage>, ApiError> {
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
    let personal_data = state.identity.personal_data(&events).await?;
    Ok(Json(StreamPage {
        stream_id,
        events,
        personal_data,
        next_from_version: next,
    }))
}

/// `GET /api/audit/verify`: recomputes every hash from position 1, checks the ledger's
/// invariants at every position and folds the final balances; `intact` is true only when the
/// chain is unbroken, no position breaks an invariant and the final double entry holds.
#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses((status = 200, description = "The verification report.", body = Verification))
)]
async fn verify(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<LedgerVerification>, ApiError> {
    auditor(&caller)?;
    let report = state
        .store
        .verify_ledger(|asset| state.ledger.assets.precision(asset).unwrap_or(0))
        .await?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// The acting principal, e.g. a user id.
    actor: Option<String>,
    /// An event type, e.g. `LoginFailed`.
    action: Option<String>,
    /// `success` or `failure`.
    #[param(inline, value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// At or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// Before this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    to: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Wait until the read model has applied this position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
}

/// The outcome of an audited operation.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only describes the parameter.
enum Outcome {
    Success,
    Failure,
}

/// One audited operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogItem {
    #[schema(required = true)]
    pub position: Option<i64>,
    #[schema(required = true)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub action: Option<String>,
    #[schema(required = true)]
    pub stream_id: Option<String>,
    #[schema(required = true)]
    pub actor: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// `success` or `failure`.
    #[schema(required = true)]
    pub outcome: Option<String>,
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// A page of audit logs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditLogItem>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub position: u64,
}

/// `GET /api/admin/audit-logs`: audited operations, newest first, filtered by `actor`,
/// `action` (event type), `outcome` (`success`/`failure`), `from`/`to`; cursor pages.
#[utoipa::path(
    get,
    path = "/api/admin/audit-logs",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, description = "One page.", body = AuditPage))
)]
async fn audit_logs(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    auditor(&caller)?;
    let limit = page_size(query.limit.as_deref(), 50, 200)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let mut filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        ..AuditFilter::default()
    };
    match query.outcome.as_deref() {
        None => {}
        Some(outcome @ ("success" | "failure")) => {
            filter.outcome = Some(outcome.to_owned());
        }
        Some(_) => {
            return Err(ApiError::Validation {
                field: "outcome".into(),
                message: "must be success or failure".into(),
            })
        }
    }
    filter.occurred = period(query.from.as_deref(), query.to.as_deref())?;
    read_your_writes(&state, &state.audit, min_position).await?;
    let below = cursor_key(query.cursor.as_deref())?;
    let page = state.read_models.audit_page(&filter, below, limit).await?;
    let next_cursor = page.next_key.map(encode_cursor);
    // Sealed values (schema version 2) are shown opened, or `[erased]`.
    let revealed = state
        .identity
        .reveal_all(page.rows.iter().flat_map(|r| {
            [r.ip.as_deref(), r.user_agent.as_deref()]
                .into_iter()
                .flatten()
        }))
        .await?;
    let open = |value: Option<String>| value.map(|v| revealed.get(&v).cloned().unwrap_or(v));
    let items: Vec<AuditLogItem> = page
        .rows
        .into_iter()
        .map(|r| AuditLogItem {
            position: Some(r.position),
            occurred_at: Some(r.occurred_at),
            action: Some(r.action),
            stream_id: Some(r.stream_id),
            actor: r.actor,
            ip: open(r.ip),
            user_agent: open(r.user_agent),
            request_id: r.request_id,
            outcome: Some(r.outcome),
            reason: r.reason,
        })
        .collect();
    Ok(Json(AuditPage {
        items,
        next_cursor,
        position: state.audit.position(),
    }))
}
