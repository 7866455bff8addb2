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

/// Reads a `Decimal128` back (MongoDB may print it in exponent form, e.g. `1E-8`).
pub fn from_decimal128(value: &Decimal128) -> Decimal {
    let text = value.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .unwrap_or_default()
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
