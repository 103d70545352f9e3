//! [`ProjectorRunner`]: projectors started on their tasks, and the [`ProjectorHandle`] that
//! reads their status and stops them.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::tasks::{Reader, Worker};
use super::{DynProjector, Projector, ProjectorStatus};
use crate::error::{ArgumentProblem, ConfigProblem, Error, InvalidInput, Result};
use crate::query::Query;
use crate::results::AppendResult;
use crate::retry::RetryPolicy;
use crate::store::EventStore;
use crate::subscription::SubscribeOptions;

/// A projector to start: one, or several partitions of one.
struct Job {
    query: Query,
    /// One projector per partition, in partition order.
    workers: Vec<Box<dyn DynProjector>>,
    /// The tag prefix whose tag routes an event to its partition.
    key_prefix: String,
}

/// Runs projectors against a store: each is subscribed from its own checkpoint and fed batches.
///
/// Several projectors share a runner, each on its own task with its own subscription. A
/// partitioned projector ([`with_partitioned`](Self::with_partitioned)) has one reader that
/// routes each event by a hash of one of its tags to one of several workers: events of one
/// key keep their order, different keys are applied in parallel.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, ProjectorRunner};
/// # use dcbstore::{Checkpoint, FeedEvent, Projector, ProjectorError, Query};
/// # #[derive(Default)] struct Count { n: usize, at: Option<Checkpoint> }
/// # impl Projector for Count {
/// #     fn name(&self) -> &str { "count" }
/// #     fn query(&self) -> Query { Query::all() }
/// #     async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> { Ok(self.at) }
/// #     async fn apply(&mut self, b: &[FeedEvent]) -> Result<(), ProjectorError> {
/// #         self.n += b.len(); self.at = b.last().map(|e| e.checkpoint); Ok(())
/// #     }
/// #     async fn reset(&mut self) -> Result<(), ProjectorError> { *self = Self::default(); Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append([Event::new("Ticked", serde_json::json!({}))], None).await?;
/// let handle = ProjectorRunner::new(store.clone()).with(Count::default()).start()?;
/// while !handle.status().iter().all(|s| s.caught_up) {
///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
/// }
/// assert_eq!(handle.status()[0].applied, 1);
/// handle.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a runner does nothing until start"]
pub struct ProjectorRunner<S> {
    store: S,
    jobs: Vec<Job>,
    batch_size: usize,
    options: SubscribeOptions,
    retry: RetryPolicy,
}

impl<S: EventStore + Clone + 'static> ProjectorRunner<S> {
    /// A runner on `store`, with no projector yet; batches of up to 100 events; a failed batch
    /// retried by [`RetryPolicy`]'s default policy before its projector stops.
    ///
    /// ```
    /// let runner = dcbstore::ProjectorRunner::new(dcbstore::MemoryEventStore::new());
    /// # drop(runner);
    /// ```
    pub fn new(store: S) -> Self {
        Self {
            store,
            jobs: Vec::new(),
            batch_size: 100,
            options: SubscribeOptions::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// Adds a projector, run on one task.
    ///
    /// ```
    /// # fn run<P: dcbstore::Projector>(p: P) {
    /// let runner = dcbstore::ProjectorRunner::new(dcbstore::MemoryEventStore::new()).with(p);
    /// # drop(runner);
    /// # }
    /// ```
    pub fn with<P: Projector>(mut self, projector: P) -> Self {
        self.jobs.push(Job {
            query: projector.query(),
            workers: vec![Box::new(projector)],
            key_prefix: String::new(),
        });
        self
    }

    /// Adds a projector partitioned `partitions` ways: `make(k)` builds partition `k`, whose
    /// name must differ from the others' (e.g. `format!("seats#{k}")`: each stores its own
    /// checkpoint). An event goes to the partition of a hash of its first tag starting with
    /// `key_prefix` (e.g. `"course:"`), so events of one key are applied in order by one
    /// partition; an event without such a tag goes to partition 0.
    ///
    /// ```
    /// # fn run<P: dcbstore::Projector>(make: impl Fn(usize) -> P) {
    /// let runner = dcbstore::ProjectorRunner::new(dcbstore::MemoryEventStore::new())
    ///     .with_partitioned(4, "course:", make);
    /// # drop(runner);
    /// # }
    /// ```
    pub fn with_partitioned<P: Projector>(
        mut self,
        partitions: usize,
        key_prefix: &str,
        make: impl Fn(usize) -> P,
    ) -> Self {
        let workers: Vec<Box<dyn DynProjector>> = (0..partitions.max(1))
            .map(|k| Box::new(make(k)) as Box<dyn DynProjector>)
            .collect();
        self.jobs.push(Job {
            query: workers[0].query(),
            workers,
            key_prefix: key_prefix.to_string(),
        });
        self
    }

    /// Batches of at most `size` events (at least 1): what one [`Projector::apply`] gets.
    ///
    /// ```
    /// let runner = dcbstore::ProjectorRunner::new(dcbstore::MemoryEventStore::new()).batch_size(500);
    /// # drop(runner);
    /// ```
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How the projectors' subscriptions read and wait.
    ///
    /// ```
    /// use dcbstore::{ProjectorRunner, MemoryEventStore, SubscribeOptions};
    /// let runner = ProjectorRunner::new(MemoryEventStore::new()).subscribe_options(SubscribeOptions::default());
    /// # drop(runner);
    /// ```
    pub fn subscribe_options(mut self, options: SubscribeOptions) -> Self {
        self.options = options;
        self
    }

    /// How often a failed batch is tried again before its projector stops.
    ///
    /// ```
    /// use dcbstore::{MemoryEventStore, ProjectorRunner, RetryPolicy};
    /// let runner = ProjectorRunner::new(MemoryEventStore::new())
    ///     .retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() });
    /// # drop(runner);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Starts every projector on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigProblem::DuplicateProjector`] when two
    /// projectors (or partitions) have the same name; nothing is started.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let handle = dcbstore::ProjectorRunner::new(dcbstore::MemoryEventStore::new()).start()?;
    /// handle.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(self) -> Result<ProjectorHandle> {
        let mut names = std::collections::HashSet::new();
        for worker in self.jobs.iter().flat_map(|j| &j.workers) {
            if !names.insert(worker.name()) {
                let name = worker.name().to_string();
                return Err(InvalidInput::from(ConfigProblem::DuplicateProjector(name)).into());
            }
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut statuses = Vec::new();
        for job in self.jobs {
            let mut outputs = Vec::new();
            let mut senders = Vec::new();
            let mut job_statuses = Vec::new();
            for worker in job.workers {
                let name = worker.name().to_string();
                let (status, watched) = watch::channel(ProjectorStatus::new(name));
                statuses.push(watched);
                job_statuses.push(status.clone());
                let (sender, deliveries) = mpsc::channel(2);
                let (from_sender, from) = tokio::sync::oneshot::channel();
                senders.push((sender, from));
                let worker = Worker {
                    projector: worker,
                    status,
                    retry: self.retry,
                };
                outputs.push(tokio::spawn(worker.run(deliveries, from_sender)));
            }
            let reader = Reader {
                store: self.store.clone(),
                query: job.query,
                options: self.options.clone(),
                batch_size: self.batch_size,
                key_prefix: job.key_prefix,
                stopped: stopped.clone(),
                statuses: job_statuses,
            };
            tasks.push(tokio::spawn(reader.run(senders, outputs)));
        }
        Ok(ProjectorHandle {
            stop,
            tasks,
            statuses,
        })
    }
}

/// The running projectors of a [`ProjectorRunner`].
#[derive(Debug)]
pub struct ProjectorHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
    statuses: Vec<watch::Receiver<ProjectorStatus>>,
}

impl ProjectorHandle {
    /// Where each projector (each partition) stands now.
    ///
    /// ```
    /// # fn run(handle: &dcbstore::ProjectorHandle) {
    /// let failed: Vec<_> = handle.status().into_iter().filter(|s| s.failure.is_some()).collect();
    /// # }
    /// ```
    pub fn status(&self) -> Vec<ProjectorStatus> {
        self.statuses.iter().map(|s| s.borrow().clone()).collect()
    }

    /// Waits until every projector of the runner (every partition) has applied `append`, or
    /// passed it because its query does not match it: read-your-writes for read models. After
    /// it returns `Ok`, a read model built by these projectors includes the append (and every
    /// event before it in feed order), so a request that has just appended can answer from it.
    ///
    /// It compares each projector's [`ProjectorStatus::through`] with
    /// [`AppendResult::checkpoint`], which is exact on both backends: on PostgreSQL an append
    /// is delivered once every transaction that began before it has ended (see
    /// [`EventStore::feed`](crate::EventStore::feed)), so a long transaction elsewhere delays
    /// the wait, and the wait's bound says how long that may be.
    ///
    /// # Errors
    ///
    /// - [`Error::ProjectorBehind`], naming the projector that had not got there and where it
    ///   stood, when `timeout` passes first (retryable: waiting again can succeed);
    /// - [`Error::Projector`] at once when a projector has stopped on a failure, or stopped
    ///   before it got there;
    /// - [`ArgumentProblem::ForeignCheckpoint`] for an append to a store of the other backend.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dcbstore::{Event, EventStore, MemoryEventStore, ProjectorRunner};
    /// # use dcbstore::{Checkpoint, FeedEvent, Projector, ProjectorError, Query};
    /// # #[derive(Default)] struct Count { n: std::sync::Arc<std::sync::atomic::AtomicUsize>, at: Option<Checkpoint> }
    /// # impl Projector for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     fn query(&self) -> Query { Query::all() }
    /// #     async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> { Ok(self.at) }
    /// #     async fn apply(&mut self, b: &[FeedEvent]) -> Result<(), ProjectorError> {
    /// #         self.n.fetch_add(b.len(), std::sync::atomic::Ordering::SeqCst);
    /// #         self.at = b.last().map(|e| e.checkpoint); Ok(())
    /// #     }
    /// #     async fn reset(&mut self) -> Result<(), ProjectorError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let count = Count::default();
    /// let seen = count.n.clone();
    /// let handle = ProjectorRunner::new(store.clone()).with(count).start()?;
    /// let written = store.append([Event::new("Ticked", serde_json::json!({}))], None).await?;
    /// handle.wait_for(&written, Duration::from_secs(5)).await?;
    /// assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    /// handle.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for(&self, append: &AppendResult, timeout: Duration) -> Result<()> {
        let target = append.checkpoint();
        let deadline = tokio::time::Instant::now() + timeout;
        for status in &self.statuses {
            let mut status = status.clone();
            // Applied, stopped, or of the other backend: nothing more to wait for.
            let settled = |s: &ProjectorStatus| {
                s.has_applied(append)
                    || s.failure.is_some()
                    || s.through.is_some_and(|t| t.backend() != target.backend())
            };
            let timed_out = tokio::time::timeout_at(deadline, status.wait_for(settled))
                .await
                .is_err();
            let now = status.borrow().clone();
            if now.has_applied(append) {
                continue;
            }
            if timed_out {
                return Err(Error::ProjectorBehind {
                    projector: now.name,
                    waited: timeout,
                    target,
                    through: now.through,
                    applied: now.applied,
                });
            }
            if let Some(through) = now.through.filter(|t| t.backend() != target.backend()) {
                let foreign = ArgumentProblem::ForeignCheckpoint {
                    expected: through.backend(),
                    found: target.backend(),
                };
                return Err(InvalidInput::from(foreign).into());
            }
            let failure = now
                .failure
                .unwrap_or_else(|| format!("it stopped before it applied the append at {target}"));
            return Err(Error::Projector {
                projector: now.name,
                source: failure.into(),
            });
        }
        Ok(())
    }

    /// Stops every projector after the batch it is applying, and waits for them.
    ///
    /// # Errors
    ///
    /// The first failure that stopped a projector ([`Error::Projector`] or a subscription's
    /// failure).
    ///
    /// ```
    /// # async fn run(handle: dcbstore::ProjectorHandle) -> dcbstore::Result<()> {
    /// handle.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(self) -> Result<()> {
        self.stop.send_replace(true);
        first_failure(Ok(()), self.tasks, "runner").await
    }
}

/// Waits for every task; the first failure among `first` and theirs (a task that panicked is
/// reported as a failure of `what`).
pub(super) async fn first_failure(
    mut first: Result<()>,
    tasks: Vec<JoinHandle<Result<()>>>,
    what: &str,
) -> Result<()> {
    for task in tasks {
        let outcome = task.await.unwrap_or_else(|e| {
            Err(Error::Projector {
                projector: what.into(),
                source: e.into(),
            })
        });
        if first.is_ok() {
            first = outcome;
        }
    }
    first
}
