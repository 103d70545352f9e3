//! [`PgEventStoreBuilder`]: a store that owns its pool, configured in one place.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

use super::{
    DEFAULT_GROUPS_IN_FLIGHT, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_GROUP_SIZE, DEFAULT_POOL_TIMEOUT,
    DEFAULT_SCHEMA, DEFAULT_STATEMENT_TIMEOUT, PgEventStore, notify,
};
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_BATCH_SIZE;

/// How many connections a pool built by [`PgEventStoreBuilder`] holds unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The settings of a [`PgEventStore`] that opens its own pool: the server, the pool (size and
/// timeouts), TLS, and the store's own settings. Start from [`PgEventStore::builder`] (a URL)
/// or [`PgEventStoreBuilder::new`] (a `tokio_postgres::Config`); end with
/// [`connect`](PgEventStoreBuilder::connect) or
/// [`connect_with_tls`](PgEventStoreBuilder::connect_with_tls).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run() -> dcbstore::Result<()> {
/// let store = dcbstore::PgEventStore::builder("postgres://app@db.internal/app")?
///     .pool_size(32)
///     .pool_timeout(Duration::from_secs(2))
///     .schema("orders")
///     .lock_timeout(Duration::from_secs(1))
///     .prepared_statements(false) // behind PgBouncer in transaction mode
///     .connect()
///     .await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until connect"]
pub struct PgEventStoreBuilder {
    server: tokio_postgres::Config,
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
}

impl PgEventStoreBuilder {
    /// A builder for the server `server`, with every other setting at its default.
    ///
    /// ```
    /// let mut server = dcbstore::tokio_postgres::Config::new();
    /// server.host("localhost").user("postgres").dbname("postgres");
    /// let builder = dcbstore::PgEventStoreBuilder::new(server).pool_size(8);
    /// ```
    pub fn new(server: tokio_postgres::Config) -> Self {
        Self {
            server,
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
        }
    }

    /// How many connections the pool holds at most (default [`DEFAULT_POOL_SIZE`]).
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.pool_size(32); }
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long a call waits for a free connection, and for a new one to open or an idle one to
    /// be checked (default [`DEFAULT_POOL_TIMEOUT`]); past it the call fails with a retryable
    /// [`Error::Pool`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.pool_timeout(std::time::Duration::from_secs(1)); }
    /// ```
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// The schema the store lives in (default [`DEFAULT_SCHEMA`]), checked at
    /// [`connect`](PgEventStoreBuilder::connect) as [`PgEventStore::with_schema`] does.
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.schema("tenant_42"); }
    /// ```
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_string();
        self
    }

    /// [`PgEventStore::with_max_batch_size`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.max_batch_size(100); }
    /// ```
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch_size = max;
        self
    }

    /// [`PgEventStore::with_lock_timeout`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.lock_timeout(std::time::Duration::from_millis(500)); }
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// [`PgEventStore::with_statement_timeout`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.statement_timeout(std::time::Duration::from_secs(5)); }
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// [`PgEventStore::with_max_group_size`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.max_group_size(1); }
    /// ```
    pub fn max_group_size(mut self, max: usize) -> Self {
        self.max_group_size = max;
        self
    }

    /// [`PgEventStore::with_groups_in_flight`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.groups_in_flight(8); }
    /// ```
    pub fn groups_in_flight(mut self, groups: usize) -> Self {
        self.groups_in_flight = groups;
        self
    }

    /// [`PgEventStore::with_prepared_statements`].
    ///
    /// ```
    /// # fn run(b: dcbstore::PgEventStoreBuilder) { let b = b.prepared_statements(false); }
    /// ```
    pub fn prepared_statements(mut self, prepare: bool) -> Self {
        self.prepare = prepare;
        self
    }

    /// Whether appends send a notification (`NOTIFY`, after their transaction has ended) that
    /// wakes the subscriptions of other processes (default: on). Off, subscriptions in other
    /// processes see this store's events at their poll interval; those of this store's clones
    /// are woken either way.
    ///
    /// ```
    /// # fn run() -> dcbstore::Result<()> {
    /// let builder = dcbstore::PgEventStore::builder("postgres://localhost/app")?.notifications(false);
    /// # Ok(())
    /// # }
    /// ```
    pub fn notifications(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// Opens the pool without TLS and checks that one connection opens.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid schema name, [`Error::Config`] when the pool
    /// cannot be built, [`Error::Pool`] when the server cannot be reached.
    ///
    /// ```no_run
    /// # async fn run() -> dcbstore::Result<()> {
    /// let store = dcbstore::PgEventStore::builder("postgres://postgres@localhost/postgres")?
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<PgEventStore> {
        self.connect_with_tls(NoTls).await
    }

    /// Opens the pool over TLS with rustls (feature `rustls`): `config` says which servers to
    /// trust (e.g. the platform's roots, or your CA). Whether TLS is required is the server
    /// settings' `sslmode` (`require` to refuse a server without it).
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
    /// let store = dcbstore::PgEventStore::builder("postgres://app@db.example.com/app?sslmode=require")?
    ///     .connect_with_rustls(config)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "rustls")]
    pub async fn connect_with_rustls(self, config: rustls::ClientConfig) -> Result<PgEventStore> {
        self.connect_with_tls(tokio_postgres_rustls::MakeRustlsConnect::new(config))
            .await
    }

    /// Opens the pool with `tls` (e.g. a `tokio_postgres_rustls::MakeRustlsConnect` or a
    /// `postgres_native_tls::MakeTlsConnector`, from the crate of your choice) and checks that
    /// one connection opens. Whether TLS is required is the server settings' `sslmode`.
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
    /// let store = dcbstore::PgEventStore::builder("postgres://app@db.example.com/app?sslmode=require")?
    ///     .connect_with_tls(tls)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with_tls<T>(self, tls: T) -> Result<PgEventStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let listen = notify::connect_with(self.server.clone(), tls.clone());
        let manager = Manager::from_config(
            self.server,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(self.pool_timeout),
                create: Some(self.pool_timeout),
                recycle: Some(self.pool_timeout),
            })
            .build()
            .map_err(|e| Error::Config {
                message: e.to_string(),
                source: e.into(),
            })?;
        let store = PgEventStore::from_pool(pool)
            .with_schema(&self.schema)?
            .with_max_batch_size(self.max_batch_size)
            .with_lock_timeout(self.lock_timeout)
            .with_statement_timeout(self.statement_timeout)
            .with_prepared_statements(self.prepare)
            .with_max_group_size(self.max_group_size)
            .with_groups_in_flight(self.groups_in_flight)
            .listening(listen, self.notify);
        drop(store.pool().get().await?);
        Ok(store)
    }
}
