//! The `transactions` read model (history rows, `GET /api/transactions`) and the
//! `ledger_entries` collection beside it (per-user balance changes, for statements and
//! balances as of an instant). Both are computed by the pure folds in
//! `cryptovault_projections::{history, entries}`.

use bson::{doc, DateTime as BsonDateTime, Document};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::entries::{entries, Entry};
use cryptovault_projections::history::{history_change, HistoryChange, TransactionRow};
use mongodb::IndexModel;

use super::balances::decimal128;
use super::runner::ReadModel;
use crate::store::document::to_i64;

/// One document per (user, transaction): `_id` = `<user id>:<transaction id>`.
pub const TRANSACTIONS: &str = "transactions";
/// One document per (event, user, asset) that moves the user's money: `_id` =
/// `<position>:<user id>:<asset>`. Amounts are exact `Decimal128`.
pub const LEDGER_ENTRIES: &str = "ledger_entries";

pub struct TransactionsModel;

pub fn row_id(user_id: uuid::Uuid, id: uuid::Uuid) -> String {
    format!("{user_id}:{id}")
}

fn insert(row: &TransactionRow) -> Document {
    doc! {
        "q": { "_id": row_id(row.user_id, row.id) },
        "u": { "$setOnInsert": {
            "id": row.id.to_string(),
            "user_id": row.user_id.to_string(),
            "type": row.kind.as_str(),
            "asset": &row.asset,
            "amount": row.amount.to_string(),
            "status": row.status,
            "counterparty_id": row.counterparty.map(|c| c.to_string()),
            "note": row.note.as_deref(),
            "address": row.address.as_deref(),
            "created_at": BsonDateTime::from_chrono(row.created_at),
            "updated_at": BsonDateTime::from_chrono(row.created_at),
            "position": to_i64(row.position),
        }},
        "upsert": true,
    }
}

fn entry_document(entry: &Entry) -> Document {
    doc! {
        "q": { "_id": format!("{}:{}:{}", entry.position, entry.user_id, entry.asset) },
        "u": { "$setOnInsert": {
            "user_id": entry.user_id.to_string(),
            "asset": &entry.asset,
            "kind": entry.kind.as_str(),
            "movement": entry.kind.is_movement(),
            "reference": entry.reference.to_string(),
            "counterparty_id": entry.counterparty.map(|c| c.to_string()),
            "available": decimal128(entry.available),
            "held": decimal128(entry.held),
            "occurred_at": BsonDateTime::from_chrono(entry.occurred_at),
            "position": to_i64(entry.position),
        }},
        "upsert": true,
    }
}

impl ReadModel for TransactionsModel {
    const NAME: &'static str = "transactions";
    const COLLECTIONS: &'static [&'static str] = &[TRANSACTIONS, LEDGER_ENTRIES];

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let mut rows = Vec::new();
        let mut ledger = Vec::new();
        for event in events {
            match history_change(event) {
                Some(HistoryChange::Insert(row)) => rows.push(insert(&row)),
                Some(HistoryChange::Status {
                    user_id,
                    id,
                    status,
                    at,
                }) => rows.push(doc! {
                    "q": { "_id": row_id(user_id, id) },
                    "u": { "$set": { "status": status, "updated_at": BsonDateTime::from_chrono(at) } },
                }),
                None => {}
            }
            ledger.extend(entries(event).iter().map(entry_document));
        }
        vec![(TRANSACTIONS, rows), (LEDGER_ENTRIES, ledger)]
    }

    fn indexes() -> Vec<(&'static str, IndexModel)> {
        let index = |keys| IndexModel::builder().keys(keys).build();
        vec![
            // Newest-first listing, with or without a type/asset filter.
            (TRANSACTIONS, index(doc! { "user_id": 1, "position": -1 })),
            (
                TRANSACTIONS,
                index(doc! { "user_id": 1, "type": 1, "position": -1 }),
            ),
            (
                TRANSACTIONS,
                index(doc! { "user_id": 1, "asset": 1, "position": -1 }),
            ),
            // Statements (by asset and time, in position order) and balances as of an instant.
            (
                LEDGER_ENTRIES,
                index(doc! { "user_id": 1, "asset": 1, "occurred_at": 1, "position": 1 }),
            ),
        ]
    }
}
