//! One user's account in one asset: the state folded from its stream and the decisions that
//! produce new events. Pure: no I/O, no clock. Deciding is separate from applying: a decision
//! checks the rules and returns events; `apply` only folds.
//!
//! Balances are [`Units`] (exact, checked; see `cryptovault_events::units`): a decision whose
//! result would not fit is refused ([`Refusal::BalanceLimit`]), and a fold that meets an event
//! it cannot hold exactly (only a tampered log, or credits beyond the cap, has one) does not
//! round: it leaves the balances as they were and marks the state as not exact
//! ([`AccountState::not_exact`]), and every decision on such a state is refused.

use std::collections::HashMap;

use cryptovault_events::ledger::{
    is_credits_stream, FundsDeposited, LedgerEvent, TransferReceived, TransferSent,
    WithdrawalApproved, WithdrawalCompleted, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{EventEnvelope, Units};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::store::ExpectedVersion;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    Pending,
    Approved,
    Completed,
    Rejected,
}

impl WithdrawalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Completed,
            Self::Rejected,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub amount: Decimal,
    pub status: WithdrawalStatus,
}

/// One account's state: the fold of its two streams. The fields are private: a state is built
/// only by folding events ([`AccountState::apply`]) or by restoring a snapshot of such a fold
/// ([`AccountState::restore`], which checks the invariant).
///
/// Invariant ([`AccountState::check_invariant`]; kept by the decisions below, asserted by the
/// property and given/when/then tests): the fold is exact, `available >= 0` and `held >= 0`, and
/// `held` is the sum of the pending and approved withdrawals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    user_id: Uuid,
    asset: String,
    available: Units,
    held: Units,
    withdrawals: HashMap<Uuid, Withdrawal>,
    /// Version of the last folded event of the `account-…` stream (0: none).
    version: u64,
    /// Id of the event at `version`, when known (a state started from a snapshot does not know
    /// it until it folds an event). See [`AccountState::expected_version`].
    last_event: Option<Uuid>,
    /// Version of the last folded event of the `credits-…` stream (0: none).
    credits_version: u64,
    /// Why the balances are not the exact fold (the first event whose money could not be held;
    /// `None`: exact). Sticky: decisions on such a state are refused.
    not_exact: Option<String>,
}

/// What a snapshot stores of an exact [`AccountState`]: every field but `not_exact` (a state
/// that is not an exact fold is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub user_id: Uuid,
    pub asset: String,
    pub available: Units,
    pub held: Units,
    pub withdrawals: HashMap<Uuid, Withdrawal>,
    pub version: u64,
    pub last_event: Option<Uuid>,
    pub credits_version: u64,
}

/// Why a ledger command was refused. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient funds: {available} {asset} available, {requested} requested")]
    InsufficientFunds {
        asset: String,
        available: Units,
        requested: Decimal,
    },
    /// A balance this command would produce (or the account's current one) cannot be held
    /// exactly: beyond ±1.7·10²⁰ of the asset (see `Units`). HTTP 422 `balance_limit`.
    #[error(
        "amount: the resulting {asset} balance cannot be held exactly (the ledger holds at most {} {asset} per account); nothing was written",
        Units::MAX
    )]
    BalanceLimit { asset: String },
    #[error("withdrawal {id} is {status}; cannot {action}")]
    InvalidTransition {
        id: Uuid,
        status: &'static str,
        action: &'static str,
    },
    #[error("withdrawal {0} not found")]
    UnknownWithdrawal(Uuid),
    #[error("cannot transfer to yourself")]
    SelfTransfer,
    /// Four eyes: the admin acting on a withdrawal is its owner. HTTP 403 `forbidden`.
    #[error("four eyes: an admin cannot {action} their own withdrawal {id}; another admin must")]
    OwnWithdrawal { id: Uuid, action: &'static str },
    /// Four eyes: an admin crediting their own account. HTTP 403 `forbidden`.
    #[error(
        "four eyes: an admin cannot credit a deposit to their own account; another admin must"
    )]
    OwnDeposit,
}

impl AccountState {
    pub fn new(user_id: Uuid, asset: &str) -> Self {
        Self {
            user_id,
            asset: asset.to_owned(),
            available: Units::ZERO,
            held: Units::ZERO,
            withdrawals: HashMap::new(),
            version: 0,
            last_event: None,
            credits_version: 0,
            not_exact: None,
        }
    }

    /// The state a snapshot holds, if it satisfies the invariant (otherwise why not: such a
    /// snapshot is ignored and the account folded from its log).
    pub fn restore(snapshot: AccountSnapshot) -> Result<Self, String> {
        let AccountSnapshot {
            user_id,
            asset,
            available,
            held,
            withdrawals,
            version,
            last_event,
            credits_version,
        } = snapshot;
        let state = Self {
            user_id,
            asset,
            available,
            held,
            withdrawals,
            version,
            last_event,
            credits_version,
            not_exact: None,
        };
        state.check_invariant()?;
        Ok(state)
    }

    /// This state, as a fold that met an event it could not hold (for tests of what happens to
    /// such a state).
    #[cfg(test)]
    pub(crate) fn marked_not_exact(mut self, why: &str) -> Self {
        self.not_exact = Some(why.to_owned());
        self
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    pub fn asset(&self) -> &str {
        &self.asset
    }

    /// Spendable now.
    pub fn available(&self) -> Units {
        self.available
    }

    /// Held by pending and approved withdrawals.
    pub fn held(&self) -> Units {
        self.held
    }

    /// Every withdrawal of the account by id, with its amount and status.
    pub fn withdrawals(&self) -> &HashMap<Uuid, Withdrawal> {
        &self.withdrawals
    }

    /// Version of the last folded event of the `account-…` stream (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Id of the event at [`Self::version`], when known.
    pub fn last_event(&self) -> Option<Uuid> {
        self.last_event
    }

    /// Version of the last folded event of the `credits-…` stream (0: none).
    pub fn credits_version(&self) -> u64 {
        self.credits_version
    }

    /// Why the balances are not the exact fold (`None`: they are).
    pub fn not_exact(&self) -> Option<&str> {
        self.not_exact.as_deref()
    }

    /// The expectation a debit decided on this state appends with: the last folded event of the
    /// `account-…` stream by id and version. A cached state may include batches this process
    /// has queued but not committed; naming the event makes a decision behind a batch that
    /// fails conflict, even if another writer's event took that version meanwhile. A bare
    /// version is used only when the id is unknown, i.e. the state came from a snapshot — a
    /// fold of committed events, whose versions never change meaning.
    pub fn expected_version(&self) -> ExpectedVersion {
        match (self.version, self.last_event) {
            (0, _) => ExpectedVersion::NoStream,
            (version, Some(event_id)) => ExpectedVersion::Event { version, event_id },
            (version, None) => ExpectedVersion::Exact(version),
        }
    }

    pub fn fold(user_id: Uuid, asset: &str, events: &[EventEnvelope]) -> Self {
        let mut state = Self::new(user_id, asset);
        for event in events {
            state.apply(event);
        }
        state
    }

    /// The account's invariant: the fold is exact, `available >= 0`, `held >= 0`, and `held`
    /// is the sum of the pending and approved withdrawals. Every decision keeps it (the
    /// property tests and the given/when/then tests assert it after each decision); only a
    /// tampered log can break it, which `cryptovault verify` and the invariant monitor report.
    pub fn check_invariant(&self) -> Result<(), String> {
        if let Some(why) = &self.not_exact {
            return Err(format!("not exact: {why}"));
        }
        if self.available.is_negative() || self.held.is_negative() {
            return Err(format!(
                "negative balance: available {}, held {}",
                self.available, self.held
            ));
        }
        let open = self
            .withdrawals
            .values()
            .filter(|w| {
                matches!(
                    w.status,
                    WithdrawalStatus::Pending | WithdrawalStatus::Approved
                )
            })
            .try_fold(Units::ZERO, |sum, w| {
                sum.checked_add(Units::from_decimal(w.amount)?)
            });
        match open {
            Some(open) if open == self.held => Ok(()),
            open => Err(format!(
                "held {} is not the sum of the open withdrawals ({open:?})",
                self.held
            )),
        }
    }

    /// `available + held`, if it fits (it always does within the credits cap).
    pub fn total(&self) -> Option<Units> {
        self.available.checked_add(self.held)
    }

    /// Folds one event of this account's `account-…` or `credits-…` stream. Changing what it
    /// does changes the meaning of stored snapshots: bump `snapshot::FORMAT` with it.
    ///
    /// Money is applied exactly or not at all: an amount that cannot be held, or a balance that
    /// would leave the range, leaves `available` and `held` unchanged and sets
    /// [`Self::not_exact`] (never a panic, never a rounded balance).
    pub fn apply(&mut self, event: &EventEnvelope) {
        if is_credits_stream(&event.stream_id) {
            self.credits_version = event.stream_version;
        } else {
            self.version = event.stream_version;
            self.last_event = Some(event.event_id);
        }
        if let Err(why) = self.apply_money(event) {
            if self.not_exact.is_none() {
                self.not_exact = Some(format!(
                    "{} version {} ({}): {why}",
                    event.stream_id, event.stream_version, event.event_type
                ));
            }
        }
    }

    /// The balance changes of `event` (and the withdrawal records), checked.
    fn apply_money(&mut self, event: &EventEnvelope) -> Result<(), String> {
        let units = |amount: Decimal| {
            Units::from_decimal(amount)
                .ok_or_else(|| format!("amount {amount} cannot be held exactly"))
        };
        let beyond = || "balance beyond ±1.7e20".to_owned();
        let ledger_event = match LedgerEvent::decode(event) {
            Ok(Some(ledger_event)) => ledger_event,
            // Not a ledger event, or one that does not decode: it moves nothing here (as
            // before the family decode; the invariant checker reports an undecodable one).
            Ok(None) | Err(_) => return Ok(()),
        };
        // (available change, held change): applied only if both results fit.
        let (plus_available, minus_available, plus_held, minus_held) = match ledger_event {
            LedgerEvent::FundsDeposited(e) => {
                (units(e.amount)?, Units::ZERO, Units::ZERO, Units::ZERO)
            }
            LedgerEvent::WithdrawalRequested(e) => {
                self.withdrawals.insert(
                    e.withdrawal_id,
                    Withdrawal {
                        amount: e.amount,
                        status: WithdrawalStatus::Pending,
                    },
                );
                let amount = units(e.amount)?;
                (Units::ZERO, amount, amount, Units::ZERO)
            }
            LedgerEvent::WithdrawalApproved(e) => {
                self.set_status(e.withdrawal_id, WithdrawalStatus::Approved);
                return Ok(());
            }
            LedgerEvent::WithdrawalCompleted(e) => {
                self.set_status(e.withdrawal_id, WithdrawalStatus::Completed);
                (Units::ZERO, Units::ZERO, Units::ZERO, units(e.amount)?)
            }
            LedgerEvent::WithdrawalRejected(e) => {
                self.set_status(e.withdrawal_id, WithdrawalStatus::Rejected);
                let amount = units(e.amount)?;
                (amount, Units::ZERO, Units::ZERO, amount)
            }
            LedgerEvent::TransferSent(e) => {
                (Units::ZERO, units(e.amount)?, Units::ZERO, Units::ZERO)
            }
            LedgerEvent::TransferReceived(e) => {
                (units(e.amount)?, Units::ZERO, Units::ZERO, Units::ZERO)
            }
            // Lives on the `withdrawal-…` stream, never on an account's streams.
            LedgerEvent::WithdrawalOpened(_) => return Ok(()),
        };
        let available = self
            .available
            .checked_add(plus_available)
            .and_then(|a| a.checked_sub(minus_available))
            .ok_or_else(beyond)?;
        let held = self
            .held
            .checked_add(plus_held)
            .and_then(|h| h.checked_sub(minus_held))
            .ok_or_else(beyond)?;
        (self.available, self.held) = (available, held);
        Ok(())
    }

    fn set_status(&mut self, id: Uuid, status: WithdrawalStatus) {
        if let Some(w) = self.withdrawals.get_mut(&id) {
            w.status = status;
        }
    }

    fn balance_limit(&self) -> Refusal {
        Refusal::BalanceLimit {
            asset: self.asset.clone(),
        }
    }

    /// Refuses every decision on a state that is not the exact fold of its events.
    fn ensure_exact(&self) -> Result<(), Refusal> {
        match self.not_exact {
            None => Ok(()),
            Some(_) => Err(self.balance_limit()),
        }
    }

    /// `amount` in units, if `available` covers it: the balance `available` would be left
    /// with and the amount, or the refusal.
    fn ensure_available(&self, amount: Decimal) -> Result<(Units, Units), Refusal> {
        self.ensure_exact()?;
        let units = Units::from_decimal(amount).ok_or_else(|| self.balance_limit())?;
        if units > self.available {
            return Err(Refusal::InsufficientFunds {
                asset: self.asset.clone(),
                available: self.available,
                requested: amount,
            });
        }
        let left = self
            .available
            .checked_sub(units)
            .ok_or_else(|| self.balance_limit())?;
        Ok((left, units))
    }

    fn withdrawal(&self, id: Uuid) -> Result<&Withdrawal, Refusal> {
        self.ensure_exact()?;
        self.withdrawals
            .get(&id)
            .ok_or(Refusal::UnknownWithdrawal(id))
    }

    // ---- decisions ------------------------------------------------------------------------

    pub fn deposit(&self, deposit_id: Uuid, amount: Decimal) -> FundsDeposited {
        FundsDeposited {
            deposit_id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount,
        }
    }

    pub fn request_withdrawal(
        &self,
        withdrawal_id: Uuid,
        amount: Decimal,
        address: &str,
    ) -> Result<WithdrawalRequested, Refusal> {
        let (_, units) = self.ensure_available(amount)?;
        // The hold: `held + amount` must fit too.
        self.held
            .checked_add(units)
            .ok_or_else(|| self.balance_limit())?;
        Ok(WithdrawalRequested {
            withdrawal_id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount,
            address: address.to_owned(),
        })
    }

    /// Four eyes: refused for the withdrawal's own owner ([`Refusal::OwnWithdrawal`]).
    pub fn approve(&self, id: Uuid, admin: Uuid) -> Result<WithdrawalApproved, Refusal> {
        let w = self.withdrawal(id)?;
        self.other_admin(id, admin, "approve")?;
        if w.status != WithdrawalStatus::Pending {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "approve",
            });
        }
        Ok(WithdrawalApproved {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            approved_by: admin,
        })
    }

    /// Four eyes: refused for the withdrawal's own owner ([`Refusal::OwnWithdrawal`]).
    pub fn complete(&self, id: Uuid, admin: Uuid) -> Result<WithdrawalCompleted, Refusal> {
        let w = self.withdrawal(id)?;
        self.other_admin(id, admin, "complete")?;
        if w.status != WithdrawalStatus::Approved {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "complete (approve it first)",
            });
        }
        Ok(WithdrawalCompleted {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount: w.amount,
            completed_by: admin,
        })
    }

    /// The four-eyes rule of approve and complete: the acting admin is not the account's owner.
    /// (Rejecting one's own withdrawal only releases the hold, so it is allowed.)
    fn other_admin(&self, id: Uuid, admin: Uuid, action: &'static str) -> Result<(), Refusal> {
        if admin == self.user_id {
            return Err(Refusal::OwnWithdrawal { id, action });
        }
        Ok(())
    }

    pub fn reject(
        &self,
        id: Uuid,
        admin: Uuid,
        reason: Option<String>,
    ) -> Result<WithdrawalRejected, Refusal> {
        let w = self.withdrawal(id)?;
        if !matches!(
            w.status,
            WithdrawalStatus::Pending | WithdrawalStatus::Approved
        ) {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "reject",
            });
        }
        Ok(WithdrawalRejected {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount: w.amount,
            rejected_by: admin,
            reason,
        })
    }

    /// The two sides of a transfer from this account to `to_user` (same asset).
    pub fn transfer(
        &self,
        transfer_id: Uuid,
        to_user: Uuid,
        amount: Decimal,
        note: Option<String>,
    ) -> Result<(TransferSent, TransferReceived), Refusal> {
        if to_user == self.user_id {
            return Err(Refusal::SelfTransfer);
        }
        // The recipient's side is a credit: bounded by the credits cap on its stream.
        self.ensure_available(amount)?;
        let sent = TransferSent {
            transfer_id,
            from_user: self.user_id,
            to_user,
            asset: self.asset.clone(),
            amount,
            note: note.clone(),
        };
        let received = TransferReceived {
            transfer_id,
            from_user: self.user_id,
            to_user,
            asset: self.asset.clone(),
            amount,
            note,
        };
        Ok((sent, received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::ledger::{account_stream, credits_stream, postings};
    use cryptovault_events::{DomainEvent, EventMetadata, GENESIS_HASH};
    use proptest::prelude::*;

    /// An in-memory ledger of a few accounts in one asset, to run decisions and folds together.
    struct Sim {
        users: Vec<Uuid>,
        streams: HashMap<Uuid, Vec<EventEnvelope>>,
        position: u64,
        sum: Decimal,
    }

    impl Sim {
        fn new(n: usize) -> Self {
            let users: Vec<Uuid> = (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
            Self {
                streams: users.iter().map(|u| (*u, Vec::new())).collect(),
                users,
                position: 0,
                sum: Decimal::ZERO,
            }
        }

        fn state(&self, user: Uuid) -> AccountState {
            AccountState::fold(user, "BTC", &self.streams[&user])
        }

        fn append<E: DomainEvent>(&mut self, user: Uuid, event: E) {
            let stream = self.streams.get_mut(&user).unwrap();
            self.position += 1;
            let sealed = EventEnvelope::seal(
                event.into_new_event(Uuid::now_v7(), chrono::Utc::now(), EventMetadata::default()),
                account_stream(user, "BTC"),
                stream.len() as u64 + 1,
                self.position,
                GENESIS_HASH.into(),
            );
            let balance: Decimal = postings(&sealed).iter().map(|p| p.amount).sum();
            assert_eq!(
                balance,
                Decimal::ZERO,
                "postings of {} do not balance",
                sealed.event_type
            );
            self.sum += balance;
            stream.push(sealed);
        }
    }

    #[derive(Debug, Clone)]
    enum Command {
        Deposit(usize, u32),
        Withdraw(usize, u32),
        Approve(usize, usize),
        Complete(usize, usize),
        Reject(usize, usize),
        Transfer(usize, usize, u32),
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (0..4usize, 1..1000u32).prop_map(|(u, a)| Command::Deposit(u, a)),
            (0..4usize, 1..1000u32).prop_map(|(u, a)| Command::Withdraw(u, a)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Approve(u, w)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Complete(u, w)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Reject(u, w)),
            (0..4usize, 0..4usize, 1..1000u32).prop_map(|(f, t, a)| Command::Transfer(f, t, a)),
        ]
    }

    /// `a` hundredths, or (when `big`) a 28-digit 18-decimal amount just under 1e10 that
    /// depends on `a`.
    fn amount_of(a: u32, big: bool) -> Decimal {
        if big {
            Decimal::from_i128_with_scale(9_999_999_999_999_999_999_999_999_000 + a as i128, 18)
        } else {
            Decimal::new(a as i64, 2)
        }
    }

    fn units(text: &str) -> Units {
        text.parse().unwrap()
    }

    fn envelope<E: DomainEvent>(event: E, stream: String, version: u64) -> EventEnvelope {
        EventEnvelope::seal(
            event.into_new_event(Uuid::now_v7(), chrono::Utc::now(), EventMetadata::default()),
            stream,
            version,
            version,
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn eighty_five_maximal_deposits_then_an_exact_drain_leave_nothing_to_spend() {
        let user = Uuid::from_u128(1);
        let big: Decimal = "999999999.999999999999999999".parse().unwrap();
        let mut state = AccountState::new(user, "ETH");
        for n in 1..=85 {
            let e = state.deposit(Uuid::from_u128(100 + n), big);
            state.apply(&envelope(e, credits_stream(user, "ETH"), n as u64));
        }
        assert_eq!(state.available, units("84999999999.999999999999999915"));
        for n in 1..=85 {
            let (sent, _) = state
                .transfer(Uuid::from_u128(1000 + n), Uuid::from_u128(2), big, None)
                .unwrap();
            state.apply(&envelope(sent, account_stream(user, "ETH"), n as u64));
        }
        assert_eq!(state.available, Units::ZERO);
        for wei in ["0.000000000000000001", "0.000000000000000005"] {
            let wei: Decimal = wei.parse().unwrap();
            assert!(matches!(
                state.transfer(Uuid::now_v7(), Uuid::from_u128(2), wei, None),
                Err(Refusal::InsufficientFunds { .. })
            ));
            assert!(matches!(
                state.request_withdrawal(Uuid::now_v7(), wei, "x"),
                Err(Refusal::InsufficientFunds { .. })
            ));
        }
    }

    #[test]
    fn a_fold_beyond_the_range_is_not_exact_and_every_decision_is_refused() {
        let user = Uuid::from_u128(1);
        let e20: Decimal = "100000000000000000000".parse().unwrap();
        let mut state = AccountState::new(user, "USD");
        let withdrawal = Uuid::from_u128(7);
        state.apply(&envelope(
            state.deposit(Uuid::from_u128(1), e20),
            credits_stream(user, "USD"),
            1,
        ));
        let w = state
            .request_withdrawal(withdrawal, Decimal::ONE, "x")
            .unwrap();
        state.apply(&envelope(w, account_stream(user, "USD"), 1));
        assert!(state.not_exact.is_none());
        // Credits from before the cap (or another process): 3e20 cannot be held.
        for n in 2..=3 {
            let e = state.deposit(Uuid::from_u128(n), e20);
            state.apply(&envelope(e, credits_stream(user, "USD"), n as u64));
        }
        assert_eq!(state.credits_version, 3, "versions still follow the stream");
        assert_eq!(
            state.available,
            units("99999999999999999999"),
            "left as it was"
        );
        assert!(state.not_exact.as_deref().unwrap().contains("version 2"));
        let limit = |r: Result<(), Refusal>| {
            assert_eq!(
                r,
                Err(Refusal::BalanceLimit {
                    asset: "USD".into()
                })
            );
        };
        let admin = Uuid::from_u128(9);
        limit(
            state
                .transfer(Uuid::now_v7(), admin, Decimal::ONE, None)
                .map(|_| ()),
        );
        limit(
            state
                .request_withdrawal(Uuid::now_v7(), Decimal::ONE, "x")
                .map(|_| ()),
        );
        limit(state.approve(withdrawal, admin).map(|_| ()));
        limit(state.complete(withdrawal, admin).map(|_| ()));
        limit(state.reject(withdrawal, admin, None).map(|_| ()));
        let message = Refusal::BalanceLimit {
            asset: "USD".into(),
        }
        .to_string();
        assert!(message.starts_with("amount: "), "{message}");
    }

    #[test]
    fn an_event_with_more_than_18_decimals_is_not_folded_by_rounding() {
        let user = Uuid::from_u128(1);
        let mut state = AccountState::new(user, "ETH");
        state.apply(&envelope(
            state.deposit(Uuid::from_u128(1), Decimal::ONE),
            credits_stream(user, "ETH"),
            1,
        ));
        let tampered = state.deposit(Uuid::from_u128(2), "0.0000000000000000001".parse().unwrap());
        state.apply(&envelope(tampered, credits_stream(user, "ETH"), 2));
        assert_eq!(state.available, units("1"));
        assert!(state.not_exact.is_some());
        assert!(matches!(
            state.transfer(Uuid::now_v7(), Uuid::from_u128(2), Decimal::ONE, None),
            Err(Refusal::BalanceLimit { .. })
        ));
    }

    #[test]
    fn a_hold_whose_result_would_not_fit_is_refused() {
        // Only a state beyond the cap has one; built directly.
        let mut state = AccountState::new(Uuid::from_u128(1), "USD");
        state.available = units("100");
        state.held = Units::MAX;
        assert_eq!(
            state.request_withdrawal(Uuid::now_v7(), Decimal::ONE, "x"),
            Err(Refusal::BalanceLimit {
                asset: "USD".into()
            })
        );
    }

    proptest! {
        /// No sequence of commands takes a balance below zero, every event balances, and the
        /// folded state always equals the state the decisions saw plus their events.
        #[test]
        /// With `big`, amounts are 28-digit 18-decimal values near 1e10 and every account
        /// starts with ten of them, so balances pass 7.9·10¹⁰ — where a `rust_decimal` sum
        /// starts dropping digits.
        fn no_command_sequence_breaks_the_invariants(commands in prop::collection::vec(command(), 1..120), big in any::<bool>()) {
            let mut sim = Sim::new(4);
            let mut withdrawals: Vec<(usize, Uuid)> = Vec::new();
            let admin = Uuid::from_u128(999);
            if big {
                for (n, user) in sim.users.clone().into_iter().enumerate() {
                    for k in 0..10 {
                        let e = sim.state(user).deposit(Uuid::from_u128(500 + 10 * n as u128 + k), amount_of(k as u32, true));
                        sim.append(user, e);
                    }
                    prop_assert!(sim.state(user).available > units("79000000000"));
                }
            }
            for (i, command) in commands.into_iter().enumerate() {
                let id = Uuid::from_u128(10_000 + i as u128);
                let cents = |a: u32| amount_of(a, big);
                match command {
                    Command::Deposit(u, a) => {
                        let user = sim.users[u];
                        let e = sim.state(user).deposit(id, cents(a));
                        sim.append(user, e);
                    }
                    Command::Withdraw(u, a) => {
                        let user = sim.users[u];
                        if let Ok(e) = sim.state(user).request_withdrawal(id, cents(a), "addr") {
                            sim.append(user, e);
                            withdrawals.push((u, id));
                        }
                    }
                    Command::Approve(u, w) | Command::Complete(u, w) | Command::Reject(u, w) => {
                        let Some(&(owner, wid)) = withdrawals.get(w) else { continue };
                        let user = sim.users[if u % 2 == 0 { owner } else { u }];
                        let state = sim.state(user);
                        match command {
                            Command::Approve(..) => { if let Ok(e) = state.approve(wid, admin) { sim.append(user, e) } }
                            Command::Complete(..) => { if let Ok(e) = state.complete(wid, admin) { sim.append(user, e) } }
                            _ => { if let Ok(e) = state.reject(wid, admin, None) { sim.append(user, e) } }
                        }
                    }
                    Command::Transfer(f, t, a) => {
                        let (from, to) = (sim.users[f], sim.users[t]);
                        match sim.state(from).transfer(id, to, cents(a), None) {
                            Ok((sent, received)) => {
                                sim.append(from, sent);
                                sim.append(to, received);
                            }
                            Err(Refusal::SelfTransfer) => prop_assert_eq!(f, t),
                            Err(_) => {}
                        }
                    }
                }
                for user in sim.users.clone() {
                    let state = sim.state(user);
                    prop_assert_eq!(state.check_invariant(), Ok(()));
                }
                prop_assert_eq!(sim.sum, Decimal::ZERO);
            }
        }
    }
}
