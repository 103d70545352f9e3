#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod service;
mod status;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};

use backend::{Backend, Memory, Postgres};

pub use service::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
pub use wire::WIRE;

/// The protocol's messages, server and client, generated from `proto/umadb.proto` (package
/// `umadb.v1`): the client is what the tests and benchmarks drive the server with.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("umadb.v1");
}

/// How a subscription looks for events appended by other processes, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What the server serves, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens (`127.0.0.1:0`: a free port, see [`Running::addr`]).
    pub listen: SocketAddr,
    /// The PostgreSQL store's URL; `None`: an in-memory store, lost when the server stops.
    pub database_url: Option<String>,
    /// The store's schema on PostgreSQL.
    pub schema: String,
    /// The key clients must send (`authorization: Bearer <key>`), as UmaDB's clients do.
    pub api_key: Option<String>,
    /// The TLS certificate chain and private key, PEM.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// PostgreSQL connections in the store's pool.
    pub pool_size: usize,
    /// Appends grouped in one transaction, at most.
    pub max_group_size: usize,
    /// Group transactions in flight at once.
    pub groups_in_flight: usize,
    /// How long an append waits for another's locks.
    pub lock_timeout: Duration,
    /// How long any statement may run.
    pub statement_timeout: Duration,
    /// How often a subscription looks for events appended by other processes (those appended
    /// through this server wake it at once).
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            schema: dcbstore::pg::DEFAULT_SCHEMA.to_string(),
            api_key: None,
            tls: None,
            pool_size: dcbstore::pg::DEFAULT_POOL_SIZE,
            max_group_size: dcbstore::pg::DEFAULT_MAX_GROUP_SIZE,
            groups_in_flight: dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT,
            lock_timeout: dcbstore::pg::DEFAULT_LOCK_TIMEOUT,
            statement_timeout: dcbstore::pg::DEFAULT_STATEMENT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Connecting to the store, or migrating its schema, failed.
    #[error("the store: {0}")]
    Store(String),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key was refused, or the transport failed.
    #[error("the gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

async fn open(config: &Config) -> Result<Backend, ServeError> {
    let Some(url) = &config.database_url else {
        return Ok(Backend::Memory(Memory::default()));
    };
    let store = dcbstore::PgEventStore::builder()
        .schema(&config.schema)
        .pool_size(config.pool_size)
        .max_group_size(config.max_group_size)
        .groups_in_flight(config.groups_in_flight)
        .lock_timeout(config.lock_timeout)
        .statement_timeout(config.statement_timeout)
        .connect(url)
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let postgres = Postgres::new(store);
    postgres
        .migrate()
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    Ok(Backend::Postgres(postgres))
}

/// Creates or upgrades the store's schema on PostgreSQL (the events, and the consumers'
/// tracking positions), as `dcbstore migrate` does.
///
/// # Errors
///
/// [`ServeError::Store`] when PostgreSQL cannot be reached or refuses the DDL.
pub async fn migrate(url: &str, schema: &str) -> Result<(), ServeError> {
    let config = Config {
        database_url: Some(url.to_string()),
        schema: schema.to_string(),
        pool_size: 1,
        ..Config::default()
    };
    open(&config).await.map(drop)
}

/// A server that runs: its address, and how to stop it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: it reports NOT_SERVING, accepts no new call, ends the streams, and
    /// returns once the calls in flight (appends) have finished.
    ///
    /// # Errors
    ///
    /// [`ServeError::Transport`] when the transport failed while it served.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Runs until stopped by [`Running::stop`] or by its task failing.
    ///
    /// # Errors
    ///
    /// [`ServeError::Transport`] when the transport failed.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }

    /// Stops at once, as a killed process would: connections drop, calls in flight are lost.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Opens the store (migrating its schema on PostgreSQL), binds `config.listen`, and serves the
/// `umadb.v1.DCB` service and the gRPC health service on it until [`Running::stop`].
///
/// # Errors
///
/// [`ServeError::Store`] when the store cannot be opened, [`ServeError::Listen`] when the address
/// cannot be bound, [`ServeError::Transport`] for a refused TLS identity.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dcbstore_server::ServeError> {
/// let config = dcbstore_server::Config {
///     listen: "127.0.0.1:0".parse().unwrap(),
///     ..Default::default()
/// };
/// let server = dcbstore_server::serve(config).await?; // in memory: no database_url
/// println!("listening on {}", server.addr());
/// server.stop().await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve(config: Config) -> Result<Running, ServeError> {
    let backend = Arc::new(open(&config).await?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    let (stop, stopping) = watch::channel(false);
    let service = service::Service {
        backend,
        appended: Arc::new(watch::channel(0).0),
        poll_interval: config.poll_interval,
        stopping: stopping.clone(),
    };
    let api_key = config.api_key.clone().map(|k| format!("Bearer {k}"));
    let dcb = proto::dcb_server::DcbServer::with_interceptor(service, move |request| {
        authorize(api_key.as_deref(), request)
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::dcb_server::DcbServer<service::Service>>()
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &config.tls {
        builder =
            builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let router = builder.add_service(health_service).add_service(dcb);
    let mut shutdown = stopping;
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            health
                .set_not_serving::<proto::dcb_server::DcbServer<service::Service>>()
                .await;
        };
        // No Nagle: a stream's last frames (data, then trailers) would wait for the client's
        // delayed acknowledgement (measured: 42 ms per read).
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        router
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(ServeError::from)
    });
    tracing::info!(%addr, tls = config.tls.is_some(), api_key = config.api_key.is_some(), "serving umadb.v1.DCB");
    Ok(Running { addr, stop, task })
}

/// Lets a call through when the server has no key, or the call carries it as UmaDB's clients
/// send it (`authorization: Bearer <key>`).
fn authorize(
    expected: Option<&str>,
    request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(expected) = expected else {
        return Ok(request);
    };
    let given = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if given == Some(expected) {
        Ok(request)
    } else {
        Err(status::unauthenticated())
    }
}
