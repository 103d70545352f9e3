//! The PostgreSQL backend: a `PgEventStore`, and the consumers' positions in its schema's
//! `tracking` table (`tracking.sql`), written in the append's transaction.

use dcbstore::deadpool_postgres::GenericClient;
use dcbstore::{AppendCondition, Event, EventStore, PgEventStore};

use super::{BackendError, Tracking};

/// The DDL of the tracking table, run in the store's schema by `dcbstore migrate` and `serve`.
const TRACKING_DDL: &str = include_str!("tracking.sql");

/// A store on PostgreSQL.
pub(crate) struct Postgres {
    pub(crate) store: PgEventStore,
    /// The store's schema, quoted (a validated name: `[a-z0-9_]`).
    schema: String,
}

impl Postgres {
    pub(crate) fn new(store: PgEventStore) -> Self {
        let schema = format!("\"{}\"", store.schema());
        Self { store, schema }
    }

    /// Creates or upgrades the store's schema, and the tracking table in it.
    pub(crate) async fn migrate(&self) -> Result<(), BackendError> {
        self.store.migrate().await?;
        let client = self.client().await?;
        let ddl = format!("SET LOCAL search_path = {}; {TRACKING_DDL}", self.schema);
        client
            .batch_execute(&format!("BEGIN; {ddl} COMMIT;"))
            .await
            .map_err(|e| BackendError::db("creating the tracking table", e))
    }

    pub(crate) async fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
        tracking: Option<Tracking>,
    ) -> Result<u64, BackendError> {
        let Some(tracking) = tracking else {
            // Untracked appends share group commits with each other.
            return Ok(self.store.append(events, condition).await?.last_position());
        };
        let mut client = self.client().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(|e| BackendError::db("starting a tracked append", e))?;
        // The source's row first: appends of one source take turns on it.
        let moved = transaction
            .query_opt(
                &self.upsert(),
                &[&tracking.source, &(tracking.position as i64)],
            )
            .await
            .map_err(|e| BackendError::db("moving the tracking position", e))?;
        if moved.is_none() {
            let recorded = transaction
                .query_one(&self.select(), &[&tracking.source])
                .await
                .map_err(|e| BackendError::db("reading the tracking position", e))?;
            let recorded: i64 = recorded.get(0);
            return Err(BackendError::TrackingNotIncreasing {
                name: tracking.source,
                position: tracking.position,
                recorded: recorded as u64,
            });
        }
        let written = self
            .store
            .append_in(&transaction, events, condition)
            .await?;
        transaction
            .commit()
            .await
            .map_err(|e| BackendError::db("committing a tracked append", e))?;
        Ok(written.last_position())
    }

    pub(crate) async fn tracking(&self, source: &str) -> Result<Option<u64>, BackendError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&self.select(), &[&source])
            .await
            .map_err(|e| BackendError::db("reading the tracking position", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn client(&self) -> Result<dcbstore::deadpool_postgres::Client, BackendError> {
        Ok(self.store.pool().get().await?)
    }

    /// Records `$2` for source `$1` if it moves it forward; returns a row only then.
    fn upsert(&self) -> String {
        format!(
            "INSERT INTO {s}.tracking AS t (source, position) VALUES ($1, $2) \
             ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = now() \
             WHERE t.position < excluded.position RETURNING 1",
            s = self.schema
        )
    }

    fn select(&self) -> String {
        format!(
            "SELECT position FROM {}.tracking WHERE source = $1",
            self.schema
        )
    }
}
