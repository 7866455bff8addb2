//! The `withdrawals` read model: one document per withdrawal with its current status, for the
//! admin queue and the user's list. Written by [`WithdrawalsModel`], read by
//! [`ReadModels::withdrawals`].

use bson::{doc, DateTime as BsonDateTime};
use chrono::{DateTime, Utc};
use cryptovault_events::ledger::{
    WithdrawalApproved, WithdrawalCompleted, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventEnvelope};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::runner::{row_fields, Change, ReadModel};
use super::ReadModels;
use crate::store::codec::to_i64;
use crate::store::StoreError;

pub const COLLECTION: &str = "withdrawals";

/// One `withdrawals` document, as written (by the request; later events set `status`,
/// `updated_at` and `position`) and as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalRow {
    /// The withdrawal id.
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub asset: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, with = "optional_instant")]
    pub requested_at: Option<DateTime<Utc>>,
    #[serde(default, with = "optional_instant")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub position: i64,
}

/// An optional instant stored as a BSON date.
mod optional_instant {
    use bson::DateTime as BsonDateTime;
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(BsonDateTime::from_chrono).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<BsonDateTime>::deserialize(deserializer)?.map(|d| d.to_chrono()))
    }
}

pub struct WithdrawalsModel;

fn status_update(id: uuid::Uuid, status: &str, event: &EventEnvelope) -> Change {
    Change::Set {
        id: id.to_string().into(),
        fields: doc! {
            "status": status,
            "updated_at": BsonDateTime::from_chrono(event.occurred_at),
            "position": to_i64(event.position),
        },
        on_insert: None,
        upsert: false,
    }
}

impl ReadModel for WithdrawalsModel {
    const NAME: &'static str = "withdrawals";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)> {
        let mut updates = Vec::new();
        for event in events {
            if let Ok(e) = WithdrawalRequested::from_envelope(event) {
                let row = WithdrawalRow {
                    id: e.withdrawal_id.to_string(),
                    user_id: e.user_id.to_string(),
                    asset: e.asset.clone(),
                    amount: e.amount.to_string(),
                    address: e.address.clone(),
                    status: "pending".into(),
                    requested_at: Some(event.occurred_at),
                    updated_at: Some(event.occurred_at),
                    position: to_i64(event.position),
                };
                // A `$set` upsert (as before typed changes), not a create.
                let (id, fields) = row_fields(&row);
                updates.push(Change::Set {
                    id,
                    fields,
                    on_insert: None,
                    upsert: true,
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

impl ReadModels {
    /// Withdrawals with `status` (any if `None`), newest first, at most 500.
    pub async fn withdrawals(
        &self,
        status: Option<&str>,
    ) -> Result<Vec<WithdrawalRow>, StoreError> {
        let filter = match status {
            None => doc! {},
            Some(status) => doc! { "status": status },
        };
        Ok(self
            .db
            .collection::<WithdrawalRow>(COLLECTION)
            .find(filter)
            .sort(doc! { "position": -1 })
            .limit(500)
            .await?
            .try_collect()
            .await?)
    }
}
