//! The `balances` read model: one document per (account owner, asset) with `available` and
//! `held` as exact `Decimal128` (MongoDB adds them exactly with `$inc`).

use std::str::FromStr;

use bson::{doc, Decimal128, Document};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::balances::deltas;
use rust_decimal::Decimal;

use super::runner::ReadModel;

pub const COLLECTION: &str = "balances";

pub struct BalancesModel;

pub fn decimal128(value: Decimal) -> Decimal128 {
    Decimal128::from_str(&value.to_string()).expect("a rust_decimal always fits Decimal128")
}

/// Reads a `Decimal128` back, exactly. The IEEE 754-2008 BID layout is decoded directly (sign,
/// 14-bit exponent biased by 6176, 113-bit coefficient) when the value fits a `Decimal`; other
/// encodings go through the decimal text (MongoDB may print exponent form, e.g. `1E-8`).
pub fn from_decimal128(value: &Decimal128) -> Decimal {
    let bits = u128::from_le_bytes(value.bytes());
    if (bits >> 125) & 0b11 != 0b11 {
        let exponent = ((bits >> 113) & 0x3FFF) as i64 - 6176;
        let coefficient = bits & ((1u128 << 113) - 1);
        let negative = bits >> 127 == 1;
        if let Some(decimal) = from_parts(coefficient, exponent, negative) {
            return decimal;
        }
    }
    let text = value.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .unwrap_or_default()
}

/// `±coefficient × 10^exponent` as a `Decimal`, if it fits.
fn from_parts(coefficient: u128, exponent: i64, negative: bool) -> Option<Decimal> {
    let signed = i128::try_from(coefficient).ok()?;
    let signed = if negative { -signed } else { signed };
    let mut decimal = if exponent <= 0 {
        Decimal::try_from_i128_with_scale(signed, u32::try_from(-exponent).ok()?).ok()?
    } else {
        let mut d = Decimal::try_from_i128_with_scale(signed, 0).ok()?;
        for _ in 0..exponent {
            d = d.checked_mul(Decimal::TEN)?;
        }
        d
    };
    if negative && decimal.is_zero() {
        decimal.set_sign_positive(true);
    }
    Some(decimal)
}

impl ReadModel for BalancesModel {
    const NAME: &'static str = "balances";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let updates = deltas(events)
            .into_iter()
            .map(|((owner, asset), delta)| {
                doc! {
                    "q": { "_id": format!("{owner}:{asset}") },
                    "u": {
                        "$inc": { "available": decimal128(delta.available), "held": decimal128(delta.held) },
                        "$setOnInsert": { "owner": &owner, "asset": &asset },
                    },
                    "upsert": true,
                }
            })
            .collect();
        vec![(COLLECTION, updates)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decimal128_round_trips_exactly(mantissa in any::<i64>(), scale in 0u32..=18) {
            let value = Decimal::new(mantissa, scale);
            let back = from_decimal128(&decimal128(value));
            prop_assert_eq!(back, value);
            prop_assert_eq!(back.to_string(), value.to_string());
        }
    }

    #[test]
    fn exponent_forms_decode() {
        for text in [
            "1E-8",
            "-0",
            "0E-18",
            "1E+3",
            "123456789012345678.123456789",
        ] {
            let d = Decimal128::from_str(text).unwrap();
            let expected = Decimal::from_scientific(&text.to_lowercase())
                .or_else(|_| Decimal::from_str(text))
                .unwrap();
            assert_eq!(from_decimal128(&d), expected, "{text}");
        }
    }
}
