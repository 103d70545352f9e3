//! Error types: one [`Error`] for every fallible call, with [`InvalidInput`] for rejected input.

use std::fmt;
use std::time::Duration;

use crate::feed::Checkpoint;
use crate::projector::ProjectionStatus;

/// The result type of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause an error carries when it comes from another library.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong when talking to an event store.
///
/// Match on the variant, or use the predicates ([`Error::is_append_condition_failed`],
/// [`Error::is_invalid_input`], [`Error::is_retryable`]) when you only need to know what to do
/// next.
///
/// ```
/// use dcbstore::{Error, InvalidInput};
///
/// let err = Error::from(InvalidInput::EmptyBatch);
/// assert!(err.is_invalid_input());
/// assert!(!err.is_append_condition_failed());
/// assert_eq!(err.to_string(), "invalid input: an append needs at least one event");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The append was guarded by an [`AppendCondition`](crate::AppendCondition) and an event
    /// matching its query exists after the position the decision was based on. Nothing was
    /// written. Re-read, decide again and retry.
    #[error(
        "append condition failed: an event matching the condition query exists after position {}",
        OrElse(*after, "none (any matching event fails it)")
    )]
    AppendConditionFailed {
        /// The `after` position of the failed condition (`None`: any matching event fails it).
        after: Option<u64>,
    },

    /// The input was rejected before anything was sent to the database; nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),

    /// An event with the same id is already stored; nothing of the batch was written.
    #[error("an event with id {event_id} is already stored")]
    DuplicateEventId {
        /// The id that is already taken.
        event_id: uuid::Uuid,
    },

    /// Every event of the batch is stored already (the same ids), but this one with other
    /// content: not a replay of the same append, and nothing was written. Retrying cannot
    /// succeed; give new events new ids.
    #[error(
        "event id {event_id} is stored already, at position {position}, with other content: \
         an idempotent retry must resend the same event"
    )]
    IdempotencyConflict {
        /// The id whose stored event differs.
        event_id: uuid::Uuid,
        /// Where the stored event is.
        position: u64,
    },

    /// [`PgEventStore::append_in`](crate::PgEventStore::append_in) was called inside a
    /// transaction whose isolation level cannot make the append condition hold.
    #[error(
        "appends need READ COMMITTED or SERIALIZABLE isolation, the transaction runs at {isolation}"
    )]
    UnsupportedIsolation {
        /// The isolation level the transaction reported.
        isolation: String,
    },

    /// The database reported an error, or the connection to it failed. `Display` gives the
    /// server's message and SQLSTATE (or the driver's error and its cause).
    #[cfg(feature = "postgres")]
    #[error("database error while {context}: {}", Driver(source))]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// No connection could be taken from the pool: it timed out, is closed, or opening a
    /// connection failed (then `Display` gives what the server or the driver said).
    #[cfg(feature = "postgres")]
    #[error("could not get a connection from the pool: {}", PoolCause(.0))]
    Pool(#[from] deadpool_postgres::PoolError),

    /// A [`Projector`](crate::Projector) failed: loading its checkpoint, applying events (after
    /// its retries), or resetting for a rebuild. Its events are applied again from its stored
    /// checkpoint when it runs next.
    #[error("projection {projection:?} failed: {source}")]
    Projection {
        /// The projector's name.
        projection: String,
        /// What the projector returned.
        #[source]
        source: BoxError,
    },

    /// [`ProjectionHandle::wait_for`](crate::ProjectionHandle::wait_for) timed out: a projector
    /// had not applied the append yet (it is catching up, a batch is slow, or on PostgreSQL a
    /// transaction that began before the append is still running and holds the feed back).
    /// Retryable: waiting again can succeed.
    #[error(
        "projection {:?} had not applied the append at {target} after {waited:?}: it stands at {}, \
         {} events applied in this run",
        status.name,
        OrElse(status.through, "the start (it has read nothing yet)"),
        status.applied
    )]
    ProjectionBehind {
        /// How long it was waited for.
        waited: Duration,
        /// The append's [`AppendResult::checkpoint`](crate::AppendResult::checkpoint).
        target: Checkpoint,
        /// Where the projector stood when the wait ended.
        status: Box<ProjectionStatus>,
    },

    /// The connection settings could not be turned into a pool.
    #[error("invalid connection configuration: {message}")]
    Config {
        /// What was wrong.
        message: String,
        /// The driver's or the pool's error.
        #[source]
        source: BoxError,
    },

    /// A stored event has a type the domain event type does not know
    /// ([`DomainEvent`](crate::DomainEvent)).
    #[error("unknown event type {event_type:?} at position {position}")]
    UnknownEventType {
        /// The stored type.
        event_type: String,
        /// Position of the event (0 when it was not read from a store).
        position: u64,
    },

    /// A domain event could not be serialized into an event.
    #[error("could not encode a domain event: {message}")]
    Encode {
        /// What was wrong.
        message: String,
        /// serde's error, when serde failed.
        #[source]
        source: Option<BoxError>,
    },

    /// A stored row could not be turned into an event (the schema does not match this version),
    /// or a stored event into a domain event.
    #[error("could not decode stored event at position {position}: {message}")]
    Decode {
        /// Position of the row, or 0 when even that could not be read.
        position: u64,
        /// What was wrong.
        message: String,
        /// The driver's or serde's error, when one of them failed.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// `true` when an append was rejected because its [`AppendCondition`](crate::AppendCondition)
    /// failed. This is the expected outcome of a lost race: re-read, decide again, retry.
    ///
    /// ```
    /// let err = dcbstore::Error::AppendConditionFailed { after: Some(7) };
    /// assert!(err.is_append_condition_failed());
    /// ```
    pub fn is_append_condition_failed(&self) -> bool {
        matches!(self, Error::AppendConditionFailed { .. })
    }

    /// `true` when the input was rejected before anything was sent to the database.
    ///
    /// ```
    /// let err = dcbstore::Error::from(dcbstore::InvalidInput::EmptyQuery);
    /// assert!(err.is_invalid_input());
    /// ```
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidInput(_))
    }

    /// `true` when trying the same call again (the same events, the same ids) can succeed: the
    /// failure was about the moment, not the call.
    ///
    /// Retryable: connection failures (refused, closed, terminated by the server: `08xxx`,
    /// `57P01`–`57P03`), serialization failures and deadlocks (`40001`, `40P01`), lock and
    /// statement timeouts (`55P03`, `57014`), too many connections (`53300`), and a pool that
    /// timed out; a projection not there yet ([`Error::ProjectionBehind`]). After a connection failure during an append its outcome is unknown: retrying
    /// with the same ids is safe, because an append whose events are all stored already is a
    /// replay ([`AppendResult::is_replay`](crate::AppendResult::is_replay)).
    ///
    /// Not retryable: a failed [`AppendCondition`](crate::AppendCondition) (the boundary changed:
    /// read again and decide again, which is what [`decide`](crate::decide) does), invalid input,
    /// a duplicate event id, and every other database error.
    ///
    /// ```
    /// let err = dcbstore::Error::AppendConditionFailed { after: None };
    /// assert!(!err.is_retryable(), "the same append would fail the same way");
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ProjectionBehind { .. } => true,
            #[cfg(feature = "postgres")]
            Error::Database { source, .. } => transient(source),
            #[cfg(feature = "postgres")]
            Error::Pool(pool) => match pool {
                deadpool_postgres::PoolError::Timeout(_) => true,
                deadpool_postgres::PoolError::Backend(source) => transient(source),
                _ => false,
            },
            _ => false,
        }
    }

    /// The SQLSTATE code when the database reported the error (also while the pool was opening
    /// a connection).
    ///
    /// ```
    /// assert!(dcbstore::Error::AppendConditionFailed { after: None }.sql_state().is_none());
    /// ```
    #[cfg(feature = "postgres")]
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Database { source, .. }
            | Error::Pool(deadpool_postgres::PoolError::Backend(source)) => source.code(),
            _ => None,
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
        move |source| Error::Database { context, source }
    }
}

/// Whether a driver error is about the moment (the connection, a lock, a conflict with another
/// transaction) rather than the statement.
#[cfg(feature = "postgres")]
fn transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::QUERY_CANCELED,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No SQLSTATE: the connection closed, or the socket failed (refused, reset).
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
        }
    }
}

/// A driver error as [`Driver`] shows it, e.g. for the message of an [`Error::Decode`].
#[cfg(feature = "postgres")]
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    Driver(e).to_string()
}

/// A driver error as an operator wants to read it: the server's severity, message, SQLSTATE and
/// detail, or the driver's error and its cause.
#[cfg(feature = "postgres")]
struct Driver<'a>(&'a tokio_postgres::Error);

#[cfg(feature = "postgres")]
impl fmt::Display for Driver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "{}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, "; {detail}")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.0)?;
                match std::error::Error::source(self.0) {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A pool error with the driver's error in full when opening a connection failed.
#[cfg(feature = "postgres")]
struct PoolCause<'a>(&'a deadpool_postgres::PoolError);

#[cfg(feature = "postgres")]
impl fmt::Display for PoolCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            deadpool_postgres::PoolError::Backend(e) => {
                write!(f, "opening a connection failed: {}", Driver(e))
            }
            other => write!(f, "{other}"),
        }
    }
}

/// An optional value for a message: the value, or what its absence means.
struct OrElse<T>(Option<T>, &'static str);

impl<T: fmt::Display> fmt::Display for OrElse<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str(self.1),
        }
    }
}

/// Why input was rejected. Every case is detected before anything is written.
///
/// ```
/// use dcbstore::InvalidInput;
///
/// let err = InvalidInput::EmptyEventType { index: 2 };
/// assert_eq!(err.to_string(), "event #2 has an empty event type");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An append was called with no events.
    #[error("an append needs at least one event")]
    EmptyBatch,
    /// An append was called with more events than the store accepts in one batch.
    #[error("a batch of {len} events exceeds the limit of {max}")]
    BatchTooLarge {
        /// Number of events in the batch.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// An event's type is the empty string.
    #[error("event #{index} has an empty event type")]
    EmptyEventType {
        /// Index of the event in its batch.
        index: usize,
    },
    /// An event carries an empty tag.
    #[error("event #{index} has an empty tag")]
    EmptyTag {
        /// Index of the event in its batch.
        index: usize,
    },
    /// An event's payload (or metadata) is not a JSON object.
    #[error("event #{index}: {field} must be a JSON object, got {found}")]
    NotAnObject {
        /// Index of the event in its batch.
        index: usize,
        /// `payload` or `metadata`.
        field: &'static str,
        /// The JSON kind that was found instead.
        found: &'static str,
    },
    /// Two events of one batch carry the same id.
    #[error("event #{index} repeats the id {event_id} of an earlier event in the batch")]
    DuplicateIdInBatch {
        /// Index of the second event with that id.
        index: usize,
        /// The repeated id.
        event_id: uuid::Uuid,
    },
    /// A string contains a NUL character, which PostgreSQL cannot store in text or JSONB.
    #[error("{location} contains a NUL character, which PostgreSQL cannot store")]
    NulCharacter {
        /// Where the NUL was found.
        location: String,
    },
    /// A [`Query`](crate::Query) has no items.
    #[error("a query needs at least one item (use Query::all() to match every event)")]
    EmptyQuery,
    /// A [`QueryItem`](crate::QueryItem) constrains nothing.
    #[error("query item #{item} constrains nothing (use Query::all() to match every event)")]
    EmptyQueryItem {
        /// Index of the item in its query.
        item: usize,
    },
    /// A [`QueryItem`](crate::QueryItem) can never match any event.
    #[error("query item #{item} can never match: {reason}")]
    ContradictoryQueryItem {
        /// Index of the item in its query.
        item: usize,
        /// Why it cannot match.
        reason: String,
    },
    /// A query's `occurred_at` range is empty.
    #[error("the occurred_at range is empty: its start is not before its end")]
    EmptyTimeRange,
    /// A position does not fit PostgreSQL's `bigint`.
    #[error("position {0} is out of range (at most {max})", max = i64::MAX)]
    PositionOutOfRange(u64),
    /// A [`ReadSnapshot`](crate::ReadSnapshot) could not be read back from its text form.
    #[error("{0:?} is not a read snapshot (expected mem:<head> or pg:<xmin>:<xmax>:<xip,…>)")]
    InvalidSnapshot(String),
    /// An [`AppendCondition`](crate::AppendCondition) carries the snapshot of a read from the
    /// other backend.
    #[error("the append condition carries a snapshot of a {found} read, this store is {expected}")]
    ForeignSnapshot {
        /// The backend of the store the append went to.
        expected: &'static str,
        /// The backend the snapshot comes from.
        found: &'static str,
    },
    /// A [`Checkpoint`](crate::Checkpoint) could not be read back from its text form.
    #[error("{0:?} is not a checkpoint (expected mem:<position> or pg:<transaction>:<position>)")]
    InvalidCheckpoint(String),
    /// A feed was asked for pages of no event.
    #[error("a feed page must hold at least one event (limit 0)")]
    ZeroFeedLimit,
    /// Two projectors of one runner have the same name (and so would share a checkpoint).
    #[error("two projectors are named {0:?}: each needs a name of its own")]
    DuplicateProjector(String),
    /// A feed was asked to resume from a checkpoint of the other backend.
    #[error("the checkpoint comes from a {found} feed, this store is {expected}")]
    ForeignCheckpoint {
        /// The backend of the store asked.
        expected: &'static str,
        /// The backend the checkpoint comes from.
        found: &'static str,
    },
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
    /// A name (event type, tag) is longer than
    /// [`limits::MAX_NAME_BYTES`](crate::limits::MAX_NAME_BYTES).
    #[error("{location} is {bytes} bytes long, more than the limit of {max}")]
    TooLong {
        /// Which name.
        location: String,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// An event's JSON (payload and metadata) is larger than
    /// [`limits::MAX_EVENT_BYTES`](crate::limits::MAX_EVENT_BYTES).
    #[error("event #{index} carries {bytes} bytes of JSON, more than the limit of {max}")]
    EventTooLarge {
        /// Index of the event in its batch.
        index: usize,
        /// Its payload and metadata, serialized.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A batch's JSON is larger than [`limits::MAX_BATCH_BYTES`](crate::limits::MAX_BATCH_BYTES).
    #[error("the batch carries {bytes} bytes of JSON, more than the limit of {max}")]
    BatchTooManyBytes {
        /// Every payload and metadata of the batch, serialized.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// JSON nested deeper than [`limits::MAX_JSON_DEPTH`](crate::limits::MAX_JSON_DEPTH).
    #[error("{location} is nested deeper than {max} levels")]
    TooDeep {
        /// Where.
        location: String,
        /// The limit.
        max: usize,
    },
    /// A JSON number PostgreSQL cannot give back (magnitude above
    /// [`limits::MAX_JSON_NUMBER`](crate::limits::MAX_JSON_NUMBER)).
    #[error("{location} holds the number {number}, whose magnitude is above 1e308")]
    NumberOutOfRange {
        /// Where.
        location: String,
        /// The number.
        number: String,
    },
    /// A query has more items plus payload predicates than
    /// [`limits::MAX_QUERY_CLAUSES`](crate::limits::MAX_QUERY_CLAUSES).
    #[error("the query has {clauses} items and payload predicates, more than the limit of {max}")]
    QueryTooLarge {
        /// Items plus payload predicates.
        clauses: usize,
        /// The limit.
        max: usize,
    },
    /// A read `limit` above `i64::MAX`.
    #[error("the read limit {0} is out of range (at most {max})", max = i64::MAX)]
    LimitOutOfRange(u64),
    /// An `occurred_at` bound before [`limits::MIN_YEAR`](crate::limits::MIN_YEAR).
    #[error("the occurred_at bound {0} is before the earliest time PostgreSQL stores (4713 BC)")]
    TimeOutOfRange(time::OffsetDateTime),
    /// A schema name is not a plain lower-case SQL identifier.
    #[error(
        "invalid schema name {0:?}: use 1 to 63 characters of a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidIdentifier(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_an_absent_value_means() {
        let failed = |after| Error::AppendConditionFailed { after }.to_string();
        assert_eq!(
            failed(Some(7)),
            "append condition failed: an event matching the condition query exists after position 7"
        );
        assert_eq!(
            failed(None),
            "append condition failed: an event matching the condition query exists after position \
             none (any matching event fails it)"
        );
        let mut status = ProjectionStatus::new("seats".into());
        let behind = |status: &ProjectionStatus| {
            Error::ProjectionBehind {
                waited: Duration::from_secs(1),
                target: Checkpoint::memory(3),
                status: Box::new(status.clone()),
            }
            .to_string()
        };
        assert_eq!(
            behind(&status),
            "projection \"seats\" had not applied the append at mem:3 after 1s: it stands at the \
             start (it has read nothing yet), 0 events applied in this run"
        );
        status.through = Some(Checkpoint::memory(2));
        assert!(behind(&status).contains("it stands at mem:2, 0 events"));
    }
}
