//! The feed: the log in the order consumers can follow without skipping, from a [`Checkpoint`].

use crate::checkpoint::Checkpoint;
use crate::event::SequencedEvent;

/// One page of the feed: events in feed order, each with the checkpoint just after it, and
/// where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// The events, in feed order.
    pub events: Vec<FeedEvent>,
    /// Pass it to the next call: after the last event of a full page; when the page is not
    /// full, past everything the store could deliver now (which may be beyond the last event,
    /// so that a consumer of a narrow query does not scan the same rows again).
    pub next: Checkpoint,
    /// Events of the query have committed beyond this page but cannot be delivered yet:
    /// transactions that began before them are still running (for PostgreSQL: at or above
    /// `pg_snapshot_xmin`, see [`EventStore::feed`](crate::EventStore::feed)), or, for a page
    /// read on a replica, the replica had not replayed everything the primary had committed.
    /// Ask again soon; if it stays `true`, a long transaction holds the feed back (or the
    /// replica lags). Always `false` in memory.
    pub held_back: bool,
}

/// An event of the feed, with the checkpoint that marks it delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// The event.
    pub event: SequencedEvent,
    /// Store it once the event is processed: resuming from it delivers what comes after.
    pub checkpoint: Checkpoint,
}
