//! The [`EventStore`] trait both backends implement, and the results it returns.

use std::future::Future;

use futures::TryStreamExt;

use crate::condition::AppendCondition;
use crate::error::{Error, InvalidInput, Result};
use crate::event::{Event, SequencedEvent, validate_batch};
use crate::feed::{Checkpoint, FeedPage};
use crate::options::ReadOptions;
use crate::query::Query;
use crate::snapshot::ReadSnapshot;
use crate::subscription::{SubscribeOptions, Subscription};
use crate::validate;
use uuid::Uuid;

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
    /// let courses = Query::from(QueryItem::types(["CourseDefined"]));
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

/// Classifies an append some of whose ids are stored already (`stored`: id → its position and
/// stored event): all of them with the same content is an idempotent replay; all of them but one
/// stored with other content is an idempotency conflict; some of them a duplicate.
pub(crate) fn replay_or_duplicate<'a>(
    events: &[Event],
    stored: impl Fn(&Uuid) -> Option<(u64, &'a Event)>,
) -> Result<AppendResult> {
    let found: Vec<Option<(u64, &Event)>> = events.iter().map(|e| stored(&e.id)).collect();
    if found.iter().any(Option::is_none) {
        let event_id = events
            .iter()
            .zip(&found)
            .find_map(|(e, f)| f.map(|_| e.id))
            .expect("some id is stored");
        return Err(Error::DuplicateEventId { event_id });
    }
    let mut positions = Vec::with_capacity(events.len());
    for (event, (position, original)) in events.iter().zip(found.into_iter().flatten()) {
        if !event.same_content(original) {
            return Err(Error::IdempotencyConflict {
                event_id: event.id,
                position,
            });
        }
        positions.push(position);
    }
    Ok(AppendResult {
        positions,
        replay: true,
    })
}

/// Checks a read's input the same way for every backend.
pub(crate) fn check_read(query: &Query, options: &ReadOptions) -> Result<(), InvalidInput> {
    query.validate()?;
    options.from.map(validate::position).transpose()?;
    if let Some(limit) = options.limit
        && i64::try_from(limit).is_err()
    {
        return Err(InvalidInput::LimitOutOfRange(limit));
    }
    Ok(())
}

/// Checks an append's input the same way for every backend; `backend` names the store's, whose
/// snapshots alone it accepts.
pub(crate) fn check_append(
    events: &[Event],
    condition: Option<&AppendCondition>,
    max_batch_size: usize,
    backend: &'static str,
) -> Result<(), InvalidInput> {
    validate_batch(events, max_batch_size)?;
    if let Some(c) = condition {
        c.fail_if_events_match.validate()?;
        c.after.map(validate::position).transpose()?;
        if let Some(found) = c.snapshot.as_ref().map(ReadSnapshot::backend)
            && found != backend
        {
            return Err(InvalidInput::ForeignSnapshot {
                expected: backend,
                found,
            });
        }
    }
    Ok(())
}

/// The events a read returned, in read order, with what the read saw: the query, the options
/// and the snapshot it ran in, from which [`ReadResult::append_condition`] derives the guard of
/// the decision made from these events.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// # let store = MemoryEventStore::new();
/// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
/// let read = store.read(&Query::all(), ReadOptions::default()).await?;
/// for event in &read {
///     println!("{} {}", event.position, event.event_type);
/// }
/// let condition = read.append_condition()?; // guards a decision made from these events
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReadResult {
    events: Vec<SequencedEvent>,
    query: Query,
    options: ReadOptions,
    snapshot: ReadSnapshot,
}

impl ReadResult {
    /// The result of reading `query` with `options` in `snapshot`.
    pub(crate) fn new(
        events: Vec<SequencedEvent>,
        query: Query,
        options: ReadOptions,
        snapshot: ReadSnapshot,
    ) -> Self {
        Self {
            events,
            query,
            options,
            snapshot,
        }
    }

    /// The condition that guards a decision made from this read: fail if any event matching the
    /// read's query became visible after the read, whatever its position, or has a position above
    /// the ones the read covered.
    ///
    /// It does not fail for the events the read returned, nor (for a read
    /// [`from_position`](ReadOptions::from_position)) for events before the start that were
    /// already visible, nor (for a [`backwards`](ReadOptions::backwards) read with a limit) for
    /// the older events the limit left out: those are the caller's choice. Its `after` is the
    /// last position read; for an empty read from position `n`, `n - 1`.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::IncompleteRead`] for a forward read that stopped at its limit: it did not
    /// see the rest of its query, so the condition would fail whenever there is more.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// let condition = read.append_condition()?;
    /// assert_eq!(condition.after, Some(1));
    /// assert_eq!(condition.snapshot.as_ref(), Some(read.snapshot()));
    /// store.append([Event::new("B", serde_json::json!({}))], Some(condition)).await?;
    ///
    /// let first = store.read(&Query::all(), ReadOptions::default().limit(1)).await?;
    /// assert!(first.append_condition().unwrap_err().is_invalid_input());
    /// # Ok(())
    /// # }
    /// ```
    pub fn append_condition(&self) -> Result<AppendCondition> {
        let after = if self.options.backwards {
            self.last_position()
        } else {
            if let Some(limit) = self.options.limit
                && self.events.len() as u64 >= limit
            {
                return Err(InvalidInput::IncompleteRead { limit }.into());
            }
            let before_start = self.options.from.map(|from| from.saturating_sub(1));
            self.last_position().or(before_start.filter(|p| *p > 0))
        };
        Ok(AppendCondition {
            fail_if_events_match: self.query.clone(),
            after,
            snapshot: Some(self.snapshot.clone()),
        })
    }

    /// The snapshot the read ran in: what it saw.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// assert_eq!(read.snapshot().to_string(), "mem:1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot(&self) -> &ReadSnapshot {
        &self.snapshot
    }

    /// The query the read was made with.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// assert!(read.query().is_all());
    /// # Ok(())
    /// # }
    /// ```
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The highest position read, `None` when nothing matched.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// assert_eq!(read.last_position(), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn last_position(&self) -> Option<u64> {
        self.events.iter().map(|e| e.position).max()
    }

    /// The events, in read order.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// assert_eq!(read.events()[0].event_type, "A");
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> &[SequencedEvent] {
        &self.events
    }

    /// Takes the events out.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let read = store.read(&Query::all(), ReadOptions::default()).await?;
    /// let events: Vec<dcbstore::SequencedEvent> = read.into_events();
    /// assert_eq!(events.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_events(self) -> Vec<SequencedEvent> {
        self.events
    }

    /// Number of events read.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// assert_eq!(store.read(&Query::all(), ReadOptions::default()).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when nothing matched.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let none = Query::from(dcbstore::QueryItem::types(["B"]));
    /// assert!(store.read(&none, ReadOptions::default()).await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Iterates over the events in read order.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// # let store = MemoryEventStore::new();
    /// # store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// assert_eq!(store.read(&Query::all(), ReadOptions::default()).await?.iter().count(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, SequencedEvent> {
        self.events.iter()
    }
}

impl<'a> IntoIterator for &'a ReadResult {
    type Item = &'a SequencedEvent;
    type IntoIter = std::slice::Iter<'a, SequencedEvent>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

impl IntoIterator for ReadResult {
    type Item = SequencedEvent;
    type IntoIter = std::vec::IntoIter<SequencedEvent>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter()
    }
}

/// What an append wrote.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let written = store
///     .append([Event::new("A", serde_json::json!({})), Event::new("B", serde_json::json!({}))], None)
///     .await?;
/// assert_eq!(written.positions().len(), 2);
/// assert_eq!(written.last_position(), written.positions()[1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Never empty: an append writes at least one event.
    positions: Vec<u64>,
    replay: bool,
}

impl AppendResult {
    /// Wraps the positions of a successful append (at least one).
    pub(crate) fn new(positions: Vec<u64>) -> Self {
        debug_assert!(!positions.is_empty());
        Self {
            positions,
            replay: false,
        }
    }

    /// `true` when every event of the batch was stored already (the same ids): an idempotent
    /// retry, e.g. after a timeout left the first outcome unknown. Nothing was written and the
    /// positions are the original ones, even if the condition would now fail because of those
    /// very events.
    ///
    /// ```
    /// use dcbstore::{AppendCondition, Event, EventStore, MemoryEventStore, Query};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let event = Event::new("PaymentReceived", serde_json::json!({"amount": 10}));
    /// let condition = AppendCondition::new(Query::all(), None);
    /// let first = store.append([event.clone()], Some(condition.clone())).await?;
    /// let retry = store.append([event], Some(condition)).await?;
    /// assert!(retry.is_replay() && !first.is_replay());
    /// assert_eq!(retry.positions(), first.positions());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// The positions of the appended events, in batch order.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let written = store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// assert_eq!(written.positions(), [1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// The position of the batch's last event.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let written = store.append([Event::new("A", serde_json::json!({})), Event::new("B", serde_json::json!({}))], None).await?;
    /// assert_eq!(written.last_position(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn last_position(&self) -> u64 {
        self.positions[self.positions.len() - 1]
    }
}

/// Checks a feed's arguments: the query, a positive `limit`, and a checkpoint of `backend`.
pub(crate) fn check_feed(
    query: &Query,
    after: Option<&Checkpoint>,
    limit: usize,
    backend: &'static str,
) -> Result<()> {
    query.validate()?;
    if limit == 0 {
        return Err(InvalidInput::ZeroFeedLimit.into());
    }
    if let Some(found) = after.map(Checkpoint::backend)
        && found != backend
    {
        return Err(InvalidInput::ForeignCheckpoint {
            expected: backend,
            found,
        }
        .into());
    }
    Ok(())
}
