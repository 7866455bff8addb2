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

use bson::{doc, Bson, Decimal128, Document, RawBsonRef, RawDocument};
use cryptovault_events::{EventEnvelope, Units};
use cryptovault_projections::balances::{deltas, BalanceDelta};

use super::runner::ReadModel;

pub const COLLECTION: &str = "balances";

pub struct BalancesModel;

/// Coefficient bits of a `Decimal128` (113).
const COEFFICIENT_BITS: u32 = 113;
/// Exponent bias of a `Decimal128`: the stored exponent of 10⁰.
const EXPONENT_BIAS: u128 = 6176;

/// An integer as a `Decimal128` with exponent 0 — exact for `|value| < 10³⁴` (2¹¹³ > 10³⁴;
/// every limb written is below 1.7·10²⁰).
pub fn decimal128_integer(value: i128) -> Decimal128 {
    let magnitude = value.unsigned_abs();
    assert!(magnitude < 10u128.pow(34), "limbs written are below 1.7e20");
    let sign = u128::from(value < 0) << 127;
    let bits = sign | (EXPONENT_BIAS << COEFFICIENT_BITS) | magnitude;
    Decimal128::from_bytes(bits.to_le_bytes())
}

/// The integer a `Decimal128` holds, if it is one and fits an `i128` (any exponent: `5E+3` is
/// 5000; `1.0` is 1; `1.5`, infinities and NaN are `None`).
pub fn integer_from_decimal128(value: &Decimal128) -> Option<i128> {
    let bits = u128::from_le_bytes(value.bytes());
    if (bits >> 125) & 0b11 == 0b11 {
        // Infinity, NaN, or a non-canonical coefficient (≥ 2¹¹³): never written by MongoDB's
        // integer arithmetic.
        return None;
    }
    let exponent = ((bits >> COEFFICIENT_BITS) & 0x3FFF) as i64 - EXPONENT_BIAS as i64;
    let coefficient = i128::try_from(bits & ((1u128 << COEFFICIENT_BITS) - 1)).ok()?;
    let magnitude = if exponent >= 0 {
        coefficient.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)?
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-exponent).ok()?);
        match divisor {
            Some(d) if coefficient % d == 0 => coefficient / d,
            Some(_) => return None,
            // 10^-exponent beyond i128: only 0 is an integer.
            None if coefficient == 0 => 0,
            None => return None,
        }
    };
    Some(if bits >> 127 == 1 {
        -magnitude
    } else {
        magnitude
    })
}

/// An integer limb as MongoDB may return it: a `Decimal128` integer, or an `Int32`/`Int64`
/// (what `$sum` gives when no document has the field).
fn limb(value: Option<RawBsonRef<'_>>) -> Option<i128> {
    match value? {
        RawBsonRef::Decimal128(d) => integer_from_decimal128(&d),
        RawBsonRef::Int32(i) => Some(i.into()),
        RawBsonRef::Int64(i) => Some(i.into()),
        _ => None,
    }
}

/// `value` as its stored limbs `{whole, atto}`.
pub fn limbs_document(value: Units) -> Document {
    let (whole, atto) = value.limbs();
    doc! { "whole": decimal128_integer(whole), "atto": decimal128_integer(atto) }
}

/// The value of the limbs document `field` of `document` (absent: zero), or why it cannot be
/// read exactly.
pub fn units_field(document: &RawDocument, field: &str) -> Result<Units, String> {
    let limbs = match document.get(field) {
        Ok(None) => return Ok(Units::ZERO),
        Ok(Some(RawBsonRef::Document(limbs))) => limbs,
        _ => {
            return Err(format!(
                "{field} is not an exact {{whole, atto}} balance (a read model of an older format: run `cryptovault replay`)"
            ))
        }
    };
    // An absent limb is zero (the projector leaves limbs that do not change out of `$inc`).
    let part = |name| match limbs.get(name) {
        Ok(None) => Some(0),
        found => limb(found.ok().flatten()),
    };
    match (part("whole"), part("atto")) {
        (Some(whole), Some(atto)) => Units::from_limbs(whole, atto)
            .ok_or_else(|| format!("{field} is beyond the range held exactly (±1.7e20)")),
        _ => Err(format!("{field}: its limbs are not integers")),
    }
}

/// The same for sums returned by an aggregation as separate fields `<prefix>_whole`,
/// `<prefix>_atto`.
pub fn units_of_sums(document: &RawDocument, prefix: &str) -> Result<Units, String> {
    let part = |suffix| {
        let name = format!("{prefix}_{suffix}");
        match document.get(&name) {
            Ok(None) => Some(0),
            found => limb(found.ok().flatten()),
        }
    };
    match (part("whole"), part("atto")) {
        (Some(whole), Some(atto)) => Units::from_limbs(whole, atto)
            .ok_or_else(|| format!("the sum of {prefix} is beyond the range held exactly")),
        _ => Err(format!("the sum of {prefix}: not an integer")),
    }
}

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

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let changes = deltas(events);
        let mut updates = Vec::with_capacity(changes.rows.len());
        for ((owner, asset), delta) in &changes.rows {
            let mut update = doc! {
                "$inc": increments(delta),
                "$setOnInsert": { "owner": owner, "asset": asset },
            };
            if let Some(why) = changes.unrepresentable.get(&(owner.clone(), asset.clone())) {
                tracing::error!(%owner, %asset, %why, "a balance cannot be held exactly; the row is marked");
                update.insert("$set", doc! { "not_exact": why.to_string() });
            }
            updates.push(doc! {
                "q": { "_id": format!("{owner}:{asset}") },
                "u": update,
                "upsert": true,
            });
        }
        for ((owner, asset), why) in &changes.unrepresentable {
            if changes.rows.contains_key(&(owner.clone(), asset.clone())) {
                continue;
            }
            tracing::error!(%owner, %asset, %why, "a balance cannot be held exactly; the row is marked");
            updates.push(doc! {
                "q": { "_id": format!("{owner}:{asset}") },
                "u": {
                    "$set": { "not_exact": why.to_string() },
                    "$setOnInsert": { "owner": owner, "asset": asset },
                },
                "upsert": true,
            });
        }
        vec![(COLLECTION, updates)]
    }
}

/// The `Bson` of a limb, for tests and tools that build documents by hand.
pub fn limb_bson(value: i128) -> Bson {
    Bson::Decimal128(decimal128_integer(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    proptest! {
        #[test]
        fn integers_round_trip_through_decimal128(value in -(10i128.pow(34) - 1)..10i128.pow(34)) {
            let d = decimal128_integer(value);
            prop_assert_eq!(integer_from_decimal128(&d), Some(value));
            prop_assert_eq!(d.to_string(), value.to_string());
        }

        #[test]
        fn limbs_documents_read_back_exactly(raw in -i128::MAX..=i128::MAX) {
            let value = Units::from_raw(raw);
            let document = doc! { "available": limbs_document(value) };
            let raw_document = bson::RawDocumentBuf::from_document(&document).unwrap();
            prop_assert_eq!(units_field(&raw_document, "available"), Ok(value));
        }
    }

    #[test]
    fn other_encodings_of_integers_decode_and_fractions_do_not() {
        let d = |text: &str| Decimal128::from_str(text).unwrap();
        assert_eq!(integer_from_decimal128(&d("5E+3")), Some(5000));
        assert_eq!(integer_from_decimal128(&d("1.0")), Some(1));
        assert_eq!(integer_from_decimal128(&d("-0")), Some(0));
        assert_eq!(integer_from_decimal128(&d("0E-40")), Some(0));
        assert_eq!(integer_from_decimal128(&d("1.5")), None);
        assert_eq!(integer_from_decimal128(&d("Infinity")), None);
        assert_eq!(integer_from_decimal128(&d("NaN")), None);
        assert_eq!(integer_from_decimal128(&d("1E+6000")), None);
    }

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
        let updates = BalancesModel.updates(&events).remove(0).1;
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
        let updates = BalancesModel.updates(&tampered).remove(0).1;
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
