//! Account snapshots: an account's state folded up to known versions of its two streams, stored
//! so that loading an account with a long history reads only what came after.
//!
//! Their BSON encoding and decoding; [`super`] reads and writes them. A snapshot is
//! derived data, like a read model: it only ever holds the fold of *committed* events
//! (`AccountState::fold` of the `account-…` stream up to `version` and the `credits-…` stream up
//! to `credits_version`), so starting from it and folding the events after it gives the same
//! state as folding everything.
//!
//! Amounts are stored as exact decimal strings: balances as `Units` text (any value of the
//! whole ±1.7·10²⁰ range, up to 18 decimals), withdrawal amounts as the event's `Decimal` (no
//! binary floating point, no `Decimal128` rounding). A snapshot whose `format` is not
//! [`FORMAT`] is ignored: bump it whenever `AccountState::apply` or this encoding changes
//! meaning. A state that is not an exact fold (`AccountState::not_exact`) is stored with that
//! mark and never decoded: the account is folded from its events again.

use std::collections::HashMap;
use std::str::FromStr;

use bson::{doc, Bson, Document};
use cryptovault_events::Units;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::ledger::account::{AccountSnapshot, AccountState, Withdrawal, WithdrawalStatus};
use crate::store::codec::to_i64;

/// Version of the snapshot encoding and of the fold it captures. 2: balances as exact `Units`
/// text (1: `rust_decimal` text, rounded past 28 digits), per-user system accounts.
pub const FORMAT: i32 = 2;

/// The document stored for `state`, with `_id` = the account's stream id.
pub fn encode(id: &str, state: &AccountState) -> Document {
    let mut withdrawals: Vec<(&Uuid, &Withdrawal)> = state.withdrawals().iter().collect();
    withdrawals.sort_by_key(|(id, _)| **id);
    let mut document = doc! {
        "_id": id,
        "format": FORMAT,
        "user_id": state.user_id().to_string(),
        "asset": &state.asset(),
        "available": state.available().to_string(),
        "held": state.held().to_string(),
        "withdrawals": withdrawals
            .into_iter()
            .map(|(id, w)| doc! {
                "id": id.to_string(),
                "amount": w.amount.to_string(),
                "status": w.status.as_str(),
            })
            .collect::<Vec<_>>(),
        "version": to_i64(state.version()),
        "last_event": state.last_event().map(|id| id.to_string()),
        "credits_version": to_i64(state.credits_version()),
    };
    if let Some(why) = state.not_exact() {
        document.insert("not_exact", why);
    }
    document
}

/// The state a stored snapshot holds, if it is of the current [`FORMAT`] and belongs to
/// `user_id`/`asset`; otherwise why not.
pub fn decode(snapshot: &Document, user_id: Uuid, asset: &str) -> Result<AccountState, String> {
    let format = snapshot
        .get_i32("format")
        .map_err(|e| format!("format: {e}"))?;
    if format != FORMAT {
        return Err(format!("format {format}, expected {FORMAT}"));
    }
    let text = |name: &str| snapshot.get_str(name).map_err(|e| format!("{name}: {e}"));
    if text("user_id")? != user_id.to_string() || text("asset")? != asset {
        return Err("belongs to another account".into());
    }
    if let Ok(why) = snapshot.get_str("not_exact") {
        return Err(format!("not an exact fold: {why}"));
    }
    let mut withdrawals = HashMap::new();
    for entry in snapshot
        .get_array("withdrawals")
        .map_err(|e| format!("withdrawals: {e}"))?
    {
        let Bson::Document(w) = entry else {
            return Err("withdrawals: an entry is not a document".into());
        };
        let id = w
            .get_str("id")
            .ok()
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or("withdrawals: id is not a UUID")?;
        let status = w
            .get_str("status")
            .ok()
            .and_then(WithdrawalStatus::parse)
            .ok_or("withdrawals: unknown status")?;
        let amount = decimal(w.get_str("amount").ok(), "withdrawals.amount")?;
        withdrawals.insert(id, Withdrawal { amount, status });
    }
    let version = |name: &str| {
        snapshot
            .get_i64(name)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| format!("{name}: not a non-negative Int64"))
    };
    AccountState::restore(AccountSnapshot {
        user_id,
        asset: asset.to_owned(),
        available: units(snapshot.get_str("available").ok(), "available")?,
        held: units(snapshot.get_str("held").ok(), "held")?,
        withdrawals,
        version: version("version")?,
        // Optional: a state without it appends with a bare version, sound for committed folds.
        last_event: match snapshot.get("last_event") {
            None | Some(Bson::Null) => None,
            Some(Bson::String(id)) => {
                Some(Uuid::parse_str(id).map_err(|_| "last_event: not a UUID string")?)
            }
            Some(_) => return Err("last_event: not a UUID string".into()),
        },
        credits_version: version("credits_version")?,
    })
}

fn units(text: Option<&str>, name: &str) -> Result<Units, String> {
    text.and_then(|t| Units::from_str(t).ok())
        .ok_or_else(|| format!("{name}: not an exact decimal string"))
}

fn decimal(text: Option<&str>, name: &str) -> Result<Decimal, String> {
    text.and_then(|t| Decimal::from_str(t).ok())
        .ok_or_else(|| format!("{name}: not a decimal string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AccountState {
        let mut withdrawals = HashMap::new();
        for (n, status) in [
            WithdrawalStatus::Pending,
            WithdrawalStatus::Approved,
            WithdrawalStatus::Completed,
            WithdrawalStatus::Rejected,
        ]
        .into_iter()
        .enumerate()
        {
            withdrawals.insert(
                Uuid::now_v7(),
                Withdrawal {
                    amount: Decimal::new(n as i64 + 1, 8),
                    status,
                },
            );
        }
        AccountState::restore(AccountSnapshot {
            user_id: Uuid::now_v7(),
            asset: "BTC".into(),
            // Past the 28 digits of a rust_decimal: stored and read back exactly.
            available: Units::from_str("84999999999.999999999999999915").unwrap(),
            // The pending and approved withdrawals: 0.00000001 + 0.00000002.
            held: Units::from_str("0.00000003").unwrap(),
            withdrawals,
            version: 7,
            last_event: Some(Uuid::now_v7()),
            credits_version: 1_000_003,
        })
        .unwrap()
    }

    #[test]
    fn a_snapshot_decodes_to_the_state_it_was_made_from() {
        let state = state();
        let stored = encode("account-x-BTC", &state);
        assert_eq!(stored.get_str("_id").unwrap(), "account-x-BTC");
        assert_eq!(decode(&stored, state.user_id(), "BTC"), Ok(state));
    }

    #[test]
    fn another_format_or_account_or_a_damaged_field_is_refused() {
        let state = state();
        let good = encode("a", &state);
        let mut old = good.clone();
        old.insert("format", 0);
        assert!(decode(&old, state.user_id(), "BTC")
            .unwrap_err()
            .contains("format"));
        assert!(decode(&good, Uuid::now_v7(), "BTC").is_err());
        assert!(decode(&good, state.user_id(), "ETH").is_err());
        let mut bad = good.clone();
        bad.insert("available", "12,5");
        assert!(decode(&bad, state.user_id(), "BTC")
            .unwrap_err()
            .contains("available"));
        let mut negative = good.clone();
        negative.insert("version", -1_i64);
        assert!(decode(&negative, state.user_id(), "BTC").is_err());
        let mut rounded = good;
        rounded.insert("held", "0.0000000000000000001");
        assert!(decode(&rounded, state.user_id(), "BTC")
            .unwrap_err()
            .contains("held"));
    }

    #[test]
    fn a_state_that_is_not_an_exact_fold_is_never_restored() {
        let state = state().marked_not_exact("credits-x-BTC version 9: balance beyond ±1.7e20");
        let stored = encode("account-x-BTC", &state);
        assert!(decode(&stored, state.user_id(), "BTC")
            .unwrap_err()
            .contains("not an exact fold"));
    }
}
