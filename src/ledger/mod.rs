//! The ledger: assets and amounts, per-user accounts, and the commands that move money.
//!
//! Pure: `amount` (assets and amounts), `account` (the state folded from an account's streams
//! and the rules of each decision), `decision` (what each command appends: its events and batch
//! with the expectations that make it safe across processes). At the edge: `service` runs
//! commands against the event store (a credit path and a debit path); `cache` is what the
//! process remembers per account; `loader` brings accounts up to date with the log (from their
//! snapshots when not cached; `store::snapshots` keeps them in MongoDB); `slots` coordinates
//! commands on one account inside the process.

pub mod account;
pub mod amount;
pub mod cache;
pub mod decision;
#[cfg(test)]
mod given;
pub mod loader;
pub mod service;
pub mod slots;
