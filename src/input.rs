//! [`InvalidInput`]: why input was rejected, by what it is about. A leaf: the types it names
//! are other crates'.

use std::fmt;

/// Why input was rejected, by what it is about: an event of the batch (with its index), the
/// batch, a query (with its item), a token that did not parse, the configuration, or another
/// argument of the call. Every case is detected before anything is written.
///
/// ```
/// use dcbstore::{EventProblem, InvalidInput};
///
/// let err = InvalidInput::Event { index: 2, problem: EventProblem::EmptyType };
/// assert_eq!(err.to_string(), "event #2: its event type is empty");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An event of an append's batch.
    #[error("event #{index}: {problem}")]
    Event {
        /// Index of the event in its batch.
        index: usize,
        /// What is wrong with it.
        problem: EventProblem,
    },
    /// An append's batch as a whole.
    #[error("{0}")]
    Batch(BatchProblem),
    /// A [`Query`](crate::Query): one of its items, or the query as a whole.
    #[error("{}{problem}", ItemPrefix(*item))]
    Query {
        /// Index of the item at fault, when one is.
        item: Option<usize>,
        /// What is wrong with it.
        problem: QueryProblem,
    },
    /// A token (a read snapshot, a checkpoint) could not be read back from its text form.
    #[error("{0}")]
    Parse(ParseProblem),
    /// A setting of the store or of a projector runner.
    #[error("{0}")]
    Config(ConfigProblem),
    /// Another argument of the call: a position, a limit, a condition or checkpoint from
    /// elsewhere.
    #[error("{0}")]
    Argument(ArgumentProblem),
}

/// What is wrong with an event ([`InvalidInput::Event`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventProblem {
    /// Its type is the empty string.
    #[error("its event type is empty")]
    EmptyType,
    /// It carries an empty tag.
    #[error("it carries an empty tag")]
    EmptyTag,
    /// Its payload (or metadata) is not a JSON object.
    #[error("{field} must be a JSON object, got {found}")]
    NotAnObject {
        /// `payload` or `metadata`.
        field: &'static str,
        /// The JSON kind that was found instead.
        found: &'static str,
    },
    /// It repeats the id of an earlier event of its batch.
    #[error("it repeats the id {event_id} of an earlier event in the batch")]
    DuplicateId {
        /// The repeated id.
        event_id: uuid::Uuid,
    },
    /// Its JSON (payload and metadata) is larger than
    /// [`limits::MAX_EVENT_BYTES`](crate::limits::MAX_EVENT_BYTES).
    #[error("it carries {bytes} bytes of JSON, more than the limit of {max}")]
    TooLarge {
        /// Its payload and metadata, serialized.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A value of it PostgreSQL cannot store.
    #[error("{field} {problem}")]
    Value {
        /// `event type`, `tag`, `payload` or `metadata`.
        field: &'static str,
        /// What is wrong with the value.
        problem: ValueProblem,
    },
}

/// What is wrong with an append's batch ([`InvalidInput::Batch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchProblem {
    /// It has no events.
    #[error("an append needs at least one event")]
    Empty,
    /// It has more events than the store accepts in one batch.
    #[error("a batch of {len} events exceeds the limit of {max}")]
    TooLarge {
        /// Number of events in the batch.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// Its JSON is larger than [`limits::MAX_BATCH_BYTES`](crate::limits::MAX_BATCH_BYTES).
    #[error("the batch carries {bytes} bytes of JSON, more than the limit of {max}")]
    TooManyBytes {
        /// Every payload and metadata of the batch, serialized.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// What is wrong with a query or one of its items ([`InvalidInput::Query`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryProblem {
    /// The query has no items.
    #[error("a query needs at least one item (use Query::all() to match every event)")]
    Empty,
    /// The query has more items plus payload predicates than
    /// [`limits::MAX_QUERY_CLAUSES`](crate::limits::MAX_QUERY_CLAUSES).
    #[error("the query has {clauses} items and payload predicates, more than the limit of {max}")]
    TooLarge {
        /// Items plus payload predicates.
        clauses: usize,
        /// The limit.
        max: usize,
    },
    /// The query's `occurred_at` range is empty.
    #[error("the occurred_at range is empty: its start is not before its end")]
    EmptyTimeRange,
    /// An `occurred_at` bound before [`limits::MIN_YEAR`](crate::limits::MIN_YEAR).
    #[error("the occurred_at bound {0} is before the earliest time PostgreSQL stores (4713 BC)")]
    TimeOutOfRange(time::OffsetDateTime),
    /// The item constrains nothing.
    #[error("it constrains nothing (use Query::all() to match every event)")]
    ConstrainsNothing,
    /// The item can never match any event.
    #[error("it can never match: {reason}")]
    Contradictory {
        /// Why it cannot match.
        reason: String,
    },
    /// A value of the item PostgreSQL cannot store.
    #[error("{field} {problem}")]
    Value {
        /// `event type`, `tag`, `payload path` or `payload predicate value`.
        field: &'static str,
        /// What is wrong with the value.
        problem: ValueProblem,
    },
}

/// What is wrong with a string or a JSON value, in an event or a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueProblem {
    /// It contains a NUL character, which PostgreSQL cannot store in text or JSONB.
    #[error("contains a NUL character, which PostgreSQL cannot store")]
    NulCharacter,
    /// A key of it contains a NUL character.
    #[error("has a key with a NUL character, which PostgreSQL cannot store")]
    NulInKey,
    /// A name (event type, tag) is longer than
    /// [`limits::MAX_NAME_BYTES`](crate::limits::MAX_NAME_BYTES).
    #[error("is {bytes} bytes long, more than the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// JSON nested deeper than [`limits::MAX_JSON_DEPTH`](crate::limits::MAX_JSON_DEPTH).
    #[error("is nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A JSON number PostgreSQL cannot give back (magnitude above
    /// [`limits::MAX_JSON_NUMBER`](crate::limits::MAX_JSON_NUMBER)).
    #[error("holds the number {number}, whose magnitude is above 1e308")]
    NumberOutOfRange {
        /// The number.
        number: String,
    },
}

/// A token that could not be read back from its text form ([`InvalidInput::Parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseProblem {
    /// Not a [`ReadSnapshot`](crate::ReadSnapshot) (its first 100 characters).
    #[error("{0:?} is not a read snapshot (expected mem:<head> or pg:<xmin>:<xmax>:<xip,…>)")]
    Snapshot(String),
    /// Not a [`Checkpoint`](crate::Checkpoint).
    #[error("{0:?} is not a checkpoint (expected mem:<position> or pg:<transaction>:<position>)")]
    Checkpoint(String),
}

/// A setting that cannot be used ([`InvalidInput::Config`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// A schema name is not a plain lower-case SQL identifier.
    #[error(
        "invalid schema name {0:?}: use 1 to 63 characters of a-z, 0-9 and _, not starting with a digit or pg_"
    )]
    SchemaName(String),
    /// Two projectors of one runner have the same name (and so would share a checkpoint).
    #[error("two projectors are named {0:?}: each needs a name of its own")]
    DuplicateProjector(String),
}

/// Another argument of a call that cannot be used ([`InvalidInput::Argument`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentProblem {
    /// A position (a read's `from`, a condition's `after`) does not fit PostgreSQL's `bigint`.
    #[error("position {0} is out of range (at most {max})", max = i64::MAX)]
    PositionOutOfRange(u64),
    /// A read `limit` above `i64::MAX`.
    #[error("the read limit {0} is out of range (at most {max})", max = i64::MAX)]
    LimitOutOfRange(u64),
    /// A feed was asked for pages of no event.
    #[error("a feed page must hold at least one event (limit 0)")]
    ZeroFeedLimit,
    /// [`ReadResult::append_condition`](crate::ReadResult::append_condition) was asked for the
    /// condition of a forward read that stopped at its limit: the decision did not see the
    /// matching events after the last one returned, so any condition derived from it would fail
    /// whenever there are some.
    #[error(
        "the read stopped at its limit of {limit} events and did not see the rest of its query: \
         read without a limit (or backwards, newest first) to guard a decision"
    )]
    IncompleteRead {
        /// The read's limit.
        limit: u64,
    },
    /// An [`AppendCondition`](crate::AppendCondition) carries the snapshot of a read from the
    /// other backend.
    #[error("the append condition carries a snapshot of a {found} read, this store is {expected}")]
    ForeignSnapshot {
        /// The backend of the store the append went to.
        expected: &'static str,
        /// The backend the snapshot comes from.
        found: &'static str,
    },
    /// [`PgEventStore::read_settled`](crate::PgEventStore::read_settled) was asked to read
    /// backwards: it reads from the start up to the settled head.
    #[error(
        "a settled read reads forwards: read backwards from the settled head \
         (settled_head_for, then a backwards read from it) instead"
    )]
    BackwardsSettledRead,
    /// A checkpoint (to resume a feed, to wait for an append) comes from the other backend.
    #[error("the checkpoint comes from a {found} feed, this store is {expected}")]
    ForeignCheckpoint {
        /// The backend of the store asked.
        expected: &'static str,
        /// The backend the checkpoint comes from.
        found: &'static str,
    },
}

/// `query item #i: ` before an item's problem, nothing before the query's.
struct ItemPrefix(Option<usize>);

impl fmt::Display for ItemPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(item) => write!(f, "query item #{item}: "),
            None => Ok(()),
        }
    }
}

impl From<BatchProblem> for InvalidInput {
    fn from(problem: BatchProblem) -> Self {
        InvalidInput::Batch(problem)
    }
}

impl From<ParseProblem> for InvalidInput {
    fn from(problem: ParseProblem) -> Self {
        InvalidInput::Parse(problem)
    }
}

impl From<ConfigProblem> for InvalidInput {
    fn from(problem: ConfigProblem) -> Self {
        InvalidInput::Config(problem)
    }
}

impl From<ArgumentProblem> for InvalidInput {
    fn from(problem: ArgumentProblem) -> Self {
        InvalidInput::Argument(problem)
    }
}

impl InvalidInput {
    /// A problem of the query as a whole.
    pub(crate) fn query(problem: QueryProblem) -> Self {
        InvalidInput::Query {
            item: None,
            problem,
        }
    }

    /// A problem of the query's item `item`.
    pub(crate) fn item(item: usize, problem: QueryProblem) -> Self {
        InvalidInput::Query {
            item: Some(item),
            problem,
        }
    }

    /// A problem of the batch's event `index`.
    pub(crate) fn event(index: usize, problem: EventProblem) -> Self {
        InvalidInput::Event { index, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_the_input_is_about() {
        let tag = InvalidInput::event(
            3,
            EventProblem::Value {
                field: "tag",
                problem: ValueProblem::NulCharacter,
            },
        );
        assert_eq!(
            tag.to_string(),
            "event #3: tag contains a NUL character, which PostgreSQL cannot store"
        );
        let item = InvalidInput::item(1, QueryProblem::ConstrainsNothing);
        assert_eq!(
            item.to_string(),
            "query item #1: it constrains nothing (use Query::all() to match every event)"
        );
        assert_eq!(
            InvalidInput::query(QueryProblem::Empty).to_string(),
            "a query needs at least one item (use Query::all() to match every event)"
        );
        assert_eq!(
            InvalidInput::from(BatchProblem::Empty).to_string(),
            "an append needs at least one event"
        );
    }
}
