//! [`PgEventStore::migrate`]: the schema, versioned, applied once.

use tokio_postgres::GenericClient;
use tracing::field::Empty;
use tracing::{Instrument, debug};

use super::PgEventStore;
use crate::error::{Error, Result};

/// The schema's DDL, run in the store's schema.
pub(super) const EVENTS_DDL: &str = include_str!("../../initdb/02_events.sql");
/// The version `EVENTS_DDL` records in `schema_version`.
const SCHEMA_VERSION: i32 = 3;
/// Serializes concurrent `migrate()` calls (their `IF NOT EXISTS` checks race otherwise).
const MIGRATE_LOCK_KEY: i64 = 0x6463_6273_746f_7265; // "dcbstore"

impl PgEventStore {
    /// Creates or updates the schema, the events table and its indexes: the SQL of
    /// `initdb/02_events.sql`, run in this store's schema. Safe to call from every process at
    /// start: when the schema is current (its `schema_version` table says so) it runs two small
    /// catalog-sized queries and takes no lock; otherwise concurrent calls take turns (an advisory lock) and the DDL
    /// waits at most [`PgEventStore::lock_timeout`] for each table lock it needs.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] or [`Error::Database`] when the server refuses (e.g. missing privileges)
    /// or a lock is not granted in time (retryable).
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// store.migrate().await?;
    /// store.migrate().await?; // reads the version and returns the second time
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(&self) -> Result<()> {
        let span = tracing::debug_span!(
            target: "dcbstore",
            "dcbstore.migrate",
            schema = self.schema(),
            applied = Empty
        );
        let applied = self.migrate_once().instrument(span.clone()).await?;
        span.record("applied", applied);
        Ok(())
    }

    /// Applies the DDL unless the schema is current; whether it did.
    async fn migrate_once(&self) -> Result<bool> {
        const CONTEXT: &str = "migrating the schema";
        let mut client = self.pool.get().await.map_err(Error::pool)?;
        if self.schema_version(&**client).await? >= SCHEMA_VERSION {
            return Ok(false);
        }
        let tx = client.transaction().await.map_err(Error::db(CONTEXT))?;
        let schema = self.config.schema.quoted();
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            self.config.lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(Error::db(CONTEXT))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])
            .await
            .map_err(Error::db(CONTEXT))?;
        // Another process may have migrated while this one waited for the lock.
        if self.schema_version(&*tx).await? >= SCHEMA_VERSION {
            return Ok(false);
        }
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};"
        ))
        .await
        .map_err(Error::db(CONTEXT))?;
        tx.batch_execute(EVENTS_DDL)
            .await
            .map_err(Error::db(CONTEXT))?;
        tx.commit().await.map_err(Error::db(CONTEXT))?;
        debug!(schema = self.schema(), version = SCHEMA_VERSION, "migrated");
        Ok(true)
    }

    /// The version recorded in the schema, 0 when there is none (no schema, or one that predates
    /// versions).
    async fn schema_version<C: GenericClient>(&self, client: &C) -> Result<i32> {
        const CONTEXT: &str = "reading the schema version";
        let table = format!("{}.schema_version", self.config.schema.quoted());
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(Error::db(CONTEXT))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let version: Option<i32> = client
            .query_one(&format!("SELECT max(version) FROM {table}"), &[])
            .await
            .map_err(Error::db(CONTEXT))?
            .get(0);
        Ok(version.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ddl_records_the_schema_version_migrate_expects() {
        let insert = format!(
            "INSERT INTO schema_version (version) VALUES ({}) ON CONFLICT DO NOTHING;",
            super::SCHEMA_VERSION
        );
        assert!(super::EVENTS_DDL.contains(&insert));
    }
}
