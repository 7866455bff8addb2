//! `/api/transactions`: the signed-in user's transaction history (cursor pages, filters; and
//! offset pages with `skip` for the predecessor's client, `http/predecessor/history.rs`), one
//! transaction, statements; and `GET /api/wallet/deposits` (the history filtered to deposits).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cryptovault_projections::history::TransactionKind;
use cryptovault_projections::statement_proof::DIGEST_FORMAT;
use futures::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::AuthUser;
use super::json::ApiJson;
use super::paging::{cursor_key, encode_cursor, number, page_size, period};
use super::predecessor::history::{self as old, HistoryPage};
use super::query::ApiQuery;
use super::read_models::{item, transaction};
use super::views::{ErrorBody, TransactionBody, TransactionPage};
use super::{read_your_writes, AppState};
use crate::identity::domain::InvalidInput;
use crate::statement::{Format, Proofs, StatementRequest};
use crate::store::read_models::HistoryFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(export))
        .routes(routes!(export_digest))
        .routes(routes!(one))
        .routes(routes!(list_deposits))
        .routes(routes!(list_withdrawals))
}

/// Query of a history listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Ignored: the route fixes the type.
    #[serde(rename = "type")]
    #[param(rename = "type", inline, value_type = Option<TransactionType>)]
    kind: Option<String>,
    /// A configured asset.
    asset: Option<String>,
    /// Created at or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// Created before this instant (RFC 3339).
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

/// The type of a history row.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only describes the parameter.
pub enum TransactionType {
    Deposit,
    Withdrawal,
    TransferIn,
    TransferOut,
}

/// Query of `GET /api/transactions`: [`ListQuery`]'s parameters, the old client's `type`
/// values, and `skip`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A native row type, or one of the predecessor client's: `withdraw` (= `withdrawal`),
    /// `transfer` (= `transfer_in` or `transfer_out`), `buy` and `sell` (no trading here: an
    /// empty page, `total` 0).
    #[serde(rename = "type")]
    #[param(rename = "type", inline, value_type = Option<HistoryType>)]
    kind: Option<String>,
    /// A configured asset.
    asset: Option<String>,
    /// Created at or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// Created before this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    to: Option<String>,
    /// The `next_cursor` of the previous page. Not with `skip`.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Wait until the read model has applied this position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
    /// An offset page (the predecessor's client): rows `skip` to `skip + limit` of the
    /// filtered history, newest first, 0 to 100000; the answer adds `transactions` and
    /// `total`. Not with `cursor`. Offsets count from the newest row when asked: a row
    /// created between two offset pages shifts the later one (cursor pages never do).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 100000)]
    skip: Option<String>,
}

impl From<ListQuery> for HistoryQuery {
    fn from(query: ListQuery) -> Self {
        Self {
            kind: query.kind,
            asset: query.asset,
            from: query.from,
            to: query.to,
            cursor: query.cursor,
            limit: query.limit,
            min_position: query.min_position,
            skip: None,
        }
    }
}

/// The `type` values of `GET /api/transactions`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only describes the parameter.
pub enum HistoryType {
    Deposit,
    Withdrawal,
    TransferIn,
    TransferOut,
    Withdraw,
    Transfer,
    Buy,
    Sell,
}

/// One page of `user`'s history, newest first, filtered by `query` (and `kind` if forced):
/// a cursor page, or with `skip` an offset page with the predecessor client's keys.
pub async fn page(
    state: &AppState,
    user: &AuthUser,
    query: HistoryQuery,
    forced_kind: Option<TransactionKind>,
) -> Result<HistoryPage, ApiError> {
    let limit = page_size(query.limit.as_deref(), 50, 200)?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let skip = old::skip(query.skip.as_deref())?;
    if skip.is_some() && query.cursor.is_some() {
        return Err(InvalidInput {
            field: "skip",
            message: "cannot be combined with cursor".into(),
        }
        .into());
    }
    let kinds = match (forced_kind, query.kind.as_deref()) {
        (Some(kind), _) => Some(vec![kind]),
        (None, None) => None,
        (None, Some(raw)) => Some(old::kinds_of_type(raw)?),
    };
    let asset = match query.asset.as_deref() {
        Some(raw) => Some(state.ledger.assets.asset(raw, "asset")?),
        None => None,
    };
    let filter = HistoryFilter {
        user_id: user.user_id(),
        kinds,
        asset,
        created: period(query.from.as_deref(), query.to.as_deref())?,
    };
    let below = cursor_key(query.cursor.as_deref())?;
    read_your_writes(state, &state.transactions, min_position).await?;
    let Some(skip) = skip else {
        let page = state
            .read_models
            .history_page(&filter, below, limit)
            .await?;
        return Ok(HistoryPage {
            items: page.rows.iter().map(|r| item(state, r)).collect(),
            next_cursor: page.next_key.map(encode_cursor),
            position: state.transactions.position(),
            transactions: None,
            total: None,
        });
    };
    let (rows, total) = tokio::try_join!(
        state.read_models.history_offset_page(&filter, skip, limit),
        state.read_models.history_count(&filter, old::MAX_TOTAL),
    )?;
    let transactions = rows
        .iter()
        .map(|r| old::old_transaction(&state.ledger.assets, r))
        .collect::<Result<Vec<_>, _>>()?;
    // The cursor after this page's last row, when rows follow it: a client may continue with
    // cursor pages from here.
    let more = skip.saturating_add(rows.len() as u64) < total;
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|r| encode_cursor(r.position.max(0) as u64));
    Ok(HistoryPage {
        items: rows.iter().map(|r| item(state, r)).collect(),
        next_cursor,
        position: state.transactions.position(),
        transactions: Some(transactions),
        total: Some(total),
    })
}

/// A native page (of a route without `skip`).
async fn native_page(
    state: &AppState,
    user: &AuthUser,
    query: ListQuery,
    forced_kind: TransactionKind,
) -> Result<Json<TransactionPage>, ApiError> {
    let page = page(state, user, query.into(), Some(forced_kind)).await?;
    Ok(Json(TransactionPage {
        items: page.items,
        next_cursor: page.next_cursor,
        position: page.position,
    }))
}

/// The caller's history, newest first, in cursor pages, or with `skip` in offset pages (the
/// predecessor's client: `transactions` and `total` are added).
#[utoipa::path(
    get,
    path = "/api/transactions",
    tag = "transactions",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, description = "One page. `transactions` and `total` only with `skip`.", body = HistoryPage))
)]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    page(&state, &user, query, None).await.map(Json)
}

/// The caller's deposits (the history filtered to deposits).
#[utoipa::path(
    get,
    path = "/api/wallet/deposits",
    tag = "wallet",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "One page.", body = TransactionPage))
)]
async fn list_deposits(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TransactionPage>, ApiError> {
    native_page(&state, &user, query, TransactionKind::Deposit).await
}

/// `GET /api/wallet/withdrawals`: the caller's history filtered to withdrawals (same cursor
/// pages, filters and shape as `GET /api/transactions`; `status` follows approve / complete /
/// reject).
#[utoipa::path(
    get,
    path = "/api/wallet/withdrawals",
    tag = "wallet",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "One page.", body = TransactionPage))
)]
async fn list_withdrawals(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TransactionPage>, ApiError> {
    native_page(&state, &user, query, TransactionKind::Withdrawal).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OneQuery {
    /// Wait until the read model has applied this position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
}

/// One of the caller's transactions.
#[utoipa::path(
    get,
    path = "/api/transactions/{id}",
    tag = "transactions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The transaction's id (a UUID; anything else is not found)."), OneQuery),
    responses(
        (status = 200, description = "The transaction.", body = TransactionBody),
        (status = 404, description = "`not_found`: no such transaction of the caller's.", body = ErrorBody),
    )
)]
async fn one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OneQuery>,
) -> Result<Json<TransactionBody>, ApiError> {
    let not_found = || ApiError::NotFound("no such transaction".into());
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    read_your_writes(&state, &state.transactions, min_position).await?;
    let row = transaction(&state, user.user_id(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(TransactionBody { transaction: row }))
}

/// `POST /api/transactions/export`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    format: ExportFormat,
    /// The period's start (RFC 3339), inclusive.
    #[schema(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// The period's end (RFC 3339), exclusive.
    #[schema(value_type = Option<DateTime<Utc>>)]
    to: Option<String>,
    /// One asset; all configured assets when absent.
    asset: Option<String>,
    /// Wait until the read model has applied this position.
    min_position: Option<u64>,
    /// Fix the statement at a signed checkpoint (issue 16): a JSON statement then carries the
    /// checkpoint and, per movement, its event and inclusion proof
    /// (`cryptovault.statement.v1`); a CSV statement's bytes are unchanged and its signed digest
    /// is at `POST /api/transactions/export/digest`. The response names the checkpoint in the
    /// `Cryptovault-Checkpoint-Size` header.
    verifiable: Option<bool>,
    /// With `verifiable`: the checkpoint (tree size) to fix the statement at; default the
    /// latest, signed now if it does not cover the ledger yet.
    checkpoint_size: Option<u64>,
}

/// The header naming the checkpoint a verifiable statement is fixed at.
pub const CHECKPOINT_SIZE_HEADER: &str = "cryptovault-checkpoint-size";

/// The statement's format.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ExportFormat {
    Csv,
    Json,
}

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        match format {
            ExportFormat::Csv => Self::Csv,
            ExportFormat::Json => Self::Json,
        }
    }
}

/// `POST /api/transactions/export`: a statement, streamed as an attachment.
#[utoipa::path(
    post,
    path = "/api/transactions/export",
    tag = "transactions",
    security(("bearer" = [])),
    request_body = ExportBody,
    responses(
        (status = 200, description = "The statement (an attachment): per asset the opening balance, the movements with running balance, the closing balance.",
            content(
                (String = "text/csv"),
                (serde_json::Value = "application/json"),
            )),
    )
)]
async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<ExportBody>,
) -> Result<Response, ApiError> {
    let format = Format::from(body.format);
    let request = statement_request(&state, &user, &body, body.verifiable == Some(true)).await?;
    let checkpoint_size = request.proofs.as_ref().map(|p| p.checkpoint.size);
    let filename = format!(
        "statement-{}-{}.{}",
        body.asset.as_deref().unwrap_or("all"),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let stream = crate::statement::stream(
        state.read_models.clone(),
        state.ledger.assets.clone(),
        request,
    );
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
    if let Some(size) = checkpoint_size {
        headers.insert(CHECKPOINT_SIZE_HEADER, HeaderValue::from(size));
    }
    Ok(response)
}

/// The statement `body` asks for; `verifiable`: fixed at a signed checkpoint (the one of
/// `checkpoint_size`, else the latest covering the read model), once the read model has
/// applied it, with `generated_at` = the checkpoint's `issued_at`, so the same body at the same
/// checkpoint always gives the same bytes.
async fn statement_request(
    state: &AppState,
    user: &AuthUser,
    body: &ExportBody,
    verifiable: bool,
) -> Result<StatementRequest, ApiError> {
    let format = Format::from(body.format);
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
    if body.checkpoint_size.is_some() && !verifiable {
        return Err(ApiError::Validation {
            field: "checkpoint_size".into(),
            message: "only with \"verifiable\": true".into(),
        });
    }
    read_your_writes(state, &state.transactions, body.min_position).await?;
    let email = state.identity.user(user.user_id()).await?.email;
    let mut request = StatementRequest {
        user_id: user.user_id(),
        email: Some(email),
        assets,
        from,
        to,
        format,
        up_to_position: state.transactions.position(),
        generated_at: None,
        proofs: None,
    };
    if verifiable {
        let notary = super::proofs::notary(state)?;
        let checkpoint = match body.checkpoint_size {
            Some(size) => notary.tree().checkpoint(size).await?.ok_or_else(|| {
                ApiError::NotFound(format!("no checkpoint of {size} events (checkpoint_size)"))
            })?,
            None => super::proofs::latest_covering(notary, request.up_to_position).await?,
        };
        // Every entry of the checkpoint's events must be in the read model.
        read_your_writes(state, &state.transactions, Some(checkpoint.size)).await?;
        request.up_to_position = checkpoint.size;
        request.generated_at = Some(checkpoint.issued_at);
        request.proofs = Some(Proofs {
            notary: notary.clone(),
            store: state.store.clone(),
            checkpoint,
        });
    }
    Ok(request)
}

/// A statement's signed digest (`cryptovault.statement-digest.v1`).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct StatementDigest {
    /// `cryptovault.statement-digest.v1`.
    format: &'static str,
    /// The signed checkpoint note the statement is fixed at.
    checkpoint: String,
    /// A signed note (same key as checkpoints, origin `<log origin>/statement`) binding the
    /// statement's format, user, assets, period, the checkpoint's size and root, and the
    /// SHA-256 of the exact statement bytes.
    digest: String,
}

/// `POST /api/transactions/export/digest`: the signed digest of the statement that
/// `POST /api/transactions/export` answers for the same body with `"verifiable": true` (pass
/// the `checkpoint_size` its `Cryptovault-Checkpoint-Size` header named: the statement is
/// computed again at that checkpoint, which gives the same bytes). Verify both offline with
/// `cryptovault audit verify-statement FILE --digest DIGEST --key K`.
#[utoipa::path(
    post,
    path = "/api/transactions/export/digest",
    tag = "proofs",
    security(("bearer" = [])),
    request_body = ExportBody,
    responses(
        (status = 200, description = "A `cryptovault.statement-digest.v1` document.", body = StatementDigest),
        (status = 404, description = "`not_found`: no checkpoint of `checkpoint_size`.", body = ErrorBody),
        (status = 422, description = "`validation_error`: `verifiable` is false, or another field.", body = ErrorBody),
    )
)]
async fn export_digest(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<ExportBody>,
) -> Result<Json<StatementDigest>, ApiError> {
    if body.verifiable == Some(false) {
        return Err(ApiError::Validation {
            field: "verifiable".into(),
            message: "a digest is of the verifiable statement: true or absent".into(),
        });
    }
    let request = statement_request(&state, &user, &body, true).await?;
    let mut hasher = Sha256::new();
    let mut chunks = crate::statement::stream(
        state.read_models.clone(),
        state.ledger.assets.clone(),
        request.clone(),
    );
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the statement for a digest failed: {e}"))?;
        hasher.update(&chunk);
    }
    let digest = crate::statement::signed_digest(&request, hex::encode(hasher.finalize()))?;
    Ok(Json(StatementDigest {
        format: DIGEST_FORMAT,
        checkpoint: digest.checkpoint,
        digest: digest.digest,
    }))
}
