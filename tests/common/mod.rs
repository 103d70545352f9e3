//! Test harness: a PostgreSQL server and a fresh schema per test.
//!
//! The server is `DATABASE_URL` when it is set; otherwise a PostgreSQL container started with
//! testcontainers (one per machine, named `dcbstore-tests` and reused by later runs) when a
//! Docker engine is reachable; otherwise the tests fail with a message that says what to do.
#![allow(dead_code)]

use std::sync::OnceLock;

use dcbstore::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{
    AppendCondition, AppendResult, Checkpoint, Event, EventStore, EventStream, FeedPage,
    MemoryEventStore, PgEventStore, PgEventStoreBuilder, Query, ReadOptions, ReadResult,
    SequencedEvent, SubscribeOptions, Subscription,
};

/// PostgreSQL image for testcontainers: pinned, current.
const IMAGE_TAG: &str = "17.6-alpine";

/// The server's URL.
pub fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => std::thread::spawn(start_container)
            .join()
            .unwrap_or_else(|_| panic!("starting a PostgreSQL container panicked")),
    })
}

fn start_container() -> String {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::{ImageExt, ReuseDirective};

    let container = Postgres::default()
        .with_tag(IMAGE_TAG)
        .with_container_name("dcbstore-tests")
        .with_reuse(ReuseDirective::Always)
        .start()
        .unwrap_or_else(|e| {
            panic!(
                "\n\nThe tests need PostgreSQL. DATABASE_URL is not set and no container could be \
                 started ({e}).\nEither set DATABASE_URL, e.g.\n  \
                 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test\nor make a \
                 Docker engine reachable so that testcontainers can start one.\n"
            )
        });
    let port = container
        .get_host_port_ipv4(5432)
        .expect("the container exposes 5432");
    let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
    // Reused across runs: the container outlives this process on purpose.
    std::mem::forget(container);
    url
}

/// A pool of up to `size` connections to the test server.
pub fn pool(size: usize) -> Pool {
    let config: tokio_postgres::Config = database_url().parse().expect("a valid DATABASE_URL");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .expect("a pool")
}

/// A store in a fresh schema of its own, named after the running test.
pub async fn store() -> PgEventStore {
    store_with_pool(4).await
}

/// Like [`store`], with a pool of `size` connections (for races on separate connections).
pub async fn store_with_pool(size: usize) -> PgEventStore {
    let store = PgEventStore::builder()
        .schema(&test_schema())
        .from_pool(pool(size))
        .expect("a valid schema name");
    emptied(store).await
}

/// A store built like an application's ([`PgEventStore::builder`]: its own pool and its own
/// `LISTEN` connection) on the schema `schema`, named `application` in `pg_stat_activity`.
pub async fn built_store_in(schema: &str, application: &str) -> PgEventStore {
    let url = database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    PgEventStore::builder()
        .schema(schema)
        .pool_size(8)
        .connect(&format!("{url}{separator}application_name={application}"))
        .await
        .expect("a store on the test server")
}

/// `store` with its schema dropped (what an earlier run left) and migrated anew.
pub async fn emptied(store: PgEventStore) -> PgEventStore {
    let client = store
        .pool()
        .get()
        .await
        .expect("a connection to the test server");
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            store.schema()
        ))
        .await
        .expect("dropping the test schema");
    drop(client);
    store.migrate().await.expect("migrating the test schema");
    store
}

/// A second store on the schema `schema` (already migrated), with a pool of its own.
pub async fn store_with_pool_in(size: usize, schema: &str) -> PgEventStore {
    PgEventStore::builder()
        .schema(schema)
        .from_pool(pool(size))
        .expect("a valid schema name")
}

/// A schema name unique to the running test (its thread carries the test's name), stable across
/// runs so that each run starts by dropping what the last one left.
pub fn test_schema() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let binary = binary.split('-').next().unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in binary.bytes().chain([0]).chain(name.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let readable: String = name
        .rsplit("::")
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("t_{readable}_{hash:016x}")
}

/// Every event in the store, in position order.
pub async fn all_events(store: &PgEventStore) -> Vec<SequencedEvent> {
    store
        .read(&Query::all(), ReadOptions::default())
        .await
        .expect("reading the whole log")
        .into_events()
}

/// Number of rows in the store's events table, counted directly in SQL.
pub async fn row_count(store: &PgEventStore) -> i64 {
    let client = store.pool().get().await.expect("a connection");
    client
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".events", store.schema()),
            &[],
        )
        .await
        .expect("counting rows")
        .get(0)
}

/// An event of type `event_type` with `tags` and payload `payload`.
pub fn event(event_type: &str, tags: &[&str], payload: serde_json::Value) -> Event {
    Event::new(event_type, payload).with_tags(tags.iter().copied())
}

/// Which backend a conformance case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Memory,
}

/// A store of either backend, so that one test body runs on both.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Postgres(PgEventStore),
    Memory(MemoryEventStore),
}

impl AnyStore {
    /// A fresh, empty store of `backend` (for PostgreSQL, in a schema of the running test).
    pub async fn new(backend: Backend) -> Self {
        Self::with_max_batch_size(backend, dcbstore::DEFAULT_MAX_BATCH_SIZE).await
    }

    /// Like [`AnyStore::new`], with a batch size limit.
    pub async fn with_max_batch_size(backend: Backend, max: usize) -> Self {
        match backend {
            Backend::Postgres => AnyStore::Postgres(
                emptied(
                    PgEventStore::builder()
                        .schema(&test_schema())
                        .max_batch_size(max)
                        .from_pool(pool(40))
                        .expect("a valid schema name"),
                )
                .await,
            ),
            Backend::Memory => AnyStore::Memory(MemoryEventStore::new().with_max_batch_size(max)),
        }
    }

    /// Number of stored events: for PostgreSQL counted in SQL, bypassing the store.
    pub async fn row_count(&self) -> i64 {
        match self {
            AnyStore::Postgres(s) => row_count(s).await,
            AnyStore::Memory(s) => s.len() as i64,
        }
    }

    /// Every event, in position order.
    pub async fn all_events(&self) -> Vec<SequencedEvent> {
        self.read(&Query::all(), ReadOptions::default())
            .await
            .expect("reading the whole log")
            .into_events()
    }
}

impl EventStore for AnyStore {
    fn read(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> impl std::future::Future<Output = dcbstore::Result<ReadResult>> + Send {
        let (store, query) = (self.clone(), query.clone());
        async move {
            match store {
                AnyStore::Postgres(s) => s.read(&query, options).await,
                AnyStore::Memory(s) => s.read(&query, options).await,
            }
        }
    }

    fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
        match self {
            AnyStore::Postgres(s) => s.read_stream(query, options),
            AnyStore::Memory(s) => s.read_stream(query, options),
        }
    }

    fn append(
        &self,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> impl std::future::Future<Output = dcbstore::Result<AppendResult>> + Send {
        let (store, events) = (self.clone(), events.into_iter().collect::<Vec<_>>());
        async move {
            match store {
                AnyStore::Postgres(s) => s.append(events, condition).await,
                AnyStore::Memory(s) => s.append(events, condition).await,
            }
        }
    }

    fn feed(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> impl std::future::Future<Output = dcbstore::Result<FeedPage>> + Send {
        let (store, query) = (self.clone(), query.clone());
        async move {
            match store {
                AnyStore::Postgres(s) => s.feed(&query, after, limit).await,
                AnyStore::Memory(s) => s.feed(&query, after, limit).await,
            }
        }
    }

    fn subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription {
        match self {
            AnyStore::Postgres(s) => s.subscribe(query, after, options),
            AnyStore::Memory(s) => s.subscribe(query, after, options),
        }
    }
}

/// Another store over `store`'s pool and schema, with the settings `configure` gives (a store's
/// settings do not change once it is built).
pub fn reconfigured(
    store: &PgEventStore,
    configure: impl FnOnce(PgEventStoreBuilder) -> PgEventStoreBuilder,
) -> PgEventStore {
    configure(PgEventStore::builder().schema(store.schema()))
        .from_pool(store.pool().clone())
        .expect("the store's own schema name")
}
