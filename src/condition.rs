//! The guard of an append: [`AppendCondition`].

use crate::query::Query;
use crate::snapshot::ReadSnapshot;

/// The guard of an append: fail if any event matching `fail_if_events_match` has a position
/// greater than `after` (any matching event at all when `after` is `None`), or, when the
/// condition carries the [`ReadSnapshot`] of the read the decision was made from, if any matching
/// event was not visible to that read, whatever its position.
///
/// **Derive it from the read** with [`ReadResult::append_condition`](crate::ReadResult::append_condition):
/// it knows the query, the last position and the snapshot, and the guard then fails for every
/// matching event the decision did not see, including one that committed after the read with a
/// position *below* the ones it returned. [`decide`](crate::decide) does this for you.
///
/// A condition built by hand from a bare position ([`AppendCondition::new`]) has the DCB
/// specification's position semantics, no more: it fails for matching events with a position
/// above `after`. That is exact when `None` (nothing may match) and when every writer of a
/// matching event is guarded by the same boundary (they are then serialized in position order),
/// but not when one is not (an unguarded append, an append guarded by another boundary, or an
/// `append_in` transaction still open): such an event can commit after the read with a position
/// below `after`, and the hand-built condition lets the decision through without it. Attach the
/// read's snapshot ([`AppendCondition::with_snapshot`]) to close that gap.
///
/// ```
/// use dcbstore::{AppendCondition, Query, QueryItem};
///
/// let query = Query::from(QueryItem::tagged(["username:ada"]));
/// // Nothing may match: fail if anything matching exists now.
/// let condition = AppendCondition::new(query, None);
/// assert_eq!(condition.after, None);
/// assert!(condition.snapshot.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AppendCondition {
    /// The query whose matches make the append fail.
    pub fail_if_events_match: Query,
    /// Matching events after this position count.
    pub after: Option<u64>,
    /// What the decision's read saw: matching events it could not see count too.
    pub snapshot: Option<ReadSnapshot>,
}

impl AppendCondition {
    /// Fail if an event matching `query` exists after `after` (position semantics only; see the
    /// type's documentation for when that is not enough).
    ///
    /// ```
    /// let c = dcbstore::AppendCondition::new(dcbstore::Query::all(), Some(41));
    /// assert_eq!(c.after, Some(41));
    /// ```
    pub fn new(query: Query, after: Option<u64>) -> Self {
        Self {
            fail_if_events_match: query,
            after,
            snapshot: None,
        }
    }

    /// Also fail for matching events that `snapshot` (a read's, see
    /// [`ReadResult::snapshot`](crate::ReadResult::snapshot)) could not see, e.g. after the
    /// snapshot and the position came back from a client.
    ///
    /// ```
    /// use dcbstore::{AppendCondition, Query, ReadSnapshot};
    /// let seen: ReadSnapshot = "mem:7".parse()?;
    /// let c = AppendCondition::new(Query::all(), Some(7)).with_snapshot(seen.clone());
    /// assert_eq!(c.snapshot, Some(seen));
    /// # Ok::<(), dcbstore::InvalidInput>(())
    /// ```
    pub fn with_snapshot(mut self, snapshot: ReadSnapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }
}
