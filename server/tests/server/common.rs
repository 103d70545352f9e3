//! Starting a server on a backend, and a client for it.

use std::time::Duration;

use dcbstore_server::proto::dcb_client::DcbClient;
use dcbstore_server::proto::{self, error_response::ErrorType};
use dcbstore_server::{Config, Running};
use prost::Message as _;
use tonic::transport::Channel;

pub type Client = DcbClient<Channel>;

/// Where a test's server keeps its events.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    /// A schema of its own on `DATABASE_URL`.
    Postgres {
        url: String,
        schema: String,
    },
}

impl Backend {
    /// The in-memory store, and a fresh schema on PostgreSQL when `DATABASE_URL` is set.
    pub fn all() -> Vec<Backend> {
        let mut all = vec![Backend::Memory];
        all.extend(Backend::postgres());
        all
    }

    /// A fresh schema on `DATABASE_URL`, if set.
    pub fn postgres() -> Option<Backend> {
        let url = std::env::var("DATABASE_URL").ok()?;
        let schema = format!("srv_{}", uuid::Uuid::new_v4().simple());
        Some(Backend::Postgres { url, schema })
    }

    pub fn config(&self) -> Config {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            lock_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        if let Backend::Postgres { url, schema } = self {
            config.database_url = Some(url.clone());
            config.schema = schema.clone();
            config.pool_size = 8;
        }
        config
    }

    /// The library's store on the same schema, to write beside the server.
    pub async fn store(&self) -> dcbstore::PgEventStore {
        let Backend::Postgres { url, schema } = self else {
            panic!("only PostgreSQL has a store to share");
        };
        dcbstore::PgEventStore::builder()
            .schema(schema)
            .pool_size(8)
            .connect(url)
            .await
            .expect("the library's store")
    }
}

/// A server on `backend` and a client of it: what most tests start with.
pub async fn serve(backend: &Backend) -> (Running, Client) {
    let server = start(backend).await;
    let client = client(&server).await;
    (server, client)
}

/// Stops `server` gracefully and drops the backend's schema.
pub async fn end(server: Running, backend: &Backend) {
    server.stop().await.expect("a clean stop");
    drop_schema(backend).await;
}

/// The positions of the whole log, read through the library (PostgreSQL).
pub async fn log_positions(backend: &Backend) -> Vec<u64> {
    let store = backend.store().await;
    let read = dcbstore::EventStore::read(
        &store,
        &dcbstore::Query::all(),
        dcbstore::ReadOptions::default(),
    )
    .await
    .expect("the log");
    read.events().iter().map(|e| e.position).collect()
}

/// Starts a server on `backend`.
pub async fn start(backend: &Backend) -> Running {
    start_with(backend.config()).await
}

pub async fn start_with(config: Config) -> Running {
    dcbstore_server::serve(config)
        .await
        .expect("the server starts")
}

pub async fn client(server: &Running) -> Client {
    let url = format!("http://{}", server.addr());
    DcbClient::connect(url).await.expect("a connection")
}

pub fn event(event_type: &str, tags: &[&str], data: &[u8]) -> proto::Event {
    proto::Event {
        event_type: event_type.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        data: data.to_vec(),
        uuid: uuid::Uuid::new_v4().to_string(),
        metadata: vec![],
    }
}

pub fn query(items: &[(&[&str], &[&str])]) -> proto::Query {
    proto::Query {
        items: items
            .iter()
            .map(|(types, tags)| proto::QueryItem {
                types: types.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    }
}

pub async fn append(
    client: &mut Client,
    events: Vec<proto::Event>,
    condition: Option<proto::AppendCondition>,
) -> Result<u64, tonic::Status> {
    let request = proto::AppendRequest {
        events,
        condition,
        tracking_info: None,
    };
    Ok(client.append(request).await?.into_inner().position)
}

/// Every response of a read.
pub async fn read_all(
    client: &mut Client,
    request: proto::ReadRequest,
) -> Result<Vec<proto::ReadResponse>, tonic::Status> {
    let mut stream = client.read(request).await?.into_inner();
    let mut responses = Vec::new();
    while let Some(response) = stream.message().await? {
        responses.push(response);
    }
    Ok(responses)
}

/// The events of a read and the head it reported last.
pub async fn read(
    client: &mut Client,
    query: Option<proto::Query>,
) -> (Vec<proto::SequencedEvent>, Option<u64>) {
    let request = proto::ReadRequest {
        query,
        ..Default::default()
    };
    let responses = read_all(client, request).await.expect("a read");
    let head = responses.last().and_then(|r| r.head);
    (responses.into_iter().flat_map(|r| r.events).collect(), head)
}

/// A status's code and the error type in its details, as UmaDB's clients decode it.
pub fn refusal(status: &tonic::Status) -> (tonic::Code, ErrorType) {
    let details = proto::ErrorResponse::decode(status.details()).expect("an ErrorResponse");
    assert_eq!(details.message, status.message());
    let kind = ErrorType::try_from(details.error_type).expect("a known error type");
    (status.code(), kind)
}

/// Drops a PostgreSQL backend's schema.
pub async fn drop_schema(backend: &Backend) {
    if let Backend::Postgres { url, schema } = backend {
        let (client, connection) =
            dcbstore::tokio_postgres::connect(url, dcbstore::tokio_postgres::NoTls)
                .await
                .expect("a connection");
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}
