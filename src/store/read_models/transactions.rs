//! The `transactions` read model (history rows, `GET /api/transactions`) and the
//! `ledger_entries` collection beside it (per-user balance changes, for statements and
//! balances as of an instant). Both are computed by the pure folds in
//! `cryptovault_projections::{history, entries}`.

use bson::{doc, DateTime as BsonDateTime, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use chrono::{DateTime, Utc};
use cryptovault_events::ledger::{postings, Account};
use cryptovault_events::{EventEnvelope, Units};
use cryptovault_projections::entries::{entries, Entry, EntryKind};
use cryptovault_projections::history::{
    history_change, HistoryChange, TransactionKind, TransactionRow,
};
use futures::TryStreamExt;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::runner::{Change, ReadModel};
use super::{newest_first, range, Page, ReadModels};
use crate::period::Period;
use crate::store::codec::{limbs_document, to_i64, units_field, units_of_sums};
use crate::store::StoreError;

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

/// One `transactions` document (a user's side of a deposit, withdrawal or transfer), as
/// written (created by the event that starts it; later events set `status` and `updated_at`)
/// and as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// `<user id>:<transaction id>` ([`row_id`]).
    #[serde(rename = "_id")]
    pub key: String,
    pub id: String,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub asset: String,
    /// Positive, in the asset's unit (decimal text).
    pub amount: String,
    pub status: String,
    pub counterparty_id: Option<String>,
    pub note: Option<String>,
    pub address: Option<String>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
    /// Position of the creating event; the listing's key.
    pub position: i64,
    /// Position of the event that set each later status (`approved`, `completed`,
    /// `rejected`), so a receipt names every event of the transaction. Rows projected before
    /// this field existed have none.
    #[serde(default)]
    pub status_positions: std::collections::BTreeMap<String, i64>,
}

impl HistoryRow {
    fn of(row: &TransactionRow) -> Self {
        Self {
            key: row_id(row.user_id, row.id),
            id: row.id.to_string(),
            user_id: row.user_id.to_string(),
            kind: row.kind.as_str().to_owned(),
            asset: row.asset.clone(),
            amount: row.amount.to_string(),
            status: row.status.to_owned(),
            counterparty_id: row.counterparty.map(|c| c.to_string()),
            note: row.note.clone(),
            address: row.address.clone(),
            created_at: row.created_at,
            updated_at: row.created_at,
            position: to_i64(row.position),
            status_positions: std::collections::BTreeMap::new(),
        }
    }
}

/// The entries of an event whose money cannot be held exactly (only a tampered log has one):
/// one document per user and asset it touches, marked `not_exact` and without amounts, so that
/// statements and balances as of any later instant refuse to answer rather than round.
fn not_exact_entries(event: &EventEnvelope, why: &str) -> Vec<Change> {
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
        .map(|(user, asset)| Change::Create {
            id: format!("{}:{user}:{asset}", event.position).into(),
            row: doc! {
                "user_id": user.to_string(),
                "asset": &asset,
                "kind": "not_exact",
                "movement": true,
                "not_exact": why,
                "occurred_at": BsonDateTime::from_chrono(event.occurred_at),
                "position": to_i64(event.position),
            },
        })
        .collect()
}

/// A ledger entry as stored: exact limbs, read back by [`ReadModels::sum_entries`] and
/// [`ReadModels::movements`] straight from the raw BSON (the export's hot path).
fn entry_change(entry: &Entry) -> Change {
    Change::Create {
        id: format!("{}:{}:{}", entry.position, entry.user_id, entry.asset).into(),
        row: doc! {
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
        },
    }
}

impl ReadModel for TransactionsModel {
    const NAME: &'static str = "transactions";
    const COLLECTIONS: &'static [&'static str] = &[TRANSACTIONS, LEDGER_ENTRIES];

    fn changes(&self, events: &[EventEnvelope]) -> Vec<(&'static str, Vec<Change>)> {
        let mut rows = Vec::new();
        let mut ledger = Vec::new();
        for event in events {
            match history_change(event) {
                Some(HistoryChange::Insert(row)) => {
                    rows.push(Change::create(&HistoryRow::of(&row)))
                }
                Some(HistoryChange::Status {
                    user_id,
                    id,
                    status,
                    at,
                }) => rows.push(Change::Set {
                    id: row_id(user_id, id).into(),
                    fields: doc! {
                        "status": status,
                        "updated_at": BsonDateTime::from_chrono(at),
                        format!("status_positions.{status}"): to_i64(event.position),
                    },
                    on_insert: None,
                    upsert: false,
                }),
                None => {}
            }
            match entries(event) {
                Ok(entries) => ledger.extend(entries.iter().map(entry_change)),
                Err(why) => ledger.extend(not_exact_entries(event, &why.to_string())),
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

/// What a history listing is filtered by.
#[derive(Debug, Clone)]
pub struct HistoryFilter {
    pub user_id: Uuid,
    /// The row kinds listed: every kind when `None`; `Some` of an empty set matches no row (the
    /// queries answer without asking MongoDB).
    pub kinds: Option<Vec<TransactionKind>>,
    pub asset: Option<String>,
    /// `created_at` from (inclusive) / to (exclusive).
    pub created: Period,
}

impl HistoryFilter {
    /// Whether no row can match (an empty set of kinds).
    pub fn matches_nothing(&self) -> bool {
        self.kinds.as_ref().is_some_and(Vec::is_empty)
    }

    /// The MongoDB query of the filter. One kind is an equality on `type` (as the native
    /// listing always queried), several an `$in`: either way the leading `user_id`, `type`
    /// fields of the `{user_id, type, position: -1}` index.
    pub fn query(&self) -> Document {
        let mut query = doc! { "user_id": self.user_id.to_string() };
        match self.kinds.as_deref() {
            None => {}
            Some([kind]) => {
                query.insert("type", kind.as_str());
            }
            Some(kinds) => {
                let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                query.insert("type", doc! { "$in": kinds });
            }
        }
        if let Some(asset) = &self.asset {
            query.insert("asset", asset);
        }
        if let Some(created) = range(self.created) {
            query.insert("created_at", created);
        }
        query
    }

    /// The index an offset page and a count of this filter are hinted to: the one whose
    /// equality prefix the filter fixes (`type` before `asset`, as listed in
    /// [`TransactionsModel::indexes`]), else `{user_id, position: -1}`. All of them end in
    /// `position: -1`, so the newest-first order is read from the index, never sorted in
    /// memory, and a count is an index scan.
    pub fn index(&self) -> Document {
        if self.kinds.is_some() {
            doc! { "user_id": 1, "type": 1, "position": -1 }
        } else if self.asset.is_some() {
            doc! { "user_id": 1, "asset": 1, "position": -1 }
        } else {
            doc! { "user_id": 1, "position": -1 }
        }
    }
}

/// One user's total balance of one asset ([`ReadModels::balances_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBalance {
    pub user_id: String,
    pub asset: String,
    /// Available + held.
    pub total: Units,
}

/// Why a sum of ledger entries could not be given exactly.
#[derive(Debug, thiserror::Error)]
pub enum SumError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry marked `not_exact` (its event's money cannot be held), or a sum beyond the
    /// range: refused rather than rounded.
    #[error("ledger entries of {asset} cannot be summed exactly: {why}")]
    NotExact { asset: String, why: String },
}

impl From<mongodb::error::Error> for SumError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Why the next statement movement could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("malformed ledger entry: {0}")]
    Malformed(String),
}

impl From<mongodb::error::Error> for EntryError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Store(e.into())
    }
}

/// One statement movement as stored in `ledger_entries`, borrowing the stored text.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    pub kind: EntryKind,
    pub reference: &'a str,
    pub counterparty: Option<&'a str>,
    /// Signed change to the total balance.
    pub amount: Units,
    pub occurred_at: DateTime<Utc>,
    pub position: i64,
}

/// Reads a movement straight from the raw BSON (no intermediate `Document`: the export's
/// hot path).
fn movement(raw: &RawDocument) -> Result<Movement<'_>, EntryError> {
    let malformed = |what: &str| EntryError::Malformed(format!("{what} of a ledger entry"));
    if let Ok(Some(RawBsonRef::String(why))) = raw.get("not_exact") {
        return Err(EntryError::Malformed(format!("not exact: {why}")));
    }
    let units = |field| units_field(raw, field).map_err(|why| malformed(&why));
    let amount = units("available")?
        .checked_add(units("held")?)
        .ok_or_else(|| malformed("the total change"))?;
    let kind = raw
        .get_str("kind")
        .ok()
        .and_then(EntryKind::parse)
        .ok_or_else(|| malformed("kind"))?;
    Ok(Movement {
        kind,
        reference: raw
            .get_str("reference")
            .map_err(|_| malformed("reference"))?,
        counterparty: raw.get_str("counterparty_id").ok(),
        amount,
        occurred_at: raw
            .get_datetime("occurred_at")
            .map_err(|_| malformed("occurred_at"))?
            .to_chrono(),
        position: raw.get_i64("position").map_err(|_| malformed("position"))?,
    })
}

/// The movements of one user and asset in a period, in `occurred_at` then position order,
/// read with a cursor (see [`ReadModels::movements`]).
pub struct Movements {
    cursor: mongodb::Cursor<RawDocumentBuf>,
}

impl Movements {
    /// The next movement, borrowing the cursor's current document; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Movement<'_>>, EntryError> {
        if !self.cursor.advance().await? {
            return Ok(None);
        }
        movement(self.cursor.current()).map(Some)
    }
}

impl ReadModels {
    /// One page of a user's history, newest first, below the key `below`.
    pub async fn history_page(
        &self,
        filter: &HistoryFilter,
        below: Option<u64>,
        limit: u64,
    ) -> Result<Page<HistoryRow>, StoreError> {
        if filter.matches_nothing() {
            return Ok(Page {
                rows: Vec::new(),
                next_key: None,
            });
        }
        let collection = self.db.collection::<HistoryRow>(TRANSACTIONS);
        let query = filter.query();
        newest_first(&collection, query, "position", |r| r.position, below, limit).await
    }

    /// Rows `skip..skip + limit` of a user's history, newest first (the predecessor client's
    /// offset pages). Offsets count from the newest row at the time of the query: a row
    /// created between two pages shifts the later page by one (cursor pages,
    /// [`Self::history_page`], do not). Read in index order ([`HistoryFilter::index`]); the
    /// skipped rows are index entries passed over, so callers bound `skip`.
    pub async fn history_offset_page(
        &self,
        filter: &HistoryFilter,
        skip: u64,
        limit: u64,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        if filter.matches_nothing() || limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .db
            .collection::<HistoryRow>(TRANSACTIONS)
            .find(filter.query())
            .sort(doc! { "position": -1 })
            .hint(mongodb::options::Hint::Keys(filter.index()))
            .skip(skip)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?)
    }

    /// The number of rows of a user's history that match `filter`, counted on the same index
    /// as its pages ([`HistoryFilter::index`]), but at most `at_most` (a count reads every row it
    /// counts: the bound keeps one request's work bounded).
    pub async fn history_count(
        &self,
        filter: &HistoryFilter,
        at_most: u64,
    ) -> Result<u64, StoreError> {
        if filter.matches_nothing() {
            return Ok(0);
        }
        Ok(self
            .db
            .collection::<HistoryRow>(TRANSACTIONS)
            .count_documents(filter.query())
            .hint(mongodb::options::Hint::Keys(filter.index()))
            .limit(at_most)
            .await?)
    }

    /// `user`'s transaction `id`, if it exists (another user's never does).
    pub async fn transaction(
        &self,
        user: Uuid,
        id: Uuid,
    ) -> Result<Option<HistoryRow>, StoreError> {
        Ok(self
            .db
            .collection::<HistoryRow>(TRANSACTIONS)
            .find_one(doc! { "_id": row_id(user, id) })
            .await?)
    }

    /// Sum of `available` and `held` per asset over `user`'s ledger entries up to position
    /// `up_to` of `asset` (every asset if `None`) that occurred before `before` (or at or
    /// before `until`), exactly.
    ///
    /// MongoDB `$sum`s each integer limb of the entries (`{whole, atto}`, see `store::codec`)
    /// as `Decimal128`, which is exact while a sum has at most 34 digits: one entry's `|whole|`
    /// is at most 1.7·10²⁰ and `|atto|` below 10¹⁸, so for fewer than 10¹⁶ entries per user and
    /// asset both sums are exact; they are recombined here into `Units` (checked). An entry
    /// marked `not_exact` makes the sum an error.
    pub async fn sum_entries(
        &self,
        user: Uuid,
        asset: Option<&str>,
        occurred: EntriesBefore,
        up_to: u64,
    ) -> Result<Vec<(String, Units, Units)>, SumError> {
        let mut filter = doc! { "user_id": user.to_string() };
        if let Some(asset) = asset {
            filter.insert("asset", asset);
        }
        filter.insert("position", doc! { "$lte": to_i64(up_to) });
        match occurred {
            EntriesBefore::Exclusive(t) => {
                filter.insert("occurred_at", doc! { "$lt": BsonDateTime::from_chrono(t) })
            }
            EntriesBefore::Inclusive(t) => {
                filter.insert("occurred_at", doc! { "$lte": BsonDateTime::from_chrono(t) })
            }
        };
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": {
                "_id": "$asset",
                "available_whole": { "$sum": "$available.whole" },
                "available_atto": { "$sum": "$available.atto" },
                "held_whole": { "$sum": "$held.whole" },
                "held_atto": { "$sum": "$held.atto" },
                "not_exact": { "$max": "$not_exact" },
            } },
        ];
        let rows: Vec<RawDocumentBuf> = self
            .db
            .collection::<Document>(LEDGER_ENTRIES)
            .aggregate(pipeline)
            .with_type::<RawDocumentBuf>()
            .await?
            .try_collect()
            .await?;
        rows.iter()
            .map(|row| {
                let asset = row.get_str("_id").unwrap_or_default().to_owned();
                let not_exact = |why: String| SumError::NotExact {
                    asset: asset.clone(),
                    why,
                };
                if let Ok(Some(RawBsonRef::String(why))) = row.get("not_exact") {
                    return Err(not_exact(why.to_owned()));
                }
                let available = units_of_sums(row, "available").map_err(not_exact)?;
                let held = units_of_sums(row, "held").map_err(not_exact)?;
                Ok((asset, available, held))
            })
            .collect()
    }

    /// Every user's total balance (available + held) per asset after position `up_to`,
    /// exactly, sorted by asset then user id: the sums of the ledger entries up to and
    /// including `up_to` (the same limb technique and bounds as [`ReadModels::sum_entries`]).
    /// Only users' accounts have entries (a deposit's balancing external account and the
    /// paid-out withdrawals account do not), so these are the custodian's liabilities. Pairs
    /// whose entries sum to zero are included. An entry marked `not_exact` is an error.
    pub async fn balances_at(&self, up_to: u64) -> Result<Vec<UserBalance>, SumError> {
        let pipeline = [
            doc! { "$match": { "position": { "$lte": to_i64(up_to) } } },
            doc! { "$group": {
                "_id": { "user_id": "$user_id", "asset": "$asset" },
                "available_whole": { "$sum": "$available.whole" },
                "available_atto": { "$sum": "$available.atto" },
                "held_whole": { "$sum": "$held.whole" },
                "held_atto": { "$sum": "$held.atto" },
                "not_exact": { "$max": "$not_exact" },
            } },
            doc! { "$sort": { "_id.asset": 1, "_id.user_id": 1 } },
        ];
        let rows: Vec<RawDocumentBuf> = self
            .db
            .collection::<Document>(LEDGER_ENTRIES)
            .aggregate(pipeline)
            .allow_disk_use(true)
            .with_type::<RawDocumentBuf>()
            .await?
            .try_collect()
            .await?;
        rows.iter()
            .map(|row| {
                let key = row.get_document("_id").ok();
                let field = |name| {
                    key.and_then(|k| k.get_str(name).ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (user_id, asset) = (field("user_id"), field("asset"));
                let not_exact = |why: String| SumError::NotExact {
                    asset: asset.clone(),
                    why,
                };
                if let Ok(Some(RawBsonRef::String(why))) = row.get("not_exact") {
                    return Err(not_exact(why.to_owned()));
                }
                let available = units_of_sums(row, "available").map_err(not_exact)?;
                let held = units_of_sums(row, "held").map_err(not_exact)?;
                let total = available
                    .checked_add(held)
                    .ok_or_else(|| not_exact("available + held is beyond the range".into()))?;
                Ok(UserBalance {
                    user_id,
                    asset,
                    total,
                })
            })
            .collect()
    }

    /// The movements (entries that change the total balance) of `user` in `asset` up to
    /// position `up_to` that occurred in `period`, oldest first.
    pub async fn movements(
        &self,
        user: Uuid,
        asset: &str,
        period: Period,
        up_to: u64,
    ) -> Result<Movements, StoreError> {
        let mut filter = doc! {
            "user_id": user.to_string(), "asset": asset, "movement": true,
            "position": { "$lte": to_i64(up_to) },
        };
        if let Some(range) = range(period) {
            filter.insert("occurred_at", range);
        }
        let cursor = self
            .db
            .collection::<RawDocumentBuf>(LEDGER_ENTRIES)
            .find(filter)
            .sort(doc! { "occurred_at": 1, "position": 1 })
            .projection(doc! {
                "_id": 0, "kind": 1, "reference": 1, "counterparty_id": 1,
                "available": 1, "held": 1, "occurred_at": 1, "position": 1,
            })
            .batch_size(10_000)
            .await?;
        Ok(Movements { cursor })
    }
}

/// The upper bound on `occurred_at` of a sum of entries.
#[derive(Debug, Clone, Copy)]
pub enum EntriesBefore {
    /// Entries that occurred before this instant (a statement's opening balance).
    Exclusive(DateTime<Utc>),
    /// Entries that occurred at or before this instant (a balance as of an instant).
    Inclusive(DateTime<Utc>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kinds: Option<Vec<TransactionKind>>, asset: Option<&str>) -> HistoryFilter {
        HistoryFilter {
            user_id: Uuid::nil(),
            kinds,
            asset: asset.map(str::to_owned),
            created: (None, None),
        }
    }

    #[test]
    fn one_kind_is_an_equality_several_an_in_and_none_matches_nothing() {
        use TransactionKind::*;
        let user = Uuid::nil().to_string();
        assert_eq!(filter(None, None).query(), doc! { "user_id": &user });
        assert_eq!(
            filter(Some(vec![Deposit]), Some("BTC")).query(),
            doc! { "user_id": &user, "type": "deposit", "asset": "BTC" }
        );
        assert_eq!(
            filter(Some(vec![TransferIn, TransferOut]), None).query(),
            doc! { "user_id": &user, "type": { "$in": ["transfer_in", "transfer_out"] } }
        );
        assert!(filter(Some(Vec::new()), None).matches_nothing());
        assert!(!filter(None, None).matches_nothing());
        assert!(!filter(Some(vec![Deposit]), None).matches_nothing());
    }

    #[test]
    fn the_hinted_index_is_one_the_model_creates() {
        use TransactionKind::*;
        let created: Vec<Document> = TransactionsModel::indexes()
            .into_iter()
            .filter(|(collection, _)| *collection == TRANSACTIONS)
            .map(|(_, index)| index.keys)
            .collect();
        for f in [
            filter(None, None),
            filter(None, Some("USD")),
            filter(Some(vec![Withdrawal]), None),
            filter(Some(vec![TransferIn, TransferOut]), Some("USD")),
        ] {
            assert!(created.contains(&f.index()), "{f:?}");
        }
        assert_eq!(
            filter(Some(vec![Deposit]), Some("USD")).index(),
            doc! { "user_id": 1, "type": 1, "position": -1 }
        );
        assert_eq!(
            filter(None, Some("USD")).index(),
            doc! { "user_id": 1, "asset": 1, "position": -1 }
        );
    }
}
