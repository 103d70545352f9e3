//! One append, checked and compiled: run in a transaction of its own or in the caller's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Row, Transaction};
use tracing::debug;
use uuid::Uuid;

use super::MAX_CACHED_STATEMENTS;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::locks::LockPlan;
use crate::sql::Statement;
use crate::store::{AppendResult, replay_or_duplicate};

/// An append checked and compiled, ready to run in a transaction.
pub(super) struct PreparedAppend {
    pub(super) events: Vec<Event>,
    /// The advisory locks it takes, and the statement that takes them.
    pub(super) locks: LockPlan,
    pub(super) lock: Statement,
    pub(super) insert: Statement,
    /// `Some` when guarded: the condition's `after`.
    pub(super) after: Option<Option<u64>>,
    /// `BEGIN` with the store's time bounds.
    pub(super) begin: Arc<str>,
}

impl PreparedAppend {
    /// Runs the append on a pooled connection, in a READ COMMITTED transaction of its own.
    ///
    /// `BEGIN`, the lock statement, the guarded insert and `COMMIT` are pipelined (one round
    /// trip) but run one after the other, so the insert's snapshot is taken after every lock is
    /// held: it sees every conflicting append that committed before, and every later one waits
    /// for this transaction to end. When the guard finds a conflict the insert writes nothing and
    /// `COMMIT` ends an empty transaction; when a statement fails, PostgreSQL turns the pipelined
    /// `COMMIT` into a rollback. Both statements are prepared once per connection (parsed and
    /// analysed once; PostgreSQL still plans the guard for the actual values, whose best plan
    /// depends on them).
    pub(super) async fn run_pooled(
        &self,
        client: &deadpool_postgres::Client,
    ) -> Result<AppendResult> {
        if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
            client.statement_cache.clear();
        }
        let prepare = Error::db("preparing the append");
        let lock = client
            .prepare_typed_cached(&self.lock.sql, self.lock.types())
            .await
            .map_err(&prepare)?;
        let insert = client
            .prepare_typed_cached(&self.insert.sql, self.insert.types())
            .await
            .map_err(&prepare)?;
        let (lock_values, values) = (self.lock.values(), self.insert.values());
        let (begun, locked, inserted, committed) = futures::join!(
            client.batch_execute(&self.begin),
            client.query(&lock, &lock_values),
            client.query(&insert, &values),
            client.batch_execute("COMMIT"),
        );
        begun.map_err(Error::db("starting the append's transaction"))?;
        let rows = self.finish(locked, inserted)?;
        committed.map_err(Error::db("committing the append"))?;
        self.positions(rows)
    }

    /// Runs the append inside the caller's transaction: the lock statement and the guarded
    /// insert, pipelined, unprepared (the transaction's connection has no statement cache).
    pub(super) async fn run_in(&self, tx: &Transaction<'_>) -> Result<AppendResult> {
        let (lock_params, params) = (self.lock.params(), self.insert.params());
        let (locked, inserted) = futures::join!(
            tx.query_typed(&self.lock.sql, &lock_params),
            tx.query_typed(&self.insert.sql, &params),
        );
        let rows = self.finish(locked, inserted)?;
        self.positions(rows)
    }

    /// The rows the insert returned, or the error of the first statement that failed.
    pub(super) fn finish(
        &self,
        locked: Result<Vec<Row>, tokio_postgres::Error>,
        inserted: Result<Vec<Row>, tokio_postgres::Error>,
    ) -> Result<Vec<Row>> {
        locked.map_err(Error::db("taking the append's advisory locks"))?;
        inserted.map_err(|e| self.insert_error(e))
    }

    /// What the insert's rows say: written, replayed, duplicate, or a failed condition.
    pub(super) fn positions(&self, rows: Vec<Row>) -> Result<AppendResult> {
        let mut written = Vec::with_capacity(self.events.len());
        let mut stored = HashMap::new();
        let decode = Error::db("reading the written positions");
        for row in &rows {
            let position = row.try_get::<_, i64>(0).map_err(&decode)? as u64;
            let event_id: Uuid = row.try_get(1).map_err(&decode)?;
            if row.try_get::<_, bool>(2).map_err(&decode)? {
                let event = Event {
                    id: event_id,
                    event_type: row.try_get(3).map_err(&decode)?,
                    tags: row.try_get(4).map_err(&decode)?,
                    payload: row.try_get(5).map_err(&decode)?,
                    metadata: row.try_get(6).map_err(&decode)?,
                };
                stored.insert(event_id, (position, event));
            } else {
                written.push(position);
            }
        }
        if !stored.is_empty() {
            return replay_or_duplicate(&self.events, |id| {
                stored.get(id).map(|(position, event)| (*position, event))
            });
        }
        if written.is_empty() {
            let after = self.after.flatten();
            debug!(?after, "append condition failed");
            return Err(Error::AppendConditionFailed { after });
        }
        // Positions are drawn in batch order; RETURNING does not promise that order.
        written.sort_unstable();
        Ok(AppendResult::new(written))
    }

    pub(super) fn insert_error(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error()
            && *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_event_id_key")
        {
            let event_id = db
                .detail()
                .and_then(|d| d.split("=(").nth(1))
                .and_then(|d| d.split(')').next())
                .and_then(|id| id.parse().ok())
                .or_else(|| self.events.first().map(|e| e.id))
                .unwrap_or_default();
            return Error::DuplicateEventId { event_id };
        }
        Error::db("appending events")(e)
    }
}
