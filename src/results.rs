//! What reads and appends return: [`ReadResult`] and [`AppendResult`].

use crate::checkpoint::Checkpoint;
use crate::condition::AppendCondition;
use crate::error::{ArgumentProblem, InvalidInput, Result};
use crate::event::SequencedEvent;
use crate::options::ReadOptions;
use crate::query::Query;
use crate::snapshot::{ReadSnapshot, Snapshot};

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
    /// [`ArgumentProblem::IncompleteRead`](crate::ArgumentProblem::IncompleteRead) for a forward read that stopped at its limit: it did not
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
                return Err(InvalidInput::from(ArgumentProblem::IncompleteRead { limit }).into());
            }
            let before_start = self.options.from.map(|from| from.saturating_sub(1));
            self.last_position().or(before_start.filter(|p| *p > 0))
        };
        // A forward read saw every event of its query it could see up to its head, and so did
        // a backward read from the newest event; a backward read from a position did not (it
        // skipped what lies above that position).
        let covered = !(self.options.backwards && self.options.from.is_some());
        let snapshot = match &self.snapshot.0 {
            Snapshot::Postgres(s) if covered => {
                ReadSnapshot::postgres(s.covering(&self.query, after))
            }
            _ => self.snapshot.clone(),
        };
        Ok(AppendCondition {
            fail_if_events_match: self.query.clone(),
            after,
            snapshot: Some(snapshot),
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
    /// let none = Query::from(dcbstore::QueryItem::typed(["B"]));
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
    pub(super) positions: Vec<u64>,
    /// The feed checkpoint of its last event in feed order.
    pub(super) checkpoint: Checkpoint,
    pub(super) replay: bool,
}

impl AppendResult {
    /// Wraps the positions of a successful append (at least one) and the feed checkpoint of its
    /// last event in feed order.
    pub(crate) fn new(positions: Vec<u64>, checkpoint: Checkpoint) -> Self {
        debug_assert!(!positions.is_empty());
        Self {
            positions,
            checkpoint,
            replay: false,
        }
    }

    /// Where the append stands in feed order: the [`Checkpoint`] of its last event there. A
    /// consumer that has passed it has seen every event of the append. This is what
    /// [`ProjectorHandle::wait_for`](crate::ProjectorHandle::wait_for) and
    /// [`Subscription::has_delivered`](crate::Subscription::has_delivered) compare against, so
    /// that a caller who has just appended can answer from a read model that includes its own
    /// append (read-your-writes).
    ///
    /// It is exact on both backends. In memory, feed order is position order. On PostgreSQL it
    /// is (writing transaction, position), and the checkpoint carries the append's own
    /// transaction id (for a replay, the original events' largest), so it is not the position
    /// alone: a lower position can come later in feed order.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let written = store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// assert_eq!(written.checkpoint().to_string(), "mem:1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
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

/// What would fail a condition now ([`EventStore::read_unseen`](crate::EventStore::read_unseen)):
/// the events of its query that the read it came from did not see, and the condition for a
/// state folded from that read and these events together.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions};
/// use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let course = Query::from(QueryItem::tagged(["course:c1"]));
/// let subscribed = || Event::new("Subscribed", json!({})).with_tags(["course:c1"]);
/// store.append([subscribed()], None).await?;
/// let read = store.read(&course, ReadOptions::default()).await?;
/// let mut seats_taken = read.len();
///
/// store.append([subscribed()], None).await?;
/// // Only what the read did not see, folded into what it did.
/// let unseen = store.read_unseen(&read.append_condition()?, Default::default()).await?;
/// assert!(unseen.continues());
/// seats_taken += unseen.events().len();
/// assert_eq!(seats_taken, 2);
/// store.append([subscribed()], Some(unseen.append_condition().clone())).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Unseen {
    events: Vec<SequencedEvent>,
    condition: AppendCondition,
    continues: bool,
}

impl Unseen {
    /// The unseen `events` of `previous` (in any order, possibly repeated), read with
    /// `snapshot`.
    pub(crate) fn new(
        previous: &AppendCondition,
        mut events: Vec<SequencedEvent>,
        snapshot: ReadSnapshot,
    ) -> Self {
        events.sort_by_key(|e| e.position);
        events.dedup_by_key(|e| e.position);
        let continues = events
            .first()
            .is_none_or(|first| previous.after.is_none_or(|after| first.position > after));
        let after = previous.after.max(events.last().map(|e| e.position));
        let query = previous.fail_if_events_match.clone();
        // Only a continuation makes a state that holds every event of the query the snapshot
        // shows: only then does its condition guard just what the snapshot could not see.
        let snapshot = match snapshot.0 {
            Snapshot::Postgres(s) if continues => ReadSnapshot::postgres(s.covering(&query, after)),
            _ => snapshot,
        };
        Self {
            events,
            condition: AppendCondition {
                fail_if_events_match: query,
                after,
                snapshot: Some(snapshot),
            },
            continues,
        }
    }

    /// The unseen events, in position order.
    ///
    /// ```
    /// # fn run(unseen: dcbstore::Unseen) {
    /// for event in unseen.events() {
    ///     println!("{} at {}", event.event_type, event.position);
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> &[SequencedEvent] {
        &self.events
    }

    /// Whether every unseen event lies after every event the earlier read returned, so that
    /// folding them after what it returned gives the state a read of the whole query would
    /// give now. `false` when an event committed below a position the read returned (commits
    /// are not in position order), or when the earlier read ran on a replica (whose snapshot
    /// counts what it returned of transactions still running elsewhere as unseen, so they come
    /// again): then read the whole query again.
    ///
    /// ```
    /// # fn run(unseen: dcbstore::Unseen) {
    /// if !unseen.continues() {
    ///     // read the whole boundary again
    /// }
    /// # }
    /// ```
    pub fn continues(&self) -> bool {
        self.continues
    }

    /// The condition for a decision made from the earlier read's events and these (when
    /// [`continues`](Self::continues)): it fails if an event of the query appears that neither
    /// read saw. Otherwise it also fails for every event after the last one seen.
    ///
    /// ```
    /// # fn run(unseen: dcbstore::Unseen) {
    /// let condition = unseen.append_condition().clone();
    /// # }
    /// ```
    pub fn append_condition(&self) -> &AppendCondition {
        &self.condition
    }
}
