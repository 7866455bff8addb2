//! The `audit_logs` read model: one document per audited operation (see
//! `cryptovault_projections::audit`), `_id` = the event position. Written by [`AuditModel`],
//! read by [`ReadModels::audit_page`].

use bson::{doc, Document};
use chrono::{DateTime, Utc};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::audit::audit_row;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

use super::runner::{Change, ReadModel};
use super::{newest_first, range, Page, ReadModels};
use crate::store::codec::to_i64;
use crate::store::StoreError;

pub const AUDIT_LOGS: &str = "audit_logs";

/// One `audit_logs` document, as written and as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// The event position (the listing's key).
    #[serde(rename = "_id")]
    pub key: i64,
    pub position: i64,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub stream_id: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
}

impl AuditRow {
    fn of(row: cryptovault_projections::audit::AuditRow) -> Self {
        Self {
            key: to_i64(row.position),
            position: to_i64(row.position),
            occurred_at: row.occurred_at,
            action: row.action,
            stream_id: row.stream_id,
            actor: row.actor,
            ip: row.ip,
            user_agent: row.user_agent,
            request_id: row.request_id,
            outcome: row.outcome.to_owned(),
            reason: row.reason,
        }
    }
}

/// What an audit-log listing is filtered by (every condition optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// `occurred_at` from (inclusive) / to (exclusive).
    pub occurred: crate::period::Period,
}

pub struct AuditModel;

impl ReadModel for AuditModel {
    const NAME: &'static str = "audit";
    const COLLECTIONS: &'static [&'static str] = &[AUDIT_LOGS];

    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)> {
        let rows = events
            .iter()
            .filter_map(audit_row)
            .map(|row| Change::create(&AuditRow::of(row)))
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

impl ReadModels {
    /// Clears the personal data of `user_id` from `audit_logs`: the ip and user agent of every
    /// row of the user's streams or with the user as actor become `[erased]` (rows of schema
    /// version 2 events hold only ciphertext, already shredded with the key; rows of version 1
    /// events hold plaintext), and rows whose actor is one of `emails` (refused logins of old
    /// logs named the address) get `[erased]` as actor. Returns the rows changed.
    pub async fn erase_personal(
        &self,
        user_id: uuid::Uuid,
        emails: &[&str],
    ) -> Result<u64, StoreError> {
        use cryptovault_events::personal::ERASED;
        let collection = self.db.collection::<Document>(AUDIT_LOGS);
        let id = user_id.to_string();
        let streams = [format!("user-{id}"), format!("logins-{id}")];
        let emails: Vec<&str> = emails.iter().copied().filter(|e| e.contains('@')).collect();
        let rows = doc! { "$or": [
            { "actor": &id },
            { "stream_id": { "$in": streams.to_vec() } },
            { "actor": { "$in": &emails } },
        ] };
        let mut changed = 0;
        for field in ["ip", "user_agent"] {
            let mut filter = rows.clone();
            filter.insert(field, doc! { "$nin": [null, ERASED] });
            changed += collection
                .update_many(filter, doc! { "$set": { field: ERASED } })
                .await?
                .modified_count;
        }
        changed += collection
            .update_many(
                doc! { "actor": { "$in": &emails } },
                doc! { "$set": { "actor": ERASED } },
            )
            .await?
            .modified_count;
        Ok(changed)
    }

    /// Audited operations matching `filter`, newest first, below the key `below`.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        below: Option<u64>,
        limit: u64,
    ) -> Result<Page<AuditRow>, StoreError> {
        let mut query = Document::new();
        if let Some(actor) = &filter.actor {
            query.insert("actor", actor);
        }
        if let Some(action) = &filter.action {
            query.insert("action", action);
        }
        if let Some(outcome) = &filter.outcome {
            query.insert("outcome", outcome);
        }
        if let Some(at) = range(filter.occurred) {
            query.insert("occurred_at", at);
        }
        let collection = self.db.collection::<AuditRow>(AUDIT_LOGS);
        newest_first(&collection, query, "_id", |r| r.key, below, limit).await
    }
}
