//! A store's configuration, in one place: [`PgEventStoreBuilder`] and its defaults, and what the
//! store keeps of it ([`Config`]: the schema, limits, time bounds and the statements that open
//! its transactions).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

use super::PgEventStore;
use super::group::GroupCommit;
use super::notify::{self, Changes};
use super::replicas::{LatestReads, Policy, ReadOn, Replicas};
use super::sql::{SchemaName, Statements, admin, replica};
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_BATCH_SIZE;

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

    /// Opens a pool to `url` (`postgres://user:password@host/db?…` or `host=… user=…`) without
    /// TLS, and checks that one connection opens. Subscriptions of the store listen for other
    /// processes' appends on a connection of their own.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, [`Error::InvalidInput`] for an invalid schema
    /// name, [`Error::Pool`] when the server cannot be reached.
    ///
    /// ```no_run
    /// # async fn run() -> dcbstore::Result<()> {
    /// let store = dcbstore::PgEventStore::builder()
    ///     .schema("tenant_42")
    ///     .connect("postgres://postgres@localhost/postgres")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self, url: &str) -> Result<PgEventStore> {
        self.connect_with_tls(url, NoTls).await
    }

    /// Like [`connect`](PgEventStoreBuilder::connect), over TLS with rustls (feature
    /// `rustls`): `config` says which servers to trust (e.g. the platform's roots, or your CA).
    /// Whether TLS is required is the URL's `sslmode` (`require` to refuse a server without
    /// it).
    ///
    /// # Errors
    ///
    /// As [`PgEventStoreBuilder::connect`]; a failed TLS handshake is an [`Error::Pool`].
    ///
    /// ```no_run
    /// # async fn run(roots: dcbstore::rustls::RootCertStore) -> dcbstore::Result<()> {
    /// let config = dcbstore::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
    ///     dcbstore::rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()
    /// .expect("TLS 1.2 and 1.3")
    /// .with_root_certificates(roots)
    /// .with_no_client_auth();
    /// let store = dcbstore::PgEventStore::builder()
    ///     .connect_with_rustls("postgres://app@db.example.com/app?sslmode=require", config)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "rustls")]
    pub async fn connect_with_rustls(
        self,
        url: &str,
        config: rustls::ClientConfig,
    ) -> Result<PgEventStore> {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
        self.connect_with_tls(url, tls).await
    }

    /// Like [`connect`](PgEventStoreBuilder::connect), with `tls` (e.g. a
    /// `tokio_postgres_rustls::MakeRustlsConnect` or a `postgres_native_tls::MakeTlsConnector`,
    /// from the crate of your choice). Whether TLS is required is the URL's `sslmode`.
    ///
    /// # Errors
    ///
    /// As [`PgEventStoreBuilder::connect`]; a failed TLS handshake is an [`Error::Pool`].
    ///
    /// ```no_run
    /// # async fn run<T>(tls: T) -> dcbstore::Result<()>
    /// # where
    /// #     T: dcbstore::tokio_postgres::tls::MakeTlsConnect<dcbstore::tokio_postgres::Socket>
    /// #         + Clone + Send + Sync + 'static,
    /// #     T::Stream: Send + Sync,
    /// #     T::TlsConnect: Send + Sync,
    /// #     <T::TlsConnect as dcbstore::tokio_postgres::tls::TlsConnect<dcbstore::tokio_postgres::Socket>>::Future: Send,
    /// # {
    /// let store = dcbstore::PgEventStore::builder()
    ///     .connect_with_tls("postgres://app@db.example.com/app?sslmode=require", tls)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with_tls<T>(self, url: &str, tls: T) -> Result<PgEventStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let server: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::config("the connection URL", e))?;
        let listen = notify::connect_with(server.clone(), tls.clone());
        let pool = self.open_pool(server, tls.clone())?;
        let store = self.build(pool, Some(listen), tls)?;
        drop(store.pool().get().await.map_err(Error::pool)?);
        store.replicas.start().await;
        Ok(store)
    }

    /// A pool of this builder's size and timeouts to `server`.
    fn open_pool<T>(&self, server: tokio_postgres::Config, tls: T) -> Result<Pool>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let manager = Manager::from_config(
            server,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(self.pool_timeout),
                create: Some(self.pool_timeout),
                recycle: Some(self.pool_timeout),
            })
            .build()
            .map_err(|e| Error::config("the pool", e))
    }

    /// A store over a pool of yours. It opens no connection of its own: its subscriptions are
    /// woken at once by the appends of this store and its clones, and see other processes'
    /// appends at their poll interval (a store from [`connect`](PgEventStoreBuilder::connect)
    /// also listens for them). Replicas given by URL or configuration get pools without TLS;
    /// they are first checked at the store's first read, which runs on the primary.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid schema name.
    ///
    /// ```no_run
    /// use dcbstore::deadpool_postgres::{Manager, Pool};
    /// use dcbstore::tokio_postgres::NoTls;
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::new("host=localhost user=postgres".parse()?, NoTls);
    /// let pool = Pool::builder(manager).max_size(16).build()?;
    /// let store = dcbstore::PgEventStore::builder().schema("orders").from_pool(pool)?;
    /// assert_eq!(store.schema(), "orders");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool(self, pool: Pool) -> Result<PgEventStore> {
        self.build(pool, None, NoTls)
    }

    fn build<T>(self, pool: Pool, listen: Option<notify::Connect>, tls: T) -> Result<PgEventStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let schema = SchemaName::new(&self.schema)?;
        let mut members = Vec::with_capacity(self.replicas.len());
        for (n, source) in self.replicas.iter().enumerate() {
            let server = match source {
                ReplicaSource::Pool(pool) => {
                    members.push((format!("replica {}", n + 1), pool.clone()));
                    continue;
                }
                ReplicaSource::Url(url) => url
                    .parse()
                    .map_err(|e: tokio_postgres::Error| Error::config("a replica's URL", e))?,
                ReplicaSource::Config(config) => (**config).clone(),
            };
            let name = server_name(&server).unwrap_or_else(|| format!("replica {}", n + 1));
            members.push((name, self.open_pool(server, tls.clone())?));
        }
        let policy = Policy {
            reads: self.reads_on,
            consumers: self.consumers_on,
            latest: self.latest_reads,
            max_lag: self.max_replica_lag,
            check_interval: self.replica_check_interval,
        };
        let replicas = Replicas::new(
            pool.clone(),
            members,
            policy,
            replica::shows_position(&schema),
        );
        let changes = Changes::new(notify::channel(schema.as_str()), listen, self.notify);
        let settled = Arc::new(super::settled::Settled::new(&schema));
        let config = Config::new(
            schema,
            self.max_batch_size,
            self.lock_timeout,
            self.statement_timeout,
            self.prepare,
        );
        Ok(PgEventStore {
            pool,
            config: Arc::new(config),
            group: Arc::new(GroupCommit::new(self.max_group_size, self.groups_in_flight)),
            changes: Arc::new(changes),
            replicas: Arc::new(replicas),
            settled,
        })
    }
}

/// `host:port` of a server's first host, for logs and metrics.
fn server_name(server: &tokio_postgres::Config) -> Option<String> {
    let host = match server.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = server.get_ports().first().copied().unwrap_or(5432);
    Some(format!("{host}:{port}"))
}

/// What a store keeps of its configuration: what its calls read, and the statements that open
/// its transactions, formatted once.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) schema: SchemaName,
    pub(super) max_batch_size: usize,
    pub(super) lock_timeout: Duration,
    pub(super) statement_timeout: Duration,
    /// Whether appends use named prepared statements (off behind transaction-mode poolers).
    pub(super) prepare: bool,
    /// What starts an append's transaction: `BEGIN` and its time bounds, one simple query. It
    /// also makes the transaction run cached generic plans: every statement of an append has
    /// one good plan whatever its values (see `sql::guard`), so planning them for their values
    /// would only cost time. And it plans them with sequential scans disabled: a generic plan
    /// is cached once per connection and kept until the table is analyzed, so a plan made
    /// while a new table was small (where a scan is cheapest) would scan the grown table at
    /// every append, for as long as autovacuum does not analyze it (measured: the id look-up
    /// 0.06 ms on its index, 41 ms scanning 200k rows). Every statement of an append has an
    /// index for each table it reads, so this only keeps the planner from the scan.
    pub(super) begin: Arc<str>,
    /// The same for a group-commit transaction: its lock wait is cut to [`GROUP_LOCK_WAIT`], so
    /// that appends grouped with one whose boundary is held elsewhere are not held up with it.
    pub(super) group_begin: Arc<str>,
    /// What starts the read-only transaction of a prepared read (`read` with no `from` and no
    /// `limit`): like [`Config::begin`], it runs the statement's cached generic plan, made with
    /// sequential scans off. Every query has an index for each item (tags, payload, types; the
    /// primary key for `Query::all`), so that plan is good whatever the values and however the
    /// table grows; a read with `from` or `limit` is planned for its values instead (a range or
    /// a limit changes which index is best), except a settled read's first page, whose limit
    /// stays outside its plan (`sql::select_first_page`). Its statement timeout is the store's.
    pub(super) read_begin: Arc<str>,
    /// The SQL of its reads and appends, rendered once per shape.
    pub(super) statements: Arc<Statements>,
}

/// The longest a group-commit transaction waits for its locks (at most the store's lock
/// timeout). Past it the group's appends run again alone, each waiting up to the lock timeout:
/// an append grouped with another whose boundary is held waits this long more, not the lock
/// timeout.
const GROUP_LOCK_WAIT: Duration = Duration::from_millis(100);

impl Config {
    fn new(
        schema: SchemaName,
        max_batch_size: usize,
        lock_timeout: Duration,
        statement_timeout: Duration,
        prepare: bool,
    ) -> Self {
        let begin = |lock_timeout| Arc::from(admin::begin_append(lock_timeout, statement_timeout));
        Self {
            schema,
            max_batch_size,
            lock_timeout,
            statement_timeout,
            prepare,
            begin: begin(lock_timeout),
            group_begin: begin(lock_timeout.min(GROUP_LOCK_WAIT)),
            read_begin: Arc::from(admin::begin_read(statement_timeout)),
            statements: Arc::default(),
        }
    }
}
