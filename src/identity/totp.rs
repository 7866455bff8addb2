//! RFC 6238 TOTP (SHA-1, 6 digits, 30 s steps, ±1 step of skew — what authenticator apps use).

use totp_rs::{Builder, Secret, Totp};

/// Issuer shown in authenticator apps.
pub const ISSUER: &str = "CryptoVault";

fn totp(secret_base32: &str, account: &str) -> Option<Totp> {
    let secret = Secret::try_from_base32(secret_base32).ok()?;
    Builder::new()
        .with_secret(secret)
        .with_skew(1)
        .with_issuer(Some(ISSUER))
        .with_account_name(account.replace(':', ""))
        .build()
        .ok()
}

/// A new random secret (160 bits, base32).
pub fn new_secret() -> String {
    Secret::generate().to_base32()
}

/// The `otpauth://` URL for an authenticator app.
pub fn otpauth_url(secret_base32: &str, account: &str) -> Option<String> {
    totp(secret_base32, account)?.to_url().ok()
}

/// The time step (`unix_time / 30`, give or take one) whose code `code` is, if it is valid at
/// `unix_time` (seconds). Non-numeric or wrong-length codes are simply invalid. RFC 6238 §5.2:
/// a step's code is accepted once — callers record the step
/// (`Sessions::use_totp_step`) before they accept it.
pub fn matching_step(secret_base32: &str, code: &str, unix_time: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret_base32, "check")?.check(code, unix_time)
}

/// Whether `code` is valid at `unix_time` (seconds), used or not.
pub fn check(secret_base32: &str, code: &str, unix_time: u64) -> bool {
    matching_step(secret_base32, code, unix_time).is_some()
}

/// The code valid at `unix_time` (used by tests and by nothing else in the service).
pub fn code_at(secret_base32: &str, unix_time: u64) -> Option<String> {
    Some(totp(secret_base32, "code")?.generate(unix_time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_checks_and_garbage_does_not() {
        let secret = new_secret();
        let now = 1_764_300_000;
        let code = code_at(&secret, now).unwrap();
        assert!(check(&secret, &code, now));
        assert!(check(&secret, &code, now + 30)); // one step of skew
        assert_eq!(matching_step(&secret, &code, now + 30), Some(now / 30));
        assert!(!check(&secret, &code, now + 120));
        for garbage in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
            assert!(!check(&secret, garbage, now), "{garbage:?}");
        }
        assert!(otpauth_url(&secret, "alice@example.com")
            .unwrap()
            .starts_with("otpauth://totp/"));
    }
}
