//! The `balances` read model: one document per (account owner, asset) with `available` and
//! `held` held exactly as two integer limbs each, added by MongoDB with `$inc`.
//!
//! # Exactness
//!
//! A balance is a [`Units`] value `v` (an `i128` count of 10⁻¹⁸). It is stored as
//! `{whole, atto}` with `v = whole·10¹⁸ + atto`, each limb a `Decimal128` *integer* (exponent
//! 0). The projector `$inc`s the limbs of each chunk's delta ([`Units::limbs`]: truncated
//! division, so `|atto| < 10¹⁸` per delta). `Decimal128` adds integers exactly while the result
//! has at most 34 digits; after `n` chunk updates of one row, `|atto| < n·10¹⁸` and
//! `|whole| ≤ |v|/10¹⁸ + n ≤ 1.7·10²⁰ + n`, so both stay exact for `n < 10¹⁶` updates of one
//! row — far beyond any real history. Readers recombine the limbs in `i128`
//! ([`Units::from_limbs`], checked: a value outside the range is an error, never rounded).
//! A `Decimal128` balance (the format before limbs) would round at 34 digits — at 18 decimals,
//! past 10¹⁶ — and `rust_decimal` (28 digits) past 7.9·10¹⁰.
//!
//! A row that met an event it cannot apply exactly (only a tampered log has one) is marked
//! `not_exact` (the position and why) and readers refuse it.

use bson::{doc, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::balances::{deltas, BalanceDelta};
use futures::TryStreamExt;

use super::runner::{Change, ReadModel};
use super::ReadModels;
use crate::store::codec::{decimal128_integer, units_field};
use crate::store::StoreError;

pub const COLLECTION: &str = "balances";

pub struct BalancesModel;

/// One stored balance row, exactly: `available` and `held`, or why it cannot be read (a row
/// marked `not_exact`, a malformed or old-format row).
pub fn stored_row(row: &RawDocument) -> Result<BalanceDelta, String> {
    if let Ok(Some(RawBsonRef::String(why))) = row.get("not_exact") {
        return Err(format!("balance not exact: {why}"));
    }
    Ok(BalanceDelta {
        available: units_field(row, "available")?,
        held: units_field(row, "held")?,
    })
}

/// The `$inc` of a delta's limbs. Limbs that do not change are left out (a deposit does not
/// touch `held`; whole amounts leave `atto` alone), which keeps the update as small as the two
/// decimals it replaces in the common case; a delta of zero still increments one limb, so
/// that the row exists (`$inc` cannot be empty). Readers take an absent limb as zero.
fn increments(delta: &BalanceDelta) -> Document {
    let (available_whole, available_atto) = delta.available.limbs();
    let (held_whole, held_atto) = delta.held.limbs();
    let mut inc = Document::new();
    for (field, limb) in [
        ("available.whole", available_whole),
        ("available.atto", available_atto),
        ("held.whole", held_whole),
        ("held.atto", held_atto),
    ] {
        if limb != 0 {
            inc.insert(field, decimal128_integer(limb));
        }
    }
    if inc.is_empty() {
        inc.insert("available.whole", decimal128_integer(0));
    }
    inc
}

impl ReadModel for BalancesModel {
    const NAME: &'static str = "balances";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)> {
        let changes = deltas(events);
        let mut updates = Vec::with_capacity(changes.rows.len());
        for ((owner, asset), delta) in &changes.rows {
            let set = changes
                .unrepresentable
                .get(&(owner.clone(), asset.clone()))
                .map(|why| {
                    tracing::error!(%owner, %asset, %why, "a balance cannot be held exactly; the row is marked");
                    doc! { "not_exact": why.to_string() }
                });
            updates.push(Change::Increment {
                id: format!("{owner}:{asset}").into(),
                by: increments(delta),
                on_insert: doc! { "owner": owner, "asset": asset },
                set,
            });
        }
        for ((owner, asset), why) in &changes.unrepresentable {
            if changes.rows.contains_key(&(owner.clone(), asset.clone())) {
                continue;
            }
            tracing::error!(%owner, %asset, %why, "a balance cannot be held exactly; the row is marked");
            updates.push(Change::Set {
                id: format!("{owner}:{asset}").into(),
                fields: doc! { "not_exact": why.to_string() },
                on_insert: Some(doc! { "owner": owner, "asset": asset }),
                upsert: true,
            });
        }
        vec![(COLLECTION, updates)]
    }
}

/// One stored balance row as read: its asset, and its exact `available` and `held` or why
/// they cannot be read (see [`stored_row`]). Rows are written by `$inc` of their limbs
/// ([`BalancesModel`]), so the stored shape is `{_id, owner, asset, available: {whole, atto},
/// held: {whole, atto}, not_exact?}` with absent limbs meaning zero.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceRow {
    pub asset: String,
    pub balance: Result<BalanceDelta, String>,
}

impl ReadModels {
    /// The balance rows of `owner` (one per asset it ever held).
    pub async fn balances_of(&self, owner: uuid::Uuid) -> Result<Vec<BalanceRow>, StoreError> {
        let rows: Vec<RawDocumentBuf> = self
            .db
            .collection::<RawDocumentBuf>(COLLECTION)
            .find(doc! { "owner": owner.to_string() })
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .iter()
            .map(|row| BalanceRow {
                asset: row.get_str("asset").unwrap_or_default().to_owned(),
                balance: stored_row(row),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{limb_bson, limbs_document};
    use bson::Decimal128;
    use cryptovault_events::Units;
    use std::str::FromStr;

    #[test]
    fn the_projector_increments_limbs_and_marks_rows_it_cannot_hold() {
        use cryptovault_events::ledger::FundsDeposited;
        use cryptovault_events::{DomainEvent, EventMetadata, GENESIS_HASH};
        let user = uuid::Uuid::from_u128(1);
        let deposit = |amount: &str, position| {
            EventEnvelope::seal(
                FundsDeposited {
                    deposit_id: uuid::Uuid::now_v7(),
                    user_id: user,
                    asset: "ETH".into(),
                    amount: amount.parse().unwrap(),
                }
                .into_new_event(
                    uuid::Uuid::now_v7(),
                    chrono::Utc::now(),
                    EventMetadata::default(),
                ),
                "s".into(),
                position,
                position,
                GENESIS_HASH.into(),
            )
        };
        let events = [
            deposit("999999999.999999999999999999", 1),
            deposit("999999999.999999999999999999", 2),
        ];
        let statements = |events: &[EventEnvelope]| -> Vec<Document> {
            let (collection, changes) = BalancesModel.changes(events).remove(0);
            assert_eq!(collection, COLLECTION);
            changes.into_iter().map(Change::statement).collect()
        };
        let updates = statements(&events);
        let mine = updates
            .iter()
            .find(|u| u.get_document("q").unwrap().get_str("_id") == Ok(&format!("{user}:ETH")))
            .unwrap();
        let inc = mine
            .get_document("u")
            .unwrap()
            .get_document("$inc")
            .unwrap();
        assert_eq!(inc.get("available.whole"), Some(&limb_bson(1_999_999_999)));
        assert!(
            !inc.contains_key("held.whole"),
            "limbs that do not change are left out"
        );
        assert_eq!(
            inc.get("available.atto"),
            Some(&limb_bson(999_999_999_999_999_998))
        );
        // A tampered amount (19 decimals): the rows are marked, nothing is rounded in.
        let tampered = [deposit("1", 3), deposit("0.0000000000000000001", 4)];
        let updates = statements(&tampered);
        assert_eq!(updates.len(), 2, "the user's row and the system row");
        for update in &updates {
            let u = update.get_document("u").unwrap();
            assert!(u
                .get_document("$set")
                .unwrap()
                .get_str("not_exact")
                .unwrap()
                .contains("position 4"));
        }
        let mine = &updates[0];
        let inc = mine
            .get_document("u")
            .unwrap()
            .get_document("$inc")
            .unwrap();
        assert_eq!(inc.get("available.whole"), Some(&limb_bson(1)));
    }

    #[test]
    fn rows_of_the_old_format_or_marked_are_refused() {
        let old = doc! { "available": Decimal128::from_str("1.5").unwrap() };
        let old = bson::RawDocumentBuf::from_document(&old).unwrap();
        assert!(stored_row(&old).unwrap_err().contains("replay"));
        let marked =
            doc! { "not_exact": "position 7: …", "available": limbs_document(Units::ZERO) };
        let marked = bson::RawDocumentBuf::from_document(&marked).unwrap();
        assert!(stored_row(&marked).unwrap_err().contains("position 7"));
        let beyond = doc! { "held": { "whole": limb_bson(10i128.pow(21)), "atto": limb_bson(0) } };
        let beyond = bson::RawDocumentBuf::from_document(&beyond).unwrap();
        assert!(stored_row(&beyond).unwrap_err().contains("beyond"));
    }
}
