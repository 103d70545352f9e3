//! What the examples share: picking the backend.
//!
//! With `DATABASE_URL` set, the examples run on PostgreSQL (in their own schema, with ids unique
//! to the run, so they can run again and again); without it, on the in-memory store.

use dcbstore::PgEventStore;

/// `DATABASE_URL`, if set; says which backend the example runs on.
pub fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            println!("Backend: PostgreSQL (DATABASE_URL is set)\n");
            Some(url)
        }
        _ => {
            println!("Backend: in-memory store (set DATABASE_URL to run on PostgreSQL)\n");
            None
        }
    }
}

/// A PostgreSQL store in `schema`, migrated.
pub async fn postgres(url: &str, schema: &str) -> dcbstore::Result<PgEventStore> {
    let store = PgEventStore::builder().schema(schema).connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// A suffix for ids, unique to this run, so that reruns against PostgreSQL start afresh.
pub fn run_suffix() -> String {
    format!("-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}
