//! argon2id password hashing, run on the blocking pool (each hash takes tens of milliseconds by
//! design and must not stall the async workers).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Hashes `password` with argon2id (the crate's defaults: m = 19 MiB, t = 2, p = 1 — OWASP's
/// recommendation) and a random salt; returns the PHC string.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash`. A malformed stored hash never matches.
pub async fn verify(password: String, hash: String) -> anyhow::Result<bool> {
    let check = tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    });
    crate::telemetry::warn_if_slow("password check", check)
        .await
        .map_err(Into::into)
}

/// A valid hash of a random password, verified against when the email is unknown so that
/// unknown addresses and wrong passwords take the same time.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random: String = uuid::Uuid::new_v4().to_string();
        Argon2::default()
            .hash_password(random.as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}
