//! Collections, indexes and the `events` validator, created idempotently at start-up.

use bson::{doc, Document};
use mongodb::{options::IndexOptions, Database, IndexModel};

use super::error::StoreError;
use super::plan::Head;

/// The global log: one document per event.
pub const EVENTS: &str = "events";
/// The head slots: where append transactions record the last position and hash of the log.
pub const META: &str = "event_store_meta";
/// `_id`s of the head slots in [`META`]. Append transactions write them in turn, so two that
/// overlap (the writer's pipeline) write different documents; the head of the log is the slot
/// with the highest position.
pub const HEAD_SLOTS: [&str; 4] = ["head", "head-1", "head-2", "head-3"];

/// Creates the store's collections (with the validator), indexes and the head slots, if they
/// do not exist. Safe to run concurrently from several processes and on every start.
pub async fn ensure(db: &Database) -> Result<(), StoreError> {
    let existing = db.list_collection_names().await?;
    for name in [EVENTS, META] {
        if !existing.iter().any(|n| n == name) {
            let created = if name == EVENTS {
                db.create_collection(name)
                    .validator(event_validator())
                    .await
            } else {
                db.create_collection(name).await
            };
            // Another process may have created it between the listing and now.
            if let Err(e) = created {
                if !is_namespace_exists(&e) {
                    return Err(e.into());
                }
            }
        }
    }
    // Re-apply the validator so databases created by an older version get the current one.
    db.run_command(doc! {
        "collMod": EVENTS,
        "validator": event_validator(),
        "validationLevel": "strict",
        "validationAction": "error",
    })
    .await?;

    let events = db.collection::<Document>(EVENTS);
    events
        .create_indexes([
            unique(doc! { "position": 1 }, "position_unique"),
            unique(
                doc! { "stream_id": 1, "stream_version": 1 },
                "stream_version_unique",
            ),
        ])
        .await?;

    for slot in HEAD_SLOTS {
        db.collection::<Document>(META)
            .update_one(
                doc! { "_id": slot },
                doc! { "$setOnInsert": {
                    "position": 0_i64,
                    "hash": cryptovault_events::GENESIS_HASH,
                }},
            )
            .upsert(true)
            .await
            .or_else(|e| {
                if is_duplicate_key(&e) {
                    Ok(Default::default())
                } else {
                    Err(e)
                }
            })?;
    }
    Ok(())
}

/// The head of the log from its head slots: the slot with the highest position.
pub fn head_of_slots(slots: &[Document]) -> Result<Head, StoreError> {
    slots
        .iter()
        .map(head_from_slot)
        .max_by_key(|head| head.position)
        .ok_or_else(|| StoreError::Corrupt {
            id: HEAD_SLOTS[0].into(),
            reason: "head documents missing; run schema::ensure first".into(),
        })
}

/// The head a slot records (an unreadable field reads as the empty log's).
fn head_from_slot(slot: &Document) -> Head {
    Head {
        position: u64::try_from(slot.get_i64("position").unwrap_or(0)).unwrap_or(0),
        hash: slot
            .get_str("hash")
            .unwrap_or(cryptovault_events::GENESIS_HASH)
            .to_owned(),
    }
}

fn unique(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build(),
        )
        .build()
}

/// `$jsonSchema` that rejects any event document not shaped as the store writes it.
pub fn event_validator() -> Document {
    let nullable_string = doc! { "bsonType": ["string", "null"] };
    let hash = doc! { "bsonType": "string", "pattern": "^[0-9a-f]{64}$" };
    doc! { "$jsonSchema": {
        "bsonType": "object",
        "required": [
            "_id", "stream_id", "stream_version", "position", "event_type", "schema_version",
            "occurred_at", "metadata", "payload", "prev_hash", "hash",
        ],
        "additionalProperties": false,
        "properties": {
            "_id": { "bsonType": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" },
            "stream_id": { "bsonType": "string", "minLength": 1 },
            "stream_version": { "bsonType": "long", "minimum": 1 },
            "position": { "bsonType": "long", "minimum": 1 },
            "event_type": { "bsonType": "string", "minLength": 1 },
            "schema_version": { "bsonType": "long", "minimum": 1 },
            "occurred_at": { "bsonType": "date" },
            "metadata": {
                "bsonType": "object",
                "required": ["request_id", "correlation_id", "causation_id", "actor", "ip", "user_agent"],
                "additionalProperties": false,
                "properties": {
                    "request_id": nullable_string.clone(),
                    "correlation_id": nullable_string.clone(),
                    "causation_id": nullable_string.clone(),
                    "actor": nullable_string.clone(),
                    "ip": nullable_string.clone(),
                    "user_agent": nullable_string,
                },
            },
            "payload": { "bsonType": "object" },
            "prev_hash": hash.clone(),
            "hash": hash,
        },
    }}
}

fn is_namespace_exists(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 48)
}

pub use super::error::is_duplicate_key;
