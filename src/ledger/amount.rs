//! Assets and amounts: parsing client input into exact, validated decimals (PRODUCT.md §3),
//! and the limits that keep every balance exact.
//!
//! **Limits.** One amount is a `Decimal` (at most 28 significant digits) not above
//! `MAX_AMOUNT`; a balance is a `Units` value (an `i128` of 10⁻¹⁸, at most
//! [`Units::MAX`] ≈ 1.7·10²⁰ of any asset). No account can get past that: its credits stream
//! accepts at most [`Assets::credit_cap`] events (credits are the only thing that raises an
//! account's total), so `available + held ≤ credit_cap × MAX_AMOUNT ≤ Units::MAX`. Start-up
//! refuses a `MAX_AMOUNT` for which that cap is below one or an amount of some asset could
//! need more than 28 digits.

use std::collections::BTreeMap;

use cryptovault_events::Units;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::identity::domain::InvalidInput;

/// Supported assets and their precision (decimal places), plus the largest accepted amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    precision: BTreeMap<String, u32>,
    pub max_amount: Decimal,
}

impl Default for Assets {
    fn default() -> Self {
        Self::parse(
            "USD:2,USDC:6,USDT:6,BTC:8,BNB:8,SOL:9,ETH:18",
            Decimal::from(1_000_000_000u64),
        )
        .expect("the default asset list is valid")
    }
}

impl Assets {
    /// Parses `ASSETS` (`CODE:precision,…`; codes of 2–10 upper-case letters, precision 0–18).
    pub fn parse(spec: &str, max_amount: Decimal) -> Result<Self, String> {
        let mut precision = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (code, places) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not CODE:precision"))?;
            let valid_code =
                (2..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase());
            let places: u32 = places
                .parse()
                .map_err(|_| format!("{item:?}: precision is not a number"))?;
            if !valid_code || places > 18 {
                return Err(format!(
                    "{item:?}: code must be 2-10 capital letters, precision 0-18"
                ));
            }
            precision.insert(code.to_owned(), places);
        }
        if precision.is_empty() {
            return Err("no assets".into());
        }
        Self {
            precision,
            max_amount: Decimal::ONE,
        }
        .with_max_amount(max_amount)
    }

    /// These assets with `max_amount` as the largest amount of one command, if the exact
    /// representation can live with it (see [`Self::credit_cap`]).
    pub fn with_max_amount(mut self, max_amount: Decimal) -> Result<Self, String> {
        if max_amount <= Decimal::ZERO {
            return Err("the maximum amount must be positive".into());
        }
        self.max_amount = max_amount;
        self.check_limits()?;
        Ok(self)
    }

    /// Refuses a maximum amount that the exact representation cannot live with: not a whole
    /// number of 10⁻¹⁸, larger than the largest balance, or (for some asset) with amounts that
    /// need more than the 28 significant digits of a `Decimal`.
    fn check_limits(&self) -> Result<(), String> {
        let max = self.max_amount;
        let Some(units) = Units::from_decimal(max) else {
            return Err(format!(
                "the maximum amount {max} must have at most 18 decimals and be at most {} (the largest balance held exactly)",
                Units::MAX
            ));
        };
        if units.raw() == 0 {
            return Err("the maximum amount must be positive".into());
        }
        // Integer digits of the largest amount: an amount of `places` decimals up to it has at
        // most that many digits plus `places`.
        let whole_digits = max
            .trunc()
            .normalize()
            .to_string()
            .trim_start_matches('0')
            .len() as u32;
        for (asset, places) in self.iter() {
            if whole_digits + places > 28 {
                return Err(format!(
                    "MAX_AMOUNT {max}: an amount of {asset} ({places} decimals) could have {} significant digits; amounts are exact up to 28 (lower MAX_AMOUNT or {asset}'s precision)",
                    whole_digits + places
                ));
            }
        }
        Ok(())
    }

    /// The most credits (deposits, transfers received) one account's `credits-…` stream may
    /// hold: the largest `n` with `n × MAX_AMOUNT ≤ Units::MAX`. Every credit is at most
    /// `MAX_AMOUNT` and only credits raise an account's total, so an account within the cap
    /// has `available + held ≤ Units::MAX`, and so have its per-user system rows
    /// (`system:external_deposits:<user>` is minus its deposits, `system:withdrawals_paid:<user>`
    /// at most its credits). Default `MAX_AMOUNT` 1e9: 170,141,183,460 credits per account.
    /// At least 1 (checked by [`Assets::parse`]).
    pub fn credit_cap(&self) -> u64 {
        let max = Units::from_decimal(self.max_amount)
            .map(Units::raw)
            .unwrap_or(i128::MAX);
        u64::try_from(Units::MAX.raw() / max.max(1)).unwrap_or(u64::MAX)
    }

    /// Decimal places of `asset`, if supported.
    pub fn precision(&self, asset: &str) -> Option<u32> {
        self.precision.get(asset).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.precision.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// A supported asset code (exact, upper-case).
    pub fn asset(&self, raw: &str, field: &'static str) -> Result<String, InvalidInput> {
        if self.precision.contains_key(raw) {
            Ok(raw.to_owned())
        } else {
            let known: Vec<&str> = self.precision.keys().map(String::as_str).collect();
            Err(InvalidInput {
                field,
                message: format!("unknown asset; supported: {}", known.join(", ")),
            })
        }
    }

    /// A supported asset code in any letter case (`btc` is `BTC`): for the predecessor's
    /// client, which sends currencies in lower case.
    pub fn asset_any_case(&self, raw: &str, field: &'static str) -> Result<String, InvalidInput> {
        self.asset(&raw.to_ascii_uppercase(), field)
    }

    /// Parses an amount of `asset`: a JSON *string* of plain decimal digits (`"12.50"`), positive,
    /// with at most the asset's decimal places, not above the maximum. Rejects JSON numbers,
    /// exponent notation, signs, whitespace and everything else.
    pub fn amount(
        &self,
        raw: &Value,
        asset: &str,
        field: &'static str,
    ) -> Result<Decimal, InvalidInput> {
        let Value::String(text) = raw else {
            return Err(InvalidInput {
                field,
                message: "must be a decimal string such as \"12.50\", not a JSON number".into(),
            });
        };
        self.amount_text(text, asset, field)
    }

    /// Parses an amount given as the literal JSON text of a value: a JSON *number* (`12.50`,
    /// read from its digits, never through a binary float) or a JSON string as in
    /// [`Self::amount`]. The rules are those of [`Self::amount_text`]; a number with an exponent
    /// (`1e3`), a sign or a fraction without digits is refused, as are `null`, `true` and the rest.
    pub fn amount_literal(
        &self,
        literal: &str,
        asset: &str,
        field: &'static str,
    ) -> Result<Decimal, InvalidInput> {
        let literal = literal.trim();
        if literal.starts_with('"') {
            let value: Value = serde_json::from_str(literal).map_err(|_| InvalidInput {
                field,
                message: "is not a valid JSON string".into(),
            })?;
            return self.amount(&value, asset, field);
        }
        let invalid = |message: &str| InvalidInput {
            field,
            message: message.into(),
        };
        if literal.starts_with('-') {
            return Err(invalid("must be greater than zero"));
        }
        if literal.contains(['e', 'E'])
            && literal.bytes().next().is_some_and(|b| b.is_ascii_digit())
        {
            return Err(invalid(
                "must be written without an exponent (12.50, not 1.25e1)",
            ));
        }
        if !literal.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "must be a number such as 12.50 or a decimal string such as \"12.50\"",
            ));
        }
        self.amount_text(literal, asset, field)
    }

    /// Parses the text of an amount: plain decimal digits (`12.50`), positive, with at most the
    /// asset's decimal places, not above the maximum.
    pub fn amount_text(
        &self,
        text: &str,
        asset: &str,
        field: &'static str,
    ) -> Result<Decimal, InvalidInput> {
        let invalid = |message: String| InvalidInput { field, message };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid(format!("{text:?} is not a plain decimal number")));
        }
        let places = self.precision(asset).unwrap_or(0);
        if fraction.len() as u32 > places {
            return Err(invalid(format!(
                "{asset} allows at most {places} decimal places"
            )));
        }
        let significant = whole.trim_start_matches('0').len() + fraction.len();
        if significant > 28 {
            return Err(invalid(format!(
                "must not exceed {} {asset}",
                self.max_amount
            )));
        }
        let amount: Decimal = text
            .parse()
            .map_err(|_| invalid(format!("{text:?} is not a plain decimal number")))?;
        if amount <= Decimal::ZERO {
            return Err(invalid("must be greater than zero".into()));
        }
        if amount > self.max_amount {
            return Err(invalid(format!(
                "must not exceed {} {asset}",
                self.max_amount
            )));
        }
        Ok(amount)
    }

    /// A balance written exactly with (at least) the asset's decimal places.
    pub fn format_units(&self, value: Units, asset: &str) -> String {
        value.format(self.precision(asset).unwrap_or(18))
    }

    /// `amount` written with exactly the asset's decimal places.
    pub fn format(&self, amount: Decimal, asset: &str) -> String {
        let mut scaled = amount;
        scaled.rescale(self.precision(asset).unwrap_or(amount.scale()));
        scaled.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn valid_amounts_parse_exactly() {
        let assets = Assets::default();
        assert_eq!(
            assets
                .amount(&json!("0.00150000"), "BTC", "amount")
                .unwrap()
                .to_string(),
            "0.00150000"
        );
        assert_eq!(
            assets.amount(&json!("12"), "USD", "amount").unwrap(),
            Decimal::from(12)
        );
        assert!(assets
            .amount(&json!("0.000000000000000001"), "ETH", "amount")
            .is_ok());
        assert_eq!(assets.format(Decimal::new(15, 1), "USD"), "1.50");
    }

    #[test]
    fn every_rejection_names_the_field() {
        let assets = Assets::default();
        for raw in [
            json!(1.5),
            json!(2),
            json!("abc"),
            json!("0"),
            json!("0.00"),
            json!("-1"),
            json!("+1"),
            json!("1e5"),
            json!("1E5"),
            json!(" 1"),
            json!("1."),
            json!(".5"),
            json!("1.001"),
            json!("1000000000.01"),
            json!(""),
            json!(null),
            json!(["1"]),
            json!("１"),
            json!("99999999999999999999999999999999"),
        ] {
            let err = assets.amount(&raw, "USD", "amount").unwrap_err();
            assert_eq!(err.field, "amount", "{raw}");
        }
        assert_eq!(assets.asset("DOGE", "asset").unwrap_err().field, "asset");
        assert!(assets.asset("usd", "asset").is_err());
    }

    #[test]
    fn number_literals_parse_from_their_digits_never_through_a_float() {
        let assets = Assets::default();
        let parse = |literal: &str, asset: &str| assets.amount_literal(literal, asset, "amount");
        assert_eq!(parse("12.50", "USD").unwrap().to_string(), "12.50");
        // 1 + 10⁻¹⁸ is 1.0 as an f64.
        assert_eq!(
            parse("1.000000000000000001", "ETH").unwrap().to_string(),
            "1.000000000000000001"
        );
        assert_eq!(parse("0.1", "BTC").unwrap(), Decimal::new(1, 1));
        assert_eq!(parse("\"7.25\"", "USD").unwrap(), Decimal::new(725, 2));
        assert_eq!(parse("25", "USDC").unwrap(), Decimal::from(25));
        for (literal, message) in [
            ("1e3", "exponent"),
            ("1.5E2", "exponent"),
            ("-5", "greater than zero"),
            ("0", "greater than zero"),
            ("0.00", "greater than zero"),
            ("0.001", "at most 2 decimal places"),
            ("1000000000.01", "must not exceed"),
            ("1000000001", "must not exceed"),
            ("null", "must be a number"),
            ("true", "must be a number"),
            ("[1]", "must be a number"),
            ("{}", "must be a number"),
            ("\"1e3\"", "not a plain decimal"),
        ] {
            let err = parse(literal, "USD").unwrap_err();
            assert_eq!(err.field, "amount", "{literal}");
            assert!(err.message.contains(message), "{literal}: {}", err.message);
        }
    }

    #[test]
    fn currencies_of_the_predecessors_client_are_case_insensitive() {
        let assets = Assets::default();
        assert_eq!(assets.asset_any_case("usdc", "currency").unwrap(), "USDC");
        assert_eq!(assets.asset_any_case("Btc", "currency").unwrap(), "BTC");
        assert_eq!(
            assets.asset_any_case("doge", "currency").unwrap_err().field,
            "currency"
        );
    }

    #[test]
    fn the_credit_cap_keeps_every_balance_within_the_representation() {
        let assets = Assets::default();
        assert_eq!(assets.credit_cap(), 170_141_183_460);
        let max = Units::from_decimal(assets.max_amount).unwrap();
        let cap = assets.credit_cap() as i128;
        assert!(max
            .raw()
            .checked_mul(cap)
            .is_some_and(|t| t <= Units::MAX.raw()));
        assert!(max
            .raw()
            .checked_mul(cap + 1)
            .is_none_or(|t| t > Units::MAX.raw()));
        let usd = |max: &str| Assets::parse("USD:2", max.parse().unwrap());
        assert_eq!(usd("100000000000000000000").unwrap().credit_cap(), 1);
        assert_eq!(usd("50000000000000000000").unwrap().credit_cap(), 3);
        assert_eq!(usd("0.01").unwrap().credit_cap(), u64::MAX);
    }

    #[test]
    fn a_maximum_the_representation_cannot_live_with_is_refused() {
        let parse = |spec: &str, max: &str| Assets::parse(spec, max.parse().unwrap());
        // Beyond the largest balance: not even one credit fits.
        assert!(parse("USD:2", "200000000000000000000").is_err());
        // Not a whole number of 10^-18.
        assert!(parse("USD:2", "0.0000000000000000001").is_err());
        // ETH amounts up to 1e10 would need 29 digits.
        let err = parse("USD:2,ETH:18", "10000000000").unwrap_err();
        assert!(err.contains("ETH"), "{err}");
        assert!(parse("USD:2,ETH:18", "9999999999").is_ok());
        assert!(parse("USD:2", "100000000000000000000").is_ok());
    }

    #[test]
    fn balances_are_written_exactly_with_the_asset_places() {
        let assets = Assets::default();
        let sum: Units = "84999999999.999999999999999915".parse().unwrap();
        assert_eq!(
            assets.format_units(sum, "ETH"),
            "84999999999.999999999999999915"
        );
        assert_eq!(
            assets.format_units(Units::ZERO, "ETH"),
            "0.000000000000000000"
        );
        assert_eq!(assets.format_units("1.5".parse().unwrap(), "USD"), "1.50");
    }

    proptest! {
        #[test]
        fn any_string_either_parses_within_the_rules_or_is_refused(raw in any::<String>(), asset in prop::sample::select(vec!["USD", "BTC", "ETH"])) {
            let assets = Assets::default();
            if let Ok(amount) = assets.amount(&Value::String(raw), asset, "amount") {
                prop_assert!(amount > Decimal::ZERO);
                prop_assert!(amount <= assets.max_amount);
                prop_assert!(amount.scale() <= assets.precision(asset).unwrap());
            }
        }

        #[test]
        fn well_formed_amounts_round_trip(units in 1u64..1_000_000_000_000, asset in prop::sample::select(vec!["USD", "BTC", "SOL"])) {
            let assets = Assets::default();
            let places = assets.precision(asset).unwrap();
            let amount = Decimal::from_i128_with_scale(units as i128, places);
            prop_assume!(amount <= assets.max_amount);
            let text = assets.format(amount, asset);
            prop_assert_eq!(assets.amount_literal(&text, asset, "amount").unwrap(), amount);
            prop_assert_eq!(assets.amount(&Value::String(text), asset, "amount").unwrap(), amount);
        }

        #[test]
        fn any_literal_either_parses_within_the_rules_or_is_refused(raw in "[-+0-9.eE\"a-z ]{0,24}", asset in prop::sample::select(vec!["USD", "BTC", "ETH"])) {
            let assets = Assets::default();
            if let Ok(amount) = assets.amount_literal(&raw, asset, "amount") {
                prop_assert!(amount > Decimal::ZERO);
                prop_assert!(amount <= assets.max_amount);
                prop_assert!(amount.scale() <= assets.precision(asset).unwrap());
            }
        }
    }
}
