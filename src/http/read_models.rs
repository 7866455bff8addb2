//! Reads of the read models that several resources answer with: the caller's balances (the
//! wallet, `/ws/account`) and one history row (`/api/transactions/{id}`, `/ws/account`).

use cryptovault_events::Units;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::error::ApiError;
use super::views::{BalanceRow, BalancesBody, TransactionItem};
use super::AppState;
use crate::ledger::amount::Assets;
use crate::store::read_models::HistoryRow;

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
    let rows = state.read_models.balances_of(user_id).await?;
    let assets = &state.ledger.assets;
    let balances: Vec<BalanceRow> = assets
        .iter()
        .map(|(asset, _)| {
            let row = rows.iter().find(|r| r.asset == *asset);
            let stored = match row {
                None => Default::default(),
                Some(row) => row.balance.clone().map_err(|why| {
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

/// The API shape of a `transactions` row.
pub fn item(state: &AppState, row: &HistoryRow) -> TransactionItem {
    let asset = row.asset.as_str();
    let amount = row
        .amount
        .parse::<Decimal>()
        .ok()
        .map(|a| state.ledger.assets.format(a, asset));
    TransactionItem {
        id: Some(row.id.clone()),
        kind: Some(row.kind.clone()),
        asset: asset.to_owned(),
        amount,
        status: Some(row.status.clone()),
        created_at: Some(row.created_at),
        updated_at: Some(row.updated_at),
        position: Some(row.position),
        counterparty_id: row.counterparty_id.clone(),
        note: row.note.clone(),
        address: row.address.clone(),
    }
}

/// `user`'s transaction `id` in the API shape, if it exists (another user's never does).
pub async fn transaction(
    state: &AppState,
    user: Uuid,
    id: Uuid,
) -> Result<Option<TransactionItem>, ApiError> {
    let row = state.read_models.transaction(user, id).await?;
    Ok(row.map(|row| item(state, &row)))
}
