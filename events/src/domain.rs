//! Typed domain events and their mapping to and from [`NewEvent`] / [`EventEnvelope`].

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::envelope::{EventEnvelope, EventMetadata, NewEvent};

/// A typed event. `EVENT_TYPE` is the stable name stored in `event_type` (past tense,
/// PascalCase) and must never change once events of the type exist; a change of payload shape
/// bumps `SCHEMA_VERSION` and adds an upcaster beside the type.
pub trait DomainEvent: Serialize + DeserializeOwned {
    const EVENT_TYPE: &'static str;
    const SCHEMA_VERSION: u32;

    /// Wraps this event for appending.
    fn into_new_event(self, occurred_at: DateTime<Utc>, metadata: EventMetadata) -> NewEvent {
        let payload = serde_json::to_value(&self)
            .expect("domain events serialize to JSON objects (derive(Serialize) on plain structs)");
        NewEvent::new(
            Self::EVENT_TYPE,
            Self::SCHEMA_VERSION,
            occurred_at,
            metadata,
            payload,
        )
    }

    /// Reads this event back from a stored envelope, checking its type and version.
    fn from_envelope(envelope: &EventEnvelope) -> Result<Self, EventTypeError> {
        if envelope.event_type != Self::EVENT_TYPE {
            return Err(EventTypeError::WrongType {
                expected: Self::EVENT_TYPE,
                found: envelope.event_type.clone(),
            });
        }
        if envelope.schema_version != Self::SCHEMA_VERSION {
            return Err(EventTypeError::UnknownVersion {
                event_type: Self::EVENT_TYPE,
                version: envelope.schema_version,
            });
        }
        serde_json::from_value(envelope.payload.clone()).map_err(EventTypeError::Payload)
    }
}

/// Why a stored envelope could not be read as a typed event.
#[derive(Debug, thiserror::Error)]
pub enum EventTypeError {
    #[error("expected event type {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("no reader for {event_type} schema version {version}")]
    UnknownVersion {
        event_type: &'static str,
        version: u32,
    },
    #[error("payload does not match the schema: {0}")]
    Payload(serde_json::Error),
}

/// Implements [`DomainEvent`] with schema version 1 for each `Type = "EventType"` pair.
macro_rules! domain_events {
    ($($ty:ident = $name:literal),* $(,)?) => {$(
        impl $crate::domain::DomainEvent for $ty {
            const EVENT_TYPE: &'static str = $name;
            const SCHEMA_VERSION: u32 = 1;
        }
    )*};
}
pub(crate) use domain_events;
