//! Catch-up subscriptions: every event after a checkpoint, then live events as they commit.

use super::backoff::Backoff;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cryptovault_events::EventEnvelope;
use futures::Stream;
use tokio::sync::watch;

use super::{EventStore, StoreError};

/// How long a missing position is tolerated before the subscription reports a gap. The store
/// never commits a gap, so one that persists means events were removed from the log.
const GAP_GRACE: Duration = Duration::from_secs(2);
/// Longest pause between attempts while MongoDB is unreachable.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

impl EventStore {
    /// Every event with `position > checkpoint`, in position order, without gaps or duplicates:
    /// first the history in batches, then new events as they are committed (woken at once by
    /// appends through this instance, by polling every `poll_interval` for other processes).
    ///
    /// The stream survives MongoDB restarts and failovers: read errors are retried with backoff
    /// from the last delivered position. It ends only after yielding an error that retrying
    /// cannot fix: a malformed event document or a persistent gap in positions.
    pub fn subscribe(
        &self,
        checkpoint: u64,
    ) -> impl Stream<Item = Result<EventEnvelope, StoreError>> + Send + 'static {
        let state = Subscription {
            store: self.clone(),
            head: self.head_watch(),
            next: checkpoint + 1,
            buffer: VecDeque::new(),
            gap_since: None,
            finished: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next_event().await?;
            Some((item, state))
        })
    }
}

struct Subscription {
    store: EventStore,
    head: watch::Receiver<u64>,
    /// Position of the next event to deliver.
    next: u64,
    buffer: VecDeque<EventEnvelope>,
    gap_since: Option<Instant>,
    finished: bool,
}

impl Subscription {
    async fn next_event(&mut self) -> Option<Result<EventEnvelope, StoreError>> {
        let mut reconnect = Backoff::new(Duration::from_millis(100), MAX_RECONNECT_BACKOFF);
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            let batch = self.store.config().read_batch;
            match self.store.read_all(self.next, batch).await {
                Ok(events) if events.is_empty() => {
                    reconnect.reset();
                    self.wait_for_more().await;
                }
                Ok(events) => {
                    reconnect.reset();
                    if let Err(gap) = self.accept(events) {
                        self.finished = true;
                        return Some(Err(gap));
                    }
                }
                Err(StoreError::Mongo(error)) => {
                    metrics::counter!("event_store_subscription_read_errors_total").increment(1);
                    tracing::warn!(%error, next = self.next, "subscription read failed; retrying");
                    reconnect.wait().await;
                }
                Err(other) => {
                    self.finished = true;
                    return Some(Err(other));
                }
            }
        }
    }

    /// Buffers the contiguous run of `events` starting at `self.next`. A missing position is
    /// waited out for [`GAP_GRACE`], then reported.
    fn accept(&mut self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
        for event in events {
            if event.position != self.next {
                let since = *self.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GAP_GRACE {
                    return Err(StoreError::Gap {
                        missing: self.next,
                        found: event.position,
                    });
                }
                break;
            }
            self.gap_since = None;
            self.next += 1;
            self.buffer.push_back(event);
        }
        Ok(())
    }

    async fn wait_for_more(&mut self) {
        let poll = self.store.config().poll_interval;
        if self.gap_since.is_some() || *self.head.borrow_and_update() >= self.next {
            tokio::time::sleep(poll.min(Duration::from_millis(10))).await;
            return;
        }
        if tokio::time::timeout(poll, self.head.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            // The writer is gone (store shutting down): keep polling.
            tokio::time::sleep(poll).await;
        }
    }
}
