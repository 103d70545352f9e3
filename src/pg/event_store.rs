//! [`EventStore`] for [`PgEventStore`]: reads, appends (grouped), the feed and subscriptions.

use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};

use super::append::CompiledAppend;
use super::connection::Lent;
use super::read::{decode, read_feed, read_seen, read_seen_prepared};
use super::replicas::{Reading, Replicas, replayed};
use super::sql::{Guard, Statement};
use super::{PgEventStore, sql};
use crate::backend::{POSTGRES_LABEL, POSTGRES_NAME};
use crate::checkpoint::{Checkpoint, Mark};
use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::feed::FeedPage;
use crate::options::{Consistency, ReadOptions};
use crate::query::Query;
use crate::results::{AppendResult, ReadResult, Unseen};
use crate::store::follow_store;
use crate::store::{EventStore, EventStream, check_condition, check_feed};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::telemetry;

/// A read with its snapshot (`statement`, of a `query` read as `options` say) on a connection
/// of the server that `consistency` picks: prepared, in the read-only transaction that `begin`
/// opens, when there is one (see [`read_seen_prepared`]); else planned for its values.
async fn read_seen_on(
    replicas: &Arc<Replicas>,
    consistency: Consistency,
    statement: &Statement,
    begin: Option<&str>,
    query: &Query,
    options: ReadOptions,
) -> Result<ReadResult> {
    replicas
        .run(Reading::Reads, consistency, |on| async move {
            let client = Lent::take(&on.pool).await?;
            let query = query.clone();
            let read = match begin {
                Some(begin) => {
                    read_seen_prepared(&client, statement, begin, query, options).await?
                }
                None => read_seen(&***client, statement, query, options).await?,
            };
            client.release();
            Ok(read)
        })
        .await
}

impl EventStore for PgEventStore {
    fn read(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> impl Future<Output = Result<ReadResult>> + Send {
        // Checked before a connection is taken: bad input takes none.
        let statement = self.compile_read(sql::ReadKind::Seen, query, &options);
        let (replicas, query) = (self.replicas.clone(), query.clone());
        let items = query.items().len();
        // A read of the whole query (a decision's) has one plan whatever its values: prepared.
        let prepared = (self.config.prepare && options.from.is_none() && options.limit.is_none())
            .then(|| self.config.read_begin.clone());
        telemetry::instrument_read(POSTGRES_LABEL, items, async move {
            let (statement, begin) = (statement?, prepared.as_deref());
            let consistency = options.consistency;
            read_seen_on(&replicas, consistency, &statement, begin, &query, options).await
        })
    }

    fn read_unseen(
        &self,
        condition: &AppendCondition,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Unseen>> + Send {
        // Checked and compiled before a connection is taken: bad input takes none.
        let compiled = check_condition(condition, POSTGRES_NAME).map(|()| {
            let guard = Guard::of(condition);
            // A condition derived from a read is guarded by what its snapshot could not see
            // alone (the transactions' index, one plan whatever the values): prepared, like a
            // decision's read. Others also read their query after `after`, planned for its
            // values.
            let prepared =
                (self.config.prepare && guard.covered()).then(|| self.config.read_begin.clone());
            (sql::select_unseen(&self.config.schema, guard), prepared)
        });
        let (replicas, condition) = (self.replicas.clone(), condition.clone());
        async move {
            let (statement, prepared) = compiled?;
            let begin = prepared.as_deref();
            let query = &condition.fail_if_events_match;
            let options = ReadOptions::default();
            let read = read_seen_on(&replicas, consistency, &statement, begin, query, options);
            let read = read.await?;
            let snapshot = read.snapshot().clone();
            Ok(Unseen::new(&condition, read.into_events(), snapshot))
        }
    }

    fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
        let statement = self.compile_read(sql::ReadKind::Plain, query, &options);
        let replicas = self.replicas.clone();
        stream::once(async move {
            let statement = statement?;
            let statement = &statement;
            // The read runs again on the primary if it fails on a replica before its first row.
            let (rows, client) = replicas
                .run(Reading::Reads, options.consistency, |on| async move {
                    let client = Lent::take(&on.pool).await?;
                    let rows = client
                        .query_typed_raw(&statement.sql, statement.params())
                        .await
                        .map_err(Error::db("reading events"))?;
                    Ok((rows, client))
                })
                .await?;
            // The stream owns the connection; it goes back to the pool once every row is read
            // (dropped earlier, it is closed instead: see `Lent`).
            let rows = Box::pin(rows);
            Ok::<_, Error>(stream::unfold(Some((rows, client)), |state| async move {
                let (mut rows, client) = state?;
                match rows.try_next().await {
                    Ok(Some(row)) => Some((decode(&row), Some((rows, client)))),
                    Ok(None) => {
                        client.release();
                        None
                    }
                    Err(e) => Some((Err(Error::db("reading events")(e)), None)),
                }
            }))
        })
        .try_flatten()
        .boxed()
    }

    fn feed(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> impl Future<Output = Result<FeedPage>> + Send {
        // Checked and compiled before a connection is taken: bad input takes none.
        let after_mark = match after.map(|c| c.0) {
            Some(Mark::Postgres { tx, position }) => (tx, position),
            _ => (0, 0),
        };
        let statement = check_feed(query, after.as_ref(), limit, POSTGRES_NAME).and_then(|()| {
            let limit = u64::try_from(limit).unwrap_or(u64::MAX);
            Ok(sql::select_feed(
                &self.config.schema,
                query,
                after_mark,
                limit,
            )?)
        });
        let replicas = self.replicas.clone();
        async move {
            let statement = statement?;
            let statement = &statement;
            let replicas_ = &replicas;
            replicas
                .run(Reading::Consumers, Consistency::Eventual, |on| async move {
                    let client = Lent::take(&on.pool).await?;
                    if !on.replica {
                        let page = read_feed(&***client, statement, after_mark, limit).await?;
                        client.release();
                        return Ok(page);
                    }
                    // How far the replica had replayed before the page's snapshot (the two
                    // statements are pipelined, in this order).
                    let (replayed, page) = futures::join!(
                        replayed(&client),
                        read_feed(&***client, statement, after_mark, limit)
                    );
                    let (replayed, mut page) = (replayed?, page?);
                    client.release();
                    // A consumer caught up on a replica that had not replayed everything the
                    // primary has committed looks again soon rather than at its poll interval.
                    if page.events.len() < limit && !page.held_back {
                        page.held_back = replayed < replicas_.primary_flushed().await?;
                    }
                    Ok(page)
                })
                .await
        }
    }

    fn append(
        &self,
        events: impl IntoIterator<Item = Event>,
        condition: Option<AppendCondition>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        let events: Vec<Event> = events.into_iter().collect();
        let (count, guarded) = (events.len(), condition.is_some());
        let compiled = CompiledAppend::new(&self.config, events, condition);
        let (pool, group, changes) = (self.pool.clone(), self.group.clone(), self.changes.clone());
        telemetry::instrument_append(POSTGRES_LABEL, count, guarded, async move {
            let outcome = group.append(&pool, compiled?).await;
            changes.appended(&pool);
            outcome
        })
    }

    fn subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription {
        follow_store(self, query, self.changes.subscribe(), after, options)
    }
}
