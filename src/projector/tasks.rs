//! The tasks of a running projector: one [`Reader`] of its subscription, and a [`Worker`] per
//! partition applying its batches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::runner::first_failure;
use super::{DynProjector, ProjectionStatus, ProjectorError};
use crate::decision::RetryPolicy;
use crate::error::{Error, Result};
use crate::feed::{Checkpoint, FeedEvent};
use crate::query::Query;
use crate::store::EventStore;
use crate::subscription::SubscribeOptions;

/// Reads one projector's subscription and hands batches to its workers.
pub(super) struct Reader<S> {
    pub(super) store: S,
    pub(super) query: Query,
    pub(super) options: SubscribeOptions,
    pub(super) batch_size: usize,
    pub(super) key_prefix: String,
    pub(super) stopped: watch::Receiver<bool>,
}

pub(super) type WorkerInput = (
    mpsc::Sender<Vec<FeedEvent>>,
    tokio::sync::oneshot::Receiver<Option<Checkpoint>>,
);

impl<S: EventStore> Reader<S> {
    pub(super) async fn run(
        mut self,
        workers: Vec<WorkerInput>,
        outputs: Vec<JoinHandle<Result<()>>>,
    ) -> Result<()> {
        let outcome = self.read(workers).await;
        // The workers end once their batches are drained (their senders are dropped).
        first_failure(outcome, outputs, "worker").await
    }

    async fn read(&mut self, workers: Vec<WorkerInput>) -> Result<()> {
        let mut senders = Vec::new();
        let mut from: Option<Option<Checkpoint>> = None;
        for (sender, checkpoint) in workers {
            let Ok(checkpoint) = checkpoint.await else {
                return Ok(()); // the worker failed; it reports why
            };
            // The partition furthest behind sets where reading starts.
            from = Some(match from {
                None => checkpoint,
                Some(earlier) => earlier.min(checkpoint),
            });
            senders.push((sender, checkpoint));
        }
        let from = from.flatten();
        let live = self
            .store
            .subscribe(&self.query, from, self.options.clone());
        let mut batches = live.ready_chunks(self.batch_size);
        let partitions = senders.len() as u64;
        loop {
            let stop = pin_stop(&mut self.stopped);
            let next = select(Box::pin(stop), batches.next());
            // Nothing to deliver for a while: say whether that is because it is caught up.
            let next = match tokio::time::timeout(IDLE_CHECK, next).await {
                Err(_) => {
                    if batches.get_ref().is_caught_up() {
                        for (sender, _) in &senders {
                            sender.send(Vec::new()).await.ok();
                        }
                    }
                    continue;
                }
                Ok(Either::Left(_)) => return Ok(()),
                Ok(Either::Right((next, _))) => next,
            };
            let Some(chunk) = next else { return Ok(()) };
            let caught_up = batches.get_ref().is_caught_up();
            let mut routed: Vec<Vec<FeedEvent>> = vec![Vec::new(); senders.len()];
            let mut failure = None;
            for item in chunk {
                match item {
                    Ok(event) => {
                        let k = if partitions > 1 {
                            (key_hash(&event, &self.key_prefix) % partitions) as usize
                        } else {
                            0
                        };
                        // A partition skips what it applied before the restart.
                        if senders[k].1.is_none_or(|done| event.checkpoint > done) {
                            routed[k].push(event);
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            for ((sender, _), batch) in senders.iter().zip(routed) {
                if !batch.is_empty() && sender.send(batch).await.is_err() {
                    return Ok(()); // the worker stopped on a failure it reports
                }
                if caught_up {
                    sender.send(Vec::new()).await.ok();
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }
}

/// How long a reader waits for events before it reports whether its projector is caught up.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Resolves once a stop is asked for.
async fn pin_stop(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// FNV-1a of the event's first tag starting with `prefix` (0 without one): stable across
/// processes, so a key keeps its partition after a restart.
fn key_hash(event: &FeedEvent, prefix: &str) -> u64 {
    let Some(tag) = event.event.tags.iter().find(|t| t.starts_with(prefix)) else {
        return 0;
    };
    tag.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Applies one projector's (or partition's) batches.
pub(super) struct Worker {
    pub(super) projector: Box<dyn DynProjector>,
    pub(super) status: Arc<Mutex<ProjectionStatus>>,
    pub(super) retry: RetryPolicy,
}

impl Worker {
    pub(super) async fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<FeedEvent>>,
        from: tokio::sync::oneshot::Sender<Option<Checkpoint>>,
    ) -> Result<()> {
        // On failure the sender is dropped: the reader stops, and this worker reports why.
        let checkpoint = self
            .projector
            .checkpoint()
            .await
            .map_err(|e| self.failed(e))?;
        let _ = from.send(checkpoint);
        // An empty batch says: caught up.
        while let Some(batch) = batches.recv().await {
            if batch.is_empty() {
                self.update(|s| s.caught_up = true);
                continue;
            }
            self.apply(&batch).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.projector.apply(batch).await {
                Ok(()) => break,
                Err(e) if attempt < self.retry.max_attempts => {
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(projection = self.projector.name(), error = %e, attempt, ?wait,
                        "a projection failed to apply a batch; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        let last = batch.last().expect("batches are not empty");
        self.update(|s| {
            s.applied += batch.len() as u64;
            s.checkpoint = Some(last.checkpoint);
            s.last_event_at = Some(last.event.occurred_at);
            s.caught_up = false;
        });
        Ok(())
    }

    fn update(&self, change: impl FnOnce(&mut ProjectionStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records `source` as the failure that stops this projector.
    fn failed(&self, source: ProjectorError) -> Error {
        tracing::error!(projection = self.projector.name(), error = %source, "a projection stopped");
        self.update(|s| s.failure = Some(source.to_string()));
        Error::Projection {
            projection: self.projector.name().to_string(),
            source,
        }
    }
}
