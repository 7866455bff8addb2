//! Crypto-shredding of personal data (pure: no I/O; keys come from `store::personal_keys`).
//!
//! - [`DataKey`]: a subject's random 256-bit key; [`DataKey::seal`] encrypts one field
//!   (ChaCha20-Poly1305, a fresh random nonce per field) into sealed text
//!   `pii1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>` with `pii1:<key id>` as associated
//!   data; [`DataKey::open`] reverses it. Deleting the key makes every field sealed under it
//!   unreadable ("shredded") while the events that hold them stay byte for byte the same.
//! - [`BlindIndex`]: `HMAC-SHA256(EMAIL_INDEX_KEY, normalised address)` in hex, the id of an
//!   address's `email-…` stream, so that the stream id does not carry the address.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cryptovault_events::personal::{key_id, Personal, ERASED, SEALED_PREFIX};
use cryptovault_events::EventMetadata;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A subject's data key and its id (the user id, or `unknown-YYYY-MM`).
#[derive(Clone)]
pub struct DataKey {
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({}, ***)", self.id)
    }
}

const NONCE_LEN: usize = 12;

impl DataKey {
    pub fn new(id: String, key: [u8; 32]) -> Self {
        Self { id, key }
    }

    /// A fresh random key for `id`.
    pub fn generate(id: String) -> Self {
        Self::new(id, rand::random())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.key))
    }

    fn aad(&self) -> String {
        format!("{SEALED_PREFIX}{}", self.id)
    }

    /// `plaintext` sealed under this key (a new random nonce each time).
    pub fn seal(&self, plaintext: &str) -> Personal {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let aad = self.aad();
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any field shorter than 256 GiB");
        let mut data = nonce_bytes.to_vec();
        data.extend_from_slice(&ciphertext);
        Personal::Sealed(format!("{aad}:{}", URL_SAFE_NO_PAD.encode(data)))
    }

    pub fn seal_opt(&self, plaintext: Option<&str>) -> Option<Personal> {
        plaintext.map(|p| self.seal(p))
    }

    /// The plaintext of sealed text under this key; `None` if it is not sealed under this key
    /// or does not authenticate.
    pub fn open(&self, sealed: &str) -> Option<String> {
        if key_id(sealed)? != self.id {
            return None;
        }
        let encoded = sealed.strip_prefix(&self.aad())?.strip_prefix(':')?;
        let data = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        if data.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = self.aad();
        let plaintext = self
            .cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plaintext).ok()
    }

    /// `metadata` with its ip and user agent sealed under this key.
    pub fn seal_metadata(&self, mut metadata: EventMetadata) -> EventMetadata {
        metadata.ip = metadata
            .ip
            .as_deref()
            .map(|ip| self.seal(ip).as_stored().to_owned());
        metadata.user_agent = metadata
            .user_agent
            .as_deref()
            .map(|ua| self.seal(ua).as_stored().to_owned());
        metadata
    }
}

/// What a personal field says given the subject's key (`None`: erased): legacy plaintext as
/// stored, sealed text opened, or [`ERASED`].
pub fn reveal(field: &Personal, key: Option<&DataKey>) -> String {
    match field {
        Personal::Legacy(text) => text.clone(),
        Personal::Sealed(text) => key
            .and_then(|k| k.open(text))
            .unwrap_or_else(|| ERASED.to_owned()),
    }
}

/// The blind index of email addresses (`EMAIL_INDEX_KEY`).
#[derive(Clone)]
pub struct BlindIndex {
    key: Vec<u8>,
}

impl BlindIndex {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
        }
    }

    /// Lowercase hex HMAC-SHA256 of the normalised address.
    pub fn of(&self, normalised_email: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any size");
        mac.update(normalised_email.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_fields_open_only_with_their_key_and_never_show_the_plaintext() {
        let key = DataKey::generate("user-a".into());
        let sealed = key.seal("alice@example.com");
        let text = sealed.as_stored();
        assert!(text.starts_with("pii1:user-a:"), "{text}");
        assert!(!text.contains("alice"));
        assert_eq!(key.open(text).as_deref(), Some("alice@example.com"));
        // A fresh nonce per field: the same plaintext seals differently.
        assert_ne!(key.seal("alice@example.com").as_stored(), text);
        // Another key (also one claiming the same id) opens nothing.
        let other = DataKey::generate("user-a".into());
        assert_eq!(other.open(text), None);
        assert_eq!(reveal(&sealed, Some(&other)), ERASED);
        assert_eq!(reveal(&sealed, None), ERASED);
        assert_eq!(reveal(&sealed, Some(&key)), "alice@example.com");
        assert_eq!(reveal(&Personal::Legacy("old".into()), None), "old");
        // Tampered text does not authenticate.
        let mut tampered = text.to_owned();
        tampered.pop();
        tampered.push(if text.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(key.open(&tampered), None);
        assert_eq!(key.open("pii1:user-a:!!"), None);
    }

    #[test]
    fn the_blind_index_is_keyed_and_hides_the_address() {
        let a = BlindIndex::new("key-one");
        let b = BlindIndex::new("key-two");
        let index = a.of("alice@example.com");
        assert_eq!(index.len(), 64);
        assert!(!index.contains("alice"));
        assert_eq!(index, a.of("alice@example.com"));
        assert_ne!(index, b.of("alice@example.com"));
        assert_ne!(index, a.of("bob@example.com"));
    }
}
