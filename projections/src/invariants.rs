//! The ledger's invariants, checked at **every position** of the log (not only on the final
//! balances): fed envelopes in position order, [`InvariantChecker::push`] reports what the
//! event breaks.
//!
//! | kind | what it means |
//! |---|---|
//! | `negative_balance` | a user's `available` or `held` is below zero after the event (system accounts are negative by design and not checked) |
//! | `illegal_transition` | a withdrawal left its state machine: requested → approved → completed, requested \| approved → rejected, each at most once; a transition of an unknown withdrawal; a completion, rejection or approval naming another user, asset or amount than the request; a `WithdrawalOpened` that does not point at its request |
//! | `unbalanced_posting` | an event's postings do not sum to zero per asset; a ledger event whose payload does not decode; an amount ≤ 0 |
//! | `unrepresentable` | an amount the representation cannot hold exactly (more than 18 decimals, beyond ±1.7·10²⁰), or a balance or sum that would overflow |
//!
//! The checker mirrors what the read models do with the log: the postings of every decodable
//! event with an exact amount are applied, also those of an illegal event, so the balances it
//! checks are the balances the service shows. An event whose amount cannot be held exactly is
//! reported and not applied (no exact state would follow from it).
//!
//! Money is [`Units`] (exact, checked) throughout; amounts are read from the payload's text,
//! because decoding into a `Decimal` silently rounds past 28 decimals.
//!
//! Memory: one entry per (user, asset) touched and one per withdrawal ever requested (a
//! terminal withdrawal must be remembered to catch a second completion).
//!
//! **No I/O**: the same checker runs in `cryptovault verify`, `GET /api/audit/verify` and the
//! service's continuous monitor.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cryptovault_events::ledger::{Account, LedgerEvent, WithdrawalOpened, WithdrawalRequested};
use cryptovault_events::{EventEnvelope, Units};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

/// What an offending event breaks. The names ([`ViolationKind::as_str`]) are stable: they are
/// metric labels and part of the verify output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    NegativeBalance,
    IllegalTransition,
    UnbalancedPosting,
    Unrepresentable,
}

impl ViolationKind {
    pub const ALL: [ViolationKind; 4] = [
        ViolationKind::NegativeBalance,
        ViolationKind::IllegalTransition,
        ViolationKind::UnbalancedPosting,
        ViolationKind::Unrepresentable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::NegativeBalance => "negative_balance",
            ViolationKind::IllegalTransition => "illegal_transition",
            ViolationKind::UnbalancedPosting => "unbalanced_posting",
            ViolationKind::Unrepresentable => "unrepresentable",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger account in a violation: the owner (a user id, or `system:…`) and the asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRef {
    pub owner: String,
    pub asset: String,
}

/// One broken invariant at one position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub position: u64,
    pub kind: ViolationKind,
    pub event_type: String,
    /// The account concerned (`negative_balance`, overflows), if any.
    pub account: Option<AccountRef>,
    /// The withdrawal concerned (`illegal_transition`, a withdrawal's amount), if any.
    pub withdrawal: Option<Uuid>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "position {}: {} ({}",
            self.position, self.kind, self.event_type
        )?;
        if let Some(account) = &self.account {
            write!(f, ", account {} {}", account.owner, account.asset)?;
        }
        if let Some(withdrawal) = &self.withdrawal {
            write!(f, ", withdrawal {withdrawal}")?;
        }
        write!(f, "): {}", self.detail)
    }
}

/// Counts of what the checker has seen so far, and the **first offending position of each
/// kind**.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub events_checked: u64,
    pub last_position: u64,
    pub violation_count: u64,
    /// kind → number of violations.
    pub counts: BTreeMap<&'static str, u64>,
    /// kind → the first position with a violation of that kind.
    pub first_positions: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn is_clean(&self) -> bool {
        self.violation_count == 0
    }

    fn record(&mut self, violation: &Violation) {
        let kind = violation.kind.as_str();
        self.violation_count += 1;
        *self.counts.entry(kind).or_default() += 1;
        self.first_positions
            .entry(kind)
            .or_insert(violation.position);
    }
}

/// A [`Summary`] plus the violations themselves (the first `limit` of them: a log broken
/// everywhere must not make a report unbounded; the counts stay exact).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InvariantReport {
    #[serde(flatten)]
    pub summary: Summary,
    pub violations: Vec<Violation>,
    /// Whether violations beyond the listed ones exist (see `violation_count`).
    pub truncated: bool,
}

impl InvariantReport {
    pub fn is_clean(&self) -> bool {
        self.summary.is_clean()
    }
}

/// How many violations an [`InvariantReport`] lists.
pub const LISTED_VIOLATIONS: usize = 1_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Buckets {
    available: Units,
    held: Units,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WithdrawalState {
    Requested,
    Approved,
    Completed,
    Rejected,
}

impl WithdrawalState {
    fn as_str(self) -> &'static str {
        match self {
            WithdrawalState::Requested => "requested",
            WithdrawalState::Approved => "approved",
            WithdrawalState::Completed => "completed",
            WithdrawalState::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone)]
struct Withdrawal {
    user: Uuid,
    asset: String,
    /// `None` when the request's amount was unrepresentable (reported there).
    amount: Option<Units>,
    state: WithdrawalState,
    requested_at: u64,
    opened: bool,
}

/// The pure, incremental checker. Feed it every envelope of the log in position order.
#[derive(Debug, Clone, Default)]
pub struct InvariantChecker {
    users: HashMap<(Uuid, String), Buckets>,
    system: HashMap<(Account, String), Units>,
    withdrawals: HashMap<Uuid, Withdrawal>,
    summary: Summary,
}

/// Collects the violations of one event.
struct Found<'a> {
    event: &'a EventEnvelope,
    out: Vec<Violation>,
}

impl Found<'_> {
    fn add(
        &mut self,
        kind: ViolationKind,
        account: Option<AccountRef>,
        withdrawal: Option<Uuid>,
        detail: String,
    ) {
        self.out.push(Violation {
            position: self.event.position,
            kind,
            event_type: self.event.event_type.clone(),
            account,
            withdrawal,
            detail,
        });
    }
}

fn account_ref(owner: String, asset: &str) -> Option<AccountRef> {
    Some(AccountRef {
        owner,
        asset: asset.to_owned(),
    })
}

fn system_owner(account: &Account) -> String {
    crate::balances::owner(account)
}

/// `text` if it is plain decimal text (`-?digits(.digits)?`), with fractional trailing zeros
/// removed; `None` otherwise.
fn plain_decimal(text: &str) -> Option<String> {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || body.ends_with('.') {
        return None;
    }
    if !body.contains('.') {
        return Some(text.to_owned());
    }
    let trimmed = text.trim_end_matches('0');
    Some(trimmed.trim_end_matches('.').to_owned())
}

/// The exact value of an event's `amount`: from the payload's text when it is plain decimal
/// text (a `Decimal` rounds past 28 decimals), else from the decoded `Decimal`.
fn exact_amount(event: &EventEnvelope, decoded: Decimal) -> Result<Units, String> {
    let raw = event.payload.get("amount");
    let exact = match raw.and_then(|v| v.as_str()).and_then(plain_decimal) {
        Some(plain) => plain.parse::<Units>().ok(),
        None => Units::from_decimal(decoded),
    };
    exact.ok_or_else(|| {
        let text = match raw {
            Some(serde_json::Value::String(text)) => text.clone(),
            other => other.map(|v| v.to_string()).unwrap_or_default(),
        };
        format!("amount {text} cannot be held exactly (at most 18 decimals, within ±1.7e20)")
    })
}

impl InvariantChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the events so far broke, in counts and first positions.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Checks `event` (the next position of the log) and applies it. Returns every violation
    /// it causes (empty when it keeps every invariant).
    pub fn push(&mut self, event: &EventEnvelope) -> Vec<Violation> {
        let mut found = Found {
            event,
            out: Vec::new(),
        };
        self.check(event, &mut found);
        self.summary.events_checked += 1;
        self.summary.last_position = event.position;
        for violation in &found.out {
            self.summary.record(violation);
        }
        found.out
    }

    fn check(&mut self, event: &EventEnvelope, found: &mut Found<'_>) {
        let ledger_event = match LedgerEvent::decode(event) {
            Ok(Some(ledger_event)) => ledger_event,
            // Identity (and test) events move no money.
            Ok(None) => return,
            Err(error) => {
                found.add(
                    ViolationKind::UnbalancedPosting,
                    None,
                    event
                        .payload
                        .get("withdrawal_id")
                        .and_then(|v| v.as_str())
                        .and_then(|s| s.parse().ok()),
                    format!("a ledger event that does not decode: {error}"),
                );
                return;
            }
        };
        // The exact amount when the event has one: `Err(())` when it cannot be held exactly.
        let amount: Option<Result<Units, ()>> = match &ledger_event {
            LedgerEvent::FundsDeposited(e) => Some(self.amount(event, e.amount, None, found)),
            LedgerEvent::WithdrawalRequested(e) => {
                let amount = self.amount(event, e.amount, Some(e.withdrawal_id), found);
                self.requested(e, amount.ok(), found);
                Some(amount)
            }
            LedgerEvent::WithdrawalOpened(e) => {
                self.opened(e, found);
                None
            }
            LedgerEvent::WithdrawalApproved(e) => {
                self.transition(
                    e.withdrawal_id,
                    e.user_id,
                    &e.asset,
                    None,
                    WithdrawalState::Approved,
                    found,
                );
                None
            }
            LedgerEvent::WithdrawalCompleted(e) => {
                let amount = self.amount(event, e.amount, Some(e.withdrawal_id), found);
                self.transition(
                    e.withdrawal_id,
                    e.user_id,
                    &e.asset,
                    Some(amount),
                    WithdrawalState::Completed,
                    found,
                );
                Some(amount)
            }
            LedgerEvent::WithdrawalRejected(e) => {
                let amount = self.amount(event, e.amount, Some(e.withdrawal_id), found);
                self.transition(
                    e.withdrawal_id,
                    e.user_id,
                    &e.asset,
                    Some(amount),
                    WithdrawalState::Rejected,
                    found,
                );
                Some(amount)
            }
            LedgerEvent::TransferSent(e) => Some(self.amount(event, e.amount, None, found)),
            LedgerEvent::TransferReceived(e) => Some(self.amount(event, e.amount, None, found)),
        };
        if let Some(Err(())) = amount {
            // Reported; no exact state follows from an amount that cannot be held.
            return;
        }
        self.apply_postings(&ledger_event, found);
    }

    /// The event's exact amount, reporting an unrepresentable one and one ≤ 0.
    fn amount(
        &self,
        event: &EventEnvelope,
        decoded: Decimal,
        withdrawal: Option<Uuid>,
        found: &mut Found<'_>,
    ) -> Result<Units, ()> {
        match exact_amount(event, decoded) {
            Ok(units) => {
                if units <= Units::ZERO {
                    found.add(
                        ViolationKind::UnbalancedPosting,
                        None,
                        withdrawal,
                        format!("amount {units} is not positive"),
                    );
                }
                Ok(units)
            }
            Err(detail) => {
                found.add(ViolationKind::Unrepresentable, None, withdrawal, detail);
                Err(())
            }
        }
    }

    fn requested(&mut self, e: &WithdrawalRequested, amount: Option<Units>, found: &mut Found<'_>) {
        if let Some(existing) = self.withdrawals.get(&e.withdrawal_id) {
            found.add(
                ViolationKind::IllegalTransition,
                None,
                Some(e.withdrawal_id),
                format!(
                    "requested again (first requested at position {}, now {})",
                    existing.requested_at,
                    existing.state.as_str()
                ),
            );
            return;
        }
        self.withdrawals.insert(
            e.withdrawal_id,
            Withdrawal {
                user: e.user_id,
                asset: e.asset.clone(),
                amount,
                state: WithdrawalState::Requested,
                requested_at: found.event.position,
                opened: false,
            },
        );
    }

    fn opened(&mut self, e: &WithdrawalOpened, found: &mut Found<'_>) {
        let problem = match self.withdrawals.get_mut(&e.withdrawal_id) {
            None => Some("opened, but never requested".to_owned()),
            Some(w) if w.opened => Some("opened twice".to_owned()),
            Some(w) if w.user != e.user_id || w.asset != e.asset => Some(format!(
                "points at {} {}, but was requested by {} {}",
                e.user_id, e.asset, w.user, w.asset
            )),
            Some(w) => {
                w.opened = true;
                None
            }
        };
        if let Some(detail) = problem {
            found.add(
                ViolationKind::IllegalTransition,
                None,
                Some(e.withdrawal_id),
                detail,
            );
        }
    }

    /// A lifecycle event of a withdrawal: checks the state machine and that it names the
    /// request's user, asset and (for completion and rejection) amount; a legal transition
    /// moves the state.
    fn transition(
        &mut self,
        id: Uuid,
        user: Uuid,
        asset: &str,
        amount: Option<Result<Units, ()>>,
        to: WithdrawalState,
        found: &mut Found<'_>,
    ) {
        let Some(w) = self.withdrawals.get_mut(&id) else {
            found.add(
                ViolationKind::IllegalTransition,
                None,
                Some(id),
                format!("{} a withdrawal that was never requested", to.as_str()),
            );
            return;
        };
        let mut problems = Vec::new();
        let allowed = match to {
            WithdrawalState::Approved => w.state == WithdrawalState::Requested,
            WithdrawalState::Completed => w.state == WithdrawalState::Approved,
            WithdrawalState::Rejected => matches!(
                w.state,
                WithdrawalState::Requested | WithdrawalState::Approved
            ),
            WithdrawalState::Requested => false,
        };
        if !allowed {
            problems.push(format!(
                "{} while {} (requested at position {})",
                to.as_str(),
                w.state.as_str(),
                w.requested_at
            ));
        }
        if w.user != user || w.asset != asset {
            problems.push(format!(
                "names {user} {asset}, but was requested by {} {}",
                w.user, w.asset
            ));
        }
        if let (Some(Ok(amount)), Some(requested)) = (amount, w.amount) {
            if amount != requested {
                problems.push(format!("amount {amount}, but {requested} was requested"));
            }
        }
        if problems.is_empty() {
            w.state = to;
        } else {
            found.add(
                ViolationKind::IllegalTransition,
                None,
                Some(id),
                problems.join("; "),
            );
        }
    }

    /// Applies the event's postings exactly: each event must balance per asset; a user bucket
    /// below zero afterwards, or a sum that overflows, is reported.
    fn apply_postings(&mut self, event: &LedgerEvent, found: &mut Found<'_>) {
        let postings = event.postings();
        if postings.is_empty() {
            return;
        }
        let mut sums: BTreeMap<&str, Option<Units>> = BTreeMap::new();
        let mut exact = Vec::with_capacity(postings.len());
        for posting in &postings {
            let Some(amount) = Units::from_decimal(posting.amount) else {
                found.add(
                    ViolationKind::Unrepresentable,
                    account_ref(system_owner(&posting.account), &posting.asset),
                    None,
                    format!("posting of {} cannot be held exactly", posting.amount),
                );
                return;
            };
            let sum = sums
                .entry(posting.asset.as_str())
                .or_insert(Some(Units::ZERO));
            *sum = sum.and_then(|s| s.checked_add(amount));
            exact.push(amount);
        }
        for (asset, sum) in &sums {
            match sum {
                None => found.add(
                    ViolationKind::Unrepresentable,
                    None,
                    None,
                    format!("the {asset} postings overflow when summed"),
                ),
                Some(sum) if !sum.is_zero() => found.add(
                    ViolationKind::UnbalancedPosting,
                    None,
                    None,
                    format!("the {asset} postings sum to {sum}, not 0"),
                ),
                Some(_) => {}
            }
        }
        let mut touched: Vec<(Uuid, &str)> = Vec::new();
        for (posting, amount) in postings.iter().zip(exact) {
            let asset = posting.asset.as_str();
            let (slot, user) = match &posting.account {
                Account::Available(user) => {
                    let b = self.users.entry((*user, asset.to_owned())).or_default();
                    (&mut b.available, Some(*user))
                }
                Account::Held(user) => {
                    let b = self.users.entry((*user, asset.to_owned())).or_default();
                    (&mut b.held, Some(*user))
                }
                system => (
                    self.system
                        .entry((system.clone(), asset.to_owned()))
                        .or_default(),
                    None,
                ),
            };
            match slot.checked_add(amount) {
                Some(value) => *slot = value,
                None => found.add(
                    ViolationKind::Unrepresentable,
                    account_ref(system_owner(&posting.account), asset),
                    None,
                    format!("{slot} + {amount} overflows the balance (left at {slot})"),
                ),
            }
            if let Some(user) = user {
                if !touched.contains(&(user, asset)) {
                    touched.push((user, asset));
                }
            }
        }
        for (user, asset) in touched {
            let b = self.users[&(user, asset.to_owned())];
            for (bucket, value) in [("available", b.available), ("held", b.held)] {
                if value.is_negative() {
                    found.add(
                        ViolationKind::NegativeBalance,
                        account_ref(user.to_string(), asset),
                        None,
                        format!("{bucket} is {value} after this event"),
                    );
                }
            }
        }
    }
}

/// Runs a whole log through a fresh checker: every violation is handed to `on_violation`; the
/// report lists the first [`LISTED_VIOLATIONS`].
#[derive(Debug, Default)]
pub struct ReportBuilder {
    checker: InvariantChecker,
    listed: Vec<Violation>,
    truncated: bool,
}

impl ReportBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next event; returns its violations (already recorded in the report).
    pub fn push(&mut self, event: &EventEnvelope) -> Vec<Violation> {
        let found = self.checker.push(event);
        for violation in &found {
            if self.listed.len() < LISTED_VIOLATIONS {
                self.listed.push(violation.clone());
            } else {
                self.truncated = true;
            }
        }
        found
    }

    pub fn finish(self) -> InvariantReport {
        InvariantReport {
            summary: self.checker.summary,
            violations: self.listed,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimal_text_is_normalised() {
        assert_eq!(plain_decimal("1.500").as_deref(), Some("1.5"));
        assert_eq!(plain_decimal("2.000").as_deref(), Some("2"));
        assert_eq!(plain_decimal("10").as_deref(), Some("10"));
        assert_eq!(plain_decimal("-0.10").as_deref(), Some("-0.1"));
        assert_eq!(plain_decimal("1e5"), None);
        assert_eq!(plain_decimal("1."), None);
        assert_eq!(plain_decimal(".5"), None);
        assert_eq!(plain_decimal("+1"), None);
    }
}
