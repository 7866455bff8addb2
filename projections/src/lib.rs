//! Projection logic: pure folds from events to read-model changes.
//!
//! **Architecture invariant:** depends on `cryptovault-events` only; never imports the MongoDB
//! driver. The service's projection runner (`src/projection/`) turns the changes computed here
//! into MongoDB updates and keeps them exactly-once with a checkpoint.

pub mod audit;
pub mod balances;
pub mod entries;
pub mod history;
pub mod invariants;
