//! The read models in MongoDB: their projection runner, their rows and their queries.
//!
//! A runner follows the log from its checkpoint (stored in `projection_checkpoints`) and
//! applies each chunk of events and the new checkpoint in **one transaction**, so every event
//! is applied exactly once — across restarts, and even with several service processes running
//! the same projection (their checkpoint writes conflict; the loser re-reads the checkpoint and
//! skips what is applied). Read models: [`balances`], [`withdrawals`], [`transactions`]
//! (history and ledger entries), [`audit`]. [`replay`] rebuilds one beside the live copy and
//! swaps it in.

pub mod audit;
pub mod balances;
pub mod replay;
pub mod runner;
pub mod transactions;
pub mod withdrawals;
