//! The stored shape of an event and the shape a command submits.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `prev_hash` of the event at position 1: 64 zeros (SHA-256 width in hex).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an event and through which request. Every field is optional; absent fields are
/// encoded as `null` in the canonical encoding, so the hashed shape never varies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// The acting principal, e.g. a user id, `system` or `admin:<id>`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event as a command produces it, before the store gives it a place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Chosen by the caller (the service uses UUID v7, or an id derived from an Idempotency-Key),
    /// so that a retry of the same append is recognised.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Truncated to whole milliseconds (the precision MongoDB stores), so the hash computed at
    /// append time equals the hash recomputed from the stored document.
    pub occurred_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    /// A JSON object. Money inside it travels as decimal strings, never as JSON numbers.
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// A new event with the caller's id, stamped `occurred_at` (millisecond precision). Both
    /// come from the caller: this crate reads no clock and draws no random numbers.
    pub fn new(
        event_id: Uuid,
        event_type: impl Into<String>,
        schema_version: u32,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            event_id,
            event_type: event_type.into(),
            schema_version,
            occurred_at: occurred_at.trunc_subsecs(3),
            metadata,
            payload,
        }
    }
}

/// An event as stored in the global log.
///
/// Invariants (enforced by the store, checked by [`crate::ChainVerifier`]):
/// `position` is gapless and strictly increasing from 1; `stream_version` is gapless per stream
/// from 1; `prev_hash` equals the `hash` of the event at `position - 1` (or [`GENESIS_HASH`]);
/// `hash` equals [`crate::canonical::event_hash`] of this envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: u64,
    pub position: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// Serialized exactly as in the canonical encoding (`YYYY-MM-DDTHH:MM:SS.mmmZ`), so that
    /// the JSON an auditor receives hashes to `hash` as it is.
    #[serde(with = "canonical_time")]
    pub occurred_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl EventEnvelope {
    /// Places `event` in the log at `position` / `stream_version` after the event whose hash is
    /// `prev_hash`, computing this event's hash.
    pub fn seal(
        event: NewEvent,
        stream_id: String,
        stream_version: u64,
        position: u64,
        prev_hash: String,
    ) -> Self {
        let mut envelope = Self {
            event_id: event.event_id,
            stream_id,
            stream_version,
            position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            occurred_at: event.occurred_at.trunc_subsecs(3),
            metadata: event.metadata,
            payload: event.payload,
            prev_hash,
            hash: String::new(),
        };
        envelope.hash = crate::canonical::event_hash(&envelope);
        envelope
    }
}

/// `occurred_at` in the canonical form on output; any RFC 3339 date-time on input.
mod canonical_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format(crate::canonical::TIMESTAMP_FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}
