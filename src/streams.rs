//! Classic streams on a DCB store, for users coming from stream-based event stores: a stream is
//! the consistency boundary of one tag, and its expected version a condition on that tag.

use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::{Event, SequencedEvent};
use crate::options::ReadOptions;
use crate::query::{Query, QueryItem};
use crate::results::AppendResult;
use crate::snapshot::ReadSnapshot;
use crate::store::EventStore;

/// The version a writer expects a stream to be at.
///
/// Pass the [`StreamVersion`] that [`ClassicStream::read`] returned (it converts into
/// [`ExpectedVersion::Read`]): the append then fails if any event of the stream became visible
/// after that read, whatever its position. [`ExpectedVersion::LastPosition`] takes a bare log
/// position, e.g. one a client sent back, and has position semantics only (see
/// [`AppendCondition`](crate::AppendCondition) for when that is not enough).
///
/// ```
/// use dcbstore::{ClassicStream, ExpectedVersion, MemoryEventStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let (_, version) = ClassicStream::new("cart-1").read(&store).await?;
/// let expected = ExpectedVersion::from(version);
/// assert!(matches!(expected, ExpectedVersion::Read(ref v) if v.position().is_none()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet (hold no event).
    NoStream,
    /// The stream must be as a read of it saw it: no event of it may have become visible since.
    Read(StreamVersion),
    /// The stream's last event must be at this position (a log position), and no later one may
    /// be appended meanwhile. Position semantics only: prefer [`ExpectedVersion::Read`].
    LastPosition(u64),
}

/// The version of a stream as [`ClassicStream::read`] saw it: the position of its last event
/// (`None` while it has none) and the snapshot of the read.
///
/// ```
/// use dcbstore::{ClassicStream, Event, ExpectedVersion, MemoryEventStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let cart = ClassicStream::new("cart-1");
/// cart.append(&store, [Event::new("CartOpened", serde_json::json!({}))], ExpectedVersion::NoStream).await?;
/// let (_, version) = cart.read(&store).await?;
/// assert_eq!(version.position(), Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVersion {
    position: Option<u64>,
    snapshot: ReadSnapshot,
}

impl StreamVersion {
    /// The position of the stream's last event when it was read, `None` while it had none.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = dcbstore::MemoryEventStore::new();
    /// let (_, version) = dcbstore::ClassicStream::new("a").read(&store).await?;
    /// assert_eq!(version.position(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The snapshot of the read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = dcbstore::MemoryEventStore::new();
    /// let (_, version) = dcbstore::ClassicStream::new("a").read(&store).await?;
    /// assert_eq!(version.snapshot().to_string(), "mem:0");
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot(&self) -> &ReadSnapshot {
        &self.snapshot
    }
}

impl From<StreamVersion> for ExpectedVersion {
    fn from(version: StreamVersion) -> Self {
        ExpectedVersion::Read(version)
    }
}

/// A classic event stream, e.g. of one aggregate: the events tagged `stream:<id>`.
///
/// ```
/// use dcbstore::{ClassicStream, Event, EventStore, ExpectedVersion, MemoryEventStore};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// let order = ClassicStream::new("order-42");
/// let created = order
///     .append(&store, [Event::new("OrderCreated", json!({}))], ExpectedVersion::NoStream)
///     .await?;
/// let (events, version) = order.read(&store).await?;
/// assert_eq!((events.len(), version.position()), (1, Some(created.last_position())));
///
/// // A writer that still expects an empty stream loses.
/// let err = order
///     .append(&store, [Event::new("OrderCreated", json!({}))], ExpectedVersion::NoStream)
///     .await
///     .unwrap_err();
/// assert!(err.is_append_condition_failed());
/// // Decide from what was read, append if nothing changed since.
/// order.append(&store, [Event::new("OrderPaid", json!({}))], version).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicStream {
    id: String,
}

impl ClassicStream {
    /// The stream with id `id`.
    ///
    /// ```
    /// assert_eq!(dcbstore::ClassicStream::new("cart-1").tag(), "stream:cart-1");
    /// ```
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }

    /// The stream's id.
    ///
    /// ```
    /// assert_eq!(dcbstore::ClassicStream::new("cart-1").id(), "cart-1");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tag its events carry: `stream:<id>`.
    ///
    /// ```
    /// assert_eq!(dcbstore::ClassicStream::new("a").tag(), "stream:a");
    /// ```
    pub fn tag(&self) -> String {
        format!("stream:{}", self.id)
    }

    /// The query of its events.
    ///
    /// ```
    /// let q = dcbstore::ClassicStream::new("a").query();
    /// assert_eq!(q.items()[0].tag_list(), ["stream:a"]);
    /// ```
    pub fn query(&self) -> Query {
        Query::from(QueryItem::tagged([self.tag()]))
    }

    /// The append condition for `expected` (`None` for [`ExpectedVersion::Any`]). For
    /// [`ExpectedVersion::LastPosition`] it only guards against later events;
    /// [`ClassicStream::append`] also checks that the version is the current one.
    ///
    /// ```
    /// use dcbstore::{ClassicStream, ExpectedVersion};
    /// let s = ClassicStream::new("a");
    /// assert!(s.condition(ExpectedVersion::Any).is_none());
    /// assert_eq!(s.condition(ExpectedVersion::LastPosition(7)).unwrap().after, Some(7));
    /// ```
    pub fn condition(&self, expected: impl Into<ExpectedVersion>) -> Option<AppendCondition> {
        match expected.into() {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(AppendCondition::new(self.query(), None)),
            ExpectedVersion::Read(version) => Some(
                AppendCondition::new(self.query(), version.position)
                    .with_snapshot(version.snapshot),
            ),
            ExpectedVersion::LastPosition(position) => {
                Some(AppendCondition::new(self.query(), Some(position)))
            }
        }
    }

    /// The stream's events and its version: pass the version to [`ClassicStream::append`] to
    /// append only if the stream is still as read.
    ///
    /// # Errors
    ///
    /// As [`EventStore::read`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = dcbstore::MemoryEventStore::new();
    /// let (events, version) = dcbstore::ClassicStream::new("a").read(&store).await?;
    /// assert!(events.is_empty() && version.position().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read(
        &self,
        store: &impl EventStore,
    ) -> Result<(Vec<SequencedEvent>, StreamVersion)> {
        let read = store.read(&self.query(), ReadOptions::default()).await?;
        let version = StreamVersion {
            position: read.last_position(),
            snapshot: read.snapshot().clone(),
        };
        Ok((read.into_events(), version))
    }

    /// Appends `events` to the stream (tagging them with [`ClassicStream::tag`]) if it is at the
    /// `expected` version: usually the [`StreamVersion`] of [`ClassicStream::read`].
    ///
    /// # Errors
    ///
    /// [`Error::AppendConditionFailed`] when the stream is not at the expected version; otherwise
    /// as [`EventStore::append`].
    ///
    /// ```
    /// use dcbstore::{ClassicStream, Event, ExpectedVersion};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = dcbstore::MemoryEventStore::new();
    /// let s = ClassicStream::new("a");
    /// let w = s.append(&store, [Event::new("Opened", serde_json::json!({}))], ExpectedVersion::Any).await?;
    /// assert!(s.append(&store, [Event::new("Closed", serde_json::json!({}))], ExpectedVersion::LastPosition(w.last_position() + 1)).await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(
        &self,
        store: &impl EventStore,
        events: impl IntoIterator<Item = Event>,
        expected: impl Into<ExpectedVersion>,
    ) -> Result<AppendResult> {
        let expected = expected.into();
        if let ExpectedVersion::LastPosition(position) = expected {
            let last = store
                .read(&self.query(), ReadOptions::default().backwards().limit(1))
                .await?;
            if last.last_position() != Some(position) {
                return Err(Error::AppendConditionFailed {
                    after: Some(position),
                });
            }
        }
        let tag = self.tag();
        let events: Vec<Event> = events
            .into_iter()
            .map(|e| {
                if e.has_tag(&tag) {
                    e
                } else {
                    e.with_tags([tag.clone()])
                }
            })
            .collect();
        store.append(events, self.condition(expected)).await
    }
}
