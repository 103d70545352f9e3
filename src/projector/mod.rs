//! Checkpointed projections: [`Projector`]s fed by a [`ProjectorRunner`], and [`rebuild`].
//!
//! A projector keeps its own checkpoint with its own state (a read model, a process manager's
//! memory), written together: for a read model in PostgreSQL, in one transaction with
//! [`PgEventStore::save_checkpoint_in`](crate::PgEventStore::save_checkpoint_in). The runner
//! asks it where it stands, subscribes from there and hands it batches in feed order; each batch
//! is applied exactly once in effect, because a batch whose transaction did not commit is
//! delivered again from the checkpoint that did.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use time::OffsetDateTime;

use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error, Result};
use crate::feed::FeedEvent;
use crate::query::Query;
use crate::results::AppendResult;
use crate::store::EventStore;

mod runner;
mod tasks;

pub use runner::{ProjectorHandle, ProjectorRunner};

/// What a projector's methods fail with: any error, kept as the source of
/// [`Error::Projector`].
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
///         Query::from(QueryItem::typed(["StudentSubscribed"]))
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

/// Where one projector (or one partition of one) stands: [`ProjectorHandle::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectorStatus {
    /// The projector's name (for a partitioned one, the name of the partition).
    pub name: String,
    /// The checkpoint of the last event it applied in this run (`None`: none yet).
    pub checkpoint: Option<Checkpoint>,
    /// Events applied in this run.
    pub applied: u64,
    /// When the last applied event was appended.
    pub last_event_at: Option<OffsetDateTime>,
    /// How far it has got in feed order: every event before this point (and the one it marks)
    /// that its query matches has been applied, and it has read past the others. `None` until
    /// its subscription has read anything. Compare it with an append's
    /// [`AppendResult::checkpoint`] ([`has_applied`](Self::has_applied)), or wait for it with
    /// [`ProjectorHandle::wait_for`].
    pub through: Option<Checkpoint>,
    /// It had applied everything the store could deliver at the runner's last read: it is
    /// following the log, not catching up. For monitoring only: it says nothing about appends
    /// made after that read, so it can be `true` while an event appended a moment ago is still
    /// on its way. To wait until a read model includes an append, use
    /// [`ProjectorHandle::wait_for`].
    pub caught_up: bool,
    /// It stopped on this failure (after its retries); the others go on.
    pub failure: Option<String>,
}

impl ProjectorStatus {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            checkpoint: None,
            applied: 0,
            last_event_at: None,
            through: None,
            caught_up: false,
            failure: None,
        }
    }

    /// Whether it has applied `append` (or read past it, when its query does not match it):
    /// [`through`](Self::through) covers [`AppendResult::checkpoint`]. Always `false` for an
    /// append to a store of the other backend.
    ///
    /// ```
    /// # fn run(handle: &dcbstore::ProjectorHandle, written: &dcbstore::AppendResult) {
    /// let behind = handle.status().into_iter().filter(|s| !s.has_applied(written)).count();
    /// # }
    /// ```
    pub fn has_applied(&self, append: &AppendResult) -> bool {
        self.through.is_some_and(|t| t.covers(&append.checkpoint()))
    }

    /// How far behind the head it is in time: zero when caught up, otherwise the age of the
    /// last event it applied (`None` before the first).
    ///
    /// ```
    /// # fn run(handle: &dcbstore::ProjectorHandle) {
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

/// Rebuilds `projector` from the first event: [`Projector::reset`], then every event of its
/// query the store can deliver now, in batches of `batch_size`. Returns how many it applied.
/// Stop any runner of the same projector first; start it again afterwards to follow on.
///
/// # Errors
///
/// [`Error::Projector`] when the projector fails; what [`EventStore::feed`] fails with.
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
    let failed = |source| Error::Projector {
        projector: name.clone(),
        source,
    };
    projector.reset().await.map_err(failed)?;
    let (query, batch_size) = (projector.query(), batch_size.max(1));
    let (mut after, mut applied) = (None, 0u64);
    loop {
        let page = store.feed(&query, after, batch_size).await?;
        if !page.events.is_empty() {
            projector.apply(&page.events).await.map_err(failed)?;
            applied += page.events.len() as u64;
        }
        after = Some(page.next);
        if page.events.len() < batch_size && !page.held_back {
            return Ok(applied);
        }
    }
}
