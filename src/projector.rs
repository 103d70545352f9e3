//! Checkpointed projections: [`Projector`]s fed by a [`ProjectionRunner`], and [`rebuild`].
//!
//! A projector keeps its own checkpoint with its own state (a read model, a process manager's
//! memory), written together: for a read model in PostgreSQL, in one transaction with
//! [`PgEventStore::save_checkpoint_in`](crate::PgEventStore::save_checkpoint_in). The runner
//! asks it where it stands, subscribes from there and hands it batches in feed order; each batch
//! is applied exactly once in effect, because a batch whose transaction did not commit is
//! delivered again from the checkpoint that did.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, Either, select};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::decision::RetryPolicy;
use crate::error::{BoxError, Error, InvalidInput, Result};
use crate::feed::{Checkpoint, FeedEvent};
use crate::query::Query;
use crate::store::EventStore;
use crate::subscription::SubscribeOptions;

/// What a projector's methods fail with: any error, kept as the source of
/// [`Error::Projection`].
pub type ProjectorError = BoxError;

/// Something built from the events of a query, in feed order, that stores where it stands.
///
/// Implement [`apply`](Self::apply) so that the batch's effect and
/// `batch.last().checkpoint` are stored together (one transaction, one lock), and
/// [`checkpoint`](Self::checkpoint) so that it returns what was stored last. Then a crash at
/// any point loses nothing and applies nothing twice.
///
/// ```
/// use dcbstore::{Checkpoint, FeedEvent, Projector, ProjectorError, Query, QueryItem};
///
/// /// Seats taken per course, kept in memory with its checkpoint.
/// #[derive(Default)]
/// struct Seats {
///     taken: std::collections::HashMap<String, u32>,
///     at: Option<Checkpoint>,
/// }
///
/// impl Projector for Seats {
///     fn name(&self) -> &str {
///         "seats"
///     }
///     fn query(&self) -> Query {
///         Query::from(QueryItem::types(["StudentSubscribed"]))
///     }
///     async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
///         Ok(self.at)
///     }
///     async fn apply(&mut self, batch: &[FeedEvent]) -> Result<(), ProjectorError> {
///         for e in batch {
///             let course = e.event.payload["course"].as_str().ok_or("no course")?;
///             *self.taken.entry(course.to_string()).or_default() += 1;
///             self.at = Some(e.checkpoint);
///         }
///         Ok(())
///     }
///     async fn reset(&mut self) -> Result<(), ProjectorError> {
///         *self = Self::default();
///         Ok(())
///     }
/// }
/// # let _ = Seats::default();
/// ```
pub trait Projector: Send + 'static {
    /// A name unique among the projectors of a store: the key of its checkpoint and of its
    /// status.
    fn name(&self) -> &str;

    /// The events it is built from.
    fn query(&self) -> Query;

    /// The checkpoint stored with its state; `None` to start from the first event.
    fn checkpoint(
        &mut self,
    ) -> impl Future<Output = Result<Option<Checkpoint>, ProjectorError>> + Send;

    /// Applies `batch` (never empty, in feed order) and stores the checkpoint of its last
    /// event with the effect, atomically. On failure nothing of the batch may remain: the runner
    /// retries the same batch.
    fn apply(
        &mut self,
        batch: &[FeedEvent],
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send;

    /// Clears the state and the checkpoint, for [`rebuild`].
    fn reset(&mut self) -> impl Future<Output = Result<(), ProjectorError>> + Send;
}

/// The object-safe form of [`Projector`], for runners holding several kinds.
trait DynProjector: Send {
    fn name(&self) -> &str;
    fn query(&self) -> Query;
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<Checkpoint>, ProjectorError>>;
    fn apply<'a>(&'a mut self, batch: &'a [FeedEvent])
    -> BoxFuture<'a, Result<(), ProjectorError>>;
}

impl<P: Projector> DynProjector for P {
    fn name(&self) -> &str {
        Projector::name(self)
    }
    fn query(&self) -> Query {
        Projector::query(self)
    }
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<Option<Checkpoint>, ProjectorError>> {
        Box::pin(Projector::checkpoint(self))
    }
    fn apply<'a>(
        &'a mut self,
        batch: &'a [FeedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectorError>> {
        Box::pin(Projector::apply(self, batch))
    }
}

/// Where one projector (or one partition of one) stands: [`ProjectionHandle::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projector's name (for a partitioned one, the name of the partition).
    pub name: String,
    /// The checkpoint of the last event it applied in this run (`None`: none yet).
    pub checkpoint: Option<Checkpoint>,
    /// Events applied in this run.
    pub applied: u64,
    /// When the last applied event was appended.
    pub last_event_at: Option<OffsetDateTime>,
    /// It has applied everything the store could deliver at its last read.
    pub caught_up: bool,
    /// It stopped on this failure (after its retries); the others go on.
    pub failure: Option<String>,
}

impl ProjectionStatus {
    fn new(name: String) -> Self {
        Self {
            name,
            checkpoint: None,
            applied: 0,
            last_event_at: None,
            caught_up: false,
            failure: None,
        }
    }

    /// How far behind the head it is in time: zero when caught up, otherwise the age of the
    /// last event it applied (`None` before the first).
    ///
    /// ```
    /// # fn run(handle: &dcbstore::ProjectionHandle) {
    /// for status in handle.status() {
    ///     println!("{}: {:?} behind", status.name, status.lag());
    /// }
    /// # }
    /// ```
    pub fn lag(&self) -> Option<Duration> {
        if self.caught_up {
            return Some(Duration::ZERO);
        }
        let age = OffsetDateTime::now_utc() - self.last_event_at?;
        Some(age.try_into().unwrap_or(Duration::ZERO))
    }
}

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
/// use dcbstore::{Event, EventStore, MemoryEventStore, ProjectionRunner};
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
/// let handle = ProjectionRunner::new(store.clone()).with(Count::default()).start()?;
/// while !handle.status().iter().all(|s| s.caught_up) {
///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
/// }
/// assert_eq!(handle.status()[0].applied, 1);
/// handle.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a runner does nothing until start"]
pub struct ProjectionRunner<S> {
    store: S,
    jobs: Vec<Job>,
    batch_size: usize,
    options: SubscribeOptions,
    retry: RetryPolicy,
}

impl<S: EventStore + Clone + 'static> ProjectionRunner<S> {
    /// A runner on `store`, with no projector yet; batches of up to 100 events; a failed batch
    /// retried by [`RetryPolicy`]'s default policy before its projector stops.
    ///
    /// ```
    /// let runner = dcbstore::ProjectionRunner::new(dcbstore::MemoryEventStore::new());
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
    /// let runner = dcbstore::ProjectionRunner::new(dcbstore::MemoryEventStore::new()).with(p);
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
    /// let runner = dcbstore::ProjectionRunner::new(dcbstore::MemoryEventStore::new())
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
    /// let runner = dcbstore::ProjectionRunner::new(dcbstore::MemoryEventStore::new()).batch_size(500);
    /// # drop(runner);
    /// ```
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How the projectors' subscriptions read and wait.
    ///
    /// ```
    /// use dcbstore::{ProjectionRunner, MemoryEventStore, SubscribeOptions};
    /// let runner = ProjectionRunner::new(MemoryEventStore::new()).subscribe_options(SubscribeOptions::default());
    /// # drop(runner);
    /// ```
    pub fn subscribe_options(mut self, options: SubscribeOptions) -> Self {
        self.options = options;
        self
    }

    /// How often a failed batch is tried again before its projector stops.
    ///
    /// ```
    /// use dcbstore::{MemoryEventStore, ProjectionRunner, RetryPolicy};
    /// let runner = ProjectionRunner::new(MemoryEventStore::new())
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
    /// [`InvalidInput::DuplicateProjector`](crate::InvalidInput::DuplicateProjector) when two
    /// projectors (or partitions) have the same name; nothing is started.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let handle = dcbstore::ProjectionRunner::new(dcbstore::MemoryEventStore::new()).start()?;
    /// handle.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(self) -> Result<ProjectionHandle> {
        let mut names = std::collections::HashSet::new();
        for worker in self.jobs.iter().flat_map(|j| &j.workers) {
            if !names.insert(worker.name()) {
                return Err(InvalidInput::DuplicateProjector(worker.name().to_string()).into());
            }
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut statuses = Vec::new();
        for job in self.jobs {
            let mut outputs = Vec::new();
            let mut senders = Vec::new();
            for worker in job.workers {
                let name = worker.name().to_string();
                let status = Arc::new(Mutex::new(ProjectionStatus::new(name)));
                statuses.push(status.clone());
                let (sender, batches) = mpsc::channel::<Vec<FeedEvent>>(2);
                let (from_sender, from) = tokio::sync::oneshot::channel();
                senders.push((sender, from));
                let worker = Worker {
                    projector: worker,
                    status,
                    retry: self.retry,
                };
                outputs.push(tokio::spawn(worker.run(batches, from_sender)));
            }
            let reader = Reader {
                store: self.store.clone(),
                query: job.query,
                options: self.options.clone(),
                batch_size: self.batch_size,
                key_prefix: job.key_prefix,
                stopped: stopped.clone(),
            };
            tasks.push(tokio::spawn(reader.run(senders, outputs)));
        }
        Ok(ProjectionHandle {
            stop,
            tasks,
            statuses,
        })
    }
}

/// Rebuilds `projector` from the first event: [`Projector::reset`], then every event of its
/// query the store can deliver now, in batches of `batch_size`. Returns how many it applied.
/// Stop any runner of the same projector first; start it again afterwards to follow on.
///
/// # Errors
///
/// [`Error::Projection`] when the projector fails; what [`EventStore::feed`] fails with.
///
/// ```
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
/// use dcbstore::{Event, EventStore, MemoryEventStore, rebuild};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append([Event::new("Ticked", serde_json::json!({}))], None).await?;
/// let mut count = Count { n: 7, at: None }; // wrong: rebuild it
/// assert_eq!(rebuild(&store, &mut count, 100).await?, 1);
/// assert_eq!(count.n, 1);
/// # Ok(())
/// # }
/// ```
pub async fn rebuild<S: EventStore, P: Projector>(
    store: &S,
    projector: &mut P,
    batch_size: usize,
) -> Result<u64> {
    let name = projector.name().to_string();
    let failed = |source| Error::Projection {
        projection: name.clone(),
        source,
    };
    projector.reset().await.map_err(failed)?;
    let query = projector.query();
    let (mut after, mut applied) = (None, 0u64);
    loop {
        let page = store.feed(&query, after, batch_size.max(1)).await?;
        if !page.events.is_empty() {
            projector.apply(&page.events).await.map_err(failed)?;
            applied += page.events.len() as u64;
        }
        after = Some(page.next);
        if page.events.len() < batch_size.max(1) && !page.held_back {
            return Ok(applied);
        }
    }
}

/// The running projectors of a [`ProjectionRunner`].
#[derive(Debug)]
pub struct ProjectionHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
    statuses: Vec<Arc<Mutex<ProjectionStatus>>>,
}

impl ProjectionHandle {
    /// Where each projector (each partition) stands now.
    ///
    /// ```
    /// # fn run(handle: &dcbstore::ProjectionHandle) {
    /// let behind: Vec<_> = handle.status().into_iter().filter(|s| !s.caught_up).collect();
    /// # }
    /// ```
    pub fn status(&self) -> Vec<ProjectionStatus> {
        self.statuses
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Stops every projector after the batch it is applying, and waits for them.
    ///
    /// # Errors
    ///
    /// The first failure that stopped a projector ([`Error::Projection`] or a subscription's
    /// failure).
    ///
    /// ```
    /// # async fn run(handle: dcbstore::ProjectionHandle) -> dcbstore::Result<()> {
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
async fn first_failure(
    mut first: Result<()>,
    tasks: Vec<JoinHandle<Result<()>>>,
    what: &str,
) -> Result<()> {
    for task in tasks {
        let outcome = task.await.unwrap_or_else(|e| {
            Err(Error::Projection {
                projection: what.into(),
                source: e.into(),
            })
        });
        if first.is_ok() {
            first = outcome;
        }
    }
    first
}

/// Reads one projector's subscription and hands batches to its workers.
struct Reader<S> {
    store: S,
    query: Query,
    options: SubscribeOptions,
    batch_size: usize,
    key_prefix: String,
    stopped: watch::Receiver<bool>,
}

type WorkerInput = (
    mpsc::Sender<Vec<FeedEvent>>,
    tokio::sync::oneshot::Receiver<Result<Option<Checkpoint>>>,
);

impl<S: EventStore> Reader<S> {
    async fn run(
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
            let checkpoint = checkpoint?;
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
struct Worker {
    projector: Box<dyn DynProjector>,
    status: Arc<Mutex<ProjectionStatus>>,
    retry: RetryPolicy,
}

impl Worker {
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<FeedEvent>>,
        from: tokio::sync::oneshot::Sender<Result<Option<Checkpoint>>>,
    ) -> Result<()> {
        let checkpoint = self
            .projector
            .checkpoint()
            .await
            .map_err(|e| self.failed(e));
        let loaded = checkpoint.as_ref().copied().map_err(|e| Error::Projection {
            projection: self.projector.name().to_string(),
            source: e.to_string().into(),
        });
        let _ = from.send(loaded);
        checkpoint?;
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
