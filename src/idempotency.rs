//! `Idempotency-Key` on write endpoints (PRODUCT.md §3): the rules that need no database
//! (what a request's hash is, which keys are valid, what to do with a keyed request). The
//! records themselves are `store::idempotency`'s (see there for the protocol).

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::store::idempotency::IdempotencyKeys;

/// What to do with a keyed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First time: run it, then `IdempotencyKeys::finish` (or `abandon` on a server error)
    /// with this attempt id, which owns the pending record.
    Run(Uuid),
    /// Done before: answer this (status, JSON body) again.
    Replay { status: u16, body: String },
    /// The key was used with a different request.
    Mismatch,
    /// Another request with this key is still running after the wait.
    InProgress,
}

/// Hash identifying a request: method, path and the canonical form of its JSON body.
pub fn request_hash(method: &str, path: &str, body: &serde_json::Value) -> String {
    let canonical = cryptovault_events::canonical::canonical_json(body);
    hex::encode(Sha256::digest(
        format!("{method} {path}\n{canonical}").as_bytes(),
    ))
}

/// A valid key: 1–255 printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}
