//! [`PgEventStore`]: the event store on PostgreSQL.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::{StreamExt, TryStreamExt, stream};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, IsolationLevel, NoTls, Row, Transaction};
use tracing::debug;

use crate::error::{Error, Result};
use crate::event::{Event, SequencedEvent, validate_batch};
use crate::locks::LockPlan;
use crate::query::{AppendCondition, Query, ReadOptions};
use crate::sql::{self, SchemaName, Statement};
use crate::validate;

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "dcbstore";

/// The most events one append accepts unless told otherwise.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1000;

const LOCK_KEYS_SQL: &str = include_str!("sql/lock_keys.sql");
const EVENTS_DDL: &str = include_str!("../initdb/02_events.sql");
/// Serializes concurrent `migrate()` calls (their `IF NOT EXISTS` checks race otherwise).
const MIGRATE_LOCK_KEY: i64 = 0x6463_6273_746f_7265; // "dcbstore"

/// A stream of events in read order, owning its connection.
///
/// Rows are decoded as they arrive: memory stays flat however many events match.
pub type EventStream = futures::stream::BoxStream<'static, Result<SequencedEvent>>;

/// An event store in one schema of a PostgreSQL database, over a connection pool.
///
/// Cheap to clone: clones share the pool.
///
/// ```no_run
/// use dcbstore::{AppendCondition, Event, PgEventStore, Query, QueryItem, ReadOptions};
/// use serde_json::json;
///
/// # async fn run() -> dcbstore::Result<()> {
/// let store = PgEventStore::connect("postgres://postgres@127.0.0.1/postgres").await?;
/// store.migrate().await?;
///
/// // Claim a username: read the boundary, decide, append guarded by the same query.
/// let query = Query::from(QueryItem::tagged(["username:ada"]));
/// let read = store.read(&query, ReadOptions::default()).await?;
/// if read.is_empty() {
///     let claimed = Event::new("UsernameClaimed", json!({"username": "ada"}))
///         .with_tags(["username:ada"]);
///     match store
///         .append([claimed], Some(AppendCondition::new(query, read.last_position())))
///         .await
///     {
///         Ok(_) => println!("ada is yours"),
///         Err(e) if e.is_append_condition_failed() => println!("someone was faster"),
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgEventStore {
    pool: Pool,
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    schema: SchemaName,
    max_batch_size: usize,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.config.schema.as_str())
            .field("max_batch_size", &self.config.max_batch_size)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgEventStore {
    /// Connects to `url` (a libpq-style connection string or URL) with a pool of up to
    /// `4 × CPUs` connections, in the default schema [`DEFAULT_SCHEMA`]. One connection is
    /// opened right away, so a wrong URL fails here.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, [`Error::Pool`] when the server cannot be reached.
    ///
    /// ```no_run
    /// # async fn run() -> dcbstore::Result<()> {
    /// let store = dcbstore::PgEventStore::connect("postgres://postgres@localhost/postgres").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        let pg_config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Config(e.to_string()))?;
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        drop(pool.get().await?);
        Ok(Self::from_pool(pool))
    }

    /// A store over an existing pool, in the default schema [`DEFAULT_SCHEMA`].
    ///
    /// ```no_run
    /// use deadpool_postgres::{Manager, Pool};
    /// let manager = Manager::new("host=localhost user=postgres".parse().unwrap(), tokio_postgres::NoTls);
    /// let pool = Pool::builder(manager).max_size(16).build().unwrap();
    /// let store = dcbstore::PgEventStore::from_pool(pool);
    /// assert_eq!(store.schema(), "dcbstore");
    /// ```
    pub fn from_pool(pool: Pool) -> Self {
        Self {
            pool,
            config: Arc::new(Config {
                schema: SchemaName::new(DEFAULT_SCHEMA).expect("the default schema name is valid"),
                max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            }),
        }
    }

    /// The same store in schema `schema` (1 to 63 characters of `a-z`, `0-9`, `_`, not starting
    /// with a digit or `pg_`). Each schema holds an independent event log.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::InvalidIdentifier`](crate::InvalidInput::InvalidIdentifier) for any other
    /// name.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let tenant = store.with_schema("tenant_42")?;
    /// assert_eq!(tenant.schema(), "tenant_42");
    /// assert!(tenant.with_schema("Robert'); DROP TABLE events;--").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_schema(self, schema: &str) -> Result<Self> {
        let schema = SchemaName::new(schema)?;
        Ok(Self {
            pool: self.pool,
            config: Arc::new(Config {
                schema,
                max_batch_size: self.config.max_batch_size,
            }),
        })
    }

    /// The same store accepting at most `max` events per append (default
    /// [`DEFAULT_MAX_BATCH_SIZE`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_max_batch_size(100);
    /// assert_eq!(store.max_batch_size(), 100);
    /// # }
    /// ```
    pub fn with_max_batch_size(self, max: usize) -> Self {
        Self {
            pool: self.pool,
            config: Arc::new(Config {
                schema: self.config.schema.clone(),
                max_batch_size: max,
            }),
        }
    }

    /// The schema this store lives in.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// println!("events are in {}.events", store.schema());
    /// # }
    /// ```
    pub fn schema(&self) -> &str {
        self.config.schema.as_str()
    }

    /// The most events one append accepts.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.max_batch_size(), dcbstore::DEFAULT_MAX_BATCH_SIZE);
    /// # }
    /// ```
    pub fn max_batch_size(&self) -> usize {
        self.config.max_batch_size
    }

    /// The connection pool, e.g. to open a transaction for [`PgEventStore::append_in`].
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = store.pool().get().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Creates the schema, the events table and its indexes if they do not exist: the SQL of
    /// `initdb/02_events.sql`, run in this store's schema. Idempotent and safe to call
    /// concurrently.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] or [`Error::Database`] when the server refuses (e.g. missing privileges).
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// store.migrate().await?;
    /// store.migrate().await?; // nothing to do the second time
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(&self) -> Result<()> {
        const CONTEXT: &str = "migrating the schema";
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(Error::db(CONTEXT))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])
            .await
            .map_err(Error::db(CONTEXT))?;
        let schema = self.config.schema.quoted();
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};"
        ))
        .await
        .map_err(Error::db(CONTEXT))?;
        tx.batch_execute(EVENTS_DDL)
            .await
            .map_err(Error::db(CONTEXT))?;
        tx.commit().await.map_err(Error::db(CONTEXT))?;
        debug!(schema = self.schema(), "migrated");
        Ok(())
    }

    /// Reads the events matching `query`, in position order (newest first with
    /// [`ReadOptions::backwards`]), and collects them.
    ///
    /// Use [`ReadResult::last_position`] as the `after` of the [`AppendCondition`] that guards
    /// the decision made from them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid query or an out-of-range position; [`Error::Pool`],
    /// [`Error::Database`] or [`Error::Decode`] when reading fails.
    ///
    /// ```no_run
    /// use dcbstore::{Query, QueryItem, ReadOptions};
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let course = Query::from(QueryItem::tagged(["course:c1"]));
    /// let read = store.read(&course, ReadOptions::default()).await?;
    /// println!("{} events, last at {:?}", read.len(), read.last_position());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResult> {
        let events = self.read_stream(query, options).try_collect().await?;
        Ok(ReadResult { events })
    }

    /// Reads the events matching `query` as a stream: rows are decoded as they arrive and never
    /// all held in memory. The stream holds one pooled connection until it ends or is dropped.
    ///
    /// Errors (including an invalid query) come as the stream's first item.
    ///
    /// ```no_run
    /// use dcbstore::{Query, ReadOptions};
    /// use futures::TryStreamExt;
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let mut events = store.read_stream(&Query::all(), ReadOptions::default());
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{} {}", event.position, event.event_type);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
        let statement = self.compile_read(query, &options);
        let pool = self.pool.clone();
        stream::once(async move {
            let statement = statement?;
            let client = pool.get().await?;
            let rows = client
                .query_typed_raw(&statement.sql, statement.params())
                .await
                .map_err(Error::db("reading events"))?;
            Ok::<_, Error>(
                rows.map_err(Error::db("reading events"))
                    .and_then(|row| async move { decode(&row) })
                    // The stream owns the connection until it is dropped.
                    .map(move |event| {
                        let _connection = &client;
                        event
                    }),
            )
        })
        .try_flatten()
        .boxed()
    }

    /// Like [`PgEventStore::read`], on a client or transaction of the caller: inside a
    /// transaction the read sees the transaction's own writes.
    ///
    /// # Errors
    ///
    /// As [`PgEventStore::read`].
    ///
    /// ```no_run
    /// use dcbstore::{Query, ReadOptions};
    /// # async fn run(store: dcbstore::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = store.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// let read = store.read_in(&*tx, &Query::all(), ReadOptions::default()).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_in<C: GenericClient>(
        &self,
        client: &C,
        query: &Query,
        options: ReadOptions,
    ) -> Result<ReadResult> {
        let statement = self.compile_read(query, &options)?;
        let rows = client
            .query_typed(&statement.sql, &statement.params())
            .await
            .map_err(Error::db("reading events"))?;
        let events = rows.iter().map(decode).collect::<Result<_>>()?;
        Ok(ReadResult { events })
    }

    /// Appends `events` atomically, all or none, and returns their positions.
    ///
    /// With a `condition`, the append fails with [`Error::AppendConditionFailed`] and writes
    /// nothing if an event matching `condition.fail_if_events_match` exists after
    /// `condition.after`. This holds under any number of concurrent writers: see the crate
    /// documentation for how.
    ///
    /// # Errors
    ///
    /// [`Error::AppendConditionFailed`] as above; [`Error::InvalidInput`] for an empty or
    /// oversized batch, an empty event type or tag, a payload or metadata that is not a JSON
    /// object, a NUL character, or an invalid condition query; [`Error::DuplicateEventId`] when
    /// an event id is already stored; [`Error::Pool`] or [`Error::Database`] otherwise.
    ///
    /// ```no_run
    /// use dcbstore::{AppendCondition, Event, Query, QueryItem, ReadOptions};
    /// use serde_json::json;
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let positions = store
    ///     .append([Event::new("CourseDefined", json!({"id": "c1", "capacity": 10}))
    ///         .with_tags(["course:c1"])], None)
    ///     .await?;
    /// println!("written at {:?}", positions.positions());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(
        &self,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        let prepared = self.prepare_append(events.into_iter().collect(), condition.as_ref())?;
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(Error::db("starting the append's transaction"))?;
        let result = prepared.run(&tx).await;
        match result {
            Ok(appended) => {
                tx.commit()
                    .await
                    .map_err(Error::db("committing the append"))?;
                Ok(appended)
            }
            Err(e) => {
                // The connection goes back to the pool; a failed rollback only means it is gone.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Like [`PgEventStore::append`], inside the caller's transaction, so that e.g. a read model
    /// can be updated in the same commit. The events become visible when the caller commits.
    ///
    /// The transaction must run at READ COMMITTED (PostgreSQL's default; the advisory locks this
    /// call takes make the guard hold) or SERIALIZABLE (where PostgreSQL may instead abort a
    /// transaction with a serialization failure: see [`Error::is_retryable`]). REPEATABLE READ is
    /// refused: its snapshot predates the locks, so the guard could miss a concurrent append.
    ///
    /// The locks are held until the transaction ends: keep it short. Several appends in one
    /// transaction take their locks in separate passes and can then deadlock with one another;
    /// PostgreSQL detects that and aborts one of them (a retryable error).
    ///
    /// # Errors
    ///
    /// As [`PgEventStore::append`], plus [`Error::UnsupportedIsolation`]. After an error, roll
    /// the transaction back.
    ///
    /// ```no_run
    /// use dcbstore::Event;
    /// use serde_json::json;
    /// # async fn run(store: dcbstore::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = store.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// store.append_in(&tx, [Event::new("CourseDefined", json!({"id": "c1"}))], None).await?;
    /// tx.execute("UPDATE course_list SET count = count + 1", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append_in(
        &self,
        transaction: &Transaction<'_>,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        let prepared = self.prepare_append(events.into_iter().collect(), condition.as_ref())?;
        let row = transaction
            .query_one("SELECT current_setting('transaction_isolation')", &[])
            .await
            .map_err(Error::db("checking the transaction's isolation level"))?;
        let isolation: String = row.get(0);
        if isolation == "repeatable read" {
            return Err(Error::UnsupportedIsolation { isolation });
        }
        prepared.run(transaction).await
    }

    /// The position of the newest event, `None` while the store is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] or [`Error::Database`].
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// println!("head: {:?}", store.head().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn head(&self) -> Result<Option<u64>> {
        let last = self
            .read(&Query::all(), ReadOptions::default().backwards().limit(1))
            .await?;
        Ok(last.last_position())
    }

    fn compile_read(&self, query: &Query, options: &ReadOptions) -> Result<Statement> {
        query.validate()?;
        Ok(sql::select_events(&self.config.schema, query, options)?)
    }

    fn prepare_append(
        &self,
        events: Vec<Event>,
        condition: Option<&AppendCondition>,
    ) -> Result<PreparedAppend> {
        validate_batch(&events, self.config.max_batch_size)?;
        let guard = match condition {
            Some(c) => {
                c.fail_if_events_match.validate()?;
                let after = c.after.map(validate::position).transpose()?;
                Some((&c.fail_if_events_match, after))
            }
            None => None,
        };
        let schema = &self.config.schema;
        Ok(PreparedAppend {
            locks: LockPlan::new(
                schema.as_str(),
                &events,
                condition.map(|c| &c.fail_if_events_match),
            ),
            insert: sql::insert_events(schema, &events, guard),
            after: condition.map(|c| c.after),
            events,
        })
    }
}

/// An append checked and compiled, ready to run in a transaction.
struct PreparedAppend {
    events: Vec<Event>,
    locks: LockPlan,
    insert: Statement,
    /// `Some` when guarded: the condition's `after`.
    after: Option<Option<u64>>,
}

impl PreparedAppend {
    /// Takes the advisory locks, then runs the guarded insert. The two statements are
    /// pipelined (one round trip) but run one after the other, so the insert's snapshot is taken
    /// after every lock is held: it sees every conflicting append that committed before.
    async fn run(&self, tx: &Transaction<'_>) -> Result<AppendResult> {
        let lock_params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] = [
            (&self.locks.keys, Type::INT8_ARRAY),
            (&self.locks.exclusive, Type::BOOL_ARRAY),
        ];
        let params = self.insert.params();
        let (locked, inserted) = futures::join!(
            tx.query_typed(LOCK_KEYS_SQL, &lock_params),
            tx.query_typed(&self.insert.sql, &params),
        );
        locked.map_err(Error::db("taking the append's advisory locks"))?;
        let rows = inserted.map_err(|e| self.insert_error(e))?;
        if rows.is_empty() {
            let after = self.after.flatten();
            debug!(?after, "append condition failed");
            return Err(Error::AppendConditionFailed { after });
        }
        let mut positions = rows
            .iter()
            .map(|r| r.try_get::<_, i64>(0).map(|p| p as u64))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::db("reading the written positions"))?;
        // Positions are drawn in batch order; RETURNING does not promise that order.
        positions.sort_unstable();
        Ok(AppendResult::new(positions))
    }

    fn insert_error(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error()
            && *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_event_id_key")
        {
            let event_id = db
                .detail()
                .and_then(|d| d.split("=(").nth(1))
                .and_then(|d| d.split(')').next())
                .and_then(|id| id.parse().ok())
                .or_else(|| self.events.first().map(|e| e.id))
                .unwrap_or_default();
            return Error::DuplicateEventId { event_id };
        }
        Error::db("appending events")(e)
    }
}

fn decode(row: &Row) -> Result<SequencedEvent> {
    let position: i64 = row.try_get(0).map_err(|e| Error::Decode {
        position: 0,
        message: e.to_string(),
    })?;
    let position = position as u64;
    let fail = |e: tokio_postgres::Error| Error::Decode {
        position,
        message: e.to_string(),
    };
    Ok(SequencedEvent {
        position,
        event: Event {
            id: row.try_get(1).map_err(fail)?,
            event_type: row.try_get(2).map_err(fail)?,
            tags: row.try_get(3).map_err(fail)?,
            payload: row.try_get(4).map_err(fail)?,
            metadata: row.try_get(5).map_err(fail)?,
        },
        occurred_at: row.try_get(6).map_err(fail)?,
    })
}

/// The events a read returned, in read order.
///
/// ```no_run
/// use dcbstore::{Query, ReadOptions};
/// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
/// let read = store.read(&Query::all(), ReadOptions::default()).await?;
/// for event in &read {
///     println!("{} {}", event.position, event.event_type);
/// }
/// let after = read.last_position(); // for the AppendCondition
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadResult {
    events: Vec<SequencedEvent>,
}

impl ReadResult {
    /// The highest position read, `None` when nothing matched: the `after` of an
    /// [`AppendCondition`] guarding a decision made from these events.
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadResult::default().last_position(), None);
    /// ```
    pub fn last_position(&self) -> Option<u64> {
        self.events.iter().map(|e| e.position).max()
    }

    /// The events, in read order.
    ///
    /// ```
    /// assert!(dcbstore::ReadResult::default().events().is_empty());
    /// ```
    pub fn events(&self) -> &[SequencedEvent] {
        &self.events
    }

    /// Takes the events out.
    ///
    /// ```
    /// let events: Vec<dcbstore::SequencedEvent> = dcbstore::ReadResult::default().into_events();
    /// assert!(events.is_empty());
    /// ```
    pub fn into_events(self) -> Vec<SequencedEvent> {
        self.events
    }

    /// Number of events read.
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadResult::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when nothing matched.
    ///
    /// ```
    /// assert!(dcbstore::ReadResult::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Iterates over the events in read order.
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadResult::default().iter().count(), 0);
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, SequencedEvent> {
        self.events.iter()
    }
}

impl From<Vec<SequencedEvent>> for ReadResult {
    fn from(events: Vec<SequencedEvent>) -> Self {
        Self { events }
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
/// ```no_run
/// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
/// use dcbstore::Event;
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
    positions: Vec<u64>,
}

impl AppendResult {
    /// Wraps the positions of a successful append (at least one).
    pub(crate) fn new(positions: Vec<u64>) -> Self {
        debug_assert!(!positions.is_empty());
        Self { positions }
    }

    /// The positions of the appended events, in batch order.
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let written = store.append([dcbstore::Event::new("A", serde_json::json!({}))], None).await?;
    /// println!("{:?}", written.positions());
    /// # Ok(())
    /// # }
    /// ```
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// The position of the batch's last event.
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// let written = store.append([dcbstore::Event::new("A", serde_json::json!({}))], None).await?;
    /// println!("now at {}", written.last_position());
    /// # Ok(())
    /// # }
    /// ```
    pub fn last_position(&self) -> u64 {
        self.positions[self.positions.len() - 1]
    }
}
