//! Signed double-submit CSRF tokens bound to their session: `nonce.signature`, both base64url,
//! where `signature = HMAC-SHA256(CSRF_SECRET, "csrf-v2" ‖ sid ‖ nonce)` and `sid` is the
//! session (the access token's `sid` claim = the refresh-token family) the token was issued
//! with. The browser keeps the token in the readable `csrf_token` cookie and echoes it in
//! `X-CSRF-Token`; the server checks that both are equal and that the signature is its own *for
//! the session of the request*, so neither a token planted by another site nor one taken from
//! another session (the attacker's own, say) passes, and a session's tokens end with it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a MAC of this module is never one of another use of the secret.
const DOMAIN: &[u8] = b"csrf-v2";

#[derive(Clone)]
pub struct CsrfTokens {
    secret: Vec<u8>,
}

impl CsrfTokens {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }

    fn session_mac(&self, session: Uuid, nonce: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(DOMAIN);
        mac.update(session.as_bytes());
        mac.update(nonce);
        mac
    }

    /// A new token for `session`.
    pub fn issue(&self, session: Uuid) -> String {
        let nonce: [u8; 18] = rand::random();
        let signature = self.session_mac(session, &nonce).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Whether `header` equals `cookie` and carries this server's signature for `session`.
    pub fn verify(&self, session: Uuid, cookie: Option<&str>, header: Option<&str>) -> bool {
        let (Some(cookie), Some(header)) = (cookie, header) else {
            return false;
        };
        if cookie.len() != header.len() || !constant_time_eq(cookie.as_bytes(), header.as_bytes()) {
            return false;
        }
        let Some((nonce, signature)) = cookie.split_once('.') else {
            return false;
        };
        let (Ok(nonce), Ok(signature)) = (
            URL_SAFE_NO_PAD.decode(nonce),
            URL_SAFE_NO_PAD.decode(signature),
        ) else {
            return false;
        };
        self.session_mac(session, &nonce)
            .verify_slice(&signature)
            .is_ok()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_echoed_token_signed_here_for_this_session_passes() {
        let tokens = CsrfTokens::new("k1-0123456789abcdef0123456789abcdef");
        let (session, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let token = tokens.issue(session);
        assert!(tokens.verify(session, Some(&token), Some(&token)));
        assert!(!tokens.verify(session, Some(&token), None));
        assert!(!tokens.verify(session, None, Some(&token)));
        assert!(!tokens.verify(session, Some(&token), Some(&tokens.issue(session))));
        assert!(
            !tokens.verify(other, Some(&token), Some(&token)),
            "another session's token"
        );
        let foreign = CsrfTokens::new("another-key-0123456789abcdef0123456789").issue(session);
        assert!(!tokens.verify(session, Some(&foreign), Some(&foreign)));
        assert!(!tokens.verify(session, Some("garbage"), Some("garbage")));
        assert!(!tokens.verify(session, Some("a.b.c"), Some("a.b.c")));
    }
}
