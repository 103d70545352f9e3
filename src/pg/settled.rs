//! The settled head: a position below which the log is complete.
//!
//! Positions are drawn when a row is inserted and transactions commit in any order, so a read
//! that holds position 11 may miss position 10, whose writer has not committed yet. A client that
//! knows only positions (a protocol client guarding its decision with `after`) needs the reads it
//! is given to be *prefixes*: a read that reports position p has seen every event at or below p
//! that will ever commit. [`PgEventStore::settled_head`] gives that bound.
//!
//! Every append *publishes* itself before it draws a position: its lock statement takes a shared
//! advisory lock on a key holding the last position drawn from the sequence at that moment
//! (`sql::lock_keys`), and holds it until its transaction ends. Every position it draws later is
//! above the published one. So, to settle the positions drawn up to now:
//!
//! 1. read the last position drawn, `v`;
//! 2. then list the published keys in `pg_locks`: the appends still in flight that published a
//!    position below `v` may hold a position at or below it; any other append in flight
//!    published `v` or more, or publishes after step 2, and draws above `v`;
//! 3. wait for those appends: take each of their keys exclusively and let it go at once, one
//!    after the other.
//!
//! Steps 1 and 2 are one statement, which also reads the last position stored at or below `v`:
//! when no append is in flight below `v`, one round trip answers. The wait holds up no other
//! append: appends that start meanwhile publish `v` or more, keys nobody waits for.
//!
//! Listing `pg_locks` is costly under load (every lock of the server, read under all its lock
//! partitions), and most reads need not: between steps 1 and 2 the statement tries, without
//! waiting, the locks a guard on the query would take. Every append that writes a matching
//! event holds one of them in a conflicting mode from before it draws a position (see
//! `locks.rs`), so when they can all be taken, no such append is in flight, none can hold a
//! position at or below `v`, and step 2 is skipped. The locks go when the statement ends.

use super::connection::Lent;
use super::locks::LockPlan;
use super::read::{decode, in_read_transaction};
use super::sql::{ReadKind, Statement};
use super::sql::{SchemaName, admin};
use super::{PgEventStore, bound_statement_cache};
use crate::error::{Error, Result};
use crate::{Query, ReadOptions, SequencedEvent};

/// The settled head's statements in a store.
#[derive(Debug)]
pub(crate) struct Settled {
    namespace: i64,
    state: String,
    /// The store's schema, whose name is the key space of its locks.
    schema: String,
}

impl Settled {
    pub(crate) fn new(schema: &SchemaName) -> Self {
        Self {
            namespace: admin::drawn_namespace(schema),
            state: admin::settled_state(schema),
            schema: schema.as_str().to_string(),
        }
    }

    /// The locks of a guard on `query` (see `locks.rs`): every append writing an event that
    /// matches `query` holds one of its keys, in a mode that conflicts with the guard's.
    fn keys(&self, query: &Query) -> LockPlan {
        LockPlan::new(&self.schema, &[], Some(query))
    }
}

impl PgEventStore {
    /// The settled head: the highest stored position at or below which every event that will
    /// ever commit has committed (`None` for an empty store). A read whose snapshot is taken
    /// after this call returns, and that stops at this position, is a *prefix* of the log, so a
    /// decision guarded by `AppendCondition::new(query, settled_head)` (positions only, no
    /// snapshot) is exact. This is what a client that knows only positions needs (the gRPC
    /// server builds on it); the library's own reads carry their snapshot instead
    /// ([`ReadResult::append_condition`](crate::ReadResult::append_condition)) and need no
    /// wait.
    ///
    /// It covers every append that returned before the call (read-your-writes). When appends
    /// that may write below the last position drawn are still in flight, it waits for them, and
    /// for them only: it holds up no other append. An append left open in a transaction
    /// ([`append_in`](PgEventStore::append_in)) holds it until the transaction ends, at most
    /// the store's lock timeout.
    ///
    /// # Errors
    ///
    /// A retryable [`Error::Database`] (SQLSTATE `55P03`) when an append stays in flight past
    /// the store's lock timeout; [`Error::Pool`] or [`Error::Database`] when PostgreSQL fails.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// use dcbstore::{AppendCondition, Event, EventStore, Query, QueryItem, ReadOptions};
    /// let query = Query::from(QueryItem::tagged(["username:ada"]));
    /// let settled = store.settled_head().await?;
    /// let read = store.read(&query, ReadOptions::default()).await?;
    /// // What a position-only client sees: the events up to the settled head.
    /// let seen = read.events().iter().filter(|e| Some(e.position) <= settled).count();
    /// if seen == 0 {
    ///     let claim = Event::new("UsernameClaimed", serde_json::json!({})).with_tags(["username:ada"]);
    ///     store.append([claim], Some(AppendCondition::new(query, settled))).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settled_head(&self) -> Result<Option<u64>> {
        self.settled_head_for(&Query::all()).await
    }

    /// The settled head for the events matching `query`: like
    /// [`settled_head`](PgEventStore::settled_head), but it waits only for the appends in flight
    /// that write an event matching `query` (those that hold one of its lock keys), so that a
    /// read of one boundary is not held up by appends to others. A read of `query` cut at it is
    /// a prefix of the events matching `query`: a decision guarded by the same query (or one
    /// whose events it covers) and this position is exact.
    ///
    /// # Errors
    ///
    /// As [`settled_head`](PgEventStore::settled_head); [`Error::InvalidInput`] for an invalid
    /// query.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// use dcbstore::{Query, QueryItem};
    /// let course = Query::from(QueryItem::tagged(["course:c1"]));
    /// // Waits only for appends in flight that write events tagged course:c1.
    /// let settled = store.settled_head_for(&course).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settled_head_for(&self, query: &Query) -> Result<Option<u64>> {
        query.validate()?;
        let client = Lent::take(&self.pool).await?;
        let statement = self.settled_statement(&client).await?;
        let row = self
            .settled_row(&client, &statement, &self.settled.keys(query))
            .await?;
        let (head, _) = self.settle(&client, row).await?;
        client.release();
        Ok(head)
    }

    /// A read cut at the settled head of `query`, with that head: the events matching `query`
    /// (as `options` ask, forwards: `backwards` is refused) that lie at or below the head, a
    /// prefix of the events matching `query`. In one round trip when no append it must wait
    /// for is in flight: the settled head's statement and the read, pipelined on one
    /// connection (the read's snapshot is taken after the statement); else the read runs again
    /// after the wait. A first page (no `from`) is a prepared statement, run on its cached
    /// generic plan (no planning per read; see `sql::select_first_page`); a page with `from`
    /// is planned for its values, as [`read`](crate::EventStore::read) is. Always on the
    /// primary.
    ///
    /// # Errors
    ///
    /// As [`settled_head_for`](PgEventStore::settled_head_for); [`Error::InvalidInput`] for
    /// invalid options, or `backwards` (read backwards from the head instead).
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(store: dcbstore::PgEventStore) -> dcbstore::Result<()> {
    /// use dcbstore::{AppendCondition, Event, EventStore, Query, QueryItem, ReadOptions};
    /// let query = Query::from(QueryItem::tagged(["username:ada"]));
    /// let (events, head) = store.read_settled(&query, ReadOptions::default()).await?;
    /// if events.is_empty() {
    ///     let claim = Event::new("UsernameClaimed", serde_json::json!({})).with_tags(["username:ada"]);
    ///     store.append([claim], Some(AppendCondition::new(query, head))).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_settled(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> Result<(Vec<SequencedEvent>, Option<u64>)> {
        if options.backwards {
            let problem = crate::ArgumentProblem::BackwardsSettledRead;
            return Err(Error::InvalidInput(problem.into()));
        }
        let first_page = self.config.prepare && options.from.is_none();
        let read = match first_page {
            true => self.compile_read(ReadKind::FirstPage, query, &options)?,
            false => self.compile_read(ReadKind::Plain, query, &options)?,
        };
        let client = Lent::take(&self.pool).await?;
        bound_statement_cache(&client);
        // Prepared first: a pipelined statement must reach the server in its turn.
        let statement = self.settled_statement(&client).await?;
        let prepared = match first_page {
            true => {
                let page = client.prepare_typed_cached(&read.sql, read.types()).await;
                Some(page.map_err(Error::db("preparing the read"))?)
            }
            false => None,
        };
        let keys = self.settled.keys(query);
        let (state, rows) = futures::join!(
            self.settled_row(&client, &statement, &keys),
            self.page_rows(&client, &read, prepared.as_ref()),
        );
        let (head, waited) = self.settle(&client, state?).await?;
        let rows = match waited {
            true => self.page_rows(&client, &read, prepared.as_ref()).await?,
            false => rows?,
        };
        client.release();
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = decode(row)?;
            if Some(event.position) > head {
                break;
            }
            events.push(event);
        }
        Ok((events, head))
    }

    /// The rows of `read` on `client`, sent when first polled: `prepared` (its statement,
    /// prepared on `client`) in a read-only transaction that plans with the store's settings
    /// (`Config::read_begin`), pipelined; else `read` as it is, planned for its values.
    async fn page_rows(
        &self,
        client: &Lent,
        read: &Statement,
        prepared: Option<&tokio_postgres::Statement>,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let failed = Error::db("reading events");
        let Some(prepared) = prepared else {
            return client
                .query_typed(&read.sql, &read.params())
                .await
                .map_err(failed);
        };
        let values = read.values();
        let rows = async { client.query(prepared, &values).await.map_err(failed) };
        in_read_transaction(client, &self.config.read_begin, rows).await
    }

    /// The settled head's statement, prepared once per connection.
    async fn settled_statement(&self, client: &Lent) -> Result<tokio_postgres::Statement> {
        let state = client.prepare_cached(&self.settled.state).await;
        state.map_err(Error::db("preparing the settled head"))
    }

    /// The settled head's `statement` run on `client` for the lock `keys` of a query. It is
    /// sent when first polled, so that a read pipelined after it runs in a later snapshot.
    async fn settled_row(
        &self,
        client: &Lent,
        statement: &tokio_postgres::Statement,
        keys: &LockPlan,
    ) -> Result<tokio_postgres::Row> {
        let namespace = &self.settled.namespace;
        client
            .query_one(statement, &[namespace, &keys.keys, &keys.exclusive])
            .await
            .map_err(Error::db("reading the appends in flight"))
    }

    /// The head the statement's `row` reports, once the appends it lists have ended (waited
    /// for on `client`, in a transaction bounded by the store's lock timeout), and whether it
    /// had to wait.
    async fn settle(&self, client: &Lent, row: tokio_postgres::Row) -> Result<(Option<u64>, bool)> {
        let head: Option<i64> = row.get(1);
        let in_flight: Vec<i64> = row.get(2);
        let waits = !in_flight.is_empty();
        if waits {
            await_published(client, &self.config.begin, in_flight).await?;
        }
        Ok((head.map(|p| p as u64), waits))
    }
}

/// Waits on `client` for the appends that published `keys` to end: in one round trip, `begin`
/// (an append's `BEGIN`, with the store's lock and statement timeouts), each key taken and let
/// go in turn, `COMMIT`. The statement is prepared first (once per connection): a pipelined
/// statement that still had to be parsed would be sent after the `COMMIT`, and would run
/// outside the transaction. A wait that fails leaves the connection to be closed by its caller
/// (not returned to the pool), with any key it held; so does a caller that gives up while it
/// waits (see `Lent`).
async fn await_published(client: &Lent, begin: &str, keys: Vec<i64>) -> Result<()> {
    let wait = client.prepare_cached(admin::AWAIT_PUBLISHED).await;
    let wait = wait.map_err(Error::db("preparing the wait for appends in flight"))?;
    let keys: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&keys];
    let (begun, waited, committed) = futures::join!(
        client.batch_execute(begin),
        client.query(&wait, &keys),
        client.batch_execute(admin::COMMIT),
    );
    begun.map_err(Error::db("starting the wait for appends in flight"))?;
    waited.map_err(Error::db("waiting for the appends in flight"))?;
    committed.map_err(Error::db("ending the wait for appends in flight"))?;
    Ok(())
}
