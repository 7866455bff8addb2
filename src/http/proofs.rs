//! The verifiable log over HTTP (issue 16): the public key, signed checkpoints, inclusion and
//! consistency proofs (auditor or admin), and a user's receipt for their own transaction.
//!
//! Every bundle is verifiable offline with only the public key (`cryptovault audit verify-*`,
//! `scripts/verify_receipt.py`); hashes in proofs are standard base64 of 32 bytes, leaf `i`
//! is the chain hash of the event at position `i + 1` (see `notary`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use cryptovault_events::checkpoint::Checkpoint;
use cryptovault_events::merkle::Hash;
use cryptovault_events::EventEnvelope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::auditor;
use super::error::ApiError;
use super::extract::AuthUser;
use super::paging::{number, page_size};
use super::query::ApiQuery;
use super::read_your_writes;
use super::views::ErrorBody;
use super::AppState;
use crate::notary::Notary;
use crate::store::tree::StoredCheckpoint;

/// `format` of a receipt (a user's transaction).
pub const RECEIPT_FORMAT: &str = "cryptovault.receipt.v1";
/// `format` of one event's inclusion proof (the auditor API).
pub const INCLUSION_FORMAT: &str = "cryptovault.inclusion.v1";
/// `format` of a consistency proof between two checkpoints.
pub const CONSISTENCY_FORMAT: &str = "cryptovault.consistency.v1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(public_key))
        .routes(routes!(tree_status))
        .routes(routes!(list_checkpoints, sign_checkpoint))
        .routes(routes!(latest_checkpoint))
        .routes(routes!(one_checkpoint))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
        .routes(routes!(receipt))
}

pub(crate) fn notary(state: &AppState) -> Result<&Notary, ApiError> {
    state.notary.as_ref().ok_or(ApiError::CheckpointsDisabled)
}

pub(crate) fn b64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// The key that signs checkpoints, in the forms verifiers pin.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    /// The first line of every checkpoint (the key's name).
    origin: String,
    key_name: String,
    /// The C2SP key id: 8 hex digits.
    key_id: String,
    /// Always `ed25519`.
    algorithm: &'static str,
    /// `<name>+<key id>+<base64(0x01 ‖ public key)>`: what `cryptovault audit verify-* --key`
    /// and the Python verifier take.
    verifier_key: String,
    /// Base64 of the 32 raw public key bytes.
    public_key: String,
    /// Verifier keys of earlier (rotated) keys, which signed older checkpoints.
    retired_verifier_keys: Vec<String>,
}

/// `GET /api/audit/public-key`: public, no authentication (the key is meant to be pinned by
/// anyone who verifies).
#[utoipa::path(
    get,
    path = "/api/audit/public-key",
    tag = "proofs",
    responses(
        (status = 200, description = "The checkpoint signing key.", body = PublicKey),
    )
)]
async fn public_key(State(state): State<AppState>) -> Result<Json<PublicKey>, ApiError> {
    let notary = notary(&state)?;
    let key = notary.verifier();
    Ok(Json(PublicKey {
        origin: notary.origin().to_owned(),
        key_name: key.name().to_owned(),
        key_id: format!("{:08x}", key.key_id()),
        algorithm: "ed25519",
        verifier_key: key.to_string(),
        public_key: STANDARD.encode(key.public_key().as_bytes()),
        retired_verifier_keys: notary.retired().iter().map(ToString::to_string).collect(),
    }))
}

/// A signed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Tree size: the checkpoint covers log positions 1 to `size`.
    size: u64,
    /// Base64 RFC 6962 root.
    root: String,
    /// The whole C2SP signed note (`<origin>\n<size>\n<root>\n\n— <key name> <signature>\n`).
    note: String,
    issued_at: DateTime<Utc>,
}

impl From<StoredCheckpoint> for CheckpointView {
    fn from(c: StoredCheckpoint) -> Self {
        Self {
            size: c.size,
            root: b64(&c.root),
            note: c.note,
            issued_at: c.issued_at,
        }
    }
}

/// Where the tree stands against the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TreeStatus {
    /// Events the stored tree covers.
    tree_size: u64,
    /// The log's last position.
    log_head: u64,
    /// `log_head - tree_size`.
    behind: u64,
    latest_checkpoint: Option<CheckpointView>,
    /// Why this instance's notary last refused to extend the tree or sign (cleared when the
    /// tree grows again), e.g. "the log breaks at position 57: content altered …".
    refusal: Option<String>,
    /// The log position the refusal names, if any.
    refusal_position: Option<u64>,
}

/// `GET /api/audit/tree`: the tree's size against the log head, the latest checkpoint, and
/// the notary's last refusal.
#[utoipa::path(
    get,
    path = "/api/audit/tree",
    tag = "proofs",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tree's state.", body = TreeStatus),
    )
)]
async fn tree_status(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<TreeStatus>, ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let tree_size = notary.tree().head().await?.size;
    let log_head = state.store.head().await?.0;
    let refusal = notary.refusal();
    Ok(Json(TreeStatus {
        tree_size,
        log_head,
        behind: log_head.saturating_sub(tree_size),
        latest_checkpoint: notary.latest().await?.map(Into::into),
        refusal_position: refusal.as_ref().and_then(|r| r.position()),
        refusal: refusal.map(|r| r.to_string()),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CheckpointsQuery {
    /// Only checkpoints of fewer events than this.
    #[param(value_type = Option<u64>)]
    before: Option<String>,
    /// At most this many, 1 to 100 (default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// Checkpoints, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointsPage {
    checkpoints: Vec<CheckpointView>,
    /// Pass as `before` for the next page.
    next_before: Option<u64>,
}

/// `GET /api/audit/checkpoints?before=&limit=`: past checkpoints, newest first.
#[utoipa::path(
    get,
    path = "/api/audit/checkpoints",
    tag = "proofs",
    security(("bearer" = [])),
    params(CheckpointsQuery),
    responses(
        (status = 200, description = "One page.", body = CheckpointsPage),
    )
)]
async fn list_checkpoints(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointsPage>, ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let before = number(query.before.as_deref(), "before")?;
    let limit = page_size(query.limit.as_deref(), 20, 100)?;
    let found = notary
        .tree()
        .checkpoints(before, u32::try_from(limit).unwrap_or(100))
        .await?;
    let next_before = (found.len() as u64 == limit)
        .then(|| found.last().map(|c| c.size))
        .flatten();
    Ok(Json(CheckpointsPage {
        checkpoints: found.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

/// `POST /api/audit/checkpoints`: brings the tree up to the log head and signs a checkpoint
/// now if the tree grew since the latest one (201), else answers the latest (200).
#[utoipa::path(
    post,
    path = "/api/audit/checkpoints",
    tag = "proofs",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new checkpoint.", body = CheckpointView),
        (status = 200, description = "The latest checkpoint already covers the tree.", body = CheckpointView),
    )
)]
async fn sign_checkpoint(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<(StatusCode, Json<CheckpointView>), ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let before = notary.latest().await?.map(|c| c.size);
    let latest = notary.sync(true).await?.ok_or_else(|| {
        ApiError::CheckpointPending("the log is empty: there is nothing to sign".into())
    })?;
    let status = if Some(latest.size) == before {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(latest.into())))
}

/// `GET /api/audit/checkpoints/latest`.
#[utoipa::path(
    get,
    path = "/api/audit/checkpoints/latest",
    tag = "proofs",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The latest checkpoint.", body = CheckpointView),
        (status = 404, description = "`not_found`: none signed yet.", body = ErrorBody),
    )
)]
async fn latest_checkpoint(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<CheckpointView>, ApiError> {
    auditor(&caller)?;
    let latest = notary(&state)?.latest().await?;
    latest
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::NotFound("no checkpoint has been signed yet".into()))
}

/// `GET /api/audit/checkpoints/{size}`.
#[utoipa::path(
    get,
    path = "/api/audit/checkpoints/{size}",
    tag = "proofs",
    security(("bearer" = [])),
    params(("size" = u64, Path, description = "The checkpoint's tree size.")),
    responses(
        (status = 200, description = "The checkpoint.", body = CheckpointView),
        (status = 404, description = "`not_found`: no checkpoint of this size.", body = ErrorBody),
    )
)]
async fn one_checkpoint(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(size): Path<String>,
) -> Result<Json<CheckpointView>, ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let not_found = || ApiError::NotFound(format!("no checkpoint of {size} events"));
    let wanted: u64 = size.parse().map_err(|_| not_found())?;
    notary
        .tree()
        .checkpoint(wanted)
        .await?
        .map(|c| Json(c.into()))
        .ok_or_else(not_found)
}

/// One event with its inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvenEvent {
    /// `event.position - 1`.
    leaf_index: u64,
    /// Base64 hashes, leaf to root (RFC 9162 §2.1.3).
    inclusion_proof: Vec<String>,
    #[schema(value_type = super::audit::Envelope)]
    event: EventEnvelope,
}

/// Events and a signed checkpoint whose tree includes them: `cryptovault.receipt.v1` (a
/// user's transaction) or `cryptovault.inclusion.v1` (one event, the auditor API).
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionBundle {
    format: &'static str,
    /// The signed note of the checkpoint the proofs lead to.
    checkpoint: String,
    entries: Vec<ProvenEvent>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InclusionQuery {
    /// The event's log position (give this or `event_id`).
    #[param(value_type = Option<u64>)]
    position: Option<String>,
    /// The event's id (give this or `position`).
    event_id: Option<String>,
    /// The checkpoint (tree size) to prove inclusion in (default: the latest, signed now if
    /// none covers the event yet).
    #[param(value_type = Option<u64>)]
    size: Option<String>,
}

/// `GET /api/audit/proofs/inclusion?position=|event_id=&size=`: one event, its inclusion proof
/// and the signed checkpoint it leads to.
#[utoipa::path(
    get,
    path = "/api/audit/proofs/inclusion",
    tag = "proofs",
    security(("bearer" = [])),
    params(InclusionQuery),
    responses(
        (status = 200, description = "A `cryptovault.inclusion.v1` bundle.", body = InclusionBundle),
        (status = 404, description = "`not_found`: no such event, or no checkpoint of `size`.", body = ErrorBody),
        (status = 422, description = "`validation_error`: neither or both of `position`, `event_id`; `size` below the position.", body = ErrorBody),
    )
)]
async fn inclusion(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionBundle>, ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let position = number(query.position.as_deref(), "position")?;
    let event = match (position, query.event_id.as_deref()) {
        (Some(position), None) => state
            .store
            .read_all(position.max(1), 1)
            .await?
            .into_iter()
            .find(|e| e.position == position),
        (None, Some(id)) => {
            let id: Uuid = id.parse().map_err(|_| ApiError::Validation {
                field: "event_id".into(),
                message: "must be a UUID".into(),
            })?;
            state.store.read_event(id).await?
        }
        _ => {
            return Err(ApiError::Validation {
                field: "position".into(),
                message: "give exactly one of position and event_id".into(),
            })
        }
    }
    .ok_or_else(|| ApiError::NotFound("no such event".into()))?;
    let checkpoint = match number(query.size.as_deref(), "size")? {
        Some(size) if size < event.position => {
            return Err(ApiError::Validation {
                field: "size".into(),
                message: format!(
                    "the checkpoint of {size} events does not cover position {}",
                    event.position
                ),
            })
        }
        Some(size) => notary
            .tree()
            .checkpoint(size)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no checkpoint of {size} events")))?,
        None => latest_covering(notary, event.position).await?,
    };
    let entries = prove(notary, &checkpoint, vec![event]).await?;
    Ok(Json(InclusionBundle {
        format: INCLUSION_FORMAT,
        checkpoint: checkpoint.note,
        entries,
    }))
}

/// The latest checkpoint if it covers `position`, else one signed now.
pub(crate) async fn latest_covering(
    notary: &Notary,
    position: u64,
) -> Result<StoredCheckpoint, ApiError> {
    match notary.latest().await? {
        Some(latest) if latest.size >= position => Ok(latest),
        _ => Ok(notary.covering(position).await?),
    }
}

async fn prove(
    notary: &Notary,
    checkpoint: &StoredCheckpoint,
    events: Vec<EventEnvelope>,
) -> Result<Vec<ProvenEvent>, ApiError> {
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let leaf_index = event.position - 1;
        let proof = notary.inclusion_proof(leaf_index, checkpoint.size).await?;
        // Never hand out a proof that does not verify (the offline verifier's own check): the
        // stored event or subtrees no longer match what was signed (tampering or damage).
        // Alarm, and answer an error.
        let signed =
            Checkpoint::new(notary.origin(), checkpoint.size, checkpoint.root).map_err(|e| {
                ApiError::from(anyhow::anyhow!("checkpoint of {}: {e}", checkpoint.size))
            })?;
        if let Err(failure) = cryptovault_events::bundle::verify_included(
            entries.len(),
            &event,
            leaf_index,
            &proof,
            &signed,
        ) {
            metrics::counter!("ledger_proof_failures_total").increment(1);
            return Err(ApiError::from(anyhow::anyhow!(
                "the event at position {} does not verify against the signed checkpoint of {} \
                 events ({failure}): the log or the tree was changed",
                event.position,
                checkpoint.size
            )));
        }
        entries.push(ProvenEvent {
            leaf_index,
            inclusion_proof: proof.iter().map(b64).collect(),
            event,
        });
    }
    Ok(entries)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConsistencyQuery {
    /// The older checkpoint's size (one the verifier kept).
    #[param(value_type = u64)]
    from: Option<String>,
    /// The newer checkpoint's size (default: the latest).
    #[param(value_type = Option<u64>)]
    to: Option<String>,
}

/// A proof that the older checkpoint's tree is a prefix of the newer one's.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyBundle {
    format: &'static str,
    old_size: u64,
    new_size: u64,
    old_checkpoint: String,
    new_checkpoint: String,
    /// Base64 hashes (RFC 9162 §2.1.4).
    proof: Vec<String>,
}

/// `GET /api/audit/proofs/consistency?from=&to=`: both signed checkpoints and the proof that
/// the log of `from` events is a prefix of the log of `to` events.
#[utoipa::path(
    get,
    path = "/api/audit/proofs/consistency",
    tag = "proofs",
    security(("bearer" = [])),
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "A `cryptovault.consistency.v1` bundle.", body = ConsistencyBundle),
        (status = 404, description = "`not_found`: no checkpoint of one of the sizes.", body = ErrorBody),
        (status = 422, description = "`validation_error`: `from` missing, or above `to`.", body = ErrorBody),
    )
)]
async fn consistency(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyBundle>, ApiError> {
    auditor(&caller)?;
    let notary = notary(&state)?;
    let from = number(query.from.as_deref(), "from")?.ok_or_else(|| ApiError::Validation {
        field: "from".into(),
        message: "required: the size of the checkpoint you hold".into(),
    })?;
    let to = number(query.to.as_deref(), "to")?;
    let checkpoint = |size: u64| async move {
        notary
            .tree()
            .checkpoint(size)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no checkpoint of {size} events")))
    };
    let new = match to {
        Some(to) => checkpoint(to).await?,
        None => notary
            .latest()
            .await?
            .ok_or_else(|| ApiError::NotFound("no checkpoint has been signed yet".into()))?,
    };
    if from > new.size {
        return Err(ApiError::Validation {
            field: "from".into(),
            message: format!("{from} is above the newer checkpoint's size {}", new.size),
        });
    }
    let old = checkpoint(from).await?;
    let proof = notary.consistency_proof(old.size, new.size).await?;
    Ok(Json(ConsistencyBundle {
        format: CONSISTENCY_FORMAT,
        old_size: old.size,
        new_size: new.size,
        old_checkpoint: old.note,
        new_checkpoint: new.note,
        proof: proof.iter().map(b64).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReceiptQuery {
    /// Wait until the history has applied this position (the `position` a command answered).
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
}

/// `GET /api/transactions/{id}/receipt`: the caller's own transaction as a self-contained
/// receipt: every event of it (the request, and each later status), a signed checkpoint that
/// covers them (signed now if none does yet) and their inclusion proofs. Verifiable offline
/// with only the public key.
#[utoipa::path(
    get,
    path = "/api/transactions/{id}/receipt",
    tag = "proofs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The transaction's id."), ReceiptQuery),
    responses(
        (status = 200, description = "A `cryptovault.receipt.v1` bundle.", body = InclusionBundle),
        (status = 404, description = "`not_found`: no such transaction of the caller's.", body = ErrorBody),
    )
)]
async fn receipt(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ReceiptQuery>,
) -> Result<Json<InclusionBundle>, ApiError> {
    let not_found = || ApiError::NotFound("no such transaction".into());
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    read_your_writes(&state, &state.transactions, min_position).await?;
    let notary = notary(&state)?;
    let row = state
        .read_models
        .transaction(user.user_id(), id)
        .await?
        .ok_or_else(not_found)?;
    let mut positions: Vec<u64> = std::iter::once(row.position)
        .chain(row.status_positions.values().copied())
        .filter_map(|p| u64::try_from(p).ok())
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let last = *positions.last().ok_or_else(not_found)?;
    let mut events = Vec::with_capacity(positions.len());
    for position in positions {
        let event = state
            .store
            .read_all(position, 1)
            .await?
            .into_iter()
            .find(|e| e.position == position)
            .ok_or_else(|| {
                ApiError::from(anyhow::anyhow!(
                    "the history names position {position}, which the log lacks"
                ))
            })?;
        events.push(event);
    }
    let checkpoint = latest_covering(notary, last).await?;
    let entries = prove(notary, &checkpoint, events).await?;
    Ok(Json(InclusionBundle {
        format: RECEIPT_FORMAT,
        checkpoint: checkpoint.note,
        entries,
    }))
}
