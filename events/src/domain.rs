//! Typed domain events, their stream families, and their mapping to and from [`NewEvent`] /
//! [`EventEnvelope`].
//!
//! Every event type belongs to exactly one **family**, an enum with one variant per type
//! ([`crate::ledger::LedgerEvent`], [`crate::identity::IdentityEvent`]). A family's `decode`
//! is **the one place a stored envelope becomes a typed event**: it dispatches on
//! `(event_type, schema_version)`, so it is also the one place a future schema version is
//! upcast to the current type. Folds decode once and `match` the family exhaustively (no `_`
//! arm), so that a new event type does not compile until every fold has decided what it does
//! with it. [`DomainEvent::from_envelope`] reads one expected type through the same seam.
//!
//! Nothing here reads a clock or draws randomness: event ids and times come from the caller.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::envelope::{EventEnvelope, EventMetadata, NewEvent};

/// A typed event. `EVENT_TYPE` is the stable name stored in `event_type` (past tense,
/// PascalCase) and must never change once events of the type exist; a change of payload shape
/// bumps `SCHEMA_VERSION` and adds an arm for the old version to its family's `decode` (the
/// upcaster).
pub trait DomainEvent: Serialize + DeserializeOwned + Into<Self::Family> {
    const EVENT_TYPE: &'static str;
    /// The version [`DomainEvent::into_new_event`] writes.
    const SCHEMA_VERSION: u32;
    /// The family enum this type is a variant of.
    type Family: EventFamily;

    /// This type's variant of `event`, or `None` for another variant.
    fn from_family(event: Self::Family) -> Option<Self>;

    /// Wraps this event for appending. The caller chooses the id (a retry of the same append
    /// must carry the same id) and the time.
    fn into_new_event(
        self,
        event_id: Uuid,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> NewEvent {
        let payload = serde_json::to_value(&self)
            .expect("domain events serialize to JSON objects (derive(Serialize) on plain structs)");
        NewEvent::new(
            event_id,
            Self::EVENT_TYPE,
            Self::SCHEMA_VERSION,
            occurred_at,
            metadata,
            payload,
        )
    }

    /// Reads this one type back from a stored envelope, through its family's `decode` (so an
    /// older schema version is upcast the same way as in every fold). For reads that expect
    /// exactly one type (an `email-…` or `withdrawal-…` stream, an idempotent replay); folds
    /// use the family's `decode` and `match`.
    fn from_envelope(envelope: &EventEnvelope) -> Result<Self, EventTypeError> {
        let wrong_type = || EventTypeError::WrongType {
            expected: Self::EVENT_TYPE,
            found: envelope.event_type.clone(),
        };
        if envelope.event_type != Self::EVENT_TYPE {
            return Err(wrong_type());
        }
        Self::Family::decode(envelope)?
            .and_then(Self::from_family)
            .ok_or_else(wrong_type)
    }
}

/// An enum of the event types of one stream family, with the family's decode seam.
pub trait EventFamily: Sized {
    /// The `event_type` of every variant.
    const EVENT_TYPES: &'static [&'static str];

    /// The typed event in `envelope`: `Ok(None)` when its type belongs to another family
    /// (folds that see the whole log skip those); an error when the type is this family's but
    /// its schema version is unknown or its payload does not match.
    fn decode(envelope: &EventEnvelope) -> Result<Option<Self>, DecodeError>;

    /// The stable `event_type` of this event.
    fn event_type(&self) -> &'static str;

    /// Wraps this event for appending (see [`DomainEvent::into_new_event`]).
    fn into_new_event(
        self,
        event_id: Uuid,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> NewEvent;
}

/// Why an envelope of a family's event type could not be decoded. Both cases name the type and
/// the schema version.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no reader for {event_type} schema version {version}")]
    UnknownVersion {
        event_type: &'static str,
        version: u32,
    },
    #[error("{event_type} schema version {version}: payload does not match the schema: {source}")]
    Payload {
        event_type: &'static str,
        version: u32,
        source: serde_json::Error,
    },
}

/// Why a stored envelope could not be read as one expected type.
#[derive(Debug, thiserror::Error)]
pub enum EventTypeError {
    #[error("expected event type {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The payload of `envelope` read as `T` (a decode arm for `T`'s current schema version).
pub(crate) fn payload<T: DomainEvent>(envelope: &EventEnvelope) -> Result<T, DecodeError> {
    T::deserialize(&envelope.payload).map_err(|source| DecodeError::Payload {
        event_type: T::EVENT_TYPE,
        version: envelope.schema_version,
        source,
    })
}

/// The payload of `envelope` read as `T`, an older schema version's shape of `event_type` (an
/// upcasting arm converts it to the current type).
pub(crate) fn payload_as<T: DeserializeOwned>(
    envelope: &EventEnvelope,
    event_type: &'static str,
) -> Result<T, DecodeError> {
    T::deserialize(&envelope.payload).map_err(|source| DecodeError::Payload {
        event_type,
        version: envelope.schema_version,
        source,
    })
}

/// A payload that has the shape of `event_type` but breaks a rule of its version.
pub(crate) fn invalid_payload(
    envelope: &EventEnvelope,
    event_type: &'static str,
    why: &str,
) -> DecodeError {
    DecodeError::Payload {
        event_type,
        version: envelope.schema_version,
        source: <serde_json::Error as serde::de::Error>::custom(why),
    }
}

/// The fall-through of a family's `decode`: an unknown version of one of `family`'s types is an
/// error; any other type is not this family's.
pub(crate) fn not_decoded<F>(
    family: &'static [&'static str],
    envelope: &EventEnvelope,
) -> Result<Option<F>, DecodeError> {
    match family.iter().find(|t| **t == envelope.event_type) {
        Some(event_type) => Err(DecodeError::UnknownVersion {
            event_type,
            version: envelope.schema_version,
        }),
        None => Ok(None),
    }
}

/// For a family enum whose variants are named like their types (`Type(Type)`), declared with
/// each type's stable name and, where it is not 1, the schema version it writes
/// (`Type = "Type" @ 2`): implements [`DomainEvent`] for each type,
/// `From<Type>` for the family, and [`EventFamily`] for the family with the family's inherent
/// `decode` (written by hand: it is the upcasting seam).
macro_rules! event_family {
    (@version) => { 1 };
    (@version $version:literal) => { $version };
    ($family:ident { $($ty:ident = $name:literal $(@ $version:literal)?),* $(,)? }) => {
        $(
            impl $crate::domain::DomainEvent for $ty {
                const EVENT_TYPE: &'static str = $name;
                const SCHEMA_VERSION: u32 = $crate::domain::event_family!(@version $($version)?);
                type Family = $family;

                fn from_family(event: $family) -> Option<Self> {
                    match event {
                        $family::$ty(e) => Some(e),
                        _ => None,
                    }
                }
            }

            impl From<$ty> for $family {
                fn from(event: $ty) -> Self {
                    $family::$ty(event)
                }
            }
        )*

        impl $crate::domain::EventFamily for $family {
            const EVENT_TYPES: &'static [&'static str] = &[$($name),*];

            fn decode(
                envelope: &$crate::envelope::EventEnvelope,
            ) -> Result<Option<Self>, $crate::domain::DecodeError> {
                $family::decode(envelope)
            }

            fn event_type(&self) -> &'static str {
                match self {
                    $($family::$ty(_) => $name,)*
                }
            }

            fn into_new_event(
                self,
                event_id: uuid::Uuid,
                occurred_at: chrono::DateTime<chrono::Utc>,
                metadata: $crate::envelope::EventMetadata,
            ) -> $crate::envelope::NewEvent {
                match self {
                    $($family::$ty(e) => {
                        $crate::domain::DomainEvent::into_new_event(e, event_id, occurred_at, metadata)
                    })*
                }
            }
        }
    };
}
pub(crate) use event_family;
