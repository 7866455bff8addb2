//! The `transactions` read model (history rows, `GET /api/transactions`) and the
//! `ledger_entries` collection beside it (per-user balance changes, for statements and
//! balances as of an instant). Both are computed by the pure folds in
//! `cryptovault_projections::{history, entries}`.

use bson::{doc, DateTime as BsonDateTime, Document};
use cryptovault_events::ledger::{postings, Account};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::entries::{entries, Entry};
use cryptovault_projections::history::{history_change, HistoryChange, TransactionRow};
use mongodb::IndexModel;

use super::runner::ReadModel;
use crate::store::codec::limbs_document;
use crate::store::codec::to_i64;

/// One document per (user, transaction): `_id` = `<user id>:<transaction id>`.
pub const TRANSACTIONS: &str = "transactions";
/// One document per (event, user, asset) that moves the user's money: `_id` =
/// `<position>:<user id>:<asset>`. `available` and `held` are exact integer limbs
/// `{whole, atto}` (see `projection::balances`), so that `$sum` over any number of entries is
/// exact: one entry's limbs are below 1.7·10²⁰ and 10¹⁸, so the sums of a user's entries stay
/// below the 34 digits `Decimal128` adds exactly for fewer than 10¹⁶ entries.
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

/// The entries of an event whose money cannot be held exactly (only a tampered log has one):
/// one document per user and asset it touches, marked `not_exact` and without amounts, so that
/// statements and balances as of any later instant refuse to answer rather than round.
fn not_exact_documents(event: &EventEnvelope, why: &str) -> Vec<Document> {
    let mut touched: Vec<(uuid::Uuid, String)> = postings(event)
        .into_iter()
        .filter_map(|p| match p.account {
            Account::Available(user) | Account::Held(user) => Some((user, p.asset)),
            Account::ExternalDeposits(_) | Account::WithdrawalsPaid(_) => None,
        })
        .collect();
    touched.sort();
    touched.dedup();
    tracing::error!(position = event.position, %why, "ledger entries cannot be held exactly; marked");
    touched
        .into_iter()
        .map(|(user, asset)| {
            doc! {
                "q": { "_id": format!("{}:{user}:{asset}", event.position) },
                "u": { "$setOnInsert": {
                    "user_id": user.to_string(),
                    "asset": &asset,
                    "kind": "not_exact",
                    "movement": true,
                    "not_exact": why,
                    "occurred_at": BsonDateTime::from_chrono(event.occurred_at),
                    "position": to_i64(event.position),
                }},
                "upsert": true,
            }
        })
        .collect()
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
            "available": limbs_document(entry.available),
            "held": limbs_document(entry.held),
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
            match entries(event) {
                Ok(entries) => ledger.extend(entries.iter().map(entry_document)),
                Err(why) => ledger.extend(not_exact_documents(event, &why.to_string())),
            }
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
