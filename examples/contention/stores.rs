//! The stores a measurement runs on: opened with the runner's settings, fresh (dropped and
//! migrated), resized, and loaded with events in bulk (`load.sql`).

use std::time::Instant;

use dcbstore::{Event, PgEventStore};
use serde_json::json;

use super::{BoxError, NOTIFY};

const LOAD_SQL: &str = include_str!("load.sql");
const EVENTS_DDL: &str = include_str!("../../initdb/02_events.sql");
const BIG_BOUNDARY: u64 = 10_000;
/// Events per batch of the bulk writer in beside-bulk: each brings four lock keys of its own.
pub(crate) const BULK_BATCH: u64 = 100;
/// Tags of the one event of the wide writer in beside-bulk.
pub(crate) const WIDE_TAGS: u64 = 70;

/// A store in `schema` behind a pool of `size` connections, grouping appends as `group` says.
pub(crate) async fn store_at(
    url: &str,
    schema: &str,
    size: usize,
    (group, in_flight): (usize, usize),
) -> Result<PgEventStore, BoxError> {
    Ok(PgEventStore::builder()
        .pool_size(size)
        .schema(schema)
        .max_group_size(group)
        .groups_in_flight(in_flight)
        .notifications(NOTIFY.load(std::sync::atomic::Ordering::Relaxed))
        .connect(url)
        .await?)
}

/// A store in `schema`, dropped and recreated.
pub(crate) async fn fresh_store(
    url: &str,
    schema: &str,
    pool_size: usize,
) -> Result<PgEventStore, BoxError> {
    let defaults = (
        dcbstore::pg::DEFAULT_MAX_GROUP_SIZE,
        dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT,
    );
    fresh_grouped_store(url, schema, pool_size, defaults).await
}

/// Like [`fresh_store`], grouping appends as `group` says.
pub(crate) async fn fresh_grouped_store(
    url: &str,
    schema: &str,
    pool_size: usize,
    group: (usize, usize),
) -> Result<PgEventStore, BoxError> {
    let store = store_at(url, schema, pool_size, group).await?;
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    drop(client);
    store.migrate().await?;
    Ok(store)
}

/// The same store (and data) behind a pool of `size` connections.
pub(crate) async fn resized(
    url: &str,
    store: &PgEventStore,
    size: usize,
    group: (usize, usize),
) -> Result<PgEventStore, BoxError> {
    store_at(url, store.schema(), size, group).await
}

/// Loads events `from..=to` with `load.sql`; large loads drop the secondary indexes first and
/// rebuild them with `migrate()` (the same DDL), which is much faster than maintaining them.
pub(crate) async fn load(store: &PgEventStore, from: u64, to: u64) -> Result<(), BoxError> {
    if to < from {
        return Ok(());
    }
    let started = Instant::now();
    let schema = store.schema().to_string();
    let mut client = store.pool().get().await?;
    let bulk = to - from >= 100_000;
    if bulk {
        client
            .batch_execute(&format!(
                "DROP INDEX \"{schema}\".events_type_position_idx, \"{schema}\".events_tags_idx, \"{schema}\".events_payload_idx, \"{schema}\".events_tx_id_position_idx"
            ))
            .await?;
    }
    let chunk = 250_000;
    let mut start = from;
    while start <= to {
        let end = (start + chunk - 1).min(to);
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
            .await?;
        tx.execute(
            LOAD_SQL,
            &[&(start as i64), &(end as i64), &(BIG_BOUNDARY as i64)],
        )
        .await?;
        tx.commit().await?;
        start = end + 1;
    }
    if bulk {
        // The schema's own DDL recreates the dropped indexes (`migrate()` would not: the
        // schema's version is current).
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL search_path TO \"{schema}\"; {EVENTS_DDL}"
        ))
        .await?;
        tx.commit().await?;
    }
    drop(client);
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".events"))
        .await?;
    eprintln!(
        "  loaded events {from}..={to} into {schema} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn event(kind: &str, course: &str, student: &str, n: u64) -> Event {
    Event::new(kind, json!({"course": course, "student": student, "n": n}))
        .with_tags([format!("course:{course}"), format!("student:{student}")])
}
