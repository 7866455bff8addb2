//! The codecs shared by the store's collections: exact money as `Decimal128` integer limbs
//! (`{whole, atto}`, see `read_models::balances` for why it is exact) and positions as
//! `Int64`.

use bson::{doc, Bson, Decimal128, Document, RawBsonRef, RawDocument};
use cryptovault_events::Units;

/// Positions and versions are stored as `Int64`; they never exceed `i64::MAX` in practice
/// (that would take 9.2e18 events), and saturating keeps the conversion total.
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored `Int64` position read back (negative values, never written, read as 0).
pub fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

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
}
