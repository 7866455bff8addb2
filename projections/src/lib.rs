//! Projection logic: pure folds from events to read-model changes.
//!
//! Every fold reads events through the family's one decode (`LedgerEvent::decode`) and
//! `match`es the family enum without a `_` arm, so a new event type does not compile until each
//! read model has decided what it does with it. No clock reads, no randomness: times and ids
//! come from the events.
//!
//! **Architecture invariant:** depends on `cryptovault-events` only; never imports the MongoDB
//! driver. The service's projection runner (`src/projection/`) turns the changes computed here
//! into MongoDB updates and keeps them exactly-once with a checkpoint.

pub mod audit;
pub mod balances;
pub mod entries;
pub mod history;
pub mod invariants;
pub mod statement_proof;
pub mod withdrawals;
