//! `GET /api/wallet/transfers` (`predecessor-api.md` §3, the P2P transfer page): the caller's
//! transfers, both directions, newest first in offset pages, each with the other party's email
//! and name. (`POST` on the same path is the native transfer, `http/wallet.rs`.)
//!
//! The rows are the native history's `transfer_in` / `transfer_out` rows
//! ([`crate::store::read_models::ReadModels::history_offset_page`]); the other party is read
//! from the identity service, once per distinct counterparty of the page. A counterparty whose
//! personal data was erased shows what the identity service holds for it (`[erased]`); the
//! page never fails for it.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use cryptovault_events::personal::ERASED;
use cryptovault_projections::history::TransactionKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::history::{created_at, row_amount, row_kind, skip, MAX_TOTAL};
use super::number::JsonNumber;
use crate::http::error::ApiError;
use crate::http::extract::AuthUser;
use crate::http::paging::{number, page_size};
use crate::http::query::ApiQuery;
use crate::http::{read_your_writes, AppState};
use crate::identity::IdentityError;
use crate::store::read_models::{HistoryFilter, HistoryRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Query of `GET /api/wallet/transfers`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TransfersQuery {
    /// Rows `skip` to `skip + limit`, newest first; 0 to 100000 (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 100000)]
    skip: Option<String>,
    /// Page size, 1 to 50 (default 50, what the predecessor's page asks for): each distinct
    /// counterparty on a page costs an identity read.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 50)]
    limit: Option<String>,
    /// Wait until the read model has applied this position.
    #[param(value_type = Option<u64>)]
    min_position: Option<String>,
}

/// Which way a transfer went, seen from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
}

/// The other user of a transfer. `[erased]` in both fields once that user's personal data
/// was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OtherParty {
    pub email: String,
    pub name: String,
}

impl OtherParty {
    /// What is shown for a user whose personal data is gone.
    fn erased() -> Self {
        Self {
            email: ERASED.to_owned(),
            name: ERASED.to_owned(),
        }
    }
}

/// One transfer as the predecessor's client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OldTransfer {
    /// The transfer id (the same on both users' rows).
    pub id: String,
    /// Positive, in the asset's unit with its decimal places.
    pub amount: JsonNumber,
    /// The asset code (`USD`).
    pub currency: String,
    pub direction: Direction,
    #[serde(rename = "otherParty")]
    pub other_party: OtherParty,
    #[schema(required = true)]
    pub note: Option<String>,
    /// `completed`.
    pub status: String,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "createdAt")]
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/wallet/transfers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransfersPage {
    pub transfers: Vec<OldTransfer>,
    /// The caller's transfers in all.
    pub total: u64,
}

/// The row kinds listed: both directions.
const TRANSFER_KINDS: [TransactionKind; 2] =
    [TransactionKind::TransferOut, TransactionKind::TransferIn];

/// A transfer row in the old client's shape, its other party taken from `parties` (erased
/// when absent). 500 for a row that is not a transfer or whose amount is not a decimal.
fn old_transfer(
    assets: &crate::ledger::amount::Assets,
    row: &HistoryRow,
    parties: &HashMap<Uuid, OtherParty>,
) -> Result<OldTransfer, ApiError> {
    let direction = match row_kind(row)? {
        TransactionKind::TransferOut => Direction::Sent,
        TransactionKind::TransferIn => Direction::Received,
        other => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "history row {} of type {} listed as a transfer",
                row.key,
                other.as_str()
            )))
        }
    };
    let other_party = counterparty(row)
        .and_then(|id| parties.get(&id).cloned())
        .unwrap_or_else(OtherParty::erased);
    Ok(OldTransfer {
        id: row.id.clone(),
        amount: JsonNumber(row_amount(assets, row)?),
        currency: row.asset.clone(),
        direction,
        other_party,
        note: row.note.clone(),
        status: row.status.clone(),
        created_at: created_at(row),
    })
}

fn counterparty(row: &HistoryRow) -> Option<Uuid> {
    row.counterparty_id.as_deref()?.parse().ok()
}

/// The largest page: at most this many identity reads per request.
const MAX_LIMIT: u64 = 50;

/// How many identity reads of one page run at once (each reads a user stream): a page must not
/// take the connection pool from the ledger's writes.
const LOOKUP_CONCURRENCY: usize = 4;

/// The other parties of `rows`: one identity read per distinct counterparty, at most
/// [`LOOKUP_CONCURRENCY`] at a time.
/// An unknown user (never for a row the ledger wrote) shows as erased rather than failing
/// the page; a store failure fails it.
async fn parties(
    state: &AppState,
    rows: &[HistoryRow],
) -> Result<HashMap<Uuid, OtherParty>, ApiError> {
    let mut ids: Vec<Uuid> = rows.iter().filter_map(counterparty).collect();
    ids.sort_unstable();
    ids.dedup();
    let lookups = ids.into_iter().map(|id| async move {
        match state.identity.user(id).await {
            Ok(user) => Ok((
                id,
                OtherParty {
                    email: user.email,
                    name: user.name,
                },
            )),
            Err(IdentityError::UnknownUser) => {
                tracing::warn!(user = %id, "a transfer's counterparty is not a known user");
                Ok((id, OtherParty::erased()))
            }
            Err(other) => Err(ApiError::from(other)),
        }
    });
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(lookups)
        .buffer_unordered(LOOKUP_CONCURRENCY)
        .try_collect()
        .await
}

/// The caller's transfers, both directions, newest first, in offset pages (the predecessor's
/// P2P transfer page).
#[utoipa::path(
    get,
    path = "/api/wallet/transfers",
    tag = "predecessor",
    security(("bearer" = [])),
    params(TransfersQuery),
    responses((status = 200, description = "One page and the number of the caller's transfers.", body = TransfersPage))
)]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<TransfersQuery>,
) -> Result<Json<TransfersPage>, ApiError> {
    let limit = page_size(query.limit.as_deref(), 50, MAX_LIMIT)?;
    let skip = skip(query.skip.as_deref())?.unwrap_or(0);
    let min_position = number(query.min_position.as_deref(), "min_position")?;
    let filter = HistoryFilter {
        user_id: user.user_id(),
        kinds: Some(TRANSFER_KINDS.to_vec()),
        asset: None,
        created: (None, None),
    };
    read_your_writes(&state, &state.transactions, min_position).await?;
    let (rows, total) = tokio::try_join!(
        state.read_models.history_offset_page(&filter, skip, limit),
        state.read_models.history_count(&filter, MAX_TOTAL),
    )?;
    let parties = parties(&state, &rows).await?;
    let transfers = rows
        .iter()
        .map(|row| old_transfer(&state.ledger.assets, row, &parties))
        .collect::<Result<_, _>>()?;
    Ok(Json(TransfersPage { transfers, total }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::amount::Assets;
    use chrono::{TimeZone, Utc};

    fn row(kind: &str, counterparty: Option<Uuid>, note: Option<&str>) -> HistoryRow {
        let at = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
        HistoryRow {
            key: "u:t".into(),
            id: "t".into(),
            user_id: "u".into(),
            kind: kind.into(),
            asset: "ETH".into(),
            amount: "0.000000000000000001".into(),
            status: "completed".into(),
            counterparty_id: counterparty.map(|c| c.to_string()),
            note: note.map(str::to_owned),
            address: None,
            created_at: at,
            updated_at: at,
            position: 9,
            status_positions: Default::default(),
        }
    }

    #[test]
    fn transfer_rows_take_the_old_shape() {
        let assets = Assets::default();
        let bob = Uuid::now_v7();
        let parties = HashMap::from([(
            bob,
            OtherParty {
                email: "bob@example.com".into(),
                name: "Bob".into(),
            },
        )]);
        let sent = old_transfer(
            &assets,
            &row("transfer_out", Some(bob), Some("rent")),
            &parties,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"id":"t","amount":0.000000000000000001,"currency":"ETH","direction":"sent","otherParty":{"email":"bob@example.com","name":"Bob"},"note":"rent","status":"completed","createdAt":"2024-05-06T07:08:09.000Z"}"#
        );
        let received =
            old_transfer(&assets, &row("transfer_in", Some(bob), None), &parties).unwrap();
        assert_eq!(received.direction, Direction::Received);
        assert_eq!(received.note, None);
        assert!(serde_json::to_string(&received)
            .unwrap()
            .contains(r#""note":null"#));
    }

    #[test]
    fn an_unknown_counterparty_shows_as_erased_and_a_non_transfer_is_an_error() {
        let assets = Assets::default();
        let stranger = old_transfer(
            &assets,
            &row("transfer_in", Some(Uuid::now_v7()), None),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(stranger.other_party, OtherParty::erased());
        let missing = old_transfer(&assets, &row("transfer_in", None, None), &HashMap::new());
        assert_eq!(missing.unwrap().other_party.email, ERASED);
        assert!(old_transfer(&assets, &row("deposit", None, None), &HashMap::new()).is_err());
    }
}
