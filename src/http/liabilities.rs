//! Proof of liabilities (issue 16): `POST /api/audit/liabilities` issues it at the latest signed
//! checkpoint (auditor or admin), `GET /api/audit/liabilities` answers the latest signed note and
//! totals (any signed-in user: the totals are published), `GET /api/wallet/liabilities-proof`
//! answers the caller's own bundle for one asset. The work is in `crate::liabilities`.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cryptovault_events::checkpoint::SignerKey;
use cryptovault_events::liabilities::LiabilitiesBundle;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::auditor;
use super::error::ApiError;
use super::extract::AuthUser;
use super::proofs::notary;
use super::query::ApiQuery;
use super::views::ErrorBody;
use super::AppState;
use crate::liabilities::{self, CheckpointSource, IssueError, ProofError};
use crate::store::liabilities::IssuanceRow;
use crate::store::read_models::SumError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue, latest))
        .routes(routes!(proof))
}

/// The checkpoint key and a checkpoint of the log as it is now: the notary brings its tree up
/// to the head and signs one if the tree grew (as `POST /api/audit/checkpoints` does), so the
/// liabilities cover every event so far. The only place these routes reach the notary's tree.
async fn checkpoint_source(state: &AppState) -> Result<CheckpointSource, ApiError> {
    let notary = notary(state)?;
    let latest = notary.sync(true).await?.ok_or_else(|| {
        ApiError::CheckpointPending("the log is empty: there is nothing to sign".into())
    })?;
    Ok(CheckpointSource {
        signer: notary.signer().clone(),
        size: latest.size,
        root: latest.root,
    })
}

/// The checkpoint key (the liabilities' salts are derived from it).
fn signer(state: &AppState) -> Result<SignerKey, ApiError> {
    Ok(notary(state)?.signer().clone())
}

/// An issuance: the signed note and, per asset, what it states.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiabilitiesBody {
    /// The size of the checkpoint the balances were computed at (its last position).
    pub checkpoint_size: u64,
    /// Base64 of that checkpoint's root.
    pub checkpoint_root: String,
    /// The whole signed liabilities note (C2SP signed note; see the README).
    pub note: String,
    pub assets: Vec<AssetTotal>,
    pub issued_at: DateTime<Utc>,
}

/// One asset's line of the note.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetTotal {
    pub asset: String,
    /// The number of holders counted (leaves).
    pub leaf_count: u64,
    /// The sum of their balances (available + held), exact decimal.
    pub total: String,
    /// Base64 of the sum tree's root hash.
    pub root: String,
}

impl LiabilitiesBody {
    fn of(row: IssuanceRow) -> Self {
        Self {
            checkpoint_size: u64::try_from(row.checkpoint_size).unwrap_or_default(),
            checkpoint_root: row.checkpoint_root,
            note: row.note,
            assets: row
                .assets
                .into_iter()
                .map(|a| AssetTotal {
                    asset: a.asset,
                    leaf_count: u64::try_from(a.leaf_count).unwrap_or_default(),
                    total: a.total,
                    root: a.root,
                })
                .collect(),
            issued_at: row.issued_at,
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::NegativeBalance { .. }
            | IssueError::Tree { .. }
            | IssueError::Sum(SumError::NotExact { .. }) => {
                tracing::error!(error = %e, "liabilities not issued");
                ApiError::InvalidState(e.to_string())
            }
            IssueError::Sum(SumError::Store(e)) | IssueError::Store(e) => e.into(),
        }
    }
}

impl From<ProofError> for ApiError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::NoIssuance | ProofError::NotCounted { .. } => {
                ApiError::NotFound(e.to_string())
            }
            ProofError::RetiredKey { .. } => ApiError::InvalidState(e.to_string()),
            ProofError::Damaged { .. } => ApiError::Internal(anyhow::Error::from(e)),
            ProofError::Store(e) => e.into(),
        }
    }
}

/// `POST /api/audit/liabilities`: computes every user's balance per asset after the latest
/// signed checkpoint, builds the sum trees, signs the note with the checkpoint key and stores it
/// (idempotent: the same checkpoint answers the stored issuance).
#[utoipa::path(
    post,
    path = "/api/audit/liabilities",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The issuance at a checkpoint of the log as it is now (signed for it if the log grew).", body = LiabilitiesBody),
        (status = 409, description = "`invalid_state`: a user's balance is negative or the entries cannot be summed exactly (the message names the user and asset); nothing issued.", body = ErrorBody),
    )
)]
async fn issue(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<LiabilitiesBody>, ApiError> {
    auditor(&caller)?;
    let source = checkpoint_source(&state).await?;
    let entries = &state.transactions;
    if entries.position() < source.size
        && !entries
            .wait_for(source.size, state.config.read_your_writes_timeout)
            .await
    {
        return Err(ApiError::ProjectionLag(source.size));
    }
    let assets: Vec<String> = state
        .ledger
        .assets
        .iter()
        .map(|(a, _)| a.to_owned())
        .collect();
    let row = liabilities::issue(&state.read_models, &source, &assets, Utc::now()).await?;
    Ok(Json(LiabilitiesBody::of(row)))
}

/// `GET /api/audit/liabilities`: the latest issuance (signed note and totals).
#[utoipa::path(
    get,
    path = "/api/audit/liabilities",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The latest issuance.", body = LiabilitiesBody),
        (status = 404, description = "`not_found`: no liabilities issued yet.", body = ErrorBody),
    )
)]
async fn latest(
    State(state): State<AppState>,
    _caller: AuthUser,
) -> Result<Json<LiabilitiesBody>, ApiError> {
    let row = state
        .read_models
        .liabilities()
        .latest()
        .await?
        .ok_or_else(|| ApiError::NotFound("no liabilities have been issued yet".into()))?;
    Ok(Json(LiabilitiesBody::of(row)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ProofQuery {
    /// A configured asset code, e.g. `BTC`.
    asset: String,
}

/// A user's liabilities bundle (`cryptovault.liabilities.v1`), verified offline by
/// `cryptovault audit verify-liabilities FILE --key K`.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `LiabilitiesBundle`'s JSON.
pub struct Bundle {
    /// `cryptovault.liabilities.v1`.
    format: String,
    /// The whole signed liabilities note.
    note: String,
    user_id: String,
    asset: String,
    /// Base64 of the 32-byte salt of the user's hash.
    salt: String,
    /// Available + held at the checkpoint, exact decimal.
    balance: String,
    leaf_index: u64,
    leaf_count: u64,
    /// Siblings from the leaf towards the root.
    proof: Vec<BundleStep>,
}

/// One sibling of a liabilities proof.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes `ProofStep`'s JSON.
pub struct BundleStep {
    /// Base64 of the sibling's hash.
    hash: String,
    /// The sibling's sum, exact decimal.
    sum: String,
}

/// `GET /api/wallet/liabilities-proof?asset=BTC`: the caller's own bundle in the latest
/// issuance: proof that their balance of the asset is counted in the published total.
#[utoipa::path(
    get,
    path = "/api/wallet/liabilities-proof",
    tag = "wallet",
    security(("bearer" = [])),
    params(ProofQuery),
    responses(
        (status = 200, description = "The caller's bundle.", body = Bundle),
        (status = 404, description = "`not_found`: no liabilities issued yet, or no balance of the asset counted for the caller.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the latest liabilities were signed with a retired key (the key was rotated since); an auditor must issue them again.", body = ErrorBody),
    )
)]
async fn proof(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<Json<LiabilitiesBundle>, ApiError> {
    let asset = state.ledger.assets.asset(&query.asset, "asset")?;
    let signer = signer(&state)?;
    let user_id = caller.user_id().to_string();
    let bundle = liabilities::bundle(&state.read_models, &signer, &user_id, &asset).await?;
    Ok(Json(bundle))
}
