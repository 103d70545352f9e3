//! The reads: a query's events in position order (with the snapshot a decision's read ran in),
//! and a page of the feed.

use sea_query::{
    Expr, ExprTrait, JoinType, Order, Query as Sql, SelectStatement, UnionType, Value as SqlValue,
    WithClause,
};

use super::append::{Guard, materialized, unseen_rows};
use super::filter::filter;
use super::{COLUMNS, SchemaName, Statement};
use crate::error::InvalidInput;
use crate::options::ReadOptions;
use crate::query::Query;
use crate::validate;

/// The read: events matching `query`, ordered by position, honouring `options`.
pub(crate) fn select_events(
    schema: &SchemaName,
    query: &Query,
    options: &ReadOptions,
) -> Result<Statement, InvalidInput> {
    Ok(Statement::build(&ordered(schema, query, options)?))
}

/// The first page of a read (`options` without `from`): one statement with one good plan
/// whatever its values, for a read prepared once and run on its cached generic plan. The read of
/// every matching event is a `MATERIALIZED` CTE, which PostgreSQL plans for full retrieval (the
/// plan of a prepared read of a whole query: each item through its index), and the `LIMIT`
/// applies outside it. A CTE is scanned as the outer query pulls its rows, so where its plan
/// streams (a walk of the position index, for a read of every event) the limit stops it early.
/// Written inline instead, the limit reaches the planner, and a generic plan, which cannot know
/// how few events match, walks the position index and filters every event by the items' tags.
/// Rows come in the CTE's order: by position. With no limit, [`select_events`].
pub(crate) fn select_first_page(
    schema: &SchemaName,
    query: &Query,
    options: &ReadOptions,
) -> Result<Statement, InvalidInput> {
    debug_assert!(options.from.is_none(), "a first page has no `from`");
    let Some(limit) = options.limit else {
        return select_events(schema, query, options);
    };
    let every = ReadOptions {
        limit: None,
        ..*options
    };
    let mut with = WithClause::new();
    with.cte(materialized("page", ordered(schema, query, &every)?));
    let mut page = Sql::select();
    page.columns(COLUMNS)
        .from("page")
        .limit(limit)
        .with_cte(with);
    Ok(Statement::build(&page))
}

/// The snapshot a decision's read reports, as text: the read statement's own
/// (`pg_current_snapshot()`) on a primary. On a hot standby only its `xmin` (`xmin:xmin:`, every
/// transaction at or above it unseen): a standby keeps the transactions running on the primary
/// out of the in-progress list `pg_current_snapshot()` shows, so that list would make a guard
/// take an event of such a transaction, committed after the read, for one the read saw. The
/// `xmin` holds there (those transactions, and those not replayed yet, count as running).
const SEEN_SNAPSHOT: &str = "CASE WHEN pg_is_in_recovery() \
     THEN pg_snapshot_xmin(pg_current_snapshot())::text || ':' \
     || pg_snapshot_xmin(pg_current_snapshot())::text || ':' \
     ELSE pg_current_snapshot()::text END";

/// The read of a decision: [`select_events`] with the snapshot it runs in ([`SEEN_SNAPSHOT`]),
/// as the first column of every row. With no matching event it returns one row whose other
/// columns are `NULL`, so that the snapshot still comes back.
pub(crate) fn select_events_seen(
    schema: &SchemaName,
    query: &Query,
    options: &ReadOptions,
) -> Result<Statement, InvalidInput> {
    Ok(Statement::build(&with_snapshot(ordered(
        schema, query, options,
    )?)))
}

/// The rows of `events` (the columns [`COLUMNS`]), each after the snapshot the statement runs
/// in ([`SEEN_SNAPSHOT`]); one row of the snapshot and `NULL`s when there are none.
fn with_snapshot(events: SelectStatement) -> SelectStatement {
    let mut snapshot = Sql::select();
    snapshot.expr_as(Expr::cust(SEEN_SNAPSHOT), "snapshot");
    let mut select = Sql::select();
    select
        .column(("read", "snapshot"))
        .columns(COLUMNS.map(|c| ("e", c)))
        .from_subquery(snapshot, "read")
        .join_lateral(JoinType::LeftJoin, events, "e", Expr::cust("TRUE"));
    select
}

/// What would fail `condition` now, read with the snapshot the statement runs in (the columns
/// of [`select_events_seen`], one row of `NULL`s when nothing would): the events of its query
/// its snapshot could not see (collected first from the end of `(tx_id, position)`, CTE
/// `unseen`: the cost follows what was written since the read, not the boundary), and unless
/// the condition was derived from a read that returned every event its snapshot showed, those
/// after `after` (every matching event without `after`). The two parts may overlap and are not
/// ordered: the caller sorts and deduplicates.
pub(crate) fn select_unseen(schema: &SchemaName, condition: Guard<'_>) -> Statement {
    let mut with = WithClause::new();
    let mut parts: Vec<SelectStatement> = Vec::new();
    if let Some(snapshot) = condition.snapshot {
        with.cte(materialized(
            "unseen",
            unseen_rows(schema, snapshot, &COLUMNS),
        ));
        let mut unseen = Sql::select();
        unseen.columns(COLUMNS).from("unseen");
        if let Some(filter) = filter(condition.query) {
            unseen.cond_where(filter);
        }
        parts.push(unseen);
    }
    if !condition.covered() {
        let mut after = Sql::select();
        after.columns(COLUMNS).from(schema.events());
        if let Some(filter) = filter(condition.query) {
            after.cond_where(filter);
        }
        if let Some(position) = condition.after {
            after.and_where(Expr::col("position").gt(position));
        }
        parts.push(after);
    }
    let mut parts = parts.into_iter();
    let mut failing = parts
        .next()
        .expect("a condition has a snapshot or is not covered");
    for part in parts {
        failing.union(UnionType::All, part);
    }
    let mut select = with_snapshot(failing);
    if condition.snapshot.is_some() {
        select.with_cte(with);
    }
    Statement::build(&select)
}

/// A page of the feed: the events matching `query` after (`tx`, `position`) in (writing
/// transaction, position) order, written by transactions below the statement's visibility
/// frontier (`pg_snapshot_xmin`: every transaction below it has ended, so nothing can still
/// appear before what is returned), at most `limit`. Every row starts with the frontier (as
/// text), whether committed events of the query wait at or above it, and the event's
/// transaction id (as text); with no event, one row with the first two and `NULL`s.
pub(crate) fn select_feed(
    schema: &SchemaName,
    query: &Query,
    after: (u64, u64),
    limit: u64,
) -> Result<Statement, InvalidInput> {
    let (tx, position) = after;
    let position = validate::position(position).unwrap_or(i64::MAX);
    let mut page = Sql::select();
    page.expr_as(Expr::cust(r#""tx_id"::text"#), "tx")
        .columns(COLUMNS)
        .from(schema.events());
    if let Some(filter) = filter(query) {
        page.cond_where(filter);
    }
    page.and_where(Expr::cust_with_values(
        r#"("tx_id", "position") > (CAST($1 AS xid8), $2)"#,
        [SqlValue::from(tx.to_string()), SqlValue::from(position)],
    ))
    .and_where(Expr::cust(
        r#""tx_id" < pg_snapshot_xmin(pg_current_snapshot())"#,
    ))
    .order_by("tx_id", Order::Asc)
    .order_by("position", Order::Asc)
    .limit(limit);
    // Committed events of the query at or above the frontier: the feed holds them back. A
    // scalar subquery ordered by tx_id with LIMIT 1, not EXISTS: PostgreSQL drops the ORDER BY
    // of an EXISTS and, not knowing the frontier, may scan the whole table instead of the
    // index range at its end.
    let mut held = Sql::select();
    held.column("tx_id")
        .from(schema.events())
        .and_where(Expr::cust(
            r#""tx_id" >= pg_snapshot_xmin(pg_current_snapshot())"#,
        ));
    if let Some(filter) = filter(query) {
        held.cond_where(filter);
    }
    held.order_by("tx_id", Order::Asc).limit(1);
    let mut frontier = Sql::select();
    frontier
        .expr_as(
            Expr::cust("pg_snapshot_xmin(pg_current_snapshot())::text"),
            "frontier",
        )
        .expr_as(
            Expr::SubQuery(None, Box::new(held.into())).is_not_null(),
            "held",
        );
    let mut select = Sql::select();
    select
        .column(("f", "frontier"))
        .column(("f", "held"))
        .column(("e", "tx"))
        .columns(COLUMNS.map(|c| ("e", c)))
        .from_subquery(frontier, "f")
        .join_lateral(JoinType::LeftJoin, page, "e", Expr::cust("TRUE"));
    Ok(Statement::build(&select))
}

fn ordered(
    schema: &SchemaName,
    query: &Query,
    options: &ReadOptions,
) -> Result<SelectStatement, InvalidInput> {
    let mut select = Sql::select();
    select.columns(COLUMNS).from(schema.events());
    if let Some(filter) = filter(query) {
        select.cond_where(filter);
    }
    let order = if options.backwards {
        Order::Desc
    } else {
        Order::Asc
    };
    if let Some(from) = options.from {
        let from = validate::position(from)?;
        let position = Expr::col("position");
        select.and_where(if options.backwards {
            position.lte(from)
        } else {
            position.gte(from)
        });
    }
    select.order_by("position", order);
    if let Some(limit) = options.limit {
        select.limit(limit);
    }
    Ok(select)
}
