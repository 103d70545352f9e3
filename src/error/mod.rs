//! Error types: one [`Error`] for every fallible call, with [`InvalidInput`] for rejected input
//! and [`DatabaseError`] for what the database reported.

mod database;

use std::fmt;
use std::time::Duration;

pub use crate::input::{
    ArgumentProblem, BatchProblem, ConfigProblem, EventProblem, InvalidInput, ParseProblem,
    QueryProblem, ValueProblem,
};
pub use database::DatabaseError;

use crate::checkpoint::Checkpoint;

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
/// use dcbstore::{BatchProblem, Error, InvalidInput};
///
/// let err = Error::from(InvalidInput::Batch(BatchProblem::Empty));
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

    /// The database reported an error, or the connection to it failed. `Display` gives what
    /// the store was doing and the server's message and SQLSTATE (or the driver's error and its
    /// cause); [`DatabaseError`] answers the same as methods.
    #[error("database error while {}: {}", .0.context(), .0)]
    Database(#[source] DatabaseError),

    /// No connection could be taken from the pool: it timed out, is closed, or opening a
    /// connection failed (then `Display` gives what the server or the driver said).
    #[error("could not get a connection from the pool: {0}")]
    Pool(#[source] DatabaseError),

    /// A [`Projector`](crate::Projector) failed: loading its checkpoint, applying events (after
    /// its retries), or resetting for a rebuild. Its events are applied again from its stored
    /// checkpoint when it runs next.
    #[error("projector {projector:?} failed: {source}")]
    Projector {
        /// The projector's name.
        projector: String,
        /// What the projector returned.
        #[source]
        source: BoxError,
    },

    /// [`ProjectorHandle::wait_for`](crate::ProjectorHandle::wait_for) timed out: a projector
    /// had not applied the append yet (it is catching up, a batch is slow, or on PostgreSQL a
    /// transaction that began before the append is still running and holds the feed back).
    /// Retryable: waiting again can succeed.
    #[error(
        "projector {projector:?} had not applied the append at {target} after {waited:?}: it \
         stands at {}, {applied} events applied in this run",
        OrElse(*through, "the start (it has read nothing yet)")
    )]
    ProjectorBehind {
        /// The projector's name.
        projector: String,
        /// How long it was waited for.
        waited: Duration,
        /// The append's [`AppendResult::checkpoint`](crate::AppendResult::checkpoint).
        target: Checkpoint,
        /// Where the projector stood when the wait ended
        /// ([`ProjectorStatus::through`](crate::ProjectorStatus::through)).
        through: Option<Checkpoint>,
        /// How many events it had applied in this run.
        applied: u64,
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
    /// let err = dcbstore::Error::from(dcbstore::InvalidInput::Parse(
    ///     dcbstore::ParseProblem::Checkpoint("x".into()),
    /// ));
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
    /// timed out; a projector not there yet ([`Error::ProjectorBehind`]). After a connection
    /// failure during an append its outcome is unknown: retrying with the same ids is safe,
    /// because an append whose events are all stored already is a replay
    /// ([`AppendResult::is_replay`](crate::AppendResult::is_replay)).
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
            Error::ProjectorBehind { .. } => true,
            Error::Database(e) | Error::Pool(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The SQLSTATE code when the database reported the error (also while the pool was opening
    /// a connection), e.g. `"55P03"` for a lock timeout.
    ///
    /// ```
    /// assert!(dcbstore::Error::AppendConditionFailed { after: None }.sql_state().is_none());
    /// ```
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            Error::Database(e) | Error::Pool(e) => e.sql_state(),
            _ => None,
        }
    }

    /// The driver's error met while doing `context`, as an [`Error::Database`].
    #[cfg(feature = "postgres")]
    pub(crate) fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
        move |source| Error::Database(DatabaseError::from_driver(context, source))
    }

    /// The pool's error, as an [`Error::Pool`].
    #[cfg(feature = "postgres")]
    pub(crate) fn pool(e: deadpool_postgres::PoolError) -> Error {
        Error::Pool(DatabaseError::from_pool(e))
    }

    /// Settings that could not be turned into a pool: `about` what, and the library's error.
    #[cfg(feature = "postgres")]
    pub(crate) fn config(
        about: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Config {
            message: format!("{about}: {source}"),
            source: Box::new(source),
        }
    }

    /// A column of the row at `position` (0 when even that is unknown) the driver could not
    /// decode: its error and cause (e.g. what serde_json could not read) as message and source.
    #[cfg(feature = "postgres")]
    pub(crate) fn undecodable(position: u64, e: tokio_postgres::Error) -> Error {
        let described = DatabaseError::from_driver("decoding a row", e);
        Error::Decode {
            position,
            message: described.to_string(),
            source: Some(Box::new(described)),
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
        let behind = |through| {
            Error::ProjectorBehind {
                projector: "seats".into(),
                waited: Duration::from_secs(1),
                target: Checkpoint::memory(3),
                through,
                applied: 0,
            }
            .to_string()
        };
        assert_eq!(
            behind(None),
            "projector \"seats\" had not applied the append at mem:3 after 1s: it stands at the \
             start (it has read nothing yet), 0 events applied in this run"
        );
        assert!(behind(Some(Checkpoint::memory(2))).contains("it stands at mem:2, 0 events"));
    }
}
