//! Events of the ledger stream family (`account-…` streams). The full set (withdrawals,
//! transfers) arrives with the ledger; deposits are here first because the store's own tests
//! and benchmarks append them.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::DomainEvent;

/// External funds credited to a user's account.
///
/// `amount` is a positive decimal in the asset's unit, serialized as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    pub deposit_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
}

impl DomainEvent for FundsDeposited {
    const EVENT_TYPE: &'static str = "FundsDeposited";
    const SCHEMA_VERSION: u32 = 1;
}

/// The stream holding one user's ledger account events.
pub fn account_stream(user_id: Uuid) -> String {
    format!("account-{user_id}")
}
