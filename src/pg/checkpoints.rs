//! Projection checkpoints stored in PostgreSQL, beside the events: saved in the caller's
//! transaction, so that a read model and its checkpoint commit together.

use tokio_postgres::{GenericClient, Transaction};

use super::PgEventStore;
use super::sql::admin;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

impl PgEventStore {
    /// The checkpoint stored under `name`, `None` when there is none (the projection starts
    /// from the beginning).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the query fails;
    /// [`ParseProblem::Checkpoint`](crate::ParseProblem::Checkpoint) when the
    /// stored text is not a checkpoint.
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = store.pool().get().await?;
    /// let from = store.load_checkpoint(&**client, "seats").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_checkpoint<C: GenericClient>(
        &self,
        client: &C,
        name: &str,
    ) -> Result<Option<Checkpoint>> {
        let sql = admin::load_checkpoint(&self.config.schema);
        let row = client
            .query_opt(&sql, &[&name])
            .await
            .map_err(Error::db("loading a checkpoint"))?;
        row.map(|row| {
            let text: String = row.get(0);
            text.parse::<Checkpoint>().map_err(Error::from)
        })
        .transpose()
    }

    /// Stores `checkpoint` under `name`, replacing the one before. Call it in the transaction
    /// that writes what the events up to the checkpoint made of the read model: both commit, or
    /// neither (the events are then applied again after a restart, never twice).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the statement fails.
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore, events: Vec<dcbstore::FeedEvent>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = store.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// // … the read model's writes for `events`, in `tx` …
    /// if let Some(last) = events.last() {
    ///     store.save_checkpoint_in(&tx, "seats", last.checkpoint).await?;
    /// }
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn save_checkpoint_in(
        &self,
        transaction: &Transaction<'_>,
        name: &str,
        checkpoint: Checkpoint,
    ) -> Result<()> {
        let sql = admin::save_checkpoint(&self.config.schema);
        transaction
            .execute(&sql, &[&name, &checkpoint.to_string()])
            .await
            .map_err(Error::db("saving a checkpoint"))?;
        Ok(())
    }

    /// Removes the checkpoint stored under `name` (e.g. with the read model, to rebuild it).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the statement fails.
    ///
    /// ```no_run
    /// # async fn run(store: dcbstore::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = store.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// // … the read model's rows deleted in `tx` …
    /// store.delete_checkpoint_in(&tx, "seats").await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_checkpoint_in(
        &self,
        transaction: &Transaction<'_>,
        name: &str,
    ) -> Result<()> {
        let sql = admin::delete_checkpoint(&self.config.schema);
        transaction
            .execute(&sql, &[&name])
            .await
            .map_err(Error::db("deleting a checkpoint"))?;
        Ok(())
    }
}
