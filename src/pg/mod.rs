//! The PostgreSQL backend: [`PgEventStore`], built by [`PgEventStoreBuilder`], and the defaults
//! of its settings. Both types are re-exported at the crate's root.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::{GenericClient, Transaction};

use crate::backend::POSTGRES_NAME;
use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::ReadOptions;
use crate::query::Query;
use crate::results::{AppendResult, ReadResult};
use crate::store::check_read;
use append::CompiledAppend;
use config::Config;
pub use config::{
    DEFAULT_GROUPS_IN_FLIGHT, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_GROUP_SIZE,
    DEFAULT_MAX_REPLICA_LAG, DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT,
    DEFAULT_REPLICA_CHECK_INTERVAL, DEFAULT_SCHEMA, DEFAULT_STATEMENT_TIMEOUT, PgEventStoreBuilder,
};
use group::GroupCommit;
use notify::Changes;
use read::read_seen;
use replicas::Replicas;
pub use replicas::{LatestReads, ReadOn, ReplicaState, ReplicaStatus};
use sql::Statement;

mod append;
mod checkpoints;
mod config;
mod connection;
mod event_store;
mod group;
mod locks;
mod migrate;
mod notify;
mod read;
mod replicas;
mod settled;
mod sql;

/// A connection's prepared statements are dropped when they grow past this many (appends with
/// many different query shapes).
const MAX_CACHED_STATEMENTS: usize = 256;

/// Drops `client`'s prepared statements when they have grown past [`MAX_CACHED_STATEMENTS`]:
/// called before a call prepares its own.
fn bound_statement_cache(client: &deadpool_postgres::Client) {
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
}

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
    /// The replicas reads go to, and the policy that sends them.
    replicas: Arc<Replicas>,
    /// The statement and keys of [`PgEventStore::settled_head`].
    settled: Arc<settled::Settled>,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.config.schema.as_str())
            .field("max_batch_size", &self.config.max_batch_size)
            .field("pool", &self.pool.status())
            .field("replicas", &self.replicas.statuses())
            .finish()
    }
}

impl PgEventStore {
    /// Connects to `url` (`postgres://user:password@host/db?…` or `host=… user=…`) without TLS,
    /// with every setting at its default: `PgEventStore::builder().connect(url)`
    /// ([`PgEventStoreBuilder::connect`]). A pool of [`DEFAULT_POOL_SIZE`] connections, in the
    /// schema [`DEFAULT_SCHEMA`]; one connection is opened right away, so a wrong URL fails here.
    /// Every wait of the pool is bounded by [`DEFAULT_POOL_TIMEOUT`]: past it a call fails with a
    /// retryable [`Error::Pool`]. Appends are bounded by [`DEFAULT_LOCK_TIMEOUT`] and
    /// [`DEFAULT_STATEMENT_TIMEOUT`].
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
        Self::builder().connect(url).await
    }

    /// A [`PgEventStoreBuilder`] with every setting at its default: the one way to build a store.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().pool_size(8).schema("tenant_42");
    /// ```
    pub fn builder() -> PgEventStoreBuilder {
        PgEventStoreBuilder::default()
    }

    /// The most appends one transaction groups ([`PgEventStoreBuilder::max_group_size`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.max_group_size(), dcbstore::pg::DEFAULT_MAX_GROUP_SIZE);
    /// # }
    /// ```
    pub fn max_group_size(&self) -> usize {
        self.group.max_appends()
    }

    /// How many grouped transactions run at a time
    /// ([`PgEventStoreBuilder::groups_in_flight`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.groups_in_flight(), dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT);
    /// # }
    /// ```
    pub fn groups_in_flight(&self) -> usize {
        self.group.in_flight()
    }

    /// How long an append waits for its locks ([`PgEventStoreBuilder::lock_timeout`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.lock_timeout(), dcbstore::pg::DEFAULT_LOCK_TIMEOUT);
    /// # }
    /// ```
    pub fn lock_timeout(&self) -> Duration {
        self.config.lock_timeout
    }

    /// How long a statement of an append may run ([`PgEventStoreBuilder::statement_timeout`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.statement_timeout(), dcbstore::pg::DEFAULT_STATEMENT_TIMEOUT);
    /// # }
    /// ```
    pub fn statement_timeout(&self) -> Duration {
        self.config.statement_timeout
    }

    /// Whether appends and a decision's reads use named prepared statements
    /// ([`PgEventStoreBuilder::prepared_statements`]).
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

    /// The most events one append accepts ([`PgEventStoreBuilder::max_batch_size`]).
    ///
    /// ```no_run
    /// # fn run(store: dcbstore::PgEventStore) {
    /// assert_eq!(store.max_batch_size(), dcbstore::DEFAULT_MAX_BATCH_SIZE);
    /// # }
    /// ```
    pub fn max_batch_size(&self) -> usize {
        self.config.max_batch_size
    }

    /// The store's replicas ([`PgEventStoreBuilder::replica`]), each with its state and lag as
    /// the last check (every [`PgEventStoreBuilder::replica_check_interval`]) or call found
    /// them; empty without replicas. The same is published as the metrics
    /// `dcbstore_replica_usable` and `dcbstore_replica_lag_seconds` (labelled `replica`), and a
    /// change of state is logged (`tracing`, target `dcbstore`).
    ///
    /// ```no_run
    /// use dcbstore::pg::ReplicaState;
    /// # fn run(store: dcbstore::PgEventStore) {
    /// for replica in store.replicas() {
    ///     if replica.state != ReplicaState::Usable {
    ///         eprintln!("{} is skipped: {}", replica.name, replica.state);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replicas.statuses()
    }

    /// The connection pool of the primary, e.g. to open a transaction for [`PgEventStore::append_in`].
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
        let statement = self.compile_read(sql::ReadKind::Seen, query, &options)?;
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
        let compiled = CompiledAppend::new(&self.config, events.into_iter().collect(), condition)?;
        // The notification goes out when the caller commits (not if it rolls back), and only
        // when a subscriber listens.
        let channel = self.changes.channel();
        let (class, key) = notify::listened_key(channel);
        let row = transaction
            .query_one(sql::admin::ISOLATION_AND_NOTIFY, &[&class, &key, &channel])
            .await
            .map_err(Error::db("checking the transaction's isolation level"))?;
        self.changes.woke();
        let isolation: String = row.get(0);
        if isolation == "repeatable read" {
            return Err(Error::UnsupportedIsolation { isolation });
        }
        compiled.run_in(transaction).await
    }

    /// The read statement of `kind` for `query` and `options`, checked and compiled.
    fn compile_read(
        &self,
        kind: sql::ReadKind,
        query: &Query,
        options: &ReadOptions,
    ) -> Result<Statement> {
        check_read(query, options, POSTGRES_NAME)?;
        let (schema, statements) = (&self.config.schema, &self.config.statements);
        Ok(statements.read(kind, schema, query, options)?)
    }
}
