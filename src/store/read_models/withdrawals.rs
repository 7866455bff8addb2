//! The `withdrawals` read model: one document per withdrawal with its current status, for the
//! admin queue and the user's list.

use bson::{doc, DateTime as BsonDateTime, Document};
use cryptovault_events::ledger::{
    WithdrawalApproved, WithdrawalCompleted, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventEnvelope};

use super::runner::ReadModel;

pub const COLLECTION: &str = "withdrawals";

pub struct WithdrawalsModel;

fn status_update(id: uuid::Uuid, status: &str, event: &EventEnvelope) -> Document {
    doc! {
        "q": { "_id": id.to_string() },
        "u": { "$set": {
            "status": status,
            "updated_at": BsonDateTime::from_chrono(event.occurred_at),
            "position": crate::store::codec::to_i64(event.position),
        }},
    }
}

impl ReadModel for WithdrawalsModel {
    const NAME: &'static str = "withdrawals";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let mut updates = Vec::new();
        for event in events {
            if let Ok(e) = WithdrawalRequested::from_envelope(event) {
                updates.push(doc! {
                    "q": { "_id": e.withdrawal_id.to_string() },
                    "u": { "$set": {
                        "user_id": e.user_id.to_string(),
                        "asset": &e.asset,
                        "amount": e.amount.to_string(),
                        "address": &e.address,
                        "status": "pending",
                        "requested_at": BsonDateTime::from_chrono(event.occurred_at),
                        "updated_at": BsonDateTime::from_chrono(event.occurred_at),
                        "position": crate::store::codec::to_i64(event.position),
                    }},
                    "upsert": true,
                });
            } else if let Ok(e) = WithdrawalApproved::from_envelope(event) {
                updates.push(status_update(e.withdrawal_id, "approved", event));
            } else if let Ok(e) = WithdrawalCompleted::from_envelope(event) {
                updates.push(status_update(e.withdrawal_id, "completed", event));
            } else if let Ok(e) = WithdrawalRejected::from_envelope(event) {
                updates.push(status_update(e.withdrawal_id, "rejected", event));
            }
        }
        vec![(COLLECTION, updates)]
    }
}
