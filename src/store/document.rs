//! The BSON shape of a stored event and its conversion to and from [`EventEnvelope`].
//!
//! `_id` is the event id (string form of the UUID), so the primary key index doubles as the
//! unique event-id index; `position` and `stream_version` are `Int64`; `occurred_at` is a BSON
//! date (milliseconds, which is why envelopes are sealed with millisecond timestamps).

use bson::{doc, Bson, DateTime as BsonDateTime, Document};
use cryptovault_events::{EventEnvelope, EventMetadata};
use uuid::Uuid;

use super::error::StoreError;

/// Encodes an envelope as the document stored in `events`.
pub fn to_document(envelope: &EventEnvelope) -> Result<Document, StoreError> {
    let payload = bson::to_bson(&envelope.payload).map_err(|e| StoreError::Corrupt {
        id: envelope.event_id.to_string(),
        reason: format!("payload cannot be stored as BSON: {e}"),
    })?;
    let m = &envelope.metadata;
    Ok(doc! {
        "_id": envelope.event_id.to_string(),
        "stream_id": &envelope.stream_id,
        "stream_version": to_i64(envelope.stream_version),
        "position": to_i64(envelope.position),
        "event_type": &envelope.event_type,
        "schema_version": i64::from(envelope.schema_version),
        "occurred_at": BsonDateTime::from_chrono(envelope.occurred_at),
        "metadata": {
            "request_id": opt(&m.request_id),
            "correlation_id": opt(&m.correlation_id),
            "causation_id": opt(&m.causation_id),
            "actor": opt(&m.actor),
            "ip": opt(&m.ip),
            "user_agent": opt(&m.user_agent),
        },
        "payload": payload,
        "prev_hash": &envelope.prev_hash,
        "hash": &envelope.hash,
    })
}

/// Decodes a stored document. Any deviation from the stored shape is [`StoreError::Corrupt`].
pub fn from_document(document: Document) -> Result<EventEnvelope, StoreError> {
    let id = document
        .get("_id")
        .map(|v| v.to_string())
        .unwrap_or_else(|| "<no _id>".into());
    decode(document).map_err(|reason| StoreError::Corrupt { id, reason })
}

fn decode(document: Document) -> Result<EventEnvelope, String> {
    let str_field = |name: &str| -> Result<String, String> {
        document
            .get_str(name)
            .map(str::to_owned)
            .map_err(|e| format!("{name}: {e}"))
    };
    let u64_field = |name: &str| -> Result<u64, String> {
        match document.get(name) {
            Some(Bson::Int64(v)) if *v >= 0 => Ok(*v as u64),
            Some(Bson::Int32(v)) if *v >= 0 => Ok(*v as u64),
            other => Err(format!(
                "{name}: expected a non-negative integer, found {other:?}"
            )),
        }
    };
    let event_id = Uuid::parse_str(&str_field("_id")?).map_err(|e| format!("_id: {e}"))?;
    let metadata = document
        .get_document("metadata")
        .map_err(|e| format!("metadata: {e}"))?;
    let meta = |name: &str| -> Result<Option<String>, String> {
        match metadata.get(name) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "metadata.{name}: expected a string, found {other:?}"
            )),
        }
    };
    let payload = document
        .get("payload")
        .cloned()
        .ok_or_else(|| "payload: missing".to_owned())?;
    let payload: serde_json::Value =
        bson::from_bson(payload).map_err(|e| format!("payload: {e}"))?;
    let schema_version =
        u32::try_from(u64_field("schema_version")?).map_err(|e| format!("schema_version: {e}"))?;
    Ok(EventEnvelope {
        event_id,
        stream_id: str_field("stream_id")?,
        stream_version: u64_field("stream_version")?,
        position: u64_field("position")?,
        event_type: str_field("event_type")?,
        schema_version,
        occurred_at: document
            .get_datetime("occurred_at")
            .map_err(|e| format!("occurred_at: {e}"))?
            .to_chrono(),
        metadata: EventMetadata {
            request_id: meta("request_id")?,
            correlation_id: meta("correlation_id")?,
            causation_id: meta("causation_id")?,
            actor: meta("actor")?,
            ip: meta("ip")?,
            user_agent: meta("user_agent")?,
        },
        payload,
        prev_hash: str_field("prev_hash")?,
        hash: str_field("hash")?,
    })
}

pub use super::codec::to_i64;

fn opt(value: &Option<String>) -> Bson {
    value
        .as_ref()
        .map_or(Bson::Null, |s| Bson::String(s.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::{canonical::event_hash, NewEvent, GENESIS_HASH};
    use proptest::prelude::*;
    use serde_json::Value;

    /// Payload values as the service writes them: keys without NUL (BSON keys are C strings),
    /// no floats.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[^\0]{0,12}", inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn bson_round_trip_preserves_the_envelope_and_its_hash(
            pairs in prop::collection::vec(("[^\0]{0,12}", json_value()), 0..6),
            actor in proptest::option::of(any::<String>()),
            position in 1u64..1_000_000_000,
        ) {
            let payload = Value::Object(pairs.into_iter().collect());
            let metadata = EventMetadata { actor, ..EventMetadata::default() };
            let event = NewEvent::new(uuid::Uuid::now_v7(), "Tested", 1, chrono::Utc::now(), metadata, payload);
            let sealed = EventEnvelope::seal(event, "s-1".into(), 1, position, GENESIS_HASH.into());
            let back = from_document(to_document(&sealed).unwrap()).unwrap();
            prop_assert_eq!(event_hash(&back), sealed.hash.clone());
            prop_assert_eq!(back, sealed);
        }
    }
}
