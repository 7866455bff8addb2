//! The group-commit writer: one task per store instance that turns many concurrent appends into
//! few MongoDB transactions, and overlaps consecutive transactions.
//!
//! Callers send their batch over a channel and wait on a oneshot. The task takes the first
//! waiting batch plus everything queued behind it (up to [`StoreConfig::max_group_events`]) and
//! commits them in one transaction (`readConcern: snapshot`, `w: majority, j: true`).
//!
//! **Positions are the claim.** Every group inserts its events at the positions right after the
//! head it planned on, and `position_unique` admits one event per position: two transactions
//! that planned on the same head both insert that head's next position, so the second gets a
//! `WriteConflict` (or, once the first committed, a duplicate key) and reruns. A group can only
//! commit positions N+1… after the group holding N committed, so the log stays gapless and in
//! commit order. Each group also records its new head (`position`, `hash`) in one of
//! [`HEAD_SLOTS`], alternately; the head of the log is the slot with the highest position. The
//! slots anchor the chain's tail for `verify`, and the full path continues the log from them.
//!
//! **Full path** (no cached state, or after a failure): read the head from the slots and the
//! touched streams' versions (cache, misses from `events`), [`plan_group`] (pure); a refused
//! batch is confirmed against the database first (fresh versions and an id lookup); insert,
//! write a head slot, commit.
//!
//! **Fast path, pipelined:** when the writer knows the head its previous group leaves and the
//! versions of every touched stream (its own commits), it plans a group *while the previous
//! group's commit is still running*, opens a second transaction and inserts, then waits for the
//! previous commit before starting its own. So the next group's insert overlaps the previous
//! group's journal flush, and each commit starts only after the one before it was acknowledged.
//! If a commit fails, every transaction behind it aborts and all those groups are rerun on the
//! full path, in order. If the insert collides (another process appended: its positions or
//! stream versions are taken), the group is rerun on the full path.
//!
//! The cache and the skipped id lookup are safe because the unique indexes back them: an event
//! id that exists, or a stream version another process took, fails the insert with a duplicate
//! key; the transaction is then rerun in *thorough* mode, which reads everything from the
//! database. A group that accepts nothing is aborted, so refused batches write nothing at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::Document;
use mongodb::{Client, ClientSession, Collection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::append::{AppendBatch, AppendResult, StreamTip};
use super::document::to_document;
use super::error::{AppendError, StoreError};
use super::plan::{plan_group, GroupPlan, Head, StoredState};
use super::schema::{is_duplicate_key, HEAD_SLOTS};
use super::sealed_feed::SealedFeed;
use super::stored_state::{read_head, read_stored_state};
pub use super::transaction::durable_write_concern;
use super::transaction::{
    backoff, commit, discard, is_retryable, open, pipelined_transaction, Target, TaskOutcome,
};
use super::writer_sessions::WriterSessions;
use super::StoreConfig;
use crate::telemetry::warn_if_slow;

/// A group commit slower than this is logged as a warning (a healthy one takes milliseconds).
const SLOW_GROUP_COMMIT: Duration = Duration::from_secs(1);

/// A batch waiting for the writer, with the channel its outcome goes back on.
pub struct PendingAppend {
    pub batch: AppendBatch,
    pub reply: oneshot::Sender<Result<AppendResult, AppendError>>,
}

type Reply = oneshot::Sender<Result<AppendResult, AppendError>>;
type Outcomes = Vec<Result<AppendResult, AppendError>>;

/// Scheduler turns the writer waits for more callers when its group is smaller than the last.
const LINGER_YIELDS: u32 = 8;

/// Most stream versions the writer remembers; beyond it the cache starts afresh.
const VERSION_CACHE_LIMIT: usize = 200_000;

/// Batches taken together into one transaction, and where their answers go.
struct Group {
    batches: Vec<AppendBatch>,
    replies: Vec<Reply>,
    events: usize,
    started: Instant,
}

/// A pipelined group: its transaction task inserts, waits for the group before it to commit,
/// then commits.
struct InFlight {
    group: Group,
    plan: GroupPlan,
    task: JoinHandle<TaskOutcome>,
}

pub struct Writer {
    client: Client,
    events: Collection<Document>,
    meta: Collection<Document>,
    config: StoreConfig,
    head_tx: watch::Sender<u64>,
    /// Version and last event of streams as this writer's last planned group leaves them.
    /// Possibly stale when other processes append to the same streams; see the module docs for
    /// why that is safe.
    versions: HashMap<String, StreamTip>,
    /// The head as this writer's last planned group leaves it (`None` when unknown: at start,
    /// after any failure). Stale when another process appended since; the insert detects it.
    head: Option<Head>,
    /// Sessions not in use (one per pipelined transaction is).
    idle_sessions: Vec<ClientSession>,
    /// Which of [`HEAD_SLOTS`] the next transaction writes.
    next_slot: usize,
    /// Resolves to whether the last pipelined transaction committed; the next one waits for it.
    chain: Option<oneshot::Receiver<bool>>,
    /// Registers the sessions this writer runs transactions on; ends those of dead writers.
    sessions: WriterSessions,
    /// Where acknowledged commits' links go, for this process's notary.
    sealed: Arc<SealedFeed>,
}

impl Writer {
    pub fn new(
        client: Client,
        events: Collection<Document>,
        meta: Collection<Document>,
        config: StoreConfig,
        head_tx: watch::Sender<u64>,
        sealed: Arc<SealedFeed>,
    ) -> Self {
        let sessions = WriterSessions::new(&client, &meta.namespace().db);
        Self {
            client,
            events,
            meta,
            config,
            head_tx,
            versions: HashMap::new(),
            head: None,
            idle_sessions: Vec::new(),
            next_slot: 0,
            chain: None,
            sessions,
            sealed,
        }
    }

    /// Runs until every sender of `rx` is dropped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<PendingAppend>) {
        let depth = self.config.pipeline_depth.clamp(1, HEAD_SLOTS.len());
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut last_group_len = 0;
        loop {
            // Answer the oldest transaction as soon as it ends; start the next group while
            // the pipeline has room.
            let full = in_flight.len() >= depth;
            let next = match in_flight.front_mut() {
                Some(oldest) if full => Err((&mut oldest.task).await),
                Some(oldest) => tokio::select! {
                    biased;
                    done = &mut oldest.task => Err(done),
                    next = rx.recv() => Ok(next),
                },
                None => Ok(rx.recv().await),
            };
            match next {
                Err(done) => {
                    let oldest = in_flight.pop_front().expect("awaited above");
                    self.settle(oldest, done, &mut in_flight).await;
                }
                Ok(None) => break,
                Ok(Some(first)) => {
                    let group = self.gather(first, &mut rx, &mut last_group_len).await;
                    self.start(group, &mut in_flight).await;
                }
            }
        }
        self.drain(&mut in_flight).await;
        self.sessions.deregister().await;
    }

    /// The first batch plus everything queued behind it, up to the group limit.
    async fn gather(
        &self,
        first: PendingAppend,
        rx: &mut mpsc::Receiver<PendingAppend>,
        last_group_len: &mut usize,
    ) -> Group {
        let mut events = first.batch.event_count();
        let mut pending = vec![first];
        let mut lingered = 0;
        while events < self.config.max_group_events {
            match rx.try_recv() {
                Ok(next) => {
                    events += next.batch.event_count();
                    pending.push(next);
                }
                // Callers answered by the previous group are usually about to send again:
                // give them a few scheduler turns, so the group does not split in halves.
                Err(_) if pending.len() < *last_group_len && lingered < LINGER_YIELDS => {
                    lingered += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        *last_group_len = pending.len();
        let (batches, replies) = pending.into_iter().map(|p| (p.batch, p.reply)).unzip();
        Group {
            batches,
            replies,
            events,
            started: Instant::now(),
        }
    }

    /// Starts `group`: on the fast path its transaction joins the pipeline; otherwise the
    /// pipeline is drained and the group committed and answered here.
    async fn start(&mut self, group: Group, in_flight: &mut VecDeque<InFlight>) {
        let Some((plan, documents, session)) = self.prepare_pipelined(&group).await else {
            // The full path decides (or reports the error, or succeeds once MongoDB is back).
            self.drain(in_flight).await;
            self.commit_serially(group).await;
            return;
        };
        let (committed, next_chain) = oneshot::channel();
        let task = tokio::spawn(pipelined_transaction(
            self.target(),
            session,
            documents,
            plan.head.clone(),
            self.chain.replace(next_chain),
            committed,
        ));
        self.assume(&plan);
        in_flight.push_back(InFlight { group, plan, task });
    }

    /// A group's plan from the cache, its documents and a session — or `None` when the group
    /// has to take the full path.
    async fn prepare_pipelined(
        &mut self,
        group: &Group,
    ) -> Option<(GroupPlan, Vec<Document>, ClientSession)> {
        let plan = self.plan_from_cache(&group.batches)?;
        let documents = plan
            .envelopes
            .iter()
            .map(to_document)
            .collect::<Result<_, _>>()
            .ok()?;
        let session = self.session().await.ok()?;
        Some((plan, documents, session))
    }

    /// Settles every pipelined transaction, oldest first.
    async fn drain(&mut self, in_flight: &mut VecDeque<InFlight>) {
        while let Some(mut oldest) = in_flight.pop_front() {
            let done = (&mut oldest.task).await;
            self.settle(oldest, done, in_flight).await;
        }
    }

    /// Answers the oldest pipelined group once its transaction ended. When it failed, every
    /// later one failed too (each commits only after the one before it did): the writer forgets
    /// what it assumed and reruns them all, in order, on the full path.
    async fn settle(
        &mut self,
        oldest: InFlight,
        done: Result<TaskOutcome, tokio::task::JoinError>,
        in_flight: &mut VecDeque<InFlight>,
    ) {
        let error = match done {
            Ok((session, Ok(()))) => return self.committed(session, oldest),
            Ok((session, Err(error))) => {
                self.idle_sessions.push(session);
                if matches!(&error, StoreError::Mongo(e) if is_duplicate_key(e)) {
                    // Another process appended (or an id exists): the cached state was stale.
                    metrics::counter!("event_store_stale_head_total").increment(1);
                }
                error.to_string()
            }
            Err(join) => join.to_string(),
        };
        tracing::debug!(%error, "pipelined transaction failed; rerunning on the full path");
        metrics::counter!("event_store_transaction_retries_total").increment(1);
        self.head = None;
        self.versions.clear();
        self.chain = None;
        let mut rerun = vec![oldest.group];
        while let Some(mut later) = in_flight.pop_front() {
            match (&mut later.task).await {
                // Cannot happen (it waited for the failed one); answer it if it does.
                Ok((session, Ok(()))) => self.committed(session, later),
                Ok((session, Err(_))) => {
                    self.idle_sessions.push(session);
                    rerun.push(later.group);
                }
                Err(_) => rerun.push(later.group),
            }
        }
        for group in rerun {
            self.commit_serially(group).await;
        }
    }

    /// A pipelined group committed: its session is free again, its events are published and
    /// its callers answered.
    fn committed(&mut self, session: ClientSession, flight: InFlight) {
        self.idle_sessions.push(session);
        self.publish(&flight.plan);
        self.answer(flight.group, Ok(flight.plan.outcomes));
    }

    /// Commits a group on its own (with retries) and answers it.
    async fn commit_serially(&mut self, group: Group) {
        let outcome = self.commit_with_retries(&group.batches).await;
        self.answer(group, outcome);
    }

    fn answer(&self, group: Group, outcome: Result<Outcomes, StoreError>) {
        let took = group.started.elapsed();
        metrics::histogram!("event_store_group_commit_seconds").record(took.as_secs_f64());
        metrics::histogram!("event_store_group_events").record(group.events as f64);
        if took > SLOW_GROUP_COMMIT {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                events = group.events,
                batches = group.batches.len(),
                "slow group commit"
            );
        }
        match outcome {
            Ok(outcomes) => {
                for (reply, result) in group.replies.into_iter().zip(outcomes) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                let message = error.to_string();
                let passing = error.is_unavailable();
                tracing::error!(error = %message, passing, batches = group.batches.len(), "group commit failed");
                for reply in group.replies {
                    let error = if passing {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::CommitFailed(message.clone())
                    };
                    let _ = reply.send(Err(AppendError::Store(error)));
                }
            }
        }
    }

    async fn session(&mut self) -> Result<ClientSession, StoreError> {
        match self.idle_sessions.pop() {
            Some(session) => Ok(session),
            None => {
                let session =
                    warn_if_slow("writer: start a session", self.client.start_session()).await?;
                self.sessions.register(&session).await;
                Ok(session)
            }
        }
    }

    async fn commit_with_retries(
        &mut self,
        batches: &[AppendBatch],
    ) -> Result<Outcomes, StoreError> {
        let started = Instant::now();
        let deadline = started + self.config.append_timeout;
        let mut attempt: u32 = 0;
        let mut thorough = false;
        loop {
            attempt += 1;
            let mut session = self.session().await?;
            let fast = if thorough {
                None
            } else {
                self.plan_from_cache(batches)
            };
            let tried_fast = fast.is_some();
            let result = match fast {
                Some(plan) => {
                    warn_if_slow(
                        "writer: one commit attempt",
                        self.commit_planned(&mut session, plan),
                    )
                    .await
                }
                None => {
                    warn_if_slow(
                        "writer: one commit attempt",
                        self.commit_group(&mut session, batches, thorough),
                    )
                    .await
                }
            };
            match result {
                Ok(plan) => {
                    self.idle_sessions.push(session);
                    self.assume(&plan);
                    self.publish(&plan);
                    return Ok(plan.outcomes);
                }
                Err(error) => {
                    discard(&mut session, &self.meta).await;
                    self.idle_sessions.push(session);
                    // A dead writer's open transaction may be what keeps failing this group.
                    self.sessions.note_failure(started.elapsed());
                    // The commit may or may not have happened: read the head next time.
                    self.head = None;
                    metrics::counter!("event_store_transaction_retries_total").increment(1);
                    if matches!(&error, StoreError::Mongo(e) if is_duplicate_key(e)) {
                        if tried_fast {
                            metrics::counter!("event_store_stale_head_total").increment(1);
                        }
                        // An id exists or a cached version is stale: read everything next time.
                        thorough = true;
                        for batch in batches {
                            for stream in &batch.streams {
                                self.versions.remove(&stream.stream_id);
                            }
                        }
                    }
                    let retryable = is_retryable(&error);
                    tracing::debug!(attempt, %error, retryable, "group commit attempt failed");
                    if !retryable || Instant::now() >= deadline {
                        return Err(match error {
                            StoreError::Mongo(e) if retryable => StoreError::RetriesExhausted {
                                attempts: attempt,
                                last: e.to_string(),
                            },
                            other => other,
                        });
                    }
                    // A failed fast attempt goes straight on with the full path, which reads
                    // what the cache got wrong (usually another process's appends); a failed
                    // full-path attempt backs off.
                    if !tried_fast {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
            }
        }
    }

    /// The state after `plan` becomes the base the next group is planned on.
    fn assume(&mut self, plan: &GroupPlan) {
        if plan.envelopes.is_empty() {
            return;
        }
        self.head = Some(plan.head.clone());
        if self.versions.len() + plan.stream_versions.len() > VERSION_CACHE_LIMIT {
            self.versions.clear();
        }
        for (stream, tip) in &plan.stream_versions {
            self.versions.insert(stream.clone(), *tip);
        }
    }

    /// After an acknowledged commit: hand its links to the notary and tell this instance's
    /// subscribers about the new head.
    fn publish(&self, plan: &GroupPlan) {
        let Some(position) = plan.envelopes.last().map(|e| e.position) else {
            return;
        };
        self.sealed.publish(&plan.envelopes);
        self.head_tx.send_if_modified(|head| {
            let advanced = position > *head;
            if advanced {
                *head = position;
            }
            advanced
        });
        metrics::counter!("event_store_events_appended_total")
            .increment(plan.envelopes.len() as u64);
    }

    /// The full path: one transaction reading the head and the stored state. On success the
    /// outcomes are final.
    async fn commit_group(
        &mut self,
        s: &mut ClientSession,
        batches: &[AppendBatch],
        thorough: bool,
    ) -> Result<GroupPlan, StoreError> {
        open(s).await?;
        let head = read_head(&self.meta, s).await?;
        let stored = read_stored_state(&self.events, &self.versions, s, batches, thorough).await?;
        let mut plan = plan_group(head.clone(), stored, batches);
        if !thorough && plan.outcomes.iter().any(Result::is_err) {
            // Confirm refusals against the database before reporting them.
            let stored = read_stored_state(&self.events, &self.versions, s, batches, true).await?;
            plan = plan_group(head, stored, batches);
        }
        if plan.envelopes.is_empty() {
            s.abort_transaction().await?;
            return Ok(plan);
        }
        self.write(s, &plan).await?;
        commit(s).await?;
        Ok(plan)
    }

    /// A group planned from the cache, committed on its own.
    async fn commit_planned(
        &mut self,
        s: &mut ClientSession,
        plan: GroupPlan,
    ) -> Result<GroupPlan, StoreError> {
        open(s).await?;
        self.write(s, &plan).await?;
        commit(s).await?;
        Ok(plan)
    }

    /// The fast path's plan: `Some` when the head and every touched stream's version are known
    /// from this writer's own groups and every batch is accepted on them (a refusal is
    /// confirmed against the database, on the full path).
    fn plan_from_cache(&self, batches: &[AppendBatch]) -> Option<GroupPlan> {
        let head = self.head.clone()?;
        let mut stored = StoredState::default();
        for stream in batches.iter().flat_map(|b| b.streams.iter()) {
            let tip = *self.versions.get(&stream.stream_id)?;
            stored.versions.insert(stream.stream_id.clone(), tip);
        }
        let plan = plan_group(head, stored, batches);
        (!plan.envelopes.is_empty() && plan.outcomes.iter().all(Result::is_ok)).then_some(plan)
    }

    /// Inserts the plan's sealed events and records its head in the next head slot.
    async fn write(&mut self, s: &mut ClientSession, plan: &GroupPlan) -> Result<(), StoreError> {
        let documents = plan
            .envelopes
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        self.target().write(s, documents, &plan.head).await
    }

    /// Where the next transaction writes. Consecutive transactions take different head slots,
    /// so the pipeline's overlapping transactions never write the same document.
    fn target(&mut self) -> Target {
        let slot = HEAD_SLOTS[self.next_slot];
        self.next_slot = (self.next_slot + 1) % HEAD_SLOTS.len();
        Target {
            events: self.events.clone(),
            meta: self.meta.clone(),
            slot,
        }
    }
}
