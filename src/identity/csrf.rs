//! Signed double-submit CSRF tokens: `nonce.signature`, both base64url, where
//! `signature = HMAC-SHA256(CSRF_SECRET, nonce)`. The browser keeps the token in the readable
//! `csrf_token` cookie and echoes it in `X-CSRF-Token`; the server checks that both are equal
//! and that the signature is its own, so a token planted by another site cannot pass.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

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

    /// A new token.
    pub fn issue(&self) -> String {
        let nonce: [u8; 18] = rand::random();
        let mut mac = self.mac();
        mac.update(&nonce);
        let signature = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Whether `header` equals `cookie` and carries this server's signature.
    pub fn verify(&self, cookie: Option<&str>, header: Option<&str>) -> bool {
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
        let mut mac = self.mac();
        mac.update(&nonce);
        mac.verify_slice(&signature).is_ok()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_echoed_token_signed_here_passes() {
        let tokens = CsrfTokens::new("k1-0123456789abcdef0123456789abcdef");
        let token = tokens.issue();
        assert!(tokens.verify(Some(&token), Some(&token)));
        assert!(!tokens.verify(Some(&token), None));
        assert!(!tokens.verify(None, Some(&token)));
        assert!(!tokens.verify(Some(&token), Some(&tokens.issue())));
        let foreign = CsrfTokens::new("another-key-0123456789abcdef0123456789").issue();
        assert!(!tokens.verify(Some(&foreign), Some(&foreign)));
        assert!(!tokens.verify(Some("garbage"), Some("garbage")));
    }
}
