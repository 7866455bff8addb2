//! The event schema of CryptoVault Ledger.
//!
//! **Architecture invariant:** this crate knows nothing about MongoDB, HTTP or clocks. It holds
//! the envelope every stored event carries, the canonical encoding and hash chain that make the
//! log tamper-evident, and the typed domain events (one module per stream family).
//!
//! **API boundary:** [`NewEvent`] is what a command hands to the store; [`EventEnvelope`] is what
//! the store hands back; [`chain::ChainVerifier`] checks a log in position order.

pub mod canonical;
pub mod chain;
pub mod domain;
pub mod envelope;
pub mod identity;
pub mod ledger;
pub mod units;

pub use chain::{ChainBreak, ChainBreakKind, ChainVerifier};
pub use domain::{DomainEvent, EventTypeError};
pub use envelope::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
pub use units::{Units, UnitsSum};
