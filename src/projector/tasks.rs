//! The tasks of a running projector: one [`Reader`] of its subscription, and a [`Worker`] per
//! partition applying its batches.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::runner::first_failure;
use super::{DynProjector, ProjectorError, ProjectorStatus};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::feed::FeedEvent;
use crate::fnv;
use crate::query::Query;
use crate::retry::RetryPolicy;
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
    /// Its workers' statuses, to record a failure of the subscription that stops them all.
    pub(super) statuses: Vec<watch::Sender<ProjectorStatus>>,
}

/// What a reader hands a worker: the worker's events of the batch (possibly none), and how far
/// the subscription had read.
pub(super) struct Delivery {
    events: Vec<FeedEvent>,
    /// Every event before it in feed order has been handed out (this delivery included).
    through: Option<Checkpoint>,
    /// The subscription had delivered everything it could at its last read.
    caught_up: bool,
}

pub(super) type WorkerInput = (
    mpsc::Sender<Delivery>,
    tokio::sync::oneshot::Receiver<Option<Checkpoint>>,
);

/// What woke a reader.
enum Wake<T> {
    Stop,
    Chunk(Option<T>),
    /// The subscription read past events it did not deliver (they do not match).
    Moved,
    /// Nothing for [`IDLE_CHECK`].
    Idle,
}

impl<S: EventStore> Reader<S> {
    pub(super) async fn run(
        mut self,
        workers: Vec<WorkerInput>,
        outputs: Vec<JoinHandle<Result<()>>>,
    ) -> Result<()> {
        let outcome = self.read(workers).await;
        if let Err(e) = &outcome {
            for status in &self.statuses {
                status.send_modify(|s| {
                    s.failure.get_or_insert_with(|| e.to_string());
                });
            }
        }
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
        let mut moved = live.delivered_changes();
        let mut batches = live.ready_chunks(self.batch_size);
        let partitions = senders.len() as u64;
        // What the workers were told last: how far, and whether caught up.
        let mut told = (from, false);
        loop {
            let wake = {
                let mut stop = pin!(stopped(&mut self.stopped));
                let mut moved = pin!(async {
                    // The subscription owns the sender: it is not dropped while it is read.
                    if moved.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                });
                let mut idle = pin!(tokio::time::sleep(IDLE_CHECK));
                // In this order: a chunk handed out before the frontier that covers it is read.
                poll_fn(|cx| {
                    if stop.as_mut().poll(cx).is_ready() {
                        Poll::Ready(Wake::Stop)
                    } else if let Poll::Ready(chunk) = batches.poll_next_unpin(cx) {
                        Poll::Ready(Wake::Chunk(chunk))
                    } else if moved.as_mut().poll(cx).is_ready() {
                        Poll::Ready(Wake::Moved)
                    } else if idle.as_mut().poll(cx).is_ready() {
                        Poll::Ready(Wake::Idle)
                    } else {
                        Poll::Pending
                    }
                })
                .await
            };
            let chunk = match wake {
                Wake::Stop | Wake::Chunk(None) => return Ok(()),
                Wake::Chunk(Some(chunk)) => chunk,
                Wake::Moved | Wake::Idle => Vec::new(),
            };
            // ready_chunks holds no event between polls, so every event the subscription has
            // delivered up to its frontier is in this chunk or was handed out before.
            let subscription = batches.get_ref();
            let now = (subscription.delivered(), subscription.is_caught_up());
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
            // After a failure the frontier may lie past events the chunk did not hand out.
            let changed = failure.is_none() && now != told;
            for ((sender, _), events) in senders.iter().zip(routed) {
                if events.is_empty() && !changed {
                    continue;
                }
                let (through, caught_up) = if failure.is_none() { now } else { told };
                let delivery = Delivery {
                    events,
                    through,
                    caught_up,
                };
                if sender.send(delivery).await.is_err() {
                    return Ok(()); // the worker stopped on a failure it reports
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            told = now;
        }
    }
}

/// How long a reader waits for events before it reports whether its projector is caught up.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Resolves once a stop is asked for.
async fn stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// FNV-1a of the event's first tag starting with `prefix` (0 without one): stable across
/// processes, so a key keeps its partition after a restart.
fn key_hash(event: &FeedEvent, prefix: &str) -> u64 {
    let Some(tag) = event.event.tags.iter().find(|t| t.starts_with(prefix)) else {
        return 0;
    };
    fnv::hash(tag.as_bytes())
}

/// Applies one projector's (or partition's) batches.
pub(super) struct Worker {
    pub(super) projector: Box<dyn DynProjector>,
    pub(super) status: watch::Sender<ProjectorStatus>,
    pub(super) retry: RetryPolicy,
}

impl Worker {
    pub(super) async fn run(
        mut self,
        mut deliveries: mpsc::Receiver<Delivery>,
        from: tokio::sync::oneshot::Sender<Option<Checkpoint>>,
    ) -> Result<()> {
        // On failure the sender is dropped: the reader stops, and this worker reports why.
        let checkpoint = self
            .projector
            .checkpoint()
            .await
            .map_err(|e| self.failed(e))?;
        let _ = from.send(checkpoint);
        while let Some(delivery) = deliveries.recv().await {
            if !delivery.events.is_empty() {
                self.apply(&delivery.events).await?;
            }
            self.status.send_modify(|s| {
                s.through = s.through.max(delivery.through);
                s.caught_up = delivery.caught_up;
            });
        }
        Ok(())
    }

    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.projector.apply(batch).await {
                Ok(()) => break,
                Err(e) => {
                    let Some(wait) = self.retry.next_wait(attempt) else {
                        return Err(self.failed(e));
                    };
                    tracing::warn!(projection = self.projector.name(), error = %e, attempt, ?wait,
                        "a projection failed to apply a batch; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
        let last = batch.last().expect("batches are not empty");
        self.status.send_modify(|s| {
            s.applied += batch.len() as u64;
            s.checkpoint = Some(last.checkpoint);
            s.last_event_at = Some(last.event.occurred_at);
        });
        Ok(())
    }

    /// Records `source` as the failure that stops this projector.
    fn failed(&self, source: ProjectorError) -> Error {
        tracing::error!(projection = self.projector.name(), error = %source, "a projection stopped");
        self.status
            .send_modify(|s| s.failure = Some(source.to_string()));
        Error::Projector {
            projector: self.projector.name().to_string(),
            source,
        }
    }
}
