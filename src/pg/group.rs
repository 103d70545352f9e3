//! Group commit: appends that arrive while others are in flight share one transaction.
//!
//! A few workers (the groups in flight) take appends from one queue. A worker that is free takes
//! the first append waiting and every other one queued behind it, up to the group size, and runs
//! them in one transaction: the union of their lock keys taken once in key order, then each
//! guarded insert in arrival order (each sees the ones before it, so two appends of one group on
//! one boundary conflict exactly as they would one after the other), one `COMMIT`, all in one
//! round trip. Nothing waits for a group to fill: when a worker is idle, an append goes at once.
//!
//! Each append keeps its own outcome: a failed condition fails it alone (its insert writes
//! nothing, the others go on). When the transaction fails as a whole (a lock wait past 100 ms, a
//! duplicate id written concurrently, a lost connection), every append of the group runs again
//! alone, side by side, so one bad append costs its neighbours one retry and never their outcome; an append
//! whose group may have committed finds its events stored and reports a replay, as any retry
//! with the same ids does.
//!
//! Cancellation: an append whose caller has gone before its group starts is never run; a group
//! whose callers have all gone is abandoned (its connection closed and its query cancelled, so it
//! rolls back). A caller that goes while others of its group wait may still see its events
//! committed, as with any append whose outcome the caller did not learn.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use futures::future::{self, Either, join_all};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::append::{CompiledAppend, run_transaction};
use super::connection::Lent;
use crate::error::{Error, Result};
use crate::results::AppendResult;
use crate::telemetry;

/// A group stops growing when the union of its lock keys would pass this many.
const MAX_GROUP_LOCKS: usize = 256;

/// The appends a worker has taken but not answered yet.
type Reply = oneshot::Sender<Result<AppendResult>>;

struct Request {
    append: Arc<CompiledAppend>,
    reply: Reply,
}

/// The queue of one store configuration and the workers that empty it, started at first use
/// on the caller's runtime (and again should that runtime have shut down).
pub(super) struct GroupCommit {
    max_appends: usize,
    in_flight: usize,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("max_appends", &self.max_appends)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Groups of up to `max_appends` appends, `in_flight` groups at a time. A group size of one
    /// runs every append on the caller's task, without workers.
    pub(super) fn new(max_appends: usize, in_flight: usize) -> Self {
        Self {
            max_appends: max_appends.max(1),
            in_flight: in_flight.max(1),
            queue: Mutex::new(None),
        }
    }

    pub(super) fn max_appends(&self) -> usize {
        self.max_appends
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Runs `append`, grouped with whatever else is waiting, and gives its own outcome.
    pub(super) async fn append(&self, pool: &Pool, append: CompiledAppend) -> Result<AppendResult> {
        if self.max_appends == 1 {
            return run_alone(pool, &append).await;
        }
        let Some(queue) = self.queue(pool) else {
            return run_alone(pool, &append).await;
        };
        let append = Arc::new(append);
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            append: append.clone(),
            reply,
        };
        if queue.send(request).await.is_err() {
            // The workers are gone (their runtime shut down): run it here.
            return run_alone(pool, &append).await;
        }
        match outcome.await {
            Ok(outcome) => outcome,
            // The worker was dropped with its runtime: the outcome is unknown, and running again
            // with the same ids either writes the events or reports them stored.
            Err(_) => run_alone(pool, &append).await,
        }
    }

    /// The queue, with its workers started on the current runtime if they are not running.
    fn queue(&self, pool: &Pool) -> Option<mpsc::Sender<Request>> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = queue.as_ref().filter(|s| !s.is_closed()) {
            return Some(sender.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = mpsc::channel(self.max_appends * self.in_flight * 4);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..self.in_flight {
            runtime.spawn(work(pool.clone(), receiver.clone(), self.max_appends));
        }
        *queue = Some(sender.clone());
        Some(sender)
    }
}

/// One worker: takes a group from the queue, runs it, answers each append; ends when every
/// sender (every store handle of this configuration) is gone.
async fn work(
    pool: Pool,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>,
    max_appends: usize,
) {
    let mut held: VecDeque<Request> = VecDeque::new();
    loop {
        let group = {
            let mut queue = queue.lock().await;
            let first = match held.pop_front() {
                Some(request) => request,
                None => match queue.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            let mut locks = first.append.lock_count();
            let mut group = vec![first];
            while group.len() < max_appends {
                let next = match held.pop_front() {
                    Some(request) => request,
                    None => match queue.try_recv() {
                        Ok(request) => request,
                        Err(_) => break,
                    },
                };
                if locks + next.append.lock_count() > MAX_GROUP_LOCKS {
                    held.push_front(next);
                    break;
                }
                locks += next.append.lock_count();
                group.push(next);
            }
            group
        };
        run_group(&pool, group).await;
    }
}

/// Runs a group and answers each of its appends.
async fn run_group(pool: &Pool, mut group: Vec<Request>) {
    // Callers that have gone before their append started: it never runs.
    group.retain(|r| !r.reply.is_closed());
    if !group.is_empty() {
        telemetry::group_ran(group.len());
    }
    if group.len() <= 1 {
        let Some(Request { append, mut reply }) = group.pop() else {
            return;
        };
        match unless_gone(run_alone(pool, &append), reply.closed()).await {
            Some(outcome) => drop(reply.send(outcome)),
            None => debug!("an append was abandoned by its caller"),
        }
        return;
    }
    let (appends, mut replies): (Vec<_>, Vec<_>) =
        group.into_iter().map(|r| (r.append, r.reply)).unzip();
    let Some(together) = unless_gone(run_together(pool, &appends), all_closed(&mut replies)).await
    else {
        debug!("a group was abandoned by all its callers");
        return;
    };
    match together {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        // No connection came in time: the appends alone would wait as long again, one by one.
        Err(Error::Pool(timeout)) if timeout.is_pool_timeout() => {
            for reply in replies {
                let _ = reply.send(Err(Error::Pool(timeout.clone())));
            }
        }
        Err(e) => {
            debug!(error = %e, size = appends.len(), "a group failed; its appends run alone");
            // Side by side, so that an append whose boundary is held elsewhere (it waits up to
            // the lock timeout) holds up none of the others.
            let alone = appends
                .iter()
                .zip(replies)
                .map(|(append, mut reply)| async move {
                    if let Some(outcome) =
                        unless_gone(run_alone(pool, append), reply.closed()).await
                    {
                        let _ = reply.send(outcome);
                    }
                });
            join_all(alone).await;
        }
    }
}

/// `work`'s output, or `None` when `gone` resolves first (then `work` is dropped: a connection it
/// holds is closed and its query cancelled).
async fn unless_gone<T>(
    work: impl Future<Output = T>,
    gone: impl Future<Output = ()>,
) -> Option<T> {
    match future::select(pin!(work), pin!(gone)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Resolves when every reply's receiver is gone.
async fn all_closed(replies: &mut [Reply]) {
    join_all(replies.iter_mut().map(|r| r.closed())).await;
}

/// One append in a transaction of its own, on a connection of its own.
pub(super) async fn run_alone(pool: &Pool, append: &CompiledAppend) -> Result<AppendResult> {
    let client = Lent::take(pool).await?;
    let outcome = match append.run_pooled(&client).await {
        // The same ids were being appended concurrently (e.g. the first try of this very
        // append, whose outcome the caller did not learn): now that it has committed, running
        // again reports it as a replay.
        Err(Error::DuplicateEventId { .. }) => append.run_pooled(&client).await,
        outcome => outcome,
    };
    // Every pipelined statement has answered, whatever the outcome.
    client.release();
    outcome
}

/// The appends of a group in one transaction ([`run_transaction`]). `Err` when the transaction
/// failed as a whole (nothing committed, or, if `COMMIT` itself failed, nothing known); else each
/// append's own outcome.
async fn run_together(
    pool: &Pool,
    appends: &[Arc<CompiledAppend>],
) -> Result<Vec<Result<AppendResult>>> {
    let client = Lent::take(pool).await?;
    let appends: Vec<&CompiledAppend> = appends.iter().map(AsRef::as_ref).collect();
    let outcomes = run_transaction(&client, &appends).await;
    // Every pipelined statement has answered, whatever the outcome.
    client.release();
    outcomes
}
