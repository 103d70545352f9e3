//! `dcbstore`: UmaDB's DCB gRPC protocol on dcbstore (`serve`), and the schema's migration
//! (`migrate`). Every flag also reads an environment variable (`DCBSTORE_…`, or
//! `DATABASE_URL`); `dcbstore serve --help` lists them.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// UmaDB's DCB protocol (umadb.v1.DCB) on dcbstore: PostgreSQL, or in memory.
#[derive(Parser)]
#[command(name = "dcbstore", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the protocol until SIGTERM or Ctrl-C, then finishes the appends in flight.
    Serve(Serve),
    /// Creates or upgrades the store's schema (events and tracking positions), then exits.
    Migrate(Store),
    /// Asks a running server's gRPC health service whether it serves umadb.v1.DCB: exits 0 when
    /// it does (a container's health check).
    Health(Health),
}

#[derive(Args)]
struct Health {
    /// The server.
    #[arg(
        long,
        env = "DCBSTORE_HEALTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
    /// The certificate authority of a server with TLS (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Args)]
struct Store {
    /// The PostgreSQL store (none for `serve`: an in-memory store, lost when it stops).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The store's schema.
    #[arg(long, env = "DCBSTORE_SCHEMA", default_value = dcbstore::pg::DEFAULT_SCHEMA)]
    schema: String,
}

#[derive(Args)]
struct Serve {
    #[command(flatten)]
    store: Store,
    /// Where to listen.
    #[arg(long, env = "DCBSTORE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The key clients must send (as UmaDB's clients do: `authorization: Bearer <key>`).
    #[arg(long, env = "DCBSTORE_API_KEY")]
    api_key: Option<String>,
    /// The TLS certificate chain (PEM); with --tls-key.
    #[arg(long, env = "DCBSTORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "DCBSTORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "DCBSTORE_POOL_SIZE", default_value_t = dcbstore::pg::DEFAULT_POOL_SIZE)]
    pool_size: usize,
    /// Appends grouped in one transaction, at most.
    #[arg(long, env = "DCBSTORE_MAX_GROUP_SIZE", default_value_t = dcbstore::pg::DEFAULT_MAX_GROUP_SIZE)]
    max_group_size: usize,
    /// Group transactions in flight at once.
    #[arg(long, env = "DCBSTORE_GROUPS_IN_FLIGHT", default_value_t = dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT)]
    groups_in_flight: usize,
    /// How long an append waits for another's locks, in milliseconds.
    #[arg(long, env = "DCBSTORE_LOCK_TIMEOUT_MS", default_value_t = 5000)]
    lock_timeout_ms: u64,
    /// How long a statement may run, in milliseconds.
    #[arg(long, env = "DCBSTORE_STATEMENT_TIMEOUT_MS", default_value_t = 30000)]
    statement_timeout_ms: u64,
    /// How often subscriptions look for events appended by other processes, in milliseconds.
    #[arg(long, env = "DCBSTORE_POLL_INTERVAL_MS", default_value_t = 20)]
    poll_interval_ms: u64,
    /// Serves Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "DCBSTORE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Migrate(store) => {
            let url = store
                .database_url
                .ok_or("migrate needs a PostgreSQL store: --database-url or DATABASE_URL")?;
            dcbstore_server::migrate(&url, &store.schema).await?;
            tracing::info!(schema = %store.schema, "migrated");
            Ok(())
        }
        Command::Health(health) => {
            let mut endpoint = tonic::transport::Endpoint::from_shared(health.url.clone())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(2));
            if let Some(ca) = &health.ca {
                let ca = tonic::transport::Certificate::from_pem(std::fs::read(ca)?);
                endpoint = endpoint
                    .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca))?;
            }
            let mut client =
                tonic_health::pb::health_client::HealthClient::new(endpoint.connect().await?);
            let request = tonic_health::pb::HealthCheckRequest {
                service: "umadb.v1.DCB".into(),
            };
            let status = client.check(request).await?.into_inner().status();
            println!("{}: {}", health.url, status.as_str_name());
            match status {
                tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                _ => Err("not serving".into()),
            }
        }
        Command::Serve(serve) => {
            if let Some(addr) = serve.metrics_listen {
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .with_http_listener(addr)
                    .install()?;
            }
            let tls = match (&serve.tls_cert, &serve.tls_key) {
                (Some(cert), Some(key)) => Some((std::fs::read(cert)?, std::fs::read(key)?)),
                _ => None,
            };
            let config = dcbstore_server::Config {
                listen: serve.listen,
                database_url: serve.store.database_url,
                schema: serve.store.schema,
                api_key: serve.api_key,
                tls,
                pool_size: serve.pool_size,
                max_group_size: serve.max_group_size,
                groups_in_flight: serve.groups_in_flight,
                lock_timeout: Duration::from_millis(serve.lock_timeout_ms),
                statement_timeout: Duration::from_millis(serve.statement_timeout_ms),
                poll_interval: Duration::from_millis(serve.poll_interval_ms),
            };
            let server = dcbstore_server::serve(config).await?;
            println!("dcbstore is listening on {}", server.addr());
            shutdown_signal().await;
            tracing::info!("stopping: finishing the calls in flight");
            server.stop().await?;
            Ok(())
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
