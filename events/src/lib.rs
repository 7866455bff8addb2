//! The event schema of CryptoVault Ledger.
//!
//! **Architecture invariant:** this crate knows nothing about MongoDB, HTTP, clocks or
//! randomness: no I/O, no clock reads, no random numbers. Event ids and times come in from the
//! caller ([`NewEvent::new`], [`DomainEvent::into_new_event`]); chrono's `clock` and uuid's
//! `v7` features are not enabled for this crate's library, so `Utc::now()` or `Uuid::now_v7()`
//! here does not compile (`cargo build -p cryptovault-events`). It holds the envelope every
//! stored event carries, the canonical encoding and hash chain that make the log
//! tamper-evident, and the typed domain events: one module and one enum per stream family
//! ([`ledger::LedgerEvent`], [`identity::IdentityEvent`]).
//!
//! **Decode seam:** each family's `decode` (dispatching on `(event_type, schema_version)`) is
//! the only place an envelope's payload becomes a typed event, and so the only place a future
//! schema version is upcast (see [`domain`]). Folds `match` the family enum without a `_` arm.
//!
//! **API boundary:** [`NewEvent`] is what a command hands to the store; [`EventEnvelope`] is what
//! the store hands back; `LedgerEvent::decode` / `IdentityEvent::decode` read it back;
//! [`chain::ChainVerifier`] checks a log in position order.
//!
//! **Offline verification (issue 16):** [`merkle`] is the RFC 6962 Merkle tree over the log
//! (hashing, proof generation over stored subtree hashes, proof verification, the incremental
//! [`merkle::Frontier`]); [`checkpoint`] is the C2SP signed-note / `tlog-checkpoint` format with
//! Ed25519. Both are pure: the leaf definition, the signing key and every stored hash come from
//! the caller. [`bundle`] holds the self-contained JSON bundles built from them (receipts,
//! inclusion and consistency bundles) and their offline verification, with what each proves.
//! [`liabilities`] is the proof of liabilities: a Merkle sum tree per asset over
//! salted user hashes and balances, its signed note and the per-user bundle.

pub mod bundle;
pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod domain;
pub mod envelope;
pub mod identity;
pub mod ledger;
pub mod liabilities;
pub mod merkle;
pub mod personal;
pub mod units;

pub use chain::{ChainBreak, ChainBreakKind, ChainVerifier};
pub use domain::{DecodeError, DomainEvent, EventFamily, EventTypeError};
pub use envelope::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
pub use units::{Units, UnitsSum};
