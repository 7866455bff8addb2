//! Deciding a group of appends against the current state of the log, without I/O.
//!
//! The writer reads the head, the versions of the touched streams and the already-stored events
//! among the submitted ids inside a transaction, then calls [`plan_group`]; the result says what
//! to insert and what to answer each caller. Keeping this pure lets the rules (optimistic
//! concurrency, idempotent retry, gapless positions, hash chaining) be tested without MongoDB.

use std::collections::{BTreeMap, HashMap};

use cryptovault_events::EventEnvelope;
use uuid::Uuid;

use super::append::{AppendBatch, AppendResult, AppendedEvent, StreamTip};
use super::error::AppendError;

/// The last event of the log: position 0 and the genesis hash when the log is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: String,
}

/// What the store already holds that matters to a group of appends.
#[derive(Debug, Default)]
pub struct StoredState {
    /// Stored events among the submitted ids.
    pub existing: HashMap<Uuid, AppendedEvent>,
    /// Current version and last event of each touched stream; absent means no events.
    pub versions: HashMap<String, StreamTip>,
}

/// What to write and what to answer.
#[derive(Debug)]
pub struct GroupPlan {
    /// One outcome per submitted batch, in submission order.
    pub outcomes: Vec<Result<AppendResult, AppendError>>,
    /// Sealed events to insert, in position order, continuing the chain from the old head.
    pub envelopes: Vec<EventEnvelope>,
    /// New version and last event of every stream that receives events.
    pub stream_versions: BTreeMap<String, StreamTip>,
    /// The head after the inserts.
    pub head: Head,
}

/// Decides every batch in order. A batch is accepted only if none of its events exists and all
/// its expectations hold against the state left by the batches accepted before it; batches that
/// are complete retries get their original placement back; everything else is refused whole.
pub fn plan_group(head: Head, stored: StoredState, batches: &[AppendBatch]) -> GroupPlan {
    let StoredState {
        mut existing,
        mut versions,
    } = stored;
    let mut plan = GroupPlan {
        outcomes: Vec::with_capacity(batches.len()),
        envelopes: Vec::new(),
        stream_versions: BTreeMap::new(),
        head,
    };
    for batch in batches {
        let outcome = plan_batch(batch, &mut existing, &mut versions, &mut plan);
        plan.outcomes.push(outcome);
    }
    plan
}

fn plan_batch(
    batch: &AppendBatch,
    existing: &mut HashMap<Uuid, AppendedEvent>,
    versions: &mut HashMap<String, StreamTip>,
    plan: &mut GroupPlan,
) -> Result<AppendResult, AppendError> {
    if let Some(result) = already_appended(batch, existing)? {
        return Ok(result);
    }
    for stream in &batch.streams {
        let actual = versions.get(&stream.stream_id).copied().unwrap_or_default();
        if !stream.expected.admits(actual) {
            return Err(AppendError::Conflict {
                stream_id: stream.stream_id.clone(),
                expected: stream.expected,
                actual: actual.version,
            });
        }
    }
    let mut appended = Vec::with_capacity(batch.event_count());
    for stream in &batch.streams {
        let tip = versions.entry(stream.stream_id.clone()).or_default();
        for event in &stream.events {
            tip.version += 1;
            tip.last_event = Some(event.event_id);
            plan.head.position += 1;
            let envelope = EventEnvelope::seal(
                event.clone(),
                stream.stream_id.clone(),
                tip.version,
                plan.head.position,
                std::mem::take(&mut plan.head.hash),
            );
            plan.head.hash.clone_from(&envelope.hash);
            let placed = AppendedEvent {
                event_id: envelope.event_id,
                stream_id: envelope.stream_id.clone(),
                stream_version: envelope.stream_version,
                position: envelope.position,
            };
            existing.insert(placed.event_id, placed.clone());
            appended.push(placed);
            plan.envelopes.push(envelope);
        }
        plan.stream_versions.insert(stream.stream_id.clone(), *tip);
    }
    Ok(AppendResult {
        events: appended,
        already_appended: false,
    })
}

/// `Some` when every event of the batch is stored in the stream it names (a retry); an error
/// when only some are, or one sits in another stream; `None` when none is stored.
fn already_appended(
    batch: &AppendBatch,
    existing: &HashMap<Uuid, AppendedEvent>,
) -> Result<Option<AppendResult>, AppendError> {
    let mut found = Vec::new();
    let mut missing = false;
    for stream in &batch.streams {
        for event in &stream.events {
            match existing.get(&event.event_id) {
                Some(placed) if placed.stream_id == stream.stream_id => found.push(placed.clone()),
                Some(_) => {
                    return Err(AppendError::IdempotencyMismatch {
                        event_id: event.event_id,
                    })
                }
                None => missing = true,
            }
        }
    }
    match (found.first(), missing) {
        (None, _) => Ok(None),
        (Some(first), true) => Err(AppendError::IdempotencyMismatch {
            event_id: first.event_id,
        }),
        (Some(_), false) => Ok(Some(AppendResult {
            events: found,
            already_appended: true,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::append::ExpectedVersion;
    use cryptovault_events::{ChainVerifier, EventMetadata, NewEvent, GENESIS_HASH};
    use serde_json::json;

    fn event() -> NewEvent {
        NewEvent::new(
            uuid::Uuid::now_v7(),
            "Tested",
            1,
            chrono::Utc::now(),
            EventMetadata::default(),
            json!({"n": 1}),
        )
    }

    fn empty_head() -> Head {
        Head {
            position: 0,
            hash: GENESIS_HASH.into(),
        }
    }

    #[test]
    fn second_batch_expecting_the_same_version_conflicts() {
        let a = AppendBatch::single("s", ExpectedVersion::NoStream, vec![event()]);
        let b = AppendBatch::single("s", ExpectedVersion::NoStream, vec![event()]);
        let plan = plan_group(empty_head(), StoredState::default(), &[a, b]);
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::Conflict { actual: 1, .. })
        ));
        assert_eq!(plan.envelopes.len(), 1);
        assert_eq!(plan.head.position, 1);
    }

    #[test]
    fn a_batch_with_one_bad_stream_writes_nothing() {
        let batch = AppendBatch::single("a", ExpectedVersion::NoStream, vec![event()]).with(
            "b",
            ExpectedVersion::Exact(3),
            vec![event()],
        );
        let plan = plan_group(empty_head(), StoredState::default(), &[batch]);
        assert!(plan.outcomes[0].is_err());
        assert!(plan.envelopes.is_empty());
        assert!(plan.stream_versions.is_empty());
        assert_eq!(plan.head, empty_head());
    }

    #[test]
    fn a_retry_in_the_same_group_returns_the_first_placement() {
        let batch = AppendBatch::single("s", ExpectedVersion::Any, vec![event(), event()]);
        let plan = plan_group(
            empty_head(),
            StoredState::default(),
            &[batch.clone(), batch],
        );
        let first = plan.outcomes[0].as_ref().unwrap();
        let retry = plan.outcomes[1].as_ref().unwrap();
        assert_eq!(first.events, retry.events);
        assert!(retry.already_appended);
        assert_eq!(plan.envelopes.len(), 2);
    }

    #[test]
    fn partial_overlap_is_an_idempotency_mismatch() {
        let e1 = event();
        let first = AppendBatch::single("s", ExpectedVersion::Any, vec![e1.clone()]);
        let second = AppendBatch::single("s", ExpectedVersion::Any, vec![e1, event()]);
        let plan = plan_group(empty_head(), StoredState::default(), &[first, second]);
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::IdempotencyMismatch { .. })
        ));
    }

    #[test]
    fn planned_envelopes_continue_the_chain_from_the_head() {
        let mut verifier = ChainVerifier::default();
        let mut head = empty_head();
        for round in 0..3u64 {
            let batches: Vec<_> = (0..4)
                .map(|i| {
                    AppendBatch::single(
                        format!("s{i}"),
                        ExpectedVersion::Exact(round),
                        vec![event()],
                    )
                })
                .collect();
            let versions = (0..4)
                .map(|i| {
                    let tip = StreamTip {
                        version: round,
                        last_event: (round > 0).then(Uuid::now_v7),
                    };
                    (format!("s{i}"), tip)
                })
                .collect();
            let plan = plan_group(
                head.clone(),
                StoredState {
                    existing: HashMap::new(),
                    versions,
                },
                &batches,
            );
            assert!(plan.outcomes.iter().all(Result::is_ok));
            for envelope in &plan.envelopes {
                verifier.push(envelope).unwrap();
            }
            head = plan.head;
        }
        assert_eq!(verifier.verified(), 12);
        verifier.finish(head.position, &head.hash).unwrap();
    }

    /// The cross-instance double spend: this process queued `first` (expecting version 1) and
    /// decided `second` on the state `first` leaves, expecting version 2. Another process's
    /// event took version 2 meanwhile. `first` conflicts; `second` must not commit on a state
    /// that never existed — with a bare version number it did.
    #[test]
    fn a_batch_decided_behind_a_failed_one_does_not_match_another_writers_event() {
        let mine = event();
        let first = AppendBatch::single(
            "account",
            ExpectedVersion::Event {
                version: 1,
                event_id: Uuid::from_u128(1),
            },
            vec![mine.clone()],
        );
        let second = AppendBatch::single(
            "account",
            ExpectedVersion::Event {
                version: 2,
                event_id: mine.event_id,
            },
            vec![event()],
        );
        let others = StreamTip {
            version: 2,
            last_event: Some(Uuid::from_u128(2)),
        };
        let stored = StoredState {
            existing: HashMap::new(),
            versions: HashMap::from([("account".to_owned(), others)]),
        };
        let plan = plan_group(empty_head(), stored, &[first.clone(), second.clone()]);
        assert!(
            plan.outcomes.iter().all(Result::is_err),
            "{:?}",
            plan.outcomes
        );
        assert!(plan.envelopes.is_empty());

        // When `first` is in the log, `second` commits behind it, also in the same group.
        let stored = StoredState {
            existing: HashMap::new(),
            versions: HashMap::from([(
                "account".to_owned(),
                StreamTip {
                    version: 1,
                    last_event: Some(Uuid::from_u128(1)),
                },
            )]),
        };
        let plan = plan_group(empty_head(), stored, &[first, second]);
        assert!(
            plan.outcomes.iter().all(Result::is_ok),
            "{:?}",
            plan.outcomes
        );
        assert_eq!(plan.stream_versions["account"].version, 3);
    }

    #[test]
    fn fewer_than_bounds_a_stream() {
        let batch = |limit| {
            AppendBatch::single("credits", ExpectedVersion::FewerThan(limit), vec![event()])
        };
        let plan = plan_group(
            empty_head(),
            StoredState::default(),
            &[batch(2), batch(2), batch(2)],
        );
        assert!(plan.outcomes[0].is_ok() && plan.outcomes[1].is_ok());
        assert!(matches!(
            plan.outcomes[2],
            Err(AppendError::Conflict { actual: 2, .. })
        ));
    }
}
