//! [`MemoryEventStore`]: the event store in memory, with PostgreSQL's semantics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{StreamExt, TryStreamExt, stream};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::backend::{MEMORY_LABEL, MEMORY_NAME};
use crate::checkpoint::{Checkpoint, Mark};
use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::{Event, SequencedEvent};
use crate::feed::{FeedEvent, FeedPage};
use crate::limits::DEFAULT_MAX_BATCH_SIZE;
use crate::options::{Consistency, ReadOptions};
use crate::query::Query;
use crate::results::{AppendResult, ReadResult, Unseen};
use crate::snapshot::{ReadSnapshot, Snapshot};
use crate::store::follow_store;
use crate::store::{
    EventStore, EventStream, check_append, check_condition, check_feed, check_read,
    replay_or_duplicate,
};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::telemetry;
use tokio::sync::watch;

/// An event store in memory: for tests of decision logic, examples and prototypes.
///
/// It behaves like [`PgEventStore`](crate::PgEventStore): positions start at 1 and increase,
/// queries match the same events (payload predicates follow `jsonb @>` exactly, see
/// [`jsonb_contains`](crate::jsonb_contains)), the same bad input gets the same errors, and
/// the guard is atomic under concurrent tasks. It is cheap to clone: clones share the log.
/// Nothing is persisted.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let course = Query::from(QueryItem::tagged(["course:c1"]));
/// let read = store.read(&course, ReadOptions::default()).await?;
/// store
///     .append(
///         [Event::new("CourseDefined", json!({"capacity": 10})).with_tags(["course:c1"])],
///         Some(read.append_condition()?),
///     )
///     .await?;
/// assert_eq!(store.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryEventStore {
    log: Arc<RwLock<Log>>,
    max_batch_size: usize,
    /// Bumped after every append: wakes the subscriptions.
    changes: Arc<watch::Sender<u64>>,
}

/// The log and its indexes. Positions are contiguous from 1: event `p` is `events[p - 1]`.
#[derive(Debug, Default)]
struct Log {
    events: Vec<Arc<SequencedEvent>>,
    /// Event id → position.
    ids: HashMap<Uuid, u64>,
    /// Tag → positions of the events carrying it, ascending.
    by_tag: HashMap<String, Vec<u64>>,
    /// Event type → positions, ascending.
    by_type: HashMap<String, Vec<u64>>,
}

impl Log {
    /// The positions that can match `query`, ascending, from the tag and type indexes; `None`
    /// when an item constrains neither (every event is a candidate).
    fn candidates(&self, query: &Query) -> Option<Vec<u64>> {
        if query.is_all() {
            return None;
        }
        let mut positions = Vec::new();
        for item in query.items() {
            let lists: Vec<&[u64]> = if !item.tag_list().is_empty() {
                // Every tag is required: the shortest list has all the matches.
                let shortest = item
                    .tag_list()
                    .iter()
                    .map(|t| self.by_tag.get(t).map_or(&[][..], Vec::as_slice))
                    .min_by_key(|l| l.len())
                    .unwrap_or(&[]);
                vec![shortest]
            } else if let Some(types) = item.type_list() {
                types
                    .iter()
                    .map(|t| self.by_type.get(t).map_or(&[][..], Vec::as_slice))
                    .collect()
            } else {
                return None;
            };
            lists
                .into_iter()
                .for_each(|l| positions.extend_from_slice(l));
        }
        positions.sort_unstable();
        positions.dedup();
        Some(positions)
    }

    /// The events that can match `query` (see [`Log::candidates`]), in position order.
    fn candidate_events<'a>(
        &'a self,
        query: &Query,
    ) -> Box<dyn DoubleEndedIterator<Item = &'a Arc<SequencedEvent>> + 'a> {
        match self.candidates(query) {
            None => Box::new(self.events.iter()),
            Some(positions) => Box::new(
                positions
                    .into_iter()
                    .map(|p| &self.events[(p - 1) as usize]),
            ),
        }
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// An empty store.
    ///
    /// ```
    /// assert!(dcbstore::MemoryEventStore::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            log: Arc::default(),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    /// The same store accepting at most `max` events per append (default
    /// [`DEFAULT_MAX_BATCH_SIZE`](crate::DEFAULT_MAX_BATCH_SIZE)).
    ///
    /// ```
    /// let store = dcbstore::MemoryEventStore::new().with_max_batch_size(10);
    /// assert_eq!(store.max_batch_size(), 10);
    /// ```
    pub fn with_max_batch_size(self, max: usize) -> Self {
        Self {
            max_batch_size: max,
            ..self
        }
    }

    /// The most events one append accepts.
    ///
    /// ```
    /// assert_eq!(dcbstore::MemoryEventStore::new().max_batch_size(), dcbstore::DEFAULT_MAX_BATCH_SIZE);
    /// ```
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Number of stored events.
    ///
    /// ```
    /// assert_eq!(dcbstore::MemoryEventStore::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.read_log().events.len()
    }

    /// `true` while nothing is stored.
    ///
    /// ```
    /// assert!(dcbstore::MemoryEventStore::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written (appends check
        // everything before they push), so a poisoned lock is still consistent.
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The events of a read, and the position of the newest event when it was read (what it saw:
    /// the log up to there).
    fn select(&self, query: &Query, options: &ReadOptions) -> (Vec<SequencedEvent>, u64) {
        let log = self.read_log();
        let head = log.events.last().map_or(0, |e| e.position);
        let in_range = |e: &&Arc<SequencedEvent>| match (options.from, options.backwards) {
            (None, _) => true,
            (Some(from), false) => e.position >= from,
            (Some(from), true) => e.position <= from,
        };
        let matching = |e: &&Arc<SequencedEvent>| query.matches(e);
        let limit = options
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let candidates = log.candidate_events(query);
        let ordered: Box<dyn Iterator<Item = &Arc<SequencedEvent>>> = if options.backwards {
            Box::new(candidates.rev())
        } else {
            candidates
        };
        let events = ordered
            .filter(in_range)
            .filter(matching)
            .take(limit)
            .map(|e| SequencedEvent::clone(e))
            .collect();
        (events, head)
    }

    /// A read, checked, with the head it saw as its snapshot.
    fn read_now(&self, query: Query, options: ReadOptions) -> Result<ReadResult> {
        check_read(&query, &options, MEMORY_NAME)?;
        let (events, head) = self.select(&query, &options);
        Ok(ReadResult::new(
            events,
            query,
            options,
            ReadSnapshot::memory(head),
        ))
    }

    /// A page of the feed: appends are atomic under the store's lock, so every event up to the
    /// head is committed and position order is feed order.
    fn feed_now(&self, query: &Query, after: Option<Checkpoint>, limit: usize) -> Result<FeedPage> {
        check_feed(query, after.as_ref(), limit, MEMORY_NAME)?;
        let from = match after.map(|c| c.0) {
            Some(Mark::Memory { position }) => position,
            _ => 0, // checked above: no other backend's
        };
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let options = ReadOptions::default()
            .from_position(from.saturating_add(1))
            .limit(limit);
        let (events, head) = self.select(query, &options);
        let full = events.len() as u64 == limit;
        let events: Vec<FeedEvent> = events
            .into_iter()
            .map(|event| FeedEvent {
                checkpoint: Checkpoint::memory(event.position),
                event,
            })
            .collect();
        let next = match events.last() {
            Some(last) if full => last.checkpoint,
            _ => Checkpoint::memory(head.max(from)),
        };
        Ok(FeedPage {
            events,
            next,
            held_back: false,
        })
    }

    fn append_now(
        &self,
        events: Vec<Event>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult> {
        check_append(&events, condition, self.max_batch_size, MEMORY_NAME)?;
        let mut log = self.write_log();
        if events.iter().any(|e| log.ids.contains_key(&e.id)) {
            return replay_or_duplicate(&events, |id| {
                let position = *log.ids.get(id)?;
                Some((
                    Checkpoint::memory(position),
                    &log.events[(position - 1) as usize].event,
                ))
            });
        }
        if let Some(c) = condition {
            let query = &c.fail_if_events_match;
            // A read saw the log up to its head: what came later it could not see.
            let seen = match c.snapshot.as_ref().map(|s| &s.0) {
                Some(Snapshot::Memory { head }) => *head,
                _ => u64::MAX,
            };
            let after = c.after.unwrap_or(0).min(seen);
            let conflict = log
                .candidate_events(query)
                .rev()
                .take_while(|e| e.position > after)
                .any(|e| query.matches(e));
            if conflict {
                return Err(Error::AppendConditionFailed { after: c.after });
            }
        }
        let occurred_at = OffsetDateTime::now_utc();
        let first = log.events.last().map_or(1, |e| e.position + 1);
        let positions: Vec<u64> = (first..).take(events.len()).collect();
        for (event, position) in events.into_iter().zip(&positions) {
            log.ids.insert(event.id, *position);
            for tag in &event.tags {
                let list = log.by_tag.entry(tag.clone()).or_default();
                // An event may repeat a tag; index it once.
                if list.last() != Some(position) {
                    list.push(*position);
                }
            }
            log.by_type
                .entry(event.event_type.clone())
                .or_default()
                .push(*position);
            log.events.push(Arc::new(SequencedEvent {
                position: *position,
                occurred_at,
                event,
            }));
        }
        drop(log);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let last = Checkpoint::memory(positions[positions.len() - 1]);
        Ok(AppendResult::new(positions, last))
    }
}

impl EventStore for MemoryEventStore {
    fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
        // Like PostgreSQL's, the read happens when the stream is first polled.
        let (store, query) = (self.clone(), query.clone());
        stream::once(async move { store.read_now(query, options) })
            .map_ok(|read| stream::iter(read.into_events().into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn read(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> impl Future<Output = Result<ReadResult>> + Send {
        let (store, query) = (self.clone(), query.clone());
        let items = query.items().len();
        telemetry::instrument_read(MEMORY_LABEL, items, async move {
            store.read_now(query, options)
        })
    }

    fn read_unseen(
        &self,
        condition: &AppendCondition,
        _consistency: Consistency,
    ) -> impl Future<Output = Result<Unseen>> + Send {
        let (store, condition) = (self.clone(), condition.clone());
        async move {
            check_condition(&condition, MEMORY_NAME)?;
            // Appends are atomic under the log's lock: what a read did not see is what came
            // after the position it stopped at.
            let options = ReadOptions {
                from: condition.after.map(|after| after.saturating_add(1)),
                ..ReadOptions::default()
            };
            let (events, head) = store.select(&condition.fail_if_events_match, &options);
            Ok(Unseen::new(&condition, events, ReadSnapshot::memory(head)))
        }
    }

    fn feed(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> impl Future<Output = Result<FeedPage>> + Send {
        let (store, query) = (self.clone(), query.clone());
        async move { store.feed_now(&query, after, limit) }
    }

    fn subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription {
        follow_store(self, query, self.changes.subscribe(), after, options)
    }

    fn append(
        &self,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        let (store, events): (_, Vec<Event>) = (self.clone(), events.into_iter().collect());
        let (count, guarded) = (events.len(), condition.is_some());
        telemetry::instrument_append(MEMORY_LABEL, count, guarded, async move {
            store.append_now(events, condition.as_ref())
        })
    }
}
