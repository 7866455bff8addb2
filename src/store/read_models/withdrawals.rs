//! The `withdrawals` read model: one document per withdrawal with its current status, for the
//! admin queue and the user's list. The fold is `cryptovault_projections::withdrawals`;
//! [`WithdrawalsModel`] writes its changes, [`ReadModels::withdrawals`] reads the rows.

use bson::{doc, DateTime as BsonDateTime};
use chrono::{DateTime, Utc};
use cryptovault_events::EventEnvelope;
use cryptovault_projections::withdrawals::{withdrawal_change, WithdrawalChange};
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

impl ReadModel for WithdrawalsModel {
    const NAME: &'static str = "withdrawals";
    const COLLECTIONS: &'static [&'static str] = &[COLLECTION];

    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)> {
        let changes = events
            .iter()
            .filter_map(withdrawal_change)
            .map(|change| match change {
                WithdrawalChange::Requested(request) => {
                    let row = WithdrawalRow {
                        id: request.id.to_string(),
                        user_id: request.user_id.to_string(),
                        asset: request.asset,
                        amount: request.amount.to_string(),
                        address: request.address,
                        status: request.status.into(),
                        requested_at: Some(request.requested_at),
                        updated_at: Some(request.requested_at),
                        position: to_i64(request.position),
                    };
                    // A `$set` upsert (as before typed changes), not a create.
                    let (id, fields) = row_fields(&row);
                    Change::Set {
                        id,
                        fields,
                        on_insert: None,
                        upsert: true,
                    }
                }
                WithdrawalChange::Status {
                    id,
                    status,
                    at,
                    position,
                } => Change::Set {
                    id: id.to_string().into(),
                    fields: doc! {
                        "status": status,
                        "updated_at": BsonDateTime::from_chrono(at),
                        "position": to_i64(position),
                    },
                    on_insert: None,
                    upsert: false,
                },
            })
            .collect();
        vec![(COLLECTION, changes)]
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
