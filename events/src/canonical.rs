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
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn write_optional(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => write_string(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// The canonical bytes of [`hashed_fields`], written directly in sorted key order without
/// building the intermediate JSON tree (this runs once per appended event).
pub fn canonical_envelope_bytes(envelope: &EventEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let m = &envelope.metadata;
    out.extend_from_slice(b"{\"event_id\":");
    write_string(&envelope.event_id.to_string(), &mut out);
    out.extend_from_slice(b",\"event_type\":");
    write_string(&envelope.event_type, &mut out);
    out.extend_from_slice(b",\"metadata\":{\"actor\":");
    write_optional(m.actor.as_deref(), &mut out);
    out.extend_from_slice(b",\"causation_id\":");
    write_optional(m.causation_id.as_deref(), &mut out);
    out.extend_from_slice(b",\"correlation_id\":");
    write_optional(m.correlation_id.as_deref(), &mut out);
    out.extend_from_slice(b",\"ip\":");
    write_optional(m.ip.as_deref(), &mut out);
    out.extend_from_slice(b",\"request_id\":");
    write_optional(m.request_id.as_deref(), &mut out);
    out.extend_from_slice(b",\"user_agent\":");
    write_optional(m.user_agent.as_deref(), &mut out);
    out.extend_from_slice(b"},\"occurred_at\":");
    write_string(
        &envelope.occurred_at.format(TIMESTAMP_FORMAT).to_string(),
        &mut out,
    );
    out.extend_from_slice(b",\"payload\":");
    write_canonical(&envelope.payload, &mut out);
    out.extend_from_slice(format!(",\"position\":{}", envelope.position).as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    write_string(&envelope.prev_hash, &mut out);
    out.extend_from_slice(format!(",\"schema_version\":{}", envelope.schema_version).as_bytes());
    out.extend_from_slice(b",\"stream_id\":");
    write_string(&envelope.stream_id, &mut out);
    out.extend_from_slice(format!(",\"stream_version\":{}}}", envelope.stream_version).as_bytes());
    out
}

/// `hex(sha256(canonical_json(hashed_fields(envelope))))`, lowercase.
pub fn event_hash(envelope: &EventEnvelope) -> String {
    hex::encode(Sha256::digest(canonical_envelope_bytes(envelope)))
}
