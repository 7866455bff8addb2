//! The append request and its outcome: what a caller asks the store to write and what it gets
//! back. Plain data, no I/O.

use std::collections::HashSet;

use cryptovault_events::NewEvent;
use serde::Serialize;
use uuid::Uuid;

/// What the caller believes about a stream's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last event must have exactly this version (1-based; 0 means "no events").
    /// Sound only for a state folded from *committed* events: the event at a committed version
    /// never changes, so the number names it.
    Exact(u64),
    /// The stream's last event must be `event_id`, at `version`. For a decision on a state that
    /// includes events not yet committed (batches queued ahead of it): if one of those fails and
    /// another writer's event takes its version, a bare version number would match that other
    /// event and commit on a state that never existed; the event id does not match.
    Event { version: u64, event_id: Uuid },
    /// The stream must hold fewer than this many events (a bound on how much an account can be
    /// credited; checked atomically like any expectation).
    FewerThan(u64),
}

/// The current state of a stream as far as expectations go: its version and last event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTip {
    /// Version of the last event (0: no events).
    pub version: u64,
    /// Id of the event at `version` (`None` when the stream is empty).
    pub last_event: Option<Uuid>,
}

impl ExpectedVersion {
    /// Whether a stream whose current state is `actual` satisfies this expectation.
    pub fn admits(self, actual: StreamTip) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual.version == 0,
            Self::Exact(version) => version == actual.version,
            Self::Event { version, event_id } => {
                version == actual.version && actual.last_event == Some(event_id)
            }
            Self::FewerThan(limit) => actual.version < limit,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "{version}"),
            Self::Event { version, event_id } => write!(f, "{version} (event {event_id})"),
            Self::FewerThan(limit) => write!(f, "fewer than {limit} events"),
        }
    }
}

/// Events for one stream within an append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// One atomic append: every event of every stream is written, or none is.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    pub streams: Vec<StreamAppend>,
}

impl AppendBatch {
    /// A batch writing `events` to one stream.
    pub fn single(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        Self::default().with(stream_id, expected, events)
    }

    /// Adds the events of another stream to this batch.
    pub fn with(
        mut self,
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        self.streams.push(StreamAppend {
            stream_id: stream_id.into(),
            expected,
            events,
        });
        self
    }

    /// Number of events in the batch.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// Rejects batches the store must never see: empty, a stream named twice, a stream or event
    /// type without a name, an event id used twice, a payload that is not a JSON object.
    pub fn validate(&self) -> Result<(), String> {
        if self.event_count() == 0 {
            return Err("an append needs at least one event".into());
        }
        let mut streams = HashSet::new();
        let mut ids = HashSet::new();
        for stream in &self.streams {
            if stream.stream_id.is_empty() {
                return Err("stream_id must not be empty".into());
            }
            if !streams.insert(stream.stream_id.as_str()) {
                return Err(format!(
                    "stream {} appears twice in one append",
                    stream.stream_id
                ));
            }
            for event in &stream.events {
                if event.event_type.is_empty() {
                    return Err(format!("event {} has an empty event_type", event.event_id));
                }
                if !event.payload.is_object() {
                    return Err(format!(
                        "event {} payload must be a JSON object",
                        event.event_id
                    ));
                }
                if !ids.insert(event.event_id) {
                    return Err(format!(
                        "event id {} appears twice in one append",
                        event.event_id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where one event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: u64,
    pub position: u64,
}

/// The outcome of a successful append, in the order the events were submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendResult {
    pub events: Vec<AppendedEvent>,
    /// True when every event already existed: this call was a retry and wrote nothing.
    pub already_appended: bool,
}

impl AppendResult {
    /// The highest position written by this append; a reader that has seen it has seen all of
    /// this append.
    pub fn last_position(&self) -> u64 {
        self.events.iter().map(|e| e.position).max().unwrap_or(0)
    }
}
