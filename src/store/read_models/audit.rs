//! The `audit_logs` read model: one document per audited operation (see
//! `cryptovault_projections::audit`), `_id` = the event position.

use bson::{doc, DateTime as BsonDateTime, Document};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::audit::audit_row;
use mongodb::IndexModel;

use super::runner::ReadModel;
use crate::store::codec::to_i64;

pub const AUDIT_LOGS: &str = "audit_logs";

pub struct AuditModel;

impl ReadModel for AuditModel {
    const NAME: &'static str = "audit";
    const COLLECTIONS: &'static [&'static str] = &[AUDIT_LOGS];

    fn updates(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Document>)> {
        let rows = events
            .iter()
            .filter_map(audit_row)
            .map(|row| {
                doc! {
                    "q": { "_id": to_i64(row.position) },
                    "u": { "$setOnInsert": {
                        "position": to_i64(row.position),
                        "occurred_at": BsonDateTime::from_chrono(row.occurred_at),
                        "action": row.action,
                        "stream_id": row.stream_id,
                        "actor": row.actor,
                        "ip": row.ip,
                        "user_agent": row.user_agent,
                        "request_id": row.request_id,
                        "outcome": row.outcome,
                        "reason": row.reason,
                    }},
                    "upsert": true,
                }
            })
            .collect();
        vec![(AUDIT_LOGS, rows)]
    }

    fn indexes() -> Vec<(&'static str, IndexModel)> {
        let index = |keys| IndexModel::builder().keys(keys).build();
        vec![
            (AUDIT_LOGS, index(doc! { "actor": 1, "_id": -1 })),
            (AUDIT_LOGS, index(doc! { "action": 1, "_id": -1 })),
            (AUDIT_LOGS, index(doc! { "occurred_at": 1 })),
        ]
    }
}
