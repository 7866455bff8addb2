//! The `withdrawals` read model: one document per withdrawal with its current status, for the
//! admin queue and the user's list. The fold is `cryptovault_projections::withdrawals`; this
//! module only turns its changes into MongoDB updates.

use bson::{doc, DateTime as BsonDateTime, Document};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::withdrawals::{withdrawal_change, WithdrawalChange};

use super::runner::ReadModel;

pub const COLLECTION: &str = "withdrawals";

pub struct WithdrawalsModel;

impl ReadModel for WithdrawalsModel {
    const NAME: &'static str = "withdrawals";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let updates = events
            .iter()
            .filter_map(withdrawal_change)
            .map(|change| match change {
                WithdrawalChange::Requested(row) => doc! {
                    "q": { "_id": row.id.to_string() },
                    "u": { "$set": {
                        "user_id": row.user_id.to_string(),
                        "asset": &row.asset,
                        "amount": row.amount.to_string(),
                        "address": &row.address,
                        "status": row.status,
                        "requested_at": BsonDateTime::from_chrono(row.requested_at),
                        "updated_at": BsonDateTime::from_chrono(row.requested_at),
                        "position": crate::store::document::to_i64(row.position),
                    }},
                    "upsert": true,
                },
                WithdrawalChange::Status {
                    id,
                    status,
                    at,
                    position,
                } => doc! {
                    "q": { "_id": id.to_string() },
                    "u": { "$set": {
                        "status": status,
                        "updated_at": BsonDateTime::from_chrono(at),
                        "position": crate::store::document::to_i64(position),
                    }},
                },
            })
            .collect();
        vec![(COLLECTION, updates)]
    }
}
