//! [`PgEventStore::migrate`]: the schema, versioned, applied once.

use tokio_postgres::GenericClient;
use tracing::field::Empty;
use tracing::{Instrument, debug};

use super::PgEventStore;
use super::sql::admin;
use crate::error::{Error, Result};

/// The version `admin::EVENTS_DDL` records in `schema_version`.
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
        tx.batch_execute(&admin::set_lock_timeout(self.config.lock_timeout))
            .await
            .map_err(Error::db(CONTEXT))?;
        tx.execute(admin::MIGRATION_LOCK, &[&MIGRATE_LOCK_KEY])
            .await
            .map_err(Error::db(CONTEXT))?;
        // Another process may have migrated while this one waited for the lock.
        if self.schema_version(&*tx).await? >= SCHEMA_VERSION {
            return Ok(false);
        }
        tx.batch_execute(&admin::create_schema(&self.config.schema))
            .await
            .map_err(Error::db(CONTEXT))?;
        tx.batch_execute(admin::EVENTS_DDL)
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
        let table = admin::schema_version_table(&self.config.schema);
        let exists: bool = client
            .query_one(admin::RELATION_EXISTS, &[&table])
            .await
            .map_err(Error::db(CONTEXT))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let version: Option<i32> = client
            .query_one(&admin::schema_version(&self.config.schema), &[])
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
        assert!(super::admin::EVENTS_DDL.contains(&insert));
    }
}
