//! [`PgEventStore`]: the event store on PostgreSQL.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::{GenericClient, Transaction};

use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::limits::DEFAULT_MAX_BATCH_SIZE;
use crate::options::ReadOptions;
use crate::query::Query;
use crate::snapshot::POSTGRES;
use crate::store::{AppendResult, ReadResult, check_append, check_read};
use append::CompiledAppend;
pub use builder::{DEFAULT_POOL_SIZE, PgEventStoreBuilder};
use config::Config;
use group::GroupCommit;
use locks::LockPlan;
use notify::Changes;
use read::read_seen;
use sql::{SchemaName, Statement};

mod append;
mod builder;
mod checkpoints;
mod config;
mod connection;
mod event_store;
mod group;
mod locks;
mod migrate;
mod notify;
mod read;
mod sql;

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "dcbstore";

/// How long an append waits for the locks of its boundary unless told otherwise
/// ([`PgEventStore::with_lock_timeout`]).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement of an append may run unless told otherwise
/// ([`PgEventStore::with_statement_timeout`]).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`PgEventStore::connect`]'s pool waits for a free connection, and for a new one to
/// open.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The most appends one transaction groups unless told otherwise
/// ([`PgEventStore::with_max_group_size`]).
pub const DEFAULT_MAX_GROUP_SIZE: usize = 16;

/// How many grouped transactions run at a time unless told otherwise
/// ([`PgEventStore::with_groups_in_flight`]).
pub const DEFAULT_GROUPS_IN_FLIGHT: usize = 2;

/// A connection's prepared statements are dropped when they grow past this many (appends with
/// many different query shapes).
pub(crate) const MAX_CACHED_STATEMENTS: usize = 256;

/// An event store in one schema of a PostgreSQL database, over a connection pool.
///
/// Cheap to clone: clones share the pool.
///
/// ```no_run
/// use dcbstore::{Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions};
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
///         .append([claimed], Some(read.append_condition()?))
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
    /// The appends of this configuration waiting to share a transaction.
    group: Arc<GroupCommit>,
    /// What wakes the subscriptions of this configuration.
    changes: Arc<Changes>,
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
    /// Connects to `url` (a libpq-style connection string or URL) without TLS, with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections, in the default schema [`DEFAULT_SCHEMA`]: the defaults of
    /// [`PgEventStore::builder`], which sets all of these. One connection is opened right away,
    /// so a wrong URL fails here. Every wait of the pool is bounded by
    /// [`DEFAULT_POOL_TIMEOUT`] (for a free connection, to open one, to check one): past it a
    /// call fails with a retryable [`Error::Pool`]. Appends are bounded by
    /// [`DEFAULT_LOCK_TIMEOUT`] and [`DEFAULT_STATEMENT_TIMEOUT`]
    /// ([`PgEventStore::with_lock_timeout`]).
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
        Self::builder(url)?.connect().await
    }

    /// A [`PgEventStoreBuilder`] for the server at `url` (`postgres://user:password@host/db`
    /// or `host=… user=…`): pool size and timeouts, TLS, schema and the store's settings, then
    /// `connect`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder("postgres://postgres@localhost/postgres")?
    ///     .pool_size(8)
    ///     .schema("tenant_42");
    /// assert!(dcbstore::PgEventStore::builder("not a url ::: at all").is_err());
    /// # Ok::<(), dcbstore::Error>(())
    /// ```
    pub fn builder(url: &str) -> Result<PgEventStoreBuilder> {
        let server: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::Config {
                    message: e.to_string(),
                    source: e.into(),
                })?;
        Ok(PgEventStoreBuilder::new(server))
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
            config: Arc::new(Config::new(
                SchemaName::new(DEFAULT_SCHEMA).expect("the default schema name is valid"),
                DEFAULT_MAX_BATCH_SIZE,
                DEFAULT_LOCK_TIMEOUT,
                DEFAULT_STATEMENT_TIMEOUT,
            )),
            group: Arc::new(GroupCommit::new(
                DEFAULT_MAX_GROUP_SIZE,
                DEFAULT_GROUPS_IN_FLIGHT,
            )),
            changes: Arc::new(Changes::new(notify::channel(DEFAULT_SCHEMA), None, true)),
        }
    }

    fn configured(self, change: impl FnOnce(&Config) -> Config) -> Self {
        let config = Arc::new(change(&self.config));
        // A queue of its own: the appends of one group share one configuration.
        let group = GroupCommit::new(self.group.max_appends(), self.group.in_flight());
        let channel = notify::channel(config.schema.as_str());
        Self {
            pool: self.pool,
            changes: Arc::new(self.changes.renewed(Some(channel), None, None)),
            config,
            group: Arc::new(group),
        }
    }

    /// The same store, opening its `LISTEN` connection with `connect` and sending
    /// notifications or not.
    fn listening(self, connect: notify::Connect, notify: bool) -> Self {
        let changes = self.changes.renewed(None, Some(connect), Some(notify));
        Self {
            changes: Arc::new(changes),
            ..self
        }
    }

    fn grouped(self, max_appends: usize, in_flight: usize) -> Self {
        Self {
            group: Arc::new(GroupCommit::new(max_appends, in_flight)),
            ..self
        }
    }

    /// The same store grouping up to `max` appends in one transaction (default
    /// [`DEFAULT_MAX_GROUP_SIZE`]; 1 turns group commit off: each append then runs on the
    /// caller's task in a transaction of its own). Appends that arrive while others are in
    /// flight share the next transaction: one lock pass, one insert each, one `COMMIT`, one
    /// round trip; an idle store runs an append at once. Each append keeps its own outcome.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_max_group_size(32);
    /// assert_eq!(store.max_group_size(), 32);
    /// # }
    /// ```
    pub fn with_max_group_size(self, max: usize) -> Self {
        let in_flight = self.group.in_flight();
        self.grouped(max, in_flight)
    }

    /// The same store running at most `groups` grouped transactions at a time (default
    /// [`DEFAULT_GROUPS_IN_FLIGHT`]), each on a connection of the pool. More groups in flight
    /// means smaller groups.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_groups_in_flight(8);
    /// assert_eq!(store.groups_in_flight(), 8);
    /// # }
    /// ```
    pub fn with_groups_in_flight(self, groups: usize) -> Self {
        let max = self.group.max_appends();
        self.grouped(max, groups)
    }

    /// The most appends one transaction groups.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.max_group_size(), dcbstore::DEFAULT_MAX_GROUP_SIZE);
    /// # }
    /// ```
    pub fn max_group_size(&self) -> usize {
        self.group.max_appends()
    }

    /// How many grouped transactions run at a time.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.groups_in_flight(), dcbstore::DEFAULT_GROUPS_IN_FLIGHT);
    /// # }
    /// ```
    pub fn groups_in_flight(&self) -> usize {
        self.group.in_flight()
    }

    /// The same store bounding how long an append waits for the locks of its boundary (default
    /// [`DEFAULT_LOCK_TIMEOUT`]): past it the append fails with a retryable
    /// [`Error::Database`] (SQLSTATE `55P03`) and writes nothing, e.g. when a transaction left
    /// open after [`PgEventStore::append_in`] holds the boundary.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_lock_timeout(std::time::Duration::from_millis(500));
    /// assert_eq!(store.lock_timeout().as_millis(), 500);
    /// # }
    /// ```
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        self.configured(|c| c.timed(timeout, c.statement_timeout))
    }

    /// The same store bounding each statement of an append (default
    /// [`DEFAULT_STATEMENT_TIMEOUT`]): past it the append fails with a retryable
    /// [`Error::Database`] (SQLSTATE `57014`) and writes nothing. Reads are not bounded by the
    /// store (a long stream would be cut): bound them on the pool's connections
    /// (`statement_timeout` in the connection's options) if you need to.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_statement_timeout(std::time::Duration::from_secs(5));
    /// assert_eq!(store.statement_timeout().as_secs(), 5);
    /// # }
    /// ```
    pub fn with_statement_timeout(self, timeout: Duration) -> Self {
        self.configured(|c| c.timed(c.lock_timeout, timeout))
    }

    /// How long an append waits for its locks.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.lock_timeout(), dcbstore::DEFAULT_LOCK_TIMEOUT);
    /// # }
    /// ```
    pub fn lock_timeout(&self) -> Duration {
        self.config.lock_timeout
    }

    /// How long a statement of an append may run.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.statement_timeout(), dcbstore::DEFAULT_STATEMENT_TIMEOUT);
    /// # }
    /// ```
    pub fn statement_timeout(&self) -> Duration {
        self.config.statement_timeout
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
        Ok(self.configured(|c| Config {
            schema,
            ..c.clone()
        }))
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
        self.configured(|c| Config {
            max_batch_size: max,
            ..c.clone()
        })
    }

    /// The same store with appends using named prepared statements (`true`, the default: each
    /// statement is parsed once per connection) or not (`false`: every statement travels with its
    /// parameters' types, one round trip, nothing kept on the connection). Turn it off behind a
    /// pooler in transaction mode (e.g. PgBouncer), where a connection's prepared statements do
    /// not follow the client. It applies to `read`s of a whole query (no `from`, no `limit`: a
    /// decision's read) too; other reads, streams and the feed never prepare.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// let store = store.with_prepared_statements(false);
    /// assert!(!store.prepared_statements());
    /// # }
    /// ```
    pub fn with_prepared_statements(self, prepare: bool) -> Self {
        self.configured(|c| Config {
            prepare,
            ..c.clone()
        })
    }

    /// Whether appends use named prepared statements.
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert!(store.prepared_statements());
    /// # }
    /// ```
    pub fn prepared_statements(&self) -> bool {
        self.config.prepare
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

    /// Like [`EventStore::read`](crate::EventStore::read), on a client or transaction of the caller: inside a
    /// transaction the read sees the transaction's own writes, and its
    /// [`ReadResult::append_condition`] guards an [`PgEventStore::append_in`] of the same
    /// transaction (at READ COMMITTED the snapshot is the read statement's own).
    ///
    /// # Errors
    ///
    /// As [`EventStore::read`](crate::EventStore::read).
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
        let statement = self.compile_read_seen(query, &options)?;
        read_seen(client, &statement, query.clone(), options).await
    }

    /// Like [`EventStore::append`](crate::EventStore::append), inside the caller's transaction, so that e.g. a read model
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
    /// As [`EventStore::append`](crate::EventStore::append), plus [`Error::UnsupportedIsolation`]. After an error, roll
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
        let prepared = self.compile_append(events.into_iter().collect(), condition)?;
        // The notification goes out when the caller commits, and not if it rolls back.
        let row = transaction
            .query_one(
                "SELECT current_setting('transaction_isolation'), pg_notify($1, '')",
                &[&self.changes.channel()],
            )
            .await
            .map_err(Error::db("checking the transaction's isolation level"))?;
        self.changes.woke();
        let isolation: String = row.get(0);
        if isolation == "repeatable read" {
            return Err(Error::UnsupportedIsolation { isolation });
        }
        prepared.run_in(transaction).await
    }

    fn compile_read(&self, query: &Query, options: &ReadOptions) -> Result<Statement> {
        check_read(query, options)?;
        Ok(sql::select_events(&self.config.schema, query, options)?)
    }

    /// A decision's read, checked and compiled: [`sql::select_events_seen`].
    fn compile_read_seen(&self, query: &Query, options: &ReadOptions) -> Result<Statement> {
        check_read(query, options)?;
        Ok(sql::select_events_seen(
            &self.config.schema,
            query,
            options,
        )?)
    }

    fn compile_append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
    ) -> Result<CompiledAppend> {
        check_append(
            &events,
            condition.as_ref(),
            self.config.max_batch_size,
            POSTGRES,
        )?;
        let schema = &self.config.schema;
        let locks = LockPlan::new(
            schema.as_str(),
            &events,
            condition.as_ref().map(|c| &c.fail_if_events_match),
        );
        let compiled = CompiledAppend {
            schema: schema.clone(),
            events,
            condition,
            locks,
            lock: OnceLock::new(),
            insert: OnceLock::new(),
            begin: self.config.begin.clone(),
            group_begin: self.config.group_begin.clone(),
            prepare: self.config.prepare,
        };
        // A guarded insert always runs: built here, in the caller's task, not in the group
        // worker's, which would build the inserts of its whole group one after the other.
        if compiled.guarded() {
            compiled.insert();
        }
        Ok(compiled)
    }
}
