//! Given/when/then tests of account decisions (cqrs-es's `TestFramework` shape): *given* the
//! events an account already has, *when* a decision runs on the folded state, *then* it returns
//! exactly this event — and the account folded with it still holds its invariant — or exactly
//! this refusal. Pure: no store, no clock read by the code under test.

use chrono::{TimeZone, Utc};
use cryptovault_events::ledger::{account_stream, credits_stream, FundsDeposited};
use cryptovault_events::{DomainEvent, EventEnvelope, EventMetadata, GENESIS_HASH};
use rust_decimal::Decimal;
use std::fmt::Debug;
use uuid::Uuid;

use super::account::{AccountState, Refusal};

/// The account under test and the events it has so far.
pub struct Given {
    state: AccountState,
    events: Vec<EventEnvelope>,
}

/// An account of `user` in `asset` with no events.
pub fn given_account(user: Uuid, asset: &str) -> Given {
    Given {
        state: AccountState::new(user, asset),
        events: Vec::new(),
    }
}

impl Given {
    /// The account has `event` (on its `credits-…` stream when `credit`, else `account-…`).
    fn with<E: DomainEvent>(mut self, event: E, credit: bool) -> Self {
        let (user, asset) = (self.state.user_id(), self.state.asset().to_owned());
        let stream = if credit {
            credits_stream(user, &asset)
        } else {
            account_stream(user, &asset)
        };
        let version = self.events.iter().filter(|e| e.stream_id == stream).count() as u64 + 1;
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let position = self.events.len() as u64 + 1;
        let sealed = EventEnvelope::seal(
            event.into_new_event(
                Uuid::from_u128(position.into()),
                at,
                EventMetadata::default(),
            ),
            stream,
            version,
            position,
            GENESIS_HASH.into(),
        );
        self.state.apply(&sealed);
        self.events.push(sealed);
        self
    }

    /// The account was credited `amount` (a deposit).
    pub fn deposited(self, amount: &str) -> Self {
        let deposit = FundsDeposited {
            deposit_id: Uuid::from_u128(self.events.len() as u128 + 1),
            user_id: self.state.user_id(),
            asset: self.state.asset().to_owned(),
            amount: amount.parse().expect("a decimal"),
        };
        self.with(deposit, true)
    }

    /// The account has `event` on its `account-…` stream (a debit it decided earlier).
    pub fn debited<E: DomainEvent>(self, event: E) -> Self {
        self.with(event, false)
    }

    /// Runs `decide` on the folded state.
    pub fn when<E>(self, decide: impl FnOnce(&AccountState) -> Result<E, Refusal>) -> Then<E> {
        let result = decide(&self.state);
        Then {
            given: self,
            result,
        }
    }
}

/// A decision's result, to be checked.
pub struct Then<E> {
    given: Given,
    result: Result<E, Refusal>,
}

impl<E: DomainEvent + Clone + Debug + PartialEq> Then<E> {
    /// The decision returned `expected`; the account folded with it (as a debit) holds its
    /// invariant. Returns the account for further steps.
    pub fn then_expect(self, expected: E) -> Given {
        match self.result {
            Ok(event) => {
                assert_eq!(event, expected, "the decision's event");
                let next = self.given.debited(event);
                if let Err(broken) = next.state.check_invariant() {
                    panic!("the decision broke the account's invariant: {broken}");
                }
                next
            }
            Err(refusal) => panic!("expected {expected:?}, the decision refused: {refusal}"),
        }
    }
}

impl<E: Debug> Then<E> {
    /// The decision was refused with `expected`.
    pub fn then_refused(self, expected: Refusal) {
        match self.result {
            Ok(event) => {
                panic!("expected the refusal {expected:?}, the decision returned {event:?}")
            }
            Err(refusal) => assert_eq!(refusal, expected, "the refusal"),
        }
    }
}

/// `text` as a decimal (test shorthand).
pub fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

#[cfg(test)]
mod tests {
    use cryptovault_events::ledger::{
        WithdrawalApproved, WithdrawalCompleted, WithdrawalRequested,
    };
    use cryptovault_events::Units;

    use super::*;

    const USER: Uuid = Uuid::from_u128(1);
    const ADMIN: Uuid = Uuid::from_u128(99);
    const W: Uuid = Uuid::from_u128(7);

    fn requested(amount: &str) -> WithdrawalRequested {
        WithdrawalRequested {
            withdrawal_id: W,
            user_id: USER,
            asset: "BTC".into(),
            amount: dec(amount),
            address: "bc1q".into(),
        }
    }

    #[test]
    fn a_withdrawal_of_what_is_available_is_held() {
        given_account(USER, "BTC")
            .deposited("1.5")
            .when(|account| account.request_withdrawal(W, dec("1.5"), "bc1q"))
            .then_expect(requested("1.5"));
    }

    #[test]
    fn a_withdrawal_beyond_what_is_available_is_refused() {
        given_account(USER, "BTC")
            .deposited("1.5")
            .when(|account| account.request_withdrawal(W, dec("1.50000001"), "bc1q"))
            .then_refused(Refusal::InsufficientFunds {
                asset: "BTC".into(),
                available: "1.5".parse::<Units>().unwrap(),
                requested: dec("1.50000001"),
            });
    }

    #[test]
    fn a_held_amount_cannot_be_transferred() {
        given_account(USER, "BTC")
            .deposited("2")
            .debited(requested("1.5"))
            .when(|account| {
                account.transfer(Uuid::from_u128(2), Uuid::from_u128(3), dec("1"), None)
            })
            .then_refused(Refusal::InsufficientFunds {
                asset: "BTC".into(),
                available: "0.5".parse::<Units>().unwrap(),
                requested: dec("1"),
            });
    }

    #[test]
    fn an_approved_withdrawal_completes_once_and_then_cannot_be_rejected() {
        let account = given_account(USER, "BTC")
            .deposited("2")
            .debited(requested("1.5"))
            .when(|account| account.approve(W, ADMIN))
            .then_expect(WithdrawalApproved {
                withdrawal_id: W,
                user_id: USER,
                asset: "BTC".into(),
                approved_by: ADMIN,
            })
            .when(|account| account.complete(W, ADMIN))
            .then_expect(WithdrawalCompleted {
                withdrawal_id: W,
                user_id: USER,
                asset: "BTC".into(),
                amount: dec("1.5"),
                completed_by: ADMIN,
            });
        account
            .when(|account| account.reject(W, ADMIN, None))
            .then_refused(Refusal::InvalidTransition {
                id: W,
                status: "completed",
                action: "reject",
            });
    }

    #[test]
    fn four_eyes_the_owner_cannot_approve_or_complete_their_own_withdrawal() {
        given_account(USER, "BTC")
            .deposited("2")
            .debited(requested("1.5"))
            .when(|account| account.approve(W, USER))
            .then_refused(Refusal::OwnWithdrawal {
                id: W,
                action: "approve",
            });
        given_account(USER, "BTC")
            .deposited("2")
            .debited(requested("1.5"))
            .debited(WithdrawalApproved {
                withdrawal_id: W,
                user_id: USER,
                asset: "BTC".into(),
                approved_by: ADMIN,
            })
            .when(|account| account.complete(W, USER))
            .then_refused(Refusal::OwnWithdrawal {
                id: W,
                action: "complete",
            });
    }

    #[test]
    fn a_pending_withdrawal_cannot_be_completed_before_approval() {
        given_account(USER, "BTC")
            .deposited("2")
            .debited(requested("1"))
            .when(|account| account.complete(W, ADMIN))
            .then_refused(Refusal::InvalidTransition {
                id: W,
                status: "pending",
                action: "complete (approve it first)",
            });
    }
}
