//! The PostgreSQL side of the harness: the server, a fresh schema per test, and what tests
//! do beside the store (count rows in SQL, kill connections).
//!
//! The server is `DATABASE_URL` when it is set; otherwise a PostgreSQL container started with
//! testcontainers (one per machine, named `dcbstore-tests` and reused by later runs) when a
//! Docker engine is reachable; otherwise the tests fail with a message that says what to do.

use std::sync::OnceLock;

use dcbstore::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{PgEventStore, PgEventStoreBuilder};

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

/// Terminates every connection named `application` in `pg_stat_activity` but `admin`'s own
/// (what a failover or an administrator does); how many it terminated.
pub async fn kill_connections(admin: &tokio_postgres::Client, application: &str) -> u64 {
    let row = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application],
        )
        .await
        .expect("terminating backends");
    row.get::<_, i64>(0) as u64
}
