//! How to read: [`ReadOptions`] and the [`Consistency`] a read needs.

use crate::checkpoint::Checkpoint;

/// How to read: where to start, how many events at most, in which direction, and how fresh.
///
/// ```
/// use dcbstore::{Consistency, ReadOptions};
///
/// let opts = ReadOptions::default().from_position(10).limit(5).backwards();
/// assert_eq!((opts.from, opts.limit, opts.backwards), (Some(10), Some(5), true));
/// assert_eq!(opts.consistency, Consistency::Eventual);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// First position to return (inclusive). Reading backwards, the highest position to return.
    pub from: Option<u64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Newest first.
    pub backwards: bool,
    /// What the read must include of the commits made before it (default
    /// [`Consistency::Eventual`]). It matters only for a store that reads from replicas.
    pub consistency: Consistency,
}

/// What a read must include of the commits made before it. A store that reads from one place
/// (the in-memory store, a PostgreSQL store without replicas) always reads the latest; a
/// PostgreSQL store with replicas ([`PgEventStoreBuilder::replica`](crate::PgEventStoreBuilder::replica))
/// reads on a replica that may lag (by at most the store's bound) unless told otherwise.
///
/// A decision stays exact at every level: its append is guarded on the primary against every
/// event its read did not see, so a stale read costs a failed append, never a wrong one.
/// [`decide`](crate::decide) reads [`Consistency::Eventual`] first and [`Consistency::Latest`]
/// after a conflict.
///
/// ```
/// use dcbstore::{Consistency, ReadOptions};
/// # fn run(written: dcbstore::AppendResult) {
/// // Read-your-writes: a read that includes what this caller just appended.
/// let options = ReadOptions::default().including(written.checkpoint());
/// assert_eq!(options.consistency, Consistency::Includes(written.checkpoint()));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// What the store's readers have: on a replica, the commits it has replayed.
    #[default]
    Eventual,
    /// Every commit that ended before the call.
    Latest,
    /// At least the append this checkpoint marks
    /// ([`AppendResult::checkpoint`](crate::AppendResult::checkpoint)), and everything the
    /// Eventual level has.
    Includes(Checkpoint),
}

impl ReadOptions {
    /// Starts at `position` (inclusive).
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadOptions::default().from_position(3).from, Some(3));
    /// ```
    pub fn from_position(mut self, position: u64) -> Self {
        self.from = Some(position);
        self
    }

    /// Returns at most `limit` events.
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadOptions::default().limit(1).limit, Some(1));
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Reads newest first.
    ///
    /// ```
    /// assert!(dcbstore::ReadOptions::default().backwards().backwards);
    /// ```
    pub fn backwards(mut self) -> Self {
        self.backwards = true;
        self
    }

    /// Reads every commit that ended before the call ([`Consistency::Latest`]).
    ///
    /// ```
    /// use dcbstore::{Consistency, ReadOptions};
    /// assert_eq!(ReadOptions::default().latest().consistency, Consistency::Latest);
    /// ```
    pub fn latest(mut self) -> Self {
        self.consistency = Consistency::Latest;
        self
    }

    /// Reads at least the append `checkpoint` marks ([`Consistency::Includes`]): read-your-writes.
    /// A checkpoint of another backend's store is refused when the read runs.
    ///
    /// ```
    /// # async fn run() -> dcbstore::Result<()> {
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, ReadOptions};
    /// let store = MemoryEventStore::new();
    /// let written = store.append([Event::new("Seen", serde_json::json!({}))], None).await?;
    /// let read = store
    ///     .read(&Query::all(), ReadOptions::default().including(written.checkpoint()))
    ///     .await?;
    /// assert_eq!(read.len(), 1);
    /// # Ok(())
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run()).unwrap();
    /// ```
    pub fn including(mut self, checkpoint: Checkpoint) -> Self {
        self.consistency = Consistency::Includes(checkpoint);
        self
    }
}
