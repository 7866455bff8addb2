//! The read models in MongoDB: their projection runner, their rows and their queries.
//!
//! A runner follows the log from its checkpoint (stored in `projection_checkpoints`) and
//! applies each chunk of events and the new checkpoint in **one transaction**, so every event
//! is applied exactly once — across restarts, and even with several service processes running
//! the same projection (their checkpoint writes conflict; the loser re-reads the checkpoint and
//! skips what is applied). Read models: [`balances`], [`withdrawals`], [`transactions`]
//! (history and ledger entries), [`audit`]. [`replay`] rebuilds one beside the live copy and
//! swaps it in.

pub mod audit;
pub mod balances;
pub mod replay;
pub mod runner;
pub mod transactions;
pub mod withdrawals;

pub use audit::{AuditFilter, AuditRow};
pub use balances::BalanceRow;
pub use runner::Change;
pub use transactions::{
    EntriesBefore, EntryError, HistoryFilter, HistoryRow, Movement, Movements, SumError,
    UserBalance,
};
pub use withdrawals::WithdrawalRow;

use bson::{doc, Document};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::Database;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// The queries of every read model (each model's file adds its own to this handle). Cheap to
/// clone; the HTTP layer, the statement writer and the command line read through it.
#[derive(Clone)]
pub struct ReadModels {
    db: Database,
}

impl ReadModels {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The issued proofs of liabilities (`store/liabilities.rs`).
    pub fn liabilities(&self) -> crate::store::liabilities::LiabilitiesStore {
        crate::store::liabilities::LiabilitiesStore::new(&self.db)
    }

    /// Whether MongoDB answers (`/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }
}

/// One page of a newest-first listing: its rows and the key of its last row when there are
/// more (the HTTP layer turns it into an opaque cursor).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next_key: Option<u64>,
}

/// One page of `collection` newest first by the Int64 field `key` (a key that never changes
/// and only grows for new rows, so a page "below K" is stable under concurrent inserts): the
/// rows matching `filter` with a key below `below`, at most `limit`.
async fn newest_first<T: DeserializeOwned + Send + Sync>(
    collection: &mongodb::Collection<T>,
    mut filter: Document,
    key: &str,
    key_of: impl Fn(&T) -> i64,
    below: Option<u64>,
    limit: u64,
) -> Result<Page<T>, StoreError> {
    if let Some(below) = below {
        let below = i64::try_from(below).unwrap_or(i64::MAX);
        filter.insert(key, doc! { "$lt": below });
    }
    let mut rows: Vec<T> = collection
        .find(filter)
        .sort(doc! { key: -1 })
        .limit(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .await?
        .try_collect()
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_key = more
        .then(|| rows.last().map(|r| key_of(r).max(0) as u64))
        .flatten();
    Ok(Page { rows, next_key })
}

/// A MongoDB range condition for a period (`$gte` from, `$lt` to), if it bounds anything.
fn range(period: (Option<DateTime<Utc>>, Option<DateTime<Utc>>)) -> Option<Document> {
    let mut range = Document::new();
    if let Some(from) = period.0 {
        range.insert("$gte", bson::DateTime::from_chrono(from));
    }
    if let Some(to) = period.1 {
        range.insert("$lt", bson::DateTime::from_chrono(to));
    }
    (!range.is_empty()).then_some(range)
}
