//! The canonical encoding of an event and its SHA-256 hash.
//!
//! The encoding is JSON with object keys sorted by their UTF-8 bytes at every depth, no
//! whitespace, strings escaped as `serde_json` escapes them (`"` `\` and control characters; no
//! escaping of non-ASCII), integers in plain decimal. The hashed object is the envelope without
//! `hash`:
//!
//! ```text
//! {"event_id","event_type","metadata":{"actor","causation_id","correlation_id","ip",
//!  "request_id","user_agent"},"occurred_at":"YYYY-MM-DDTHH:MM:SS.mmmZ","payload",
//!  "position","prev_hash","schema_version","stream_id","stream_version"}
//! ```
//!
//! and `hash = hex(sha256(canonical_bytes))`. Python reproduces it with
//! `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` for payloads
//! without floats (money is always a decimal string).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::envelope::EventEnvelope;

/// RFC 3339 with exactly three fractional digits and `Z`, the only timestamp form hashed.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The canonical JSON object hashed for `envelope` (everything except `hash`).
pub fn hashed_fields(envelope: &EventEnvelope) -> Value {
    let m = &envelope.metadata;
    let metadata = Value::Object(Map::from_iter([
        ("request_id".to_owned(), opt(&m.request_id)),
        ("correlation_id".to_owned(), opt(&m.correlation_id)),
        ("causation_id".to_owned(), opt(&m.causation_id)),
        ("actor".to_owned(), opt(&m.actor)),
        ("ip".to_owned(), opt(&m.ip)),
        ("user_agent".to_owned(), opt(&m.user_agent)),
    ]));
    Value::Object(Map::from_iter([
        (
            "event_id".to_owned(),
            Value::from(envelope.event_id.to_string()),
        ),
        (
            "stream_id".to_owned(),
            Value::from(envelope.stream_id.clone()),
        ),
        (
            "stream_version".to_owned(),
            Value::from(envelope.stream_version),
        ),
        ("position".to_owned(), Value::from(envelope.position)),
        (
            "event_type".to_owned(),
            Value::from(envelope.event_type.clone()),
        ),
        (
            "schema_version".to_owned(),
            Value::from(envelope.schema_version),
        ),
        (
            "occurred_at".to_owned(),
            Value::from(envelope.occurred_at.format(TIMESTAMP_FORMAT).to_string()),
        ),
        ("metadata".to_owned(), metadata),
        ("payload".to_owned(), envelope.payload.clone()),
        (
            "prev_hash".to_owned(),
            Value::from(envelope.prev_hash.clone()),
        ),
    ]))
}

fn opt(value: &Option<String>) -> Value {
    value
        .as_ref()
        .map_or(Value::Null, |s| Value::from(s.as_str()))
}

/// The canonical bytes of any JSON value: keys sorted at every depth, no whitespace.
///
/// Sorting is done here explicitly, so the result does not depend on whether some dependency
/// turned on `serde_json`'s `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `hex(sha256(canonical_json(hashed_fields(envelope))))`, lowercase.
pub fn event_hash(envelope: &EventEnvelope) -> String {
    let bytes = canonical_json(&hashed_fields(envelope));
    hex::encode(Sha256::digest(bytes.as_bytes()))
}
