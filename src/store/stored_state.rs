//! What the full path reads inside its transaction's snapshot before planning: the head (from
//! the head slots), the touched streams' versions and the stored events among the submitted ids.

use std::collections::HashMap;

use bson::{doc, Bson, Document};
use mongodb::{ClientSession, Collection};
use uuid::Uuid;

use super::append::{AppendBatch, AppendedEvent, StreamTip};
use super::error::StoreError;
use super::plan::{Head, StoredState};
use super::schema::{head_of_slots, HEAD_SLOTS};

/// The head of the log as this transaction's snapshot sees it: the highest head slot.
pub async fn read_head(
    meta: &Collection<Document>,
    s: &mut ClientSession,
) -> Result<Head, StoreError> {
    let mut cursor = meta
        .find(doc! { "_id": { "$in": HEAD_SLOTS.to_vec() } })
        .session(&mut *s)
        .await?;
    let mut slots = Vec::with_capacity(HEAD_SLOTS.len());
    while let Some(slot) = cursor.next(&mut *s).await {
        slots.push(slot?);
    }
    head_of_slots(&slots)
}

/// Stream tips — version and last event id — (cached unless `from_database`) and, when
/// `from_database`, the stored events among the submitted ids.
pub async fn read_stored_state(
    events: &Collection<Document>,
    cached_versions: &HashMap<String, StreamTip>,
    s: &mut ClientSession,
    batches: &[AppendBatch],
    from_database: bool,
) -> Result<StoredState, StoreError> {
    let mut stored = StoredState::default();
    let mut misses = Vec::new();
    for stream in batches.iter().flat_map(|b| b.streams.iter()) {
        match cached_versions.get(&stream.stream_id) {
            Some(tip) if !from_database => {
                stored.versions.insert(stream.stream_id.clone(), *tip);
            }
            _ => misses.push(Bson::String(stream.stream_id.clone())),
        }
    }
    if !misses.is_empty() {
        // The index on (stream_id, stream_version) turns sort + $first into a scan of one
        // index key (and one document, for the last event's id) per stream.
        let mut cursor = events
            .aggregate([
                doc! { "$match": { "stream_id": { "$in": misses } } },
                doc! { "$sort": { "stream_id": 1, "stream_version": -1 } },
                doc! { "$group": {
                    "_id": "$stream_id",
                    "version": { "$first": "$stream_version" },
                    "last_event": { "$first": "$_id" },
                } },
            ])
            .session(&mut *s)
            .await?;
        while let Some(found) = cursor.next(&mut *s).await {
            let found = found?;
            let (Ok(id), Ok(version)) = (found.get_str("_id"), found.get_i64("version")) else {
                continue;
            };
            let last_event = found
                .get_str("last_event")
                .ok()
                .and_then(|e| Uuid::parse_str(e).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    id: id.to_owned(),
                    reason: "the stream's last event id is not a UUID string".into(),
                })?;
            stored.versions.insert(
                id.to_owned(),
                StreamTip {
                    version: u64::try_from(version).unwrap_or(0),
                    last_event: Some(last_event),
                },
            );
        }
    }
    if from_database {
        let ids: Vec<Bson> = batches
            .iter()
            .flat_map(|b| b.streams.iter())
            .flat_map(|st| st.events.iter())
            .map(|e| Bson::String(e.event_id.to_string()))
            .collect();
        let mut cursor = events
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "stream_id": 1, "stream_version": 1, "position": 1 })
            .session(&mut *s)
            .await?;
        while let Some(found) = cursor.next(&mut *s).await {
            let placed = placed_event(&found?)?;
            stored.existing.insert(placed.event_id, placed);
        }
    }
    Ok(stored)
}

fn placed_event(found: &Document) -> Result<AppendedEvent, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        id: found.get("_id").map(|v| v.to_string()).unwrap_or_default(),
        reason: reason.into(),
    };
    let event_id = found
        .get_str("_id")
        .ok()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| corrupt("_id is not a UUID string"))?;
    let number = |name: &str| {
        found
            .get_i64(name)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt(name))
    };
    Ok(AppendedEvent {
        event_id,
        stream_id: found
            .get_str("stream_id")
            .map_err(|_| corrupt("stream_id"))?
            .to_owned(),
        stream_version: number("stream_version")?,
        position: number("position")?,
    })
}
