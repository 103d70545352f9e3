//! A store's configuration, in one place: [`PgEventStoreBuilder`] and its defaults (here), how
//! a builder is finished into a store (`open.rs`: its pools, replicas and wake-ups), and what the
//! store keeps of it (`kept.rs`, [`Config`]: the schema, limits, time bounds and the statements
//! that open its transactions).

mod kept;
mod open;

use std::time::Duration;

use deadpool_postgres::Pool;

use super::replicas::{LatestReads, ReadOn};
use crate::limits::DEFAULT_MAX_BATCH_SIZE;
#[cfg(doc)]
use crate::{Error, PgEventStore};

pub(super) use kept::Config;

/// The schema a store uses unless told otherwise ([`PgEventStoreBuilder::schema`]).
pub const DEFAULT_SCHEMA: &str = "dcbstore";

/// How long an append waits for the locks of its boundary unless told otherwise
/// ([`PgEventStoreBuilder::lock_timeout`]).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement of an append may run unless told otherwise
/// ([`PgEventStoreBuilder::statement_timeout`]).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections the pool of [`PgEventStoreBuilder::connect`] holds unless told
/// otherwise ([`PgEventStoreBuilder::pool_size`]).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long the pool of [`PgEventStoreBuilder::connect`] waits for a free connection, and for a
/// new one to open, unless told otherwise ([`PgEventStoreBuilder::pool_timeout`]).
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The most appends one transaction groups unless told otherwise
/// ([`PgEventStoreBuilder::max_group_size`]).
pub const DEFAULT_MAX_GROUP_SIZE: usize = 16;

/// How many grouped transactions run at a time unless told otherwise
/// ([`PgEventStoreBuilder::groups_in_flight`]).
pub const DEFAULT_GROUPS_IN_FLIGHT: usize = 2;

/// How long a replica may lag behind the primary and still serve reads unless told otherwise
/// ([`PgEventStoreBuilder::max_replica_lag`]).
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(1);

/// How often a store checks its replicas unless told otherwise
/// ([`PgEventStoreBuilder::replica_check_interval`]).
pub const DEFAULT_REPLICA_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How to build a [`PgEventStore`]: the schema, the store's limits and time bounds, group
/// commit, prepared statements, notifications, (for a pool it opens itself) the pool's size
/// and timeout, and streaming replicas to read from. Start from [`PgEventStore::builder`] and finish with
/// [`connect`](PgEventStoreBuilder::connect) (a URL; also
/// [`connect_with_tls`](PgEventStoreBuilder::connect_with_tls) and, with feature `rustls`,
/// [`connect_with_rustls`](PgEventStoreBuilder::connect_with_rustls)) or
/// [`from_pool`](PgEventStoreBuilder::from_pool) (a pool of yours). This is the only way to
/// build a store ([`PgEventStore::connect`] is `builder().connect(url)`): a store's settings do
/// not change after it is built, and its clones share its pool, its group commit and its
/// wake-ups.
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run() -> dcbstore::Result<()> {
/// let store = dcbstore::PgEventStore::builder()
///     .pool_size(32)
///     .pool_timeout(Duration::from_secs(2))
///     .schema("orders")
///     .lock_timeout(Duration::from_secs(1))
///     .prepared_statements(false) // behind PgBouncer in transaction mode
///     .connect("postgres://app@db.internal/app")
///     .await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is finished (connect, from_pool)"]
pub struct PgEventStoreBuilder {
    pool_size: usize,
    pool_timeout: Duration,
    schema: String,
    max_batch_size: usize,
    lock_timeout: Duration,
    statement_timeout: Duration,
    max_group_size: usize,
    groups_in_flight: usize,
    prepare: bool,
    notify: bool,
    replicas: Vec<ReplicaSource>,
    reads_on: ReadOn,
    consumers_on: ReadOn,
    latest_reads: LatestReads,
    max_replica_lag: Duration,
    replica_check_interval: Duration,
}

/// A replica as the builder was given it.
#[derive(Debug, Clone)]
enum ReplicaSource {
    Url(String),
    Config(Box<tokio_postgres::Config>),
    Pool(Pool),
}

impl Default for PgEventStoreBuilder {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            pool_timeout: DEFAULT_POOL_TIMEOUT,
            schema: DEFAULT_SCHEMA.to_string(),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_group_size: DEFAULT_MAX_GROUP_SIZE,
            groups_in_flight: DEFAULT_GROUPS_IN_FLIGHT,
            prepare: true,
            notify: true,
            replicas: Vec::new(),
            reads_on: ReadOn::Replicas,
            consumers_on: ReadOn::Replicas,
            latest_reads: LatestReads::OnPrimary,
            max_replica_lag: DEFAULT_MAX_REPLICA_LAG,
            replica_check_interval: DEFAULT_REPLICA_CHECK_INTERVAL,
        }
    }
}

impl PgEventStoreBuilder {
    /// How many connections the pool of [`connect`](PgEventStoreBuilder::connect) holds at
    /// most (default [`DEFAULT_POOL_SIZE`]; at least 1). A pool given to
    /// [`from_pool`](PgEventStoreBuilder::from_pool) keeps its own.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().pool_size(32);
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long a call waits for a free connection of the pool of
    /// [`connect`](PgEventStoreBuilder::connect), and for a new one to open or an idle one to be
    /// checked (default [`DEFAULT_POOL_TIMEOUT`]); past it the call fails with a retryable
    /// [`Error::Pool`]. A pool given to [`from_pool`](PgEventStoreBuilder::from_pool) keeps its
    /// own timeouts.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().pool_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// The schema the store lives in (default [`DEFAULT_SCHEMA`]): 1 to 63 characters of `a-z`,
    /// `0-9` and `_`, not starting with a digit or `pg_`. Each schema holds an independent event
    /// log. The name is checked when the builder finishes.
    ///
    /// ```
    /// # async fn run() {
    /// let builder = dcbstore::PgEventStore::builder().schema("tenant_42");
    /// let refused = dcbstore::PgEventStore::builder()
    ///     .schema("Robert'); DROP TABLE events;--")
    ///     .connect("postgres://localhost/app")
    ///     .await;
    /// assert!(refused.unwrap_err().is_invalid_input());
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run());
    /// ```
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_string();
        self
    }

    /// The most events one append accepts (default [`DEFAULT_MAX_BATCH_SIZE`]).
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().max_batch_size(100);
    /// ```
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch_size = max;
        self
    }

    /// How long an append waits for the locks of its boundary (default
    /// [`DEFAULT_LOCK_TIMEOUT`]): past it the append fails with a retryable
    /// [`Error::Database`] (SQLSTATE `55P03`) and writes nothing, e.g. when a transaction left
    /// open after [`PgEventStore::append_in`] holds the boundary.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().lock_timeout(std::time::Duration::from_millis(500));
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long each statement of an append, and a prepared read, may run (default
    /// [`DEFAULT_STATEMENT_TIMEOUT`]): past it the call fails with a retryable
    /// [`Error::Database`] (SQLSTATE `57014`) and writes nothing. Other reads are not bounded
    /// by the store (a long stream would be cut): bound them on the pool's connections
    /// (`statement_timeout` in the connection's options) if you need to.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().statement_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How many appends one transaction groups at most (default [`DEFAULT_MAX_GROUP_SIZE`]; 1
    /// turns group commit off: each append then runs on the caller's task in a transaction of
    /// its own). Appends that arrive while others are in flight share the next transaction: one
    /// lock pass, one insert each, one `COMMIT`, one round trip; an idle store runs an append
    /// at once. Each append keeps its own outcome.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().max_group_size(1);
    /// ```
    pub fn max_group_size(mut self, max: usize) -> Self {
        self.max_group_size = max;
        self
    }

    /// How many grouped transactions run at a time (default [`DEFAULT_GROUPS_IN_FLIGHT`]),
    /// each on a connection of the pool. More groups in flight means smaller groups.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().groups_in_flight(8);
    /// ```
    pub fn groups_in_flight(mut self, groups: usize) -> Self {
        self.groups_in_flight = groups;
        self
    }

    /// Whether appends and a decision's reads use named prepared statements (`true`, the
    /// default: each statement is parsed once per connection) or not (`false`: every statement
    /// travels with its parameters' types, one round trip, nothing kept on the connection).
    /// Turn it off behind a pooler in transaction mode (e.g. PgBouncer), where a connection's
    /// prepared statements do not follow the client. A decision's read is a `read` of a whole
    /// query (no `from`, no `limit`); other reads, streams and the feed never prepare.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().prepared_statements(false);
    /// ```
    pub fn prepared_statements(mut self, prepare: bool) -> Self {
        self.prepare = prepare;
        self
    }

    /// Whether appends send a notification (`NOTIFY`, after their transaction has ended) that
    /// wakes the subscriptions of other processes (default: on). Off, subscriptions in other
    /// processes see this store's events at their poll interval; those of this store and its
    /// clones are woken either way.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().notifications(false);
    /// ```
    pub fn notifications(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// A streaming replica (hot standby) of the primary to read from, by URL, with a pool of
    /// its own (the same size, timeouts and TLS connector as the primary's). Call it once per
    /// replica. By default reads, decisions' reads, the feed, subscriptions and projectors go
    /// to a usable replica, in turn ([`reads_on`](Self::reads_on),
    /// [`consumers_on`](Self::consumers_on)); appends, `append_in`/`read_in`, migrations and
    /// projector checkpoints stay on the primary. A decision that reads on a replica is exactly
    /// as exact as on the primary: its append is guarded on the primary against every event the
    /// replica did not show. A replica that does not answer, is not a standby, or lags past
    /// [`max_replica_lag`](Self::max_replica_lag) is skipped and reported (see
    /// [`PgEventStore::replicas`]); a read that fails on a replica runs again on the primary.
    /// The URL is checked when the builder finishes; with
    /// [`from_pool`](Self::from_pool) it is opened without TLS (give a pool of yours to
    /// [`replica_pool`](Self::replica_pool) for TLS).
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder()
    ///     .replica("postgres://app@replica-1.internal/app")
    ///     .replica("postgres://app@replica-2.internal/app");
    /// ```
    pub fn replica(mut self, url: &str) -> Self {
        self.replicas.push(ReplicaSource::Url(url.to_string()));
        self
    }

    /// Like [`replica`](Self::replica), from a `tokio_postgres::Config`.
    ///
    /// ```
    /// let mut config = dcbstore::tokio_postgres::Config::new();
    /// config.host("replica-1.internal").user("app").dbname("app");
    /// let builder = dcbstore::PgEventStore::builder().replica_config(config);
    /// ```
    pub fn replica_config(mut self, config: tokio_postgres::Config) -> Self {
        self.replicas.push(ReplicaSource::Config(Box::new(config)));
        self
    }

    /// Like [`replica`](Self::replica), over a pool of yours (its own size, timeouts and TLS).
    ///
    /// ```no_run
    /// use dcbstore::deadpool_postgres::{Manager, Pool};
    /// use dcbstore::tokio_postgres::NoTls;
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::new("host=replica-1.internal user=app".parse()?, NoTls);
    /// let replica = Pool::builder(manager).max_size(32).build()?;
    /// let builder = dcbstore::PgEventStore::builder().replica_pool(replica);
    /// # Ok(())
    /// # }
    /// ```
    pub fn replica_pool(mut self, pool: Pool) -> Self {
        self.replicas.push(ReplicaSource::Pool(pool));
        self
    }

    /// Where `read` and `read_stream` go, a decision's read included (default
    /// [`ReadOn::Replicas`]). Without replicas, everything reads on the primary.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().reads_on(dcbstore::pg::ReadOn::Primary);
    /// ```
    pub fn reads_on(mut self, on: ReadOn) -> Self {
        self.reads_on = on;
        self
    }

    /// Where the feed goes, and with it subscriptions and projectors (default
    /// [`ReadOn::Replicas`]). Their checkpoints hold on every server: a consumer can move
    /// between the primary and replicas without skipping or repeating an event.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().consumers_on(dcbstore::pg::ReadOn::Primary);
    /// ```
    pub fn consumers_on(mut self, on: ReadOn) -> Self {
        self.consumers_on = on;
        self
    }

    /// How a read that needs every commit made before it ([`Consistency::Latest`](crate::Consistency::Latest),
    /// e.g. [`decide`](crate::decide) after a conflict) is served (default
    /// [`LatestReads::OnPrimary`]).
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().latest_reads(dcbstore::pg::LatestReads::AwaitReplay);
    /// ```
    pub fn latest_reads(mut self, how: LatestReads) -> Self {
        self.latest_reads = how;
        self
    }

    /// How far behind the primary a replica may be and still serve reads (default
    /// [`DEFAULT_MAX_REPLICA_LAG`]): the time since the primary flushed the oldest part of its
    /// log the replica has not replayed, as of the last check. It also bounds how long a read
    /// waits on a replica for an append it must include
    /// ([`Consistency::Includes`](crate::Consistency::Includes)) before it reads on the primary.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().max_replica_lag(std::time::Duration::from_millis(250));
    /// ```
    pub fn max_replica_lag(mut self, lag: Duration) -> Self {
        self.max_replica_lag = lag;
        self
    }

    /// How often the store checks its replicas (default [`DEFAULT_REPLICA_CHECK_INTERVAL`]):
    /// one statement that reads no table on the primary and on each replica. A check waits at
    /// most this long, and at least 1 s, for a server's answer.
    ///
    /// ```
    /// let builder = dcbstore::PgEventStore::builder().replica_check_interval(std::time::Duration::from_millis(50));
    /// ```
    pub fn replica_check_interval(mut self, interval: Duration) -> Self {
        self.replica_check_interval = interval.max(Duration::from_millis(1));
        self
    }
}
