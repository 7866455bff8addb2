//! Reads of the read models that several resources answer with: the caller's balances (the
//! wallet, `/ws/account`) and one history row (`/api/transactions/{id}`, `/ws/account`).

use bson::{doc, Document};
use cryptovault_events::Units;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::error::ApiError;
use super::views::{BalanceRow, BalancesBody, TransactionItem};
use super::AppState;
use crate::ledger::amount::Assets;
use crate::projection::balances::{stored_row, COLLECTION as BALANCES};
use crate::projection::transactions::{row_id, TRANSACTIONS};

/// One balance row of the API: exact text with the asset's decimal places (never rounded; a
/// total that cannot be held is an error, not a figure).
pub fn balance_json(
    assets: &Assets,
    asset: &str,
    available: Units,
    held: Units,
) -> Result<BalanceRow, ApiError> {
    let total = available.checked_add(held).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "{asset} balance {available} + {held} is beyond the range held exactly"
        ))
    })?;
    Ok(BalanceRow {
        asset: asset.to_owned(),
        available: assets.format_units(available, asset),
        held: assets.format_units(held, asset),
        total: assets.format_units(total, asset),
    })
}

/// The user's balances from the `balances` read model, every configured asset.
pub async fn current_balance(
    state: &AppState,
    user_id: uuid::Uuid,
) -> Result<BalancesBody, ApiError> {
    let position = state.balances.position();
    let rows: Vec<bson::RawDocumentBuf> = state
        .db
        .collection::<bson::RawDocumentBuf>(BALANCES)
        .find(doc! { "owner": user_id.to_string() })
        .await?
        .try_collect()
        .await?;
    let assets = &state.ledger.assets;
    let balances: Vec<BalanceRow> = assets
        .iter()
        .map(|(asset, _)| {
            let row = rows.iter().find(|r| r.get_str("asset").ok() == Some(asset));
            let stored = match row {
                None => Default::default(),
                Some(row) => stored_row(row).map_err(|why| {
                    ApiError::Internal(anyhow::anyhow!("balance row of {user_id} {asset}: {why}"))
                })?,
            };
            balance_json(assets, asset, stored.available, stored.held)
        })
        .collect::<Result<_, _>>()?;
    Ok(BalancesBody {
        balances,
        as_of: None,
        position,
    })
}

/// The API shape of a `transactions` document.
pub fn item(state: &AppState, row: &Document) -> TransactionItem {
    let asset = row.get_str("asset").unwrap_or_default();
    let amount = row
        .get_str("amount")
        .ok()
        .and_then(|a| a.parse::<Decimal>().ok())
        .map(|a| state.ledger.assets.format(a, asset));
    let optional = |field| row.get_str(field).ok().map(str::to_owned);
    TransactionItem {
        id: optional("id"),
        kind: optional("type"),
        asset: asset.to_owned(),
        amount,
        status: optional("status"),
        created_at: row.get_datetime("created_at").ok().map(|d| d.to_chrono()),
        updated_at: row.get_datetime("updated_at").ok().map(|d| d.to_chrono()),
        position: row.get_i64("position").ok(),
        counterparty_id: optional("counterparty_id"),
        note: optional("note"),
        address: optional("address"),
    }
}

/// `user`'s transaction `id` in the API shape, if it exists (another user's never does).
pub async fn transaction(
    state: &AppState,
    user: Uuid,
    id: Uuid,
) -> Result<Option<TransactionItem>, ApiError> {
    let row = state
        .db
        .collection::<Document>(TRANSACTIONS)
        .find_one(doc! { "_id": row_id(user, id) })
        .await?;
    Ok(row.map(|row| item(state, &row)))
}
