//! The [`EventStore`] trait both backends implement, the checks of their input, and a
//! subscription to a store's feed.

use std::future::Future;

use futures::TryStreamExt;

use crate::checkpoint::Checkpoint;
use crate::condition::AppendCondition;
use crate::error::Result;
use crate::event::{Event, SequencedEvent};
use crate::feed::FeedPage;
use crate::options::{Consistency, ReadOptions};
use crate::query::Query;
use crate::subscription::{SubscribeOptions, Subscription};

mod checks;
mod follow;

pub(crate) use checks::{
    check_append, check_condition, check_feed, check_read, replay_or_duplicate,
};
pub(crate) use follow::follow_store;

use crate::results::{AppendResult, ReadResult, Unseen};

/// A stream of events in read order.
///
/// From [`PgEventStore`](crate::PgEventStore) it owns a pooled connection and decodes rows as
/// they arrive: memory stays flat however many events match.
pub type EventStream = futures::stream::BoxStream<'static, Result<SequencedEvent>>;

/// A DCB event store: read the events of a dynamic consistency boundary, decide, and append
/// guarded by the same query.
///
/// Implemented by [`PgEventStore`](crate::PgEventStore) and
/// [`MemoryEventStore`](crate::MemoryEventStore) with the same semantics, positions and errors:
/// code written against this trait runs on either. The methods return `Send` futures, so they
/// work in spawned tasks without boxing.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions};
/// use serde_json::json;
///
/// /// Claims `name` for `user` unless someone has it already. Works on any backend.
/// async fn claim(store: &impl EventStore, name: &str, user: &str) -> dcbstore::Result<bool> {
///     let query = Query::from(QueryItem::tagged([format!("username:{name}")]));
///     let read = store.read(&query, ReadOptions::default()).await?;
///     if !read.is_empty() {
///         return Ok(false);
///     }
///     let claimed = Event::new("UsernameClaimed", json!({"username": name, "user": user}))
///         .with_tags([format!("username:{name}")]);
///     match store.append([claimed], Some(read.append_condition()?)).await {
///         Ok(_) => Ok(true),
///         Err(e) if e.is_append_condition_failed() => Ok(false),
///         Err(e) => Err(e),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// assert!(claim(&store, "ada", "u1").await?);
/// assert!(!claim(&store, "ada", "u2").await?);
/// # Ok(())
/// # }
/// ```
pub trait EventStore: Send + Sync {
    /// Reads the events matching `query` as a stream, in position order (newest first with
    /// [`ReadOptions::backwards`]).
    ///
    /// Errors, including an invalid query, come as the stream's first item.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// use futures::TryStreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let mut events = store.read_stream(&Query::all(), ReadOptions::default());
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{} {}", event.position, event.event_type);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream;

    /// Reads the events matching `query` and collects them, with the snapshot the read ran in.
    ///
    /// Guard the decision made from them with [`ReadResult::append_condition`]: it fails the
    /// append if any event matching `query` became visible after this read, whatever its
    /// position.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an invalid query or an
    /// out-of-range position; for PostgreSQL, [`Error::Pool`](crate::Error::Pool),
    /// [`Error::Database`](crate::Error::Database) or [`Error::Decode`](crate::Error::Decode)
    /// when reading fails.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions};
    /// use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append([Event::new("CourseDefined", json!({"capacity": 3})).with_tags(["course:c1"])], None).await?;
    /// let read = store.read(&Query::from(QueryItem::tagged(["course:c1"])), ReadOptions::default()).await?;
    /// assert_eq!(read.len(), 1);
    /// assert_eq!(read.last_position(), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    fn read(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> impl Future<Output = Result<ReadResult>> + Send;

    /// What would fail `condition` now: the events of its query that the read it came from
    /// ([`ReadResult::append_condition`]) could not see, with the condition for a state folded
    /// from that read and these events ([`Unseen::append_condition`]). A decision that keeps its
    /// folded state reads only this the next time (see [`DecisionCache`](crate::DecisionCache)):
    /// its cost follows what was written since, not the size of the boundary. For a condition
    /// built by hand: the events of its query after its `after` (all of them without one).
    /// `consistency` as for [`read`](Self::read).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an invalid condition query, or a
    /// condition carrying the snapshot of the other backend; for PostgreSQL,
    /// [`Error::Pool`](crate::Error::Pool) or [`Error::Database`](crate::Error::Database).
    ///
    /// ```
    /// use dcbstore::{Consistency, Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// store.append([Event::new("Ticked", serde_json::json!({}))], None).await?;
    /// let unseen = store.read_unseen(&read.append_condition()?, Consistency::Eventual).await?;
    /// assert_eq!(unseen.events().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    fn read_unseen(
        &self,
        condition: &AppendCondition,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Unseen>> + Send;

    /// Appends `events` atomically, all or none, and returns their positions.
    ///
    /// With a `condition`, the append fails with
    /// [`Error::AppendConditionFailed`](crate::Error::AppendConditionFailed) and writes nothing if
    /// an event matching `condition.fail_if_events_match` exists after `condition.after` or, when
    /// the condition carries a read's snapshot ([`ReadResult::append_condition`]), was not visible
    /// to that read. This holds under any number of concurrent writers.
    ///
    /// # Errors
    ///
    /// [`Error::AppendConditionFailed`](crate::Error::AppendConditionFailed) as above;
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty or oversized batch, an
    /// empty event type or tag, a payload or metadata that is not a JSON object, a NUL character,
    /// ids repeated in the batch, an invalid condition query, or a condition carrying the
    /// snapshot of the other backend;
    /// [`Error::DuplicateEventId`](crate::Error::DuplicateEventId) when an event id is already
    /// stored; for PostgreSQL, [`Error::Pool`](crate::Error::Pool) or
    /// [`Error::Database`](crate::Error::Database) otherwise.
    ///
    /// ```
    /// use dcbstore::{AppendCondition, Event, EventStore, MemoryEventStore, Query, QueryItem};
    /// use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let course = Query::from(QueryItem::tagged(["course:c1"]));
    /// let defined = Event::new("CourseDefined", json!({"capacity": 3})).with_tags(["course:c1"]);
    /// let written = store.append([defined], Some(AppendCondition::new(course.clone(), None))).await?;
    /// assert_eq!(written.positions(), [1]);
    ///
    /// // A second "define" based on the same (now stale) empty read is rejected.
    /// let again = Event::new("CourseDefined", json!({"capacity": 5})).with_tags(["course:c1"]);
    /// let err = store.append([again], Some(AppendCondition::new(course, None))).await.unwrap_err();
    /// assert!(err.is_append_condition_failed());
    /// # Ok(())
    /// # }
    /// ```
    fn append(
        &self,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> impl Future<Output = Result<AppendResult>> + Send;

    /// The events matching `query` in **feed order**, from `after` (`None`: from the start),
    /// at most `limit` of them: the way to follow the log without skipping.
    ///
    /// Reading by position skips events: positions are drawn when a row is inserted, and
    /// transactions commit in any order, so an event can appear below a position a reader has
    /// already passed. The feed delivers an event only once every transaction that could still
    /// write before it in feed order has ended, so each committed event is delivered exactly once
    /// and never after a checkpoint has passed it. For PostgreSQL, feed order is (writing
    /// transaction id, position), and the feed stops below the oldest transaction still running
    /// (`pg_snapshot_xmin`, which spans the whole cluster): a long-running transaction that holds
    /// a transaction id (e.g. one left open after
    /// [`PgEventStore::append_in`](crate::PgEventStore::append_in), or any writing transaction
    /// of another application on the same server) holds the feed back until it ends, so
    /// consumers lag by the longest such transaction; `pg_stat_activity`'s `backend_xid` and
    /// `xact_start` show which one. Rolled-back appends leave no hole. For the in-memory store,
    /// feed order is position order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an invalid query, a `limit` of 0
    /// or a checkpoint of the other backend; for PostgreSQL,
    /// [`Error::Pool`](crate::Error::Pool) or [`Error::Database`](crate::Error::Database).
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// for n in 0..3 {
    ///     store.append([Event::new("Ticked", serde_json::json!({"n": n}))], None).await?;
    /// }
    /// let first = store.feed(&Query::all(), None, 2).await?;
    /// assert_eq!(first.events.len(), 2);
    /// // Store `first.next` with what the consumer built from the events; resume from it later.
    /// let rest = store.feed(&Query::all(), Some(first.next), 2).await?;
    /// assert_eq!(rest.events.len(), 1);
    /// assert_eq!(rest.events[0].event.payload["n"], 2);
    /// # Ok(())
    /// # }
    /// ```
    fn feed(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> impl Future<Output = Result<FeedPage>> + Send;

    /// Follows the events of `query` after `after` (from the start when `None`): a
    /// [`Subscription`] that catches up through [`feed`](Self::feed) and then delivers events
    /// as they are committed, in feed order, each exactly once.
    ///
    /// A caught-up subscription waits for a wake-up before it reads again: an append through
    /// this store (or a clone of it), a notification from another process, or at the latest
    /// [`SubscribeOptions::poll_interval`]. For PostgreSQL, stores built with
    /// [`PgEventStore::builder`](crate::PgEventStore::builder) wake each other across
    /// processes with `LISTEN/NOTIFY` (a wake-up only: events always come from the table); the
    /// notification connection is opened at the first subscription, reopened when it is lost,
    /// and closed when the last subscription of the store is dropped. Nothing is read until
    /// the stream is polled.
    ///
    /// # Errors
    ///
    /// As items of the stream: what [`feed`](Self::feed) fails with. Failures that can pass are
    /// retried (see [`SubscribeOptions::retry`]); the first other failure ends the stream.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, SubscribeOptions};
    /// use futures::TryStreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let courses = Query::from(QueryItem::typed(["CourseDefined"]));
    /// let mut live = store.subscribe(&courses, None, SubscribeOptions::default());
    /// let writer = store.clone();
    /// tokio::spawn(async move {
    ///     writer.append([Event::new("CourseDefined", serde_json::json!({"id": "c1"}))], None).await
    /// });
    /// let defined = live.try_next().await?.expect("a subscription does not end by itself");
    /// assert_eq!(defined.event.payload["id"], "c1");
    /// // Store `defined.checkpoint`; `subscribe(&courses, Some(checkpoint), …)` resumes after it.
    /// # Ok(())
    /// # }
    /// ```
    fn subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription;

    /// The position of the newest event, `None` while the store is empty.
    ///
    /// # Errors
    ///
    /// For PostgreSQL, [`Error::Pool`](crate::Error::Pool) or
    /// [`Error::Database`](crate::Error::Database).
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert_eq!(store.head().await?, None);
    /// store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// assert_eq!(store.head().await?, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    fn head(&self) -> impl Future<Output = Result<Option<u64>>> + Send {
        let last = self.read_stream(&Query::all(), ReadOptions::default().backwards().limit(1));
        async move {
            let last: Vec<SequencedEvent> = last.try_collect().await?;
            Ok(last.first().map(|e| e.position))
        }
    }
}
