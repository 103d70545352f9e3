//! Reading on PostgreSQL: a decision's read with its snapshot, and rows decoded into events.

use futures::TryStreamExt;
use tokio_postgres::{GenericClient, Row, RowStream};

use super::bound_statement_cache;
use super::sql::{self, Statement};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::{Event, SequencedEvent};
use crate::feed::{FeedEvent, FeedPage};
use crate::options::ReadOptions;
use crate::query::Query;
use crate::results::ReadResult;
use crate::snapshot::{PgSnapshot, ReadSnapshot};

/// A value the driver decoded but the store cannot read (e.g. a malformed snapshot).
fn malformed(message: String) -> Error {
    Error::Decode {
        position: 0,
        message,
        source: None,
    }
}

/// A decision's read (`statement`, from `PgEventStore::compile_read` (`ReadKind::Seen`)): the events with the
/// snapshot the read statement ran in.
pub(super) async fn read_seen<C: GenericClient>(
    client: &C,
    statement: &Statement,
    query: Query,
    options: ReadOptions,
) -> Result<ReadResult> {
    let rows = client
        .query_typed_raw(&statement.sql, statement.params())
        .await
        .map_err(Error::db("reading events"))?;
    collect_seen(rows, query, options).await
}

/// [`read_seen`] on a pooled connection, as a prepared statement (prepared once per connection)
/// whose cached generic plan the read-only transaction `begin` opens runs: no planning per read
/// (planning cost more than the read itself). `begin`, the read and `COMMIT` are pipelined in
/// one round trip. Only for statements whose one plan is good whatever their values: a read
/// with no `from` and no `limit`, planned with sequential scans off (see `Config::read_begin`).
pub(super) async fn read_seen_prepared(
    client: &deadpool_postgres::Client,
    statement: &Statement,
    begin: &str,
    query: Query,
    options: ReadOptions,
) -> Result<ReadResult> {
    bound_statement_cache(client);
    let prepared = client
        .prepare_typed_cached(&statement.sql, statement.types())
        .await
        .map_err(Error::db("preparing the read"))?;
    in_read_transaction(client, begin, async {
        let rows = client
            .query_raw(&prepared, statement.values())
            .await
            .map_err(Error::db("reading events"))?;
        collect_seen(rows, query, options).await
    })
    .await
}

/// `read` (which sends its statement when first polled) in the read-only transaction that
/// `begin` opens: `begin`, the read and `COMMIT`, pipelined in one round trip.
pub(super) async fn in_read_transaction<T>(
    client: &tokio_postgres::Client,
    begin: &str,
    read: impl Future<Output = Result<T>>,
) -> Result<T> {
    let (begun, read, committed) = futures::join!(
        client.batch_execute(begin),
        read,
        client.batch_execute(sql::admin::COMMIT),
    );
    begun.map_err(Error::db("starting the read's transaction"))?;
    let read = read?;
    committed.map_err(Error::db("ending the read's transaction"))?;
    Ok(read)
}

/// The rows of a decision's read, decoded as they arrive (a big read overlaps decoding with the
/// transfer): the events, sorted, with the snapshot of the first row.
async fn collect_seen(rows: RowStream, query: Query, options: ReadOptions) -> Result<ReadResult> {
    let failed = Error::db("reading events");
    futures::pin_mut!(rows);
    let (mut snapshot, mut events) = (None, Vec::new());
    while let Some(row) = rows.try_next().await.map_err(&failed)? {
        if snapshot.is_none() {
            let text: &str = row.try_get(0).map_err(|e| Error::undecodable(0, e))?;
            snapshot = Some(
                PgSnapshot::parse(text)
                    .ok_or_else(|| malformed(format!("unexpected snapshot {text:?}")))?,
            );
        }
        // The one row of a read that matched nothing has no event.
        let position: Option<i64> = row.try_get(1).map_err(|e| Error::undecodable(0, e))?;
        if position.is_some() {
            events.push(decode_at(&row, 1)?);
        }
    }
    let snapshot = snapshot.ok_or_else(|| malformed("the read returned no snapshot".into()))?;
    // The plan keeps the subquery's order; sorting again costs nothing on sorted input and
    // does not depend on it.
    if options.backwards {
        events.sort_by_key(|e: &SequencedEvent| std::cmp::Reverse(e.position));
    } else {
        events.sort_by_key(|e: &SequencedEvent| e.position);
    }
    Ok(ReadResult::new(
        events,
        query,
        options,
        ReadSnapshot::postgres(snapshot),
    ))
}

pub(super) fn decode(row: &Row) -> Result<SequencedEvent> {
    decode_at(row, 0)
}

/// Decodes the event whose columns ([`super::sql::COLUMNS`]) start at column `first`.
fn decode_at(row: &Row, first: usize) -> Result<SequencedEvent> {
    let position: i64 = row.try_get(first).map_err(|e| Error::undecodable(0, e))?;
    let position = position as u64;
    let fail = |e| Error::undecodable(position, e);
    Ok(SequencedEvent {
        position,
        event: Event {
            id: row.try_get(first + 1).map_err(fail)?,
            event_type: row.try_get(first + 2).map_err(fail)?,
            tags: row.try_get(first + 3).map_err(fail)?,
            payload: row.try_get(first + 4).map_err(fail)?,
            metadata: row.try_get(first + 5).map_err(fail)?,
        },
        occurred_at: row.try_get(first + 6).map_err(fail)?,
    })
}

/// A page of the feed ([`super::sql::select_feed`]): the events with their checkpoints, and the
/// next checkpoint: after the last event of a full page, else just below the frontier (every
/// transaction below it has ended and all its matching events were delivered), never behind
/// `after`.
pub(super) async fn read_feed<C: GenericClient>(
    client: &C,
    statement: &Statement,
    after: (u64, u64),
    limit: usize,
) -> Result<FeedPage> {
    let rows = client
        .query_typed(&statement.sql, &statement.params())
        .await
        .map_err(Error::db("reading the feed"))?;
    let number = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| malformed(format!("unexpected transaction id {text:?}")))
    };
    let mut head = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if head.is_none() {
            let text: &str = row.try_get(0).map_err(|e| Error::undecodable(0, e))?;
            let held: bool = row.try_get(1).map_err(|e| Error::undecodable(1, e))?;
            head = Some((number(text)?, held));
        }
        let tx: Option<&str> = row.try_get(2).map_err(|e| Error::undecodable(2, e))?;
        if let Some(tx) = tx {
            let event = decode_at(row, 3)?;
            events.push(FeedEvent {
                checkpoint: Checkpoint::postgres(number(tx)?, event.position),
                event,
            });
        }
    }
    let (frontier, held_back) =
        head.ok_or_else(|| malformed("the feed returned no frontier".into()))?;
    let after = Checkpoint::postgres(after.0, after.1);
    let next = match events.last() {
        Some(last) if events.len() == limit => last.checkpoint,
        // Past every event of every transaction below the frontier.
        _ => Checkpoint::postgres(frontier.saturating_sub(1), i64::MAX as u64).max(after),
    };
    Ok(FeedPage {
        events,
        next,
        held_back,
    })
}
