//! One batch on its way to the store: the transaction with its bounded retries, and the answer
//! to every submission in it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuota_engine::EventId;
use kuota_engine::store::{StoreError, Submission};

use crate::store::{
    BatchItem, BatchReport, CommittedCreation, CommittedCreations, CreationFeed, FailureKind, PersistError,
    SqlStore,
};
use crate::write_behind::WriteBehindConfig;
use crate::write_behind::stats::Shared;

/// How a batch ended, for the dispatcher: which events it may now hand to the next batch,
/// which (event, epoch) pairs failed (and poison their later submissions), and what the store's
/// health looked like.
#[derive(Debug)]
pub(super) struct CommitOutcome {
    /// The batch's number, given by the dispatcher.
    pub batch: u64,
    pub events: Vec<EventId>,
    pub failed_pairs: Vec<(EventId, u64)>,
    /// The store failed (not the data): counts toward the breaker.
    pub store_failed: bool,
    /// A transaction committed: the store works.
    pub store_worked: bool,
}

/// Commits `submissions` (one batch; an event in it is in no other running batch, or in one
/// that has written its rows) and answers each of them. `written` is called when the batch's
/// rows are written, before its commit (see `SqlStore::commit_batch_signalling`), once per
/// attempt that gets that far. The creations of the submissions answered as committed go to
/// `feed`.
pub(super) async fn commit(
    store: SqlStore,
    config: WriteBehindConfig,
    shared: Arc<Shared>,
    feed: Option<CreationFeed>,
    submissions: Vec<Submission>,
    batch: u64,
    mut written: impl FnMut(),
) -> CommitOutcome {
    let mut events: Vec<EventId> = submissions.iter().map(|submission| submission.event.clone()).collect();
    events.sort_unstable();
    events.dedup();
    let mut outcome =
        CommitOutcome { batch, events, failed_pairs: Vec::new(), store_failed: false, store_worked: false };
    let feed = feed.as_ref();
    match attempt(&store, &config, &shared, &submissions, &mut written).await {
        Ok(report) => answer(&shared, feed, submissions, &report, &mut outcome),
        Err(error) if error.failure_kind() == FailureKind::Data && outcome.events.len() > 1 => {
            // One event's effects broke a rule of the database. Commit each event on its own,
            // so that the others are not failed with it.
            tracing::warn!(error = %error.chain(), "a batch broke a rule of the database; committing its events one by one");
            for group in split_by_event(submissions) {
                match attempt(&store, &config, &shared, &group, &mut written).await {
                    Ok(report) => answer(&shared, feed, group, &report, &mut outcome),
                    Err(error) => fail_all(&shared, group, &error, &mut outcome),
                }
            }
        }
        Err(error) => fail_all(&shared, submissions, &error, &mut outcome),
    }
    outcome
}

/// One transaction, tried again after transient errors with growing pauses, a bounded number
/// of times. A retry after a failed `COMMIT` whose transaction did commit is harmless: every
/// effect at or below the stored `last_seq` is skipped.
async fn attempt(
    store: &SqlStore,
    config: &WriteBehindConfig,
    shared: &Shared,
    submissions: &[Submission],
    written: &mut impl FnMut(),
) -> Result<BatchReport, PersistError> {
    let items: Vec<BatchItem<'_>> = submissions
        .iter()
        .map(|submission| BatchItem {
            event: &submission.event,
            epoch: submission.epoch,
            effects: &submission.effects,
        })
        .collect();
    let mut pause = Duration::from_millis(config.retry_backoff_ms);
    let deadline = Duration::from_millis(config.commit_timeout_ms);
    let mut attempts = 1;
    loop {
        let started = Instant::now();
        // Cut short, the attempt's transaction is dropped with its connection (closed, never
        // reused): whether it committed is unknown here, and the next attempt reads it back.
        // The transaction's future is on the heap already (`commit_batch_signalling`), so the
        // commit task's stays small, however often it is moved.
        let transaction = store.commit_batch_signalling(&items, &mut *written);
        let attempted = tokio::time::timeout(deadline, transaction).await;
        let result = attempted.unwrap_or_else(|_elapsed| {
            // Writes are refused from now on until a commit or a probe works: this one waits.
            shared.set_store_failing(true);
            Err(PersistError::timed_out(deadline))
        });
        match result {
            Ok(report) => {
                let effects = report.applied_effects;
                shared.set_store_failing(false);
                shared.batch_committed(submissions.len(), effects, report.skipped_effects, started.elapsed());
                return Ok(report);
            }
            Err(error)
                if error.failure_kind() == FailureKind::Transient
                    && attempts < config.commit_attempts_max =>
            {
                tracing::warn!(error = %error.chain(), attempts, "a batch failed; trying again");
                shared.retried();
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(4);
                attempts += 1;
            }
            Err(error) => {
                shared.batch_failed();
                return Err(error);
            }
        }
    }
}

fn answer(
    shared: &Shared,
    feed: Option<&CreationFeed>,
    submissions: Vec<Submission>,
    report: &BatchReport,
    outcome: &mut CommitOutcome,
) {
    outcome.store_worked = true;
    if let Some(feed) = feed {
        // Before the answers: once a registrant is told of the commit, the worker may know it.
        let mut creations = CommittedCreations::new();
        // Room for an event's creations at once: at most one per effect of the batch.
        let room = submissions.iter().map(|submission| submission.effects.len()).sum();
        for submission in submissions.iter().filter(|submission| stored(report, submission)) {
            hand_over_later(&mut creations, submission, room);
        }
        feed.hand_over(creations);
    }
    for submission in submissions {
        let result = if stored(report, &submission) {
            Ok(())
        } else if report.missing.contains(&submission.event) {
            Err(StoreError::Unavailable(format!("event {} is not stored", submission.event)))
        } else {
            Err(StoreError::Fenced)
        };
        match &result {
            Ok(()) => shared.submission_committed(),
            Err(error) => {
                shared.submission_failed(*error == StoreError::Fenced);
                push_pair(&mut outcome.failed_pairs, &submission);
            }
        }
        // The actor may have stopped meanwhile; then nobody waits for the answer.
        let _ = submission.done.send(result);
    }
}

/// Whether the batch stored the submission's effects: answered `Ok`, and its creations handed over.
fn stored(report: &BatchReport, submission: &Submission) -> bool {
    !report.missing.contains(&submission.event) && report.committed(&submission.event, submission.epoch)
}

/// Adds a committed submission's creations to those its batch hands over; an event's first
/// takes `room` for all of them (grown a submission at a time, its list was moved into a larger
/// buffer every time it doubled).
fn hand_over_later(creations: &mut CommittedCreations, submission: &Submission, room: usize) {
    let mut created = CommittedCreation::of_effects(&submission.effects).peekable();
    if created.peek().is_none() {
        return;
    }
    match creations.iter_mut().find(|(event, _)| *event == submission.event) {
        Some((_, event_creations)) => event_creations.extend(created),
        None => {
            let mut event_creations = Vec::with_capacity(room);
            event_creations.extend(created);
            creations.push((submission.event.clone(), event_creations));
        }
    }
}

fn fail_all(
    shared: &Shared,
    submissions: Vec<Submission>,
    error: &PersistError,
    outcome: &mut CommitOutcome,
) {
    tracing::error!(error = %error.chain(), submissions = submissions.len(), "a batch failed");
    if error.failure_kind() != FailureKind::Data {
        outcome.store_failed = true;
        shared.set_store_failing(true);
    }
    let reason = StoreError::Unavailable(error.chain());
    for submission in submissions {
        shared.submission_failed(false);
        push_pair(&mut outcome.failed_pairs, &submission);
        // The actor may have stopped meanwhile; then nobody waits for the answer.
        let _ = submission.done.send(Err(reason.clone()));
    }
}

fn push_pair(pairs: &mut Vec<(EventId, u64)>, submission: &Submission) {
    if !pairs.iter().any(|(event, epoch)| *event == submission.event && *epoch == submission.epoch) {
        pairs.push((submission.event.clone(), submission.epoch));
    }
}

/// The submissions grouped by event, each group in submission order.
fn split_by_event(submissions: Vec<Submission>) -> Vec<Vec<Submission>> {
    let mut groups: Vec<Vec<Submission>> = Vec::new();
    for submission in submissions {
        match groups.iter_mut().find(|group| group[0].event == submission.event) {
            Some(group) => group.push(submission),
            None => groups.push(vec![submission]),
        }
    }
    groups
}
