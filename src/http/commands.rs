//! The wallet's commands in domain values, shared by the native wallet routes (`wallet.rs`)
//! and the predecessor's adapters (`predecessor/wallet.rs`): each rule (an address's form, a
//! note's length, the recipient lookup, self-service deposits being off in provider mode) is
//! implemented once, here or below in `crate::ledger`.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::error::ApiError;
use super::views::{
    DepositCreated, DepositView, TransferCreated, TransferView, WithdrawalCreated, WithdrawalView,
};
use super::AppState;
use crate::config::DepositsMode;
use crate::identity::domain::{Email, InvalidInput};
use crate::identity::RequestMeta;
use crate::ledger::service::{CommandIds, TransferRequest};

/// A withdrawal request in domain values.
pub struct Withdrawal {
    asset: String,
    amount: Decimal,
    address: String,
}

impl Withdrawal {
    /// A withdrawal of a parsed asset and amount to `address`: 1 to 128 printable ASCII
    /// characters once surrounding spaces are trimmed.
    pub fn new(asset: String, amount: Decimal, address: &str) -> Result<Self, InvalidInput> {
        let address = address.trim();
        if address.is_empty()
            || address.len() > 128
            || !address.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InvalidInput {
                field: "address",
                message: "must be 1 to 128 printable ASCII characters".into(),
            });
        }
        Ok(Self {
            asset,
            amount,
            address: address.to_owned(),
        })
    }
}

/// A transfer request in domain values (the recipient still to be looked up).
pub struct Transfer {
    to_email: Email,
    /// The request field that named the recipient (`to_email`, or the predecessor's
    /// `recipient_email`): a recipient that does not exist is reported against it.
    email_field: &'static str,
    asset: String,
    amount: Decimal,
    note: Option<String>,
}

impl Transfer {
    /// A transfer of a parsed asset and amount to the address in `email_field`, with an
    /// optional note of at most 280 characters and no control characters.
    pub fn new(
        to_email: &str,
        email_field: &'static str,
        (asset, amount): (String, Decimal),
        note: Option<&str>,
    ) -> Result<Self, InvalidInput> {
        let to_email = Email::parse(to_email, email_field)?;
        let note = match note {
            None => None,
            Some(s) if s.chars().count() <= 280 && !s.chars().any(char::is_control) => {
                Some(s.to_owned())
            }
            Some(_) => {
                return Err(InvalidInput {
                    field: "note",
                    message: "must be a string of at most 280 characters".into(),
                })
            }
        };
        Ok(Self {
            to_email,
            email_field,
            asset,
            amount,
            note,
        })
    }
}

/// Refuses self-service deposits when they are off (`DEPOSITS_MODE=provider`): 403.
pub fn self_service_deposits(state: &AppState) -> Result<(), ApiError> {
    if state.config.deposits.mode == DepositsMode::Provider {
        return Err(ApiError::Forbidden(
            "self-service deposits are off (DEPOSITS_MODE=provider): money is credited by the \
             payment provider or an admin"
                .into(),
        ));
    }
    Ok(())
}

/// Credits `user` with `amount` of `asset` (self-service; the caller checked
/// [`self_service_deposits`]).
pub async fn run_deposit(
    state: &AppState,
    user: Uuid,
    asset: String,
    amount: Decimal,
    ids: CommandIds,
    meta: &RequestMeta,
) -> Result<DepositCreated, ApiError> {
    let applied = state
        .ledger
        .deposit(user, &asset, amount, ids, meta)
        .await?;
    let deposit = DepositView {
        id: applied.event.deposit_id,
        amount: state.ledger.assets.format(amount, &asset),
        asset,
        status: "completed".into(),
    };
    Ok(DepositCreated {
        deposit,
        position: applied.position,
    })
}

/// Holds `request.amount` of `user`'s available funds for a withdrawal (status `pending`).
pub async fn run_withdrawal(
    state: &AppState,
    user: Uuid,
    request: Withdrawal,
    ids: CommandIds,
    meta: &RequestMeta,
) -> Result<WithdrawalCreated, ApiError> {
    let Withdrawal {
        asset,
        amount,
        address,
    } = request;
    let applied = state
        .ledger
        .request_withdrawal(user, &asset, amount, &address, ids, meta)
        .await?;
    let withdrawal = WithdrawalView {
        id: applied.event.withdrawal_id,
        amount: state.ledger.assets.format(amount, &asset),
        asset,
        address,
        status: "pending".into(),
    };
    Ok(WithdrawalCreated {
        withdrawal,
        position: applied.position,
    })
}

/// Moves `request.amount` from `from`'s available funds to the user with `request.to_email`
/// (422 against the request's email field when no user has it).
pub async fn run_transfer(
    state: &AppState,
    from: Uuid,
    request: Transfer,
    ids: CommandIds,
    meta: &RequestMeta,
) -> Result<TransferCreated, ApiError> {
    let Transfer {
        to_email,
        email_field,
        asset,
        amount,
        note,
    } = request;
    let recipient = state
        .identity
        .user_id_by_email(&to_email)
        .await?
        .ok_or_else(|| InvalidInput {
            field: email_field,
            message: "no user has this email address".into(),
        })?;
    let request = TransferRequest {
        from,
        to: recipient,
        asset: asset.clone(),
        amount,
        note,
    };
    let applied = state.ledger.transfer(&request, ids, meta).await?;
    let transfer = TransferView {
        id: applied.event.transfer_id,
        amount: state.ledger.assets.format(amount, &asset),
        asset,
        to_email: to_email.as_str().to_owned(),
        status: "completed".into(),
    };
    Ok(TransferCreated {
        transfer,
        position: applied.position,
    })
}
