//! The response bodies that several resources answer with, as types: each serializes to exactly
//! the JSON the API has always sent (same keys in the same order, decimals as strings with the
//! asset's places, `null` for an absent value) and describes itself in the OpenAPI document.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::identity::domain::UserState;

/// The error shape of every failure (PRODUCT.md §4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `validation_error`, `malformed_json`,
    /// `payload_too_large`, `unauthorized`, `totp_required`, `invalid_totp`, `forbidden`,
    /// `csrf_failed`, `not_found`, `conflict`, `invalid_state`, `insufficient_funds`,
    /// `balance_limit`, `idempotency_conflict`, `account_locked`, `rate_limited`,
    /// `projection_lag`, `unavailable`, `timeout`, `internal_error`.
    #[schema(example = "validation_error")]
    pub code: String,
    /// For people; a validation message starts with the field it is about.
    pub message: String,
    /// The request's id (also in `X-Request-ID`); quote it when reporting a problem.
    #[schema(required = true)]
    pub request_id: Option<String>,
}

/// The public view of a user (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// `user`, `auditor`, `admin`.
    pub roles: Vec<String>,
    pub two_factor_enabled: bool,
    pub created_at: DateTime<Utc>,
    /// `created_at` again, under the predecessor's client's name ("Member since").
    #[serde(rename = "createdAt")]
    pub created_at_legacy: DateTime<Utc>,
}

impl From<&UserState> for UserView {
    fn from(user: &UserState) -> Self {
        Self {
            id: user.user_id,
            email: user.email.clone(),
            name: user.name.clone(),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            two_factor_enabled: user.totp_enabled,
            created_at: user.created_at,
            created_at_legacy: user.created_at,
        }
    }
}

/// `{"user": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub user: UserView,
}

impl From<&UserState> for UserBody {
    fn from(user: &UserState) -> Self {
        Self { user: user.into() }
    }
}

/// `{"status": …}`: the outcome of a command without a resource to show.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    pub status: String,
}

/// One asset's balance: exact decimal strings with the asset's places.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceRow {
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "12.50")]
    pub available: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00")]
    pub held: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "12.50")]
    pub total: String,
}

/// The caller's balances, every configured asset; `as_of` only when asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalancesBody {
    pub balances: Vec<BalanceRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// The log position the read model had applied.
    pub position: u64,
}

/// One row of the caller's transaction history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionItem {
    #[schema(required = true)]
    pub id: Option<String>,
    /// `deposit`, `withdrawal`, `transfer_in` or `transfer_out`.
    #[serde(rename = "type")]
    #[schema(required = true)]
    pub kind: Option<String>,
    pub asset: String,
    #[schema(
        required = true,
        pattern = r"^[0-9]+(\.[0-9]+)?$",
        example = "0.00150000"
    )]
    pub amount: Option<String>,
    #[schema(required = true)]
    pub status: Option<String>,
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub position: Option<i64>,
    #[schema(required = true)]
    pub counterparty_id: Option<String>,
    #[schema(required = true)]
    pub note: Option<String>,
    #[schema(required = true)]
    pub address: Option<String>,
}

/// `{"transaction": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionBody {
    pub transaction: TransactionItem,
}

/// One page of history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionPage {
    pub items: Vec<TransactionItem>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub position: u64,
}

/// A deposit as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositView {
    pub id: Uuid,
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    pub amount: String,
    /// `completed`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DepositCreated {
    pub deposit: DepositView,
    /// The log position of the event: pass as `min_position` to read your write.
    pub position: u64,
}

/// A withdrawal request as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: Uuid,
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00150000")]
    pub amount: String,
    pub address: String,
    /// `pending`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalCreated {
    pub withdrawal: WithdrawalView,
    pub position: u64,
}

/// A transfer as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub id: Uuid,
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.000000")]
    pub amount: String,
    pub to_email: String,
    /// `completed`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferCreated {
    pub transfer: TransferView,
    pub position: u64,
}
