//! Reading on PostgreSQL: a decision's read with its snapshot, and rows decoded into events.

use futures::TryStreamExt;
use tokio_postgres::{GenericClient, Row};

use super::sql::Statement;
use crate::error::{Error, Result, describe};
use crate::event::{Event, SequencedEvent};
use crate::options::ReadOptions;
use crate::query::Query;
use crate::snapshot::{PgSnapshot, ReadSnapshot};
use crate::store::ReadResult;

/// A decision's read (`statement`, from [`super::PgEventStore::compile_read_seen`]): the events with the
/// snapshot the read statement ran in.
pub(super) async fn read_seen<C: GenericClient>(
    client: &C,
    statement: &Statement,
    query: Query,
    options: ReadOptions,
) -> Result<ReadResult> {
    let failed = Error::db("reading events");
    let rows = client
        .query_typed_raw(&statement.sql, statement.params())
        .await
        .map_err(&failed)?;
    let undecodable = |message: String, source: Option<tokio_postgres::Error>| Error::Decode {
        position: 0,
        message,
        source: source.map(Into::into),
    };
    // Decoded as the rows arrive (a big read overlaps decoding with the transfer).
    futures::pin_mut!(rows);
    let (mut snapshot, mut events) = (None, Vec::new());
    while let Some(row) = rows.try_next().await.map_err(&failed)? {
        if snapshot.is_none() {
            let text: &str = row
                .try_get(0)
                .map_err(|e| undecodable(describe(&e), Some(e)))?;
            snapshot = Some(
                PgSnapshot::parse(text)
                    .ok_or_else(|| undecodable(format!("unexpected snapshot {text:?}"), None))?,
            );
        }
        // The one row of a read that matched nothing has no event.
        let position: Option<i64> = row
            .try_get(1)
            .map_err(|e| undecodable(describe(&e), Some(e)))?;
        if position.is_some() {
            events.push(decode_at(&row, 1)?);
        }
    }
    let snapshot =
        snapshot.ok_or_else(|| undecodable("the read returned no snapshot".to_string(), None))?;
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
    let position: i64 = row.try_get(first).map_err(|e| Error::Decode {
        position: 0,
        message: describe(&e),
        source: Some(e.into()),
    })?;
    let position = position as u64;
    // The driver's error and its cause (e.g. what serde_json could not read).
    let fail = |e: tokio_postgres::Error| Error::Decode {
        position,
        message: describe(&e),
        source: Some(e.into()),
    };
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
