//! Finishing a [`PgEventStoreBuilder`]: the pool it opens (or is given), the replicas' pools,
//! the wake-ups of subscriptions, and the store over them.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

use super::{Config, PgEventStoreBuilder, ReplicaSource};
use crate::error::{Error, Result};
use crate::pg::PgEventStore;
use crate::pg::group::GroupCommit;
use crate::pg::notify::{self, Changes};
use crate::pg::replicas::{Policy, Replicas};
use crate::pg::sql::{SchemaName, replica};

impl PgEventStoreBuilder {
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
        let settled = Arc::new(crate::pg::settled::Settled::new(&schema));
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
