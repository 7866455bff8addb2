//! Personal data in event payloads.
//!
//! From schema version 2 on, every personal field of an identity event (email, name, the ip and
//! user agent of a login) is **sealed**: encrypted under the data key of its subject, which is
//! kept outside the log (`personal_keys`). Erasing the key shreds every sealed field of the
//! subject while the envelopes — and so the hash chain — stay exactly as they were. This crate
//! only carries sealed text; sealing and opening happen in the service (`src/privacy.rs`),
//! because they need keys and randomness.
//!
//! Sealed text: `pii1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>` (ChaCha20-Poly1305, a
//! random 96-bit nonce per field, the `pii1:<key id>` prefix as associated data). The key id is
//! the subject's user id, or `unknown-YYYY-MM` for attempts on unknown addresses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version prefix of sealed text.
pub const SEALED_PREFIX: &str = "pii1:";

/// What an auditor sees instead of a field whose key was erased.
pub const ERASED: &str = "[erased]";

/// Whether `text` is sealed personal data.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

/// The key id of sealed text, if it is sealed text.
pub fn key_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(SEALED_PREFIX)?;
    let (key_id, _) = rest.split_once(':')?;
    (!key_id.is_empty()).then_some(key_id)
}

/// A personal field of an identity event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal {
    /// Sealed text (schema version 2 on); opened with its subject's key.
    Sealed(String),
    /// Plaintext of a schema version 1 payload (upcast); never written again.
    Legacy(String),
}

impl Personal {
    /// Sealed text produced by the service; `None` if `text` is not sealed.
    pub fn sealed(text: String) -> Option<Self> {
        key_id(&text).is_some().then_some(Self::Sealed(text))
    }

    /// The stored text: sealed text, or a legacy plaintext.
    pub fn as_stored(&self) -> &str {
        match self {
            Self::Sealed(text) | Self::Legacy(text) => text,
        }
    }
}

impl Serialize for Personal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_stored())
    }
}

/// Reads sealed text only: a schema version 2 payload never holds personal plaintext (schema
/// version 1 arms read plain strings and wrap them in [`Personal::Legacy`]).
impl<'de> Deserialize<'de> for Personal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::sealed(text).ok_or_else(|| {
            serde::de::Error::custom("a personal field must be sealed (pii1:<key id>:<data>)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sealed_text_reads_as_a_personal_field() {
        let ok: Personal = serde_json::from_value(serde_json::json!("pii1:abc:AAAA")).unwrap();
        assert_eq!(ok, Personal::Sealed("pii1:abc:AAAA".into()));
        assert_eq!(key_id(ok.as_stored()), Some("abc"));
        for bad in ["alice@example.com", "pii1:", "pii1::AAAA", "pii2:abc:AAAA"] {
            assert!(
                serde_json::from_value::<Personal>(serde_json::json!(bad)).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            serde_json::to_value(Personal::Legacy("a@b.c".into())).unwrap(),
            serde_json::json!("a@b.c")
        );
    }
}
