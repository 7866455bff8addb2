//! The ledger: assets and amounts, per-user accounts, and the commands that move money.
//!
//! `amount` and `account` are pure; `service` runs commands against the event store; `loader`
//! brings accounts up to date with the log (from their snapshots when not cached;
//! `store::snapshots` keeps them in MongoDB); `slots` coordinates commands on one account
//! inside the process.

pub mod account;
pub mod amount;
pub mod loader;
pub mod service;
pub mod slots;
