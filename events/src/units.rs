//! Exact money: [`Units`], a signed count of 10⁻¹⁸ of an asset, held in an `i128`.
//!
//! Every asset has at most 18 decimal places, so every amount and every balance of every asset
//! is a whole number of 10⁻¹⁸. An `i128` holds ±170,141,183,460,469,231,731.687303715884105727
//! units of any asset exactly (≈ 1.7·10²⁰); arithmetic is checked and never rounds: a result
//! outside that range is `None`, and callers refuse the command (or report the position) rather
//! than store something else.
//!
//! Amounts inside events stay `rust_decimal::Decimal` (one amount has at most 28 significant
//! digits and fits it exactly); sums of amounts — balances — are `Units`, because a `Decimal`
//! silently drops decimals once a sum needs more than 28 digits (at 18 decimals, past ≈ 7.9·10¹⁰).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places of one unit: amounts are counted in 10⁻¹⁸.
pub const SCALE: u32 = 18;

const ONE: i128 = 1_000_000_000_000_000_000;

/// A signed amount of an asset, exactly, in 10⁻¹⁸ of the asset. Plain data, `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Units(i128);

impl Units {
    pub const ZERO: Units = Units(0);
    /// The largest balance any account can hold.
    pub const MAX: Units = Units(i128::MAX);
    /// The most negative value (system accounts are negative).
    pub const MIN: Units = Units(-i128::MAX);

    /// A value from its count of 10⁻¹⁸.
    pub const fn from_raw(raw: i128) -> Self {
        Self(raw)
    }

    /// The count of 10⁻¹⁸.
    pub const fn raw(self) -> i128 {
        self.0
    }

    /// `amount` exactly, if it has at most 18 decimal places and fits; `None` otherwise (never
    /// rounds).
    pub fn from_decimal(amount: Decimal) -> Option<Self> {
        let scale = amount.scale();
        if scale > SCALE {
            // Trailing zeros beyond 18 places are still exact.
            let normalized = amount.normalize();
            if normalized.scale() > SCALE {
                return None;
            }
            return Self::from_decimal(normalized);
        }
        let factor = 10i128.checked_pow(SCALE - scale)?;
        amount
            .mantissa()
            .checked_mul(factor)
            .map(Self)
            .filter(|u| u.0 != i128::MIN)
    }

    /// This value as a `Decimal`, if it fits one exactly (at most 28 significant digits).
    pub fn to_decimal(self) -> Option<Decimal> {
        let (mut mantissa, mut scale) = (self.0, SCALE);
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Decimal::try_from_i128_with_scale(mantissa, scale).ok()
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0
            .checked_add(other.0)
            .filter(|v| *v != i128::MIN)
            .map(Self)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0
            .checked_sub(other.0)
            .filter(|v| *v != i128::MIN)
            .map(Self)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether this value is a whole number of 10^-`places` (an amount of an asset with
    /// `places` decimals is).
    pub fn fits_places(self, places: u32) -> bool {
        places >= SCALE || self.0 % 10i128.pow(SCALE - places) == 0
    }

    /// The exact decimal text with at least `places` decimals (more only if the value has more:
    /// never rounds), e.g. `format(2)` of 1.5 is `"1.50"`.
    pub fn format(self, places: u32) -> String {
        let places = places.min(SCALE);
        let negative = self.0 < 0;
        let magnitude = self.0.unsigned_abs();
        let whole = magnitude / ONE as u128;
        let fraction = magnitude % ONE as u128;
        let mut digits = format!("{fraction:018}");
        while digits.len() > places as usize && digits.ends_with('0') {
            digits.pop();
        }
        let sign = if negative { "-" } else { "" };
        if digits.is_empty() {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{digits}")
        }
    }
}

impl Units {
    /// This value split into two integer limbs `(whole, atto)` with `value = whole·10¹⁸ + atto`,
    /// both with the value's sign (truncated division): `whole` is the count of whole units,
    /// `|atto| < 10¹⁸`. Read models keep each limb as a `Decimal128` *integer* and add limbs
    /// (`$inc`, `$sum`), which is exact while a limb's running sum stays below 10³⁴ — see
    /// [`Units::from_limbs`].
    pub const fn limbs(self) -> (i128, i128) {
        (self.0 / ONE, self.0 % ONE)
    }

    /// The value `whole·10¹⁸ + atto`, if it is within the range (`None` otherwise, never
    /// rounded). Limbs added separately need not be normalised: any `atto` is accepted.
    pub fn from_limbs(whole: i128, atto: i128) -> Option<Self> {
        whole
            .checked_mul(ONE)
            .and_then(|w| w.checked_add(atto))
            .filter(|v| *v != i128::MIN)
            .map(Self)
    }
}

/// An exact sum of any number of [`Units`] values, with room far beyond [`Units::MAX`]: for
/// zero-sum checks over many accounts (the rows of one asset can each be near the limit, so an
/// `i128` running sum could overflow on the way although the total is zero).
///
/// Held as `high·2⁶⁴ + low` with `low < 2⁶⁴`; each added value contributes less than 2⁶⁴ to
/// `|high|`, so `high` (an `i128`) cannot overflow before 2⁶³ additions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitsSum {
    high: i128,
    low: u64,
}

impl UnitsSum {
    pub fn add(&mut self, value: Units) {
        let raw = value.0;
        let low = self.low as u128 + (raw as u128 & u64::MAX as u128);
        self.high += (raw >> 64) + (low >> 64) as i128;
        self.low = low as u64;
    }

    pub fn is_zero(&self) -> bool {
        self.high == 0 && self.low == 0
    }

    /// The sum as a [`Units`] value, if it is within the range.
    pub fn units(&self) -> Option<Units> {
        let high: i64 = self.high.try_into().ok()?;
        let raw = ((high as i128) << 64) | self.low as i128;
        (raw != i128::MIN).then_some(Units(raw))
    }
}

impl fmt::Display for UnitsSum {
    /// The exact sum when it is within the range; otherwise its sign and that it is beyond.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.units() {
            Some(units) => write!(f, "{units}"),
            None if self.high < 0 => f.write_str("below -1.7e20"),
            None => f.write_str("above 1.7e20"),
        }
    }
}

impl std::iter::Sum<Units> for UnitsSum {
    fn sum<I: Iterator<Item = Units>>(iter: I) -> Self {
        let mut sum = Self::default();
        for value in iter {
            sum.add(value);
        }
        sum
    }
}

impl std::ops::Neg for Units {
    type Output = Units;

    /// Never fails: the range is symmetric (`i128::MIN` is never held).
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl fmt::Display for Units {
    /// The shortest exact decimal text (`"1.5"`, `"0"`, `"-0.000000000000000006"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(0))
    }
}

/// Why a text is not a [`Units`] value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an exact decimal of at most 18 places within ±1.7e20")]
pub struct ParseUnitsError(pub String);

impl FromStr for Units {
    type Err = ParseUnitsError;

    /// Plain decimal text: an optional `-`, digits, optionally `.` and 1–18 digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseUnitsError(text.to_owned());
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (body.contains('.') && fraction.is_empty())
            || fraction.len() > SCALE as usize
        {
            return Err(err());
        }
        let whole: i128 = whole.parse().map_err(|_| err())?;
        let fraction_value: i128 = if fraction.is_empty() {
            0
        } else {
            let f: i128 = fraction.parse().map_err(|_| err())?;
            f * 10i128.pow(SCALE - fraction.len() as u32)
        };
        let magnitude = whole
            .checked_mul(ONE)
            .and_then(|w| w.checked_add(fraction_value))
            .ok_or_else(err)?;
        Ok(Self(if negative { -magnitude } else { magnitude }))
    }
}

impl Serialize for Units {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn units(text: &str) -> Units {
        text.parse().unwrap()
    }

    #[test]
    fn sums_past_the_decimal_limit_stay_exact() {
        // 85 deposits of 999999999.999999999999999999: a rust_decimal sum drops the last digits.
        let amount = Units::from_decimal("999999999.999999999999999999".parse().unwrap()).unwrap();
        let mut sum = Units::ZERO;
        for _ in 0..85 {
            sum = sum.checked_add(amount).unwrap();
        }
        assert_eq!(sum.to_string(), "84999999999.999999999999999915");
        assert_eq!(sum.to_decimal(), None, "does not fit a rust_decimal");
    }

    #[test]
    fn overflow_is_none_never_a_rounded_value() {
        assert_eq!(Units::MAX.checked_add(Units::from_raw(1)), None);
        assert_eq!(Units::MIN.checked_sub(Units::from_raw(1)), None);
        assert!("170141183460469231732".parse::<Units>().is_err());
        assert_eq!(
            Units::MAX.to_string(),
            "170141183460469231731.687303715884105727"
        );
        assert_eq!(Units::MAX.to_string().parse::<Units>().unwrap(), Units::MAX);
    }

    #[test]
    fn decimals_convert_exactly_or_not_at_all() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(Units::from_decimal(d("1.50")), Some(units("1.5")));
        assert_eq!(
            Units::from_decimal(d("0.000000000000000001")),
            Some(Units::from_raw(1))
        );
        assert_eq!(Units::from_decimal(d("0.0000000000000000001")), None);
        assert_eq!(
            Units::from_decimal(d("1.0000000000000000000")),
            Some(units("1"))
        );
        assert_eq!(units("-2.25").to_decimal(), Some(d("-2.25")));
    }

    #[test]
    fn formats_with_the_asset_places_and_never_rounds() {
        assert_eq!(units("1.5").format(2), "1.50");
        assert_eq!(units("12").format(2), "12.00");
        assert_eq!(units("0").format(8), "0.00000000");
        assert_eq!(units("0.001").format(2), "0.001");
        assert_eq!(
            units("-0.000000000000000006").format(2),
            "-0.000000000000000006"
        );
        assert_eq!(units("7").format(0), "7");
        assert!(units("1.25").fits_places(2));
        assert!(!units("1.255").fits_places(2));
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "-",
            "1.",
            ".5",
            "+1",
            "1e5",
            " 1",
            "1.0000000000000000001",
            "--1",
            "1,5",
        ] {
            assert!(bad.parse::<Units>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limbs_add_like_the_value() {
        let max = Units::MAX.limbs();
        assert_eq!(max, (170141183460469231731, 687303715884105727));
        assert_eq!(Units::from_limbs(max.0, max.1), Some(Units::MAX));
        assert_eq!(Units::from_limbs(max.0, max.1 + 1), None);
        assert_eq!(units("-1.5").limbs(), (-1, -500_000_000_000_000_000));
        // Unnormalised limbs (as separate sums leave them) still give the value.
        assert_eq!(
            Units::from_limbs(-3, 2_500_000_000_000_000_000),
            Some(units("-0.5"))
        );
    }

    #[test]
    fn a_wide_sum_passes_the_limit_on_the_way_and_comes_back() {
        let mut sum = UnitsSum::default();
        for _ in 0..3 {
            sum.add(Units::MAX);
        }
        assert_eq!(sum.units(), None);
        assert_eq!(sum.to_string(), "above 1.7e20");
        for _ in 0..3 {
            sum.add(Units::MIN);
        }
        assert!(sum.is_zero());
        sum.add(units("-0.000000000000000006"));
        assert_eq!(sum.to_string(), "-0.000000000000000006");
        let mut low = UnitsSum::default();
        low.add(Units::MIN);
        low.add(Units::MIN);
        assert_eq!(low.to_string(), "below -1.7e20");
    }

    proptest! {
        #[test]
        fn text_round_trips(raw in -i128::MAX..=i128::MAX) {
            let value = Units::from_raw(raw);
            prop_assert_eq!(value.to_string().parse::<Units>().unwrap(), value);
            prop_assert_eq!(value.format(18).parse::<Units>().unwrap(), value);
        }

        #[test]
        fn addition_is_exact_integer_addition(a in any::<i64>(), b in any::<i64>()) {
            let sum = Units::from_raw(a as i128).checked_add(Units::from_raw(b as i128)).unwrap();
            prop_assert_eq!(sum.raw(), a as i128 + b as i128);
        }

        #[test]
        fn limbs_sum_to_the_sum(values in prop::collection::vec(-i128::MAX / 64..i128::MAX / 64, 1..64)) {
            let (mut whole, mut atto, mut wide) = (0i128, 0i128, UnitsSum::default());
            let mut exact = Units::ZERO;
            for raw in values {
                let value = Units::from_raw(raw);
                let (w, a) = value.limbs();
                whole += w;
                atto += a;
                wide.add(value);
                exact = exact.checked_add(value).unwrap();
            }
            prop_assert_eq!(Units::from_limbs(whole, atto), Some(exact));
            prop_assert_eq!(wide.units(), Some(exact));
        }

        #[test]
        fn decimal_conversion_agrees_with_text(mantissa in any::<i64>(), scale in 0u32..=18) {
            let d = Decimal::new(mantissa, scale);
            let u = Units::from_decimal(d).unwrap();
            prop_assert_eq!(u, d.to_string().parse::<Units>().unwrap());
            prop_assert_eq!(u.to_decimal().unwrap(), d.normalize());
        }
    }
}
