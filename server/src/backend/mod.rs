//! The store behind the server: dcbstore on PostgreSQL, or in memory for trying it out. Both
//! answer the same four questions: the settled head (below which reads are prefixes), a page of
//! events, an append with its consumer's tracking position, and that position.

mod memory;
mod postgres;

use dcbstore::{AppendCondition, Event, EventStore, Query, ReadOptions, SequencedEvent};

pub(crate) use memory::Memory;
pub(crate) use postgres::Postgres;

/// A consumer's position, written with the append that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracking {
    pub(crate) source: String,
    pub(crate) position: u64,
}

/// What failed in the backend: the store, or the server's own statements (tracking).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error(transparent)]
    Store(#[from] dcbstore::Error),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: dcbstore::tokio_postgres::Error,
    },
    #[error("could not get a connection from the pool: {0}")]
    Pool(#[from] dcbstore::deadpool_postgres::PoolError),
    /// The tracking position does not move the source forward.
    #[error("non-increasing tracking position for source {name:?}: {position} <= {recorded}")]
    TrackingNotIncreasing {
        name: String,
        position: u64,
        recorded: u64,
    },
}

/// The store the server serves.
pub(crate) enum Backend {
    Memory(Memory),
    Postgres(Postgres),
}

impl Backend {
    /// The highest position at or below which every event matching `query` that will ever
    /// commit has committed: a read of `query` whose snapshot follows this call, cut there, is a
    /// prefix of the events matching it (with `Query::all()`, of the log).
    pub(crate) async fn settled_head(&self, query: &Query) -> dcbstore::Result<Option<u64>> {
        match self {
            // One writer at a time: every stored position is settled.
            Backend::Memory(m) => m.store.head().await,
            Backend::Postgres(p) => p.store.settled_head_for(query).await,
        }
    }

    /// At most `limit` events matching `query` from `from` (inclusive, forwards), cut at the
    /// settled head of `query`, and that head: in one round trip on PostgreSQL when no append
    /// it must wait for is in flight.
    pub(crate) async fn settled_page(
        &self,
        query: &Query,
        from: Option<u64>,
        limit: u64,
    ) -> dcbstore::Result<(Vec<SequencedEvent>, Option<u64>)> {
        let options = page_options(from, limit);
        match self {
            Backend::Memory(m) => {
                let head = m.store.head().await?;
                let read = m.store.read(query, options).await?;
                let cut = read.into_events().into_iter();
                Ok((cut.take_while(|e| Some(e.position) <= head).collect(), head))
            }
            Backend::Postgres(p) => p.store.read_settled(query, options).await,
        }
    }

    /// At most `limit` events matching `query` from `from` (inclusive; the highest position when
    /// reading backwards).
    pub(crate) async fn page(
        &self,
        query: &Query,
        from: Option<u64>,
        backwards: bool,
        limit: u64,
    ) -> dcbstore::Result<Vec<SequencedEvent>> {
        let mut options = page_options(from, limit);
        if backwards {
            options = options.backwards();
        }
        let read = match self {
            Backend::Memory(m) => m.store.read(query, options).await?,
            // The primary: a replica may not have replayed up to the settled head yet.
            Backend::Postgres(p) => p.store.read(query, options.latest()).await?,
        };
        Ok(read.into_events())
    }

    /// Appends `events` if `condition` holds, and moves `tracking`'s source forward in the
    /// same transaction. Returns the last position of the append (of the original one for a
    /// replay).
    pub(crate) async fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
        tracking: Option<Tracking>,
    ) -> Result<u64, BackendError> {
        match self {
            Backend::Memory(m) => m.append(events, condition, tracking).await,
            Backend::Postgres(p) => p.append(events, condition, tracking).await,
        }
    }

    /// The position recorded for `source`.
    pub(crate) async fn tracking(&self, source: &str) -> Result<Option<u64>, BackendError> {
        match self {
            Backend::Memory(m) => Ok(m.tracking(source).await),
            Backend::Postgres(p) => p.tracking(source).await,
        }
    }

    /// Whether events appended by other processes can appear (PostgreSQL): then subscriptions
    /// also look for them on a timer, not only when this server appends.
    pub(crate) fn shared(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
}

/// The options of a page: at most `limit` events from `from` (inclusive).
fn page_options(from: Option<u64>, limit: u64) -> ReadOptions {
    let options = ReadOptions::default().limit(limit);
    match from {
        Some(from) => options.from_position(from),
        None => options,
    }
}

impl BackendError {
    /// The driver's error `source`, met while doing `context`.
    pub(crate) fn db(context: &'static str, source: dcbstore::tokio_postgres::Error) -> Self {
        BackendError::Database { context, source }
    }

    /// Whether the same call can succeed later: the store says so for its errors; for the
    /// server's statements, a lost connection, a timeout, a deadlock or a serialization failure.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            BackendError::Store(e) => e.is_retryable(),
            BackendError::Database { source, .. } => {
                source.is_closed()
                    || source.as_db_error().is_none()
                    || matches!(
                        source.code().map(|c| c.code()),
                        Some("40001" | "40P01" | "55P03" | "57014" | "53300" | "57P01")
                    )
            }
            BackendError::Pool(_) => true,
            BackendError::TrackingNotIncreasing { .. } => false,
        }
    }
}
