//! C2SP signed notes with Ed25519 (<https://c2sp.org/signed-note>, the format of
//! `golang.org/x/mod/sumdb/note`) and the C2SP `tlog-checkpoint` note body
//! (<https://c2sp.org/tlog-checkpoint>).
//!
//! # Signed note
//!
//! ```text
//! <text, ending in "\n", may contain blank lines>
//! <blank line>
//! — <key name> <base64(key id ‖ signature)>     (one line per signature, each ending in "\n")
//! ```
//!
//! - The whole note is UTF-8 without ASCII control characters other than `\n`; the text is
//!   separated from the signatures by the **last** blank line, and includes its final `\n`
//!   (but not the blank line). The signature is over the text's bytes.
//! - A key name is non-empty and has no Unicode white space and no `+`.
//! - The key id is the first four bytes, big-endian, of
//!   `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte Ed25519 public key)` ([`ed25519_key_id`]); `0x01` is
//!   the Ed25519 signature type, the only one this module supports.
//! - Base64 is the standard alphabet with padding (RFC 4648 §4); non-canonical encodings are
//!   refused.
//! - A verifier key is `<name>+<8 hex digits key id>+<base64(0x01 ‖ public key)>`
//!   ([`VerifierKey`]); a signer key is `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`
//!   ([`SignerKey`]), the 32-byte RFC 8032 seed being the secret. Both carry a key id that is
//!   checked against the key.
//!
//! **Verification rule** (the spec's): a signature whose (name, key id) pair matches no known
//! key is ignored (kept as unverified); one that matches a known key must verify, else the
//! whole note is refused; a note with no verified signature is refused. Two known keys with the
//! same name and id are ambiguous and refused. At most [`MAX_SIGNATURES`] signature lines are
//! read. Ed25519 verification is RFC 8032 "strict" (`verify_strict`: small-order keys and `R`
//! refused), so a note verified here is also accepted by Go's verifier.
//!
//! # Checkpoint
//!
//! The note text of a checkpoint is the log's origin line, the tree size in decimal without
//! leading zeros, the base64 of the RFC 6962 root hash, and optional non-empty extension lines,
//! each ending in `\n` ([`Checkpoint`]). A verified checkpoint proves only that the holder of
//! the signing key asserted "the log named origin had this root at this size": whether that
//! tree is consistent with earlier checkpoints is what a consistency proof shows
//! ([`crate::merkle::verify_consistency`]).
//!
//! Signing is deterministic (Ed25519) and takes the secret from the caller: no randomness, no
//! clock, no I/O here.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// The signature type byte of Ed25519 in signed notes.
pub const ALG_ED25519: u8 = 0x01;

/// The most signature lines a note may carry (the spec demands at least 16 be accepted; Go's
/// implementation takes 100).
pub const MAX_SIGNATURES: usize = 100;

/// Ed25519 signature length in bytes.
const SIGNATURE_SIZE: usize = 64;

/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key, a note or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// A key name is empty or contains white space or `+`.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A verifier or signer key string is not of the documented form.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// A key's signature type byte is not Ed25519's `0x01`.
    #[error("unknown key algorithm {0:#04x}")]
    UnknownAlgorithm(u8),
    /// The key id in a key string is not the one its name and public key determine.
    #[error("key id {stated:08x} does not match the key (computed {computed:08x})")]
    KeyIdMismatch { stated: u32, computed: u32 },
    /// The note is not of the signed-note form.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// Two known keys have the same name and key id.
    #[error("ambiguous key {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    /// A signature by a known key does not verify.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature { name: String, key_id: u32 },
    /// No signature of the note is by a known key.
    #[error("note has no verifiable signatures")]
    NoVerifiedSignature,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// The signed note around it was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a checkpoint body.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint's origin is not the name of the key expected to sign it.
    #[error("checkpoint origin {origin:?} is not the log key's name {key_name:?}")]
    OriginMismatch { origin: String, key_name: String },
}

/// Whether `name` may be a key name: non-empty, no Unicode white space, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName(name.to_owned()))
    }
}

/// `SHA-256(name ‖ 0x0A ‖ encoded key)[..4]` as a big-endian `u32`, where the encoded key is
/// the signature type byte followed by the public key.
fn key_hash(name: &str, encoded_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(encoded_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The key id of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`, big-endian.
pub fn ed25519_key_id(name: &str, key: &VerifyingKey) -> u32 {
    key_hash(name, &encoded_ed25519(key.as_bytes()))
}

fn encoded_ed25519(key: &[u8; 32]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = ALG_ED25519;
    out[1..].copy_from_slice(key);
    out
}

/// Decodes canonical standard padded base64 (re-encoding gives the input back).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(s).ok()?;
    (STANDARD.encode(&bytes) == s).then_some(bytes)
}

/// Splits `<hex key id>+<base64 key>` and checks the key id's form: exactly 8 hex digits.
fn parse_id_and_key(rest: &str) -> Result<(u32, Vec<u8>), NoteError> {
    let (id_hex, key64) = rest
        .split_once('+')
        .ok_or(NoteError::MalformedKey("missing key data"))?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key id is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id_hex, 16).expect("8 hex digits fit a u32");
    let key = decode_base64(key64).ok_or(NoteError::MalformedKey("key data is not base64"))?;
    if key.is_empty() {
        return Err(NoteError::MalformedKey("empty key data"));
    }
    Ok((id, key))
}

/// A public key that verifies note signatures, with its name and key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// The verifier for Ed25519 public key `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &key),
            key,
        })
    }

    /// Parses `<name>+<hex key id>+<base64(0x01 ‖ 32-byte public key)>`, checking the key id.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, rest) = s
            .split_once('+')
            .ok_or(NoteError::MalformedKey("missing key id"))?;
        check_name(name)?;
        let (stated, encoded) = parse_id_and_key(rest)?;
        let computed = key_hash(name, &encoded);
        if stated != computed {
            return Err(NoteError::KeyIdMismatch { stated, computed });
        }
        if encoded[0] != ALG_ED25519 {
            return Err(NoteError::UnknownAlgorithm(encoded[0]));
        }
        let bytes: [u8; 32] = encoded[1..]
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 public key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: stated,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `signature` (without the key id prefix) is this key's signature of `text`.
    pub fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; SIGNATURE_SIZE]>::try_from(signature) else {
            return false;
        };
        self.key
            .verify_strict(text, &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(encoded_ed25519(self.key.as_bytes()))
        )
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, NoteError> {
        Self::parse(s)
    }
}

/// A secret Ed25519 key that signs notes, with its name and key id. Its `Debug` output does not
/// show the secret.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    /// The signer for the 32-byte RFC 8032 secret `seed` under `name`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ 32-byte seed)>`, checking the key
    /// id against the public key derived from the seed.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey(
                "a signer key starts with PRIVATE+KEY+",
            ))?;
        let (name, rest) = rest
            .split_once('+')
            .ok_or(NoteError::MalformedKey("missing key id"))?;
        check_name(name)?;
        let (stated, encoded) = parse_id_and_key(rest)?;
        if encoded[0] != ALG_ED25519 {
            return Err(NoteError::UnknownAlgorithm(encoded[0]));
        }
        let seed: [u8; 32] = encoded[1..]
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 seed has 32 bytes"))?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The signer key string (the secret): `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`.
    pub fn to_private_string(&self) -> String {
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(encoded_ed25519(&self.key.to_bytes()))
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// This key's signature of `text` (a note text: see [`SignedNote::new`]).
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }

    /// A 32-byte secret derived from this key's seed for `label`: `HMAC-SHA256(key = seed,
    /// message = label)`. For secrets the service must not keep apart from the signing key
    /// (the liabilities salts, [`crate::liabilities::SaltKey`]); distinct labels give independent
    /// secrets, and none reveals the seed or signs anything.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.to_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// One signature line of a note: key name, key id and the signature bytes (after the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line without its final newline: `— <name> <base64(id ‖ sig)>`.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::MalformedNote(
                "signature line does not start with '— '",
            ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::MalformedNote("signature line has no signature"))?;
        if !is_valid_key_name(name) {
            return Err(NoteError::MalformedNote(
                "invalid key name in signature line",
            ));
        }
        let raw = decode_base64(b64).ok_or(NoteError::MalformedNote("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::MalformedNote("signature too short"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The signature line, with its final newline.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// Checks a note text: ends in `\n`, no ASCII control characters but `\n`.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text does not end in a newline"));
    }
    check_characters(text)
}

fn check_characters(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < '\u{20}' && c != '\n') {
        return Err(NoteError::MalformedNote("control character"));
    }
    Ok(())
}

/// A note text with its signatures, verified or not. [`fmt::Display`] writes the signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// The outcome of a successful [`SignedNote::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The signatures by known keys, all verified (at least one).
    pub verified: Vec<&'a NoteSignature>,
    /// The signatures by unknown keys, ignored.
    pub unverified: Vec<&'a NoteSignature>,
}

impl SignedNote {
    /// An unsigned note of `text`, which must end in `\n` and hold no ASCII control character
    /// but `\n`.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        Ok(Self {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// `text` signed by each of `signers`, in that order.
    pub fn sign(text: &str, signers: &[&SignerKey]) -> Result<Self, NoteError> {
        let mut note = Self::new(text)?;
        for signer in signers {
            note.add_signature(signer)?;
        }
        Ok(note)
    }

    /// Signs with `signer`, replacing any signature with the same key name and id (as Go's
    /// `note.Sign` does), else appending it.
    pub fn add_signature(&mut self, signer: &SignerKey) -> Result<(), NoteError> {
        let sig = signer.sign(&self.text)?;
        self.signatures
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// Parses a signed note's bytes (must be UTF-8); see [`SignedNote::parse`].
    pub fn parse_bytes(msg: &[u8]) -> Result<Self, NoteError> {
        let msg = std::str::from_utf8(msg).map_err(|_| NoteError::MalformedNote("not UTF-8"))?;
        Self::parse(msg)
    }

    /// Parses a signed note: checks its syntax, not its signatures ([`SignedNote::verify`]).
    pub fn parse(msg: &str) -> Result<Self, NoteError> {
        check_characters(msg)?;
        let split = msg.rfind("\n\n").ok_or(NoteError::MalformedNote(
            "no blank line before the signatures",
        ))?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        if sigs.is_empty() {
            return Err(NoteError::MalformedNote("no signatures"));
        }
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::MalformedNote(
                "signature line does not end in a newline",
            ));
        };
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in note order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Verifies the signatures against the `known` keys, by the rule in the module docs.
    pub fn verify<'a>(&'a self, known: &[VerifierKey]) -> Result<Verified<'a>, NoteError> {
        let mut verified = Vec::new();
        let mut unverified = Vec::new();
        for sig in &self.signatures {
            let mut matching = known
                .iter()
                .filter(|k| k.name == sig.name && k.key_id == sig.key_id);
            let Some(key) = matching.next() else {
                unverified.push(sig);
                continue;
            };
            if matching.next().is_some() {
                return Err(NoteError::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !key.verify(self.text.as_bytes(), &sig.signature) {
                return Err(NoteError::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            verified.push(sig);
        }
        if verified.is_empty() {
            return Err(NoteError::NoVerifiedSignature);
        }
        Ok(Verified {
            verified,
            unverified,
        })
    }

    /// Parses `msg` and verifies it against `known` in one step; returns the note.
    pub fn open(msg: &str, known: &[VerifierKey]) -> Result<Self, NoteError> {
        let note = Self::parse(msg)?;
        note.verify(known)?;
        Ok(note)
    }
}

/// The signed note: text, blank line, one line per signature.
impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for sig in &self.signatures {
            f.write_str(&sig.line())?;
        }
        Ok(())
    }
}

/// A checkpoint body: a log's origin, tree size and RFC 6962 root, and optional extension
/// lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

fn check_line(line: &str, what: &'static str) -> Result<(), CheckpointError> {
    if line.is_empty() || line.contains('\n') {
        return Err(CheckpointError::Malformed(what));
    }
    check_characters(line)?;
    Ok(())
}

impl Checkpoint {
    /// The checkpoint of the tree of `size` leaves with root `root` of the log `origin`
    /// (non-empty, one line; it should be the log key's name).
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        Self::with_extensions(origin, size, root, Vec::new())
    }

    /// As [`Checkpoint::new`], with extension lines (each non-empty, one line).
    pub fn with_extensions(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        check_line(origin, "origin must be one non-empty line")?;
        for ext in &extensions {
            check_line(ext, "extension lines must be non-empty single lines")?;
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Parses a checkpoint body (a note text).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("text does not end in a newline"))?;
        check_characters(body)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin"));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed(
                "tree size is not a decimal number without leading zeros",
            ));
        }
        let size = size
            .parse::<u64>()
            .map_err(|_| CheckpointError::Malformed("tree size out of range"))?;
        let root: Hash = decode_base64(root).and_then(|r| r.try_into().ok()).ok_or(
            CheckpointError::Malformed("root hash is not the base64 of 32 bytes"),
        )?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of the tree.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: origin, size, base64 root, extensions, each line ending in `\n`.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for ext in &self.extensions {
            out.push_str(ext);
            out.push('\n');
        }
        out
    }

    /// The checkpoint as a note signed by `signer` (the log's key).
    pub fn sign(&self, signer: &SignerKey) -> Result<SignedNote, CheckpointError> {
        Ok(SignedNote::sign(&self.text(), &[signer])?)
    }

    /// Parses a signed checkpoint, requiring a valid signature by `log_key` and an origin equal
    /// to its name. Other signatures (e.g. witnesses') by keys in `others` must verify; those
    /// by unknown keys are ignored.
    pub fn open(
        msg: &str,
        log_key: &VerifierKey,
        others: &[VerifierKey],
    ) -> Result<(Self, SignedNote), CheckpointError> {
        let note = SignedNote::parse(msg)?;
        let mut known = vec![log_key.clone()];
        known.extend_from_slice(others);
        let outcome = note.verify(&known)?;
        if !outcome
            .verified
            .iter()
            .any(|s| s.name == log_key.name && s.key_id == log_key.key_id)
        {
            return Err(NoteError::NoVerifiedSignature.into());
        }
        let checkpoint = Self::parse(note.text())?;
        if checkpoint.origin != log_key.name {
            return Err(CheckpointError::OriginMismatch {
                origin: checkpoint.origin,
                key_name: log_key.name.clone(),
            });
        }
        Ok((checkpoint, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(is_valid_key_name("example.com/log42"));
        assert!(!is_valid_key_name(""));
        assert!(!is_valid_key_name("a b"));
        assert!(!is_valid_key_name("a+b"));
        assert!(!is_valid_key_name("a\u{a0}b"));
    }

    #[test]
    fn base64_must_be_canonical() {
        assert_eq!(decode_base64("AA=="), Some(vec![0]));
        assert_eq!(decode_base64("AB=="), None);
        assert_eq!(decode_base64("AA"), None);
    }

    #[test]
    fn signer_debug_hides_the_secret() {
        let signer = SignerKey::from_seed("k", [7; 32]).unwrap();
        let shown = format!("{signer:?}");
        assert!(!shown.contains(&STANDARD.encode([7u8; 32])[..8]));
        assert!(shown.contains("SignerKey"));
    }
}
