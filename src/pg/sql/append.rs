//! The append: the CTE-guarded conditional `INSERT` of one append, its guard, and the statement
//! taking its advisory locks; the unguarded appends of a group (`unguarded_group.sql`).

use sea_query::extension::postgres::PgFunc;
use sea_query::{
    CommonTableExpression, Expr, ExprTrait, Func, IntoTableRef, Order, Query as Sql,
    SelectStatement, SubQueryStatement, UnionType, Value as SqlValue, WithClause,
};
use serde_json::{Value, json};

use super::filter::{filter, filter_after};
use super::{APPENDED, COLUMNS, SchemaName, Statement, WRITTEN};
use crate::condition::AppendCondition;
use crate::event::Event;
use crate::pg::locks::LockPlan;
use crate::query::Query;
use crate::snapshot::{PgSnapshot, Snapshot};

/// The guard of a conditional append: the condition's query, `after` and the snapshot of the
/// read the decision was made from, if it carries one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard<'a> {
    pub(crate) query: &'a Query,
    pub(crate) after: Option<i64>,
    pub(crate) snapshot: Option<&'a PgSnapshot>,
}

impl<'a> Guard<'a> {
    /// The guard of `condition`, checked ([`check_condition`](crate::store::check_condition)):
    /// its `after` fits a bigint, and it carries no snapshot of another backend.
    pub(crate) fn of(condition: &'a AppendCondition) -> Self {
        Self {
            query: &condition.fail_if_events_match,
            after: condition.after.map(|p| p as i64),
            snapshot: match condition.snapshot.as_ref().map(|s| &s.0) {
                Some(Snapshot::Postgres(s)) => Some(s),
                _ => None,
            },
        }
    }

    /// Whether only events the read's snapshot could not see can fail this guard: the
    /// condition is the one derived from that read (see [`unseen_guard`]).
    pub(crate) fn covered(&self) -> bool {
        let after = self.after.map(|a| a as u64);
        self.snapshot.is_some_and(|s| s.covers(self.query, after))
    }
}

/// The append: one statement. Its `INSERT … SELECT` from the batch (a JSONB array turned into rows
/// of the events table) writes only if no event of the batch is stored yet (CTE `existing`) and,
/// guarded, if no event matches the condition after `after` (CTE `guard`). It returns the
/// columns [`APPENDED`]: for the inserted events their position, id and transaction, for the
/// already stored ones their content too (all of them stored with the same content is an
/// idempotent replay, with other content a conflict, some of them a duplicate id), none and
/// nothing inserted a failed condition.
pub(crate) fn insert_events(
    schema: &SchemaName,
    events: &[Event],
    condition: Option<Guard<'_>>,
) -> Statement {
    let rows = Func::cust("jsonb_populate_recordset")
        .arg(Expr::cust(format!("NULL::{}.\"events\"", schema.quoted())))
        .arg(Expr::val(batch(events)));
    let mut source = Sql::select();
    source
        .columns(WRITTEN.map(|c| ("batch", c)))
        .from_function(rows, "batch");

    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    let mut existing = Sql::select();
    // Of the events stored already, all but `occurred_at`: enough to tell a replay from an
    // idempotency conflict.
    existing
        .columns(COLUMNS[..6].iter().copied())
        .column("tx_id")
        .from(schema.events())
        .and_where(Expr::col("event_id").eq(PgFunc::any(Expr::val(ids))));
    source.and_where(empty("existing"));

    let mut with = WithClause::new();
    if let Some(condition) = condition {
        for cte in guard(schema, condition) {
            with.cte(cte);
        }
        source.and_where(empty("guard"));
    }
    let mut insert = Sql::insert();
    insert
        .into_table(schema.events())
        .columns(WRITTEN)
        .select_from(source)
        .expect("the source selects exactly the written columns")
        .returning(Sql::returning().columns(["position", "event_id", "tx_id"]));
    with.cte(materialized("existing", existing))
        .cte(cte("inserted", insert, None));
    let tx = || Expr::cust(r#""tx_id"::text"#);
    let mut select = Sql::select();
    select.columns(["position", "event_id"]);
    for (expr, name) in [
        "FALSE",
        "NULL::text",
        "NULL::text[]",
        "NULL::jsonb",
        "NULL::jsonb",
    ]
    .into_iter()
    .zip(&APPENDED[2..7])
    {
        select.expr_as(Expr::cust(expr), *name);
    }
    select.expr_as(tx(), APPENDED[7]).from("inserted");
    let mut stored = Sql::select();
    stored
        .columns(["position", "event_id"])
        .expr_as(Expr::cust("TRUE"), "existed")
        .columns(["event_type", "tags", "payload", "metadata"])
        .expr_as(tx(), APPENDED[7])
        .from("existing");
    select.union(UnionType::All, stored).with_cte(with);
    Statement::build(&select)
}

/// The events of an append as the JSONB array its statement turns into rows.
pub(super) fn batch(events: &[Event]) -> Value {
    Value::Array(events.iter().map(row).collect())
}

/// One event as a row of the events table, in JSONB: the columns an append writes.
pub(crate) fn row(event: &Event) -> Value {
    json!({
        "event_id": event.id,
        "event_type": event.event_type,
        "tags": event.tags,
        "payload": event.payload,
        "metadata": event.metadata,
    })
}

/// The advisory locks of an append (see `locks.rs`), taken in one pass in key order (the
/// subscripts of the sorted key array). One statement shape for every append, prepared once per
/// connection.
///
/// It also *publishes* the append: a shared lock on the key [`super::admin::drawn_key`] makes of
/// the last position drawn before it (taken once, an init plan), so that a reader waiting for
/// the appends in flight below a position finds this one in `pg_locks` (see `settled.rs`): every
/// position this transaction draws later is above the published one.
///
/// (Taking the locks only when the guard does not already see a conflict was measured: stale
/// decisions then fail without queueing, but planning the guard twice cost disjoint appends 30%
/// of their throughput, more than it saved contended ones.)
pub(crate) fn lock_keys(schema: &SchemaName, locks: &LockPlan) -> Statement {
    let keys = SqlValue::from(locks.keys.clone());
    let namespace = super::admin::drawn_namespace(schema);
    let mut select = Sql::select();
    select
        .expr(Expr::cust_with_values(
            "CASE WHEN ($2)[i] THEN pg_advisory_xact_lock(($1)[i]) \
             ELSE pg_advisory_xact_lock_shared(($1)[i]) END",
            [keys.clone(), SqlValue::from(locks.exclusive.clone())],
        ))
        .expr(Expr::cust_with_values(
            format!(
                "(SELECT pg_advisory_xact_lock_shared({}))",
                super::admin::drawn_key(schema, "$1")
            ),
            [SqlValue::from(namespace)],
        ))
        .from_function(
            Func::cust("generate_subscripts")
                .arg(Expr::val(keys))
                .arg(1),
            "i",
        );
    Statement::build(&select)
}

/// Rows of the events table a guard's tail reads at most (see [`guard`]).
pub(super) const TAIL_ROWS: u64 = 64;

/// The guard of a condition: `WITH guard AS MATERIALIZED (…)`, the events that fail it. An event
/// fails a condition when it matches the query and lies after `after` (with no `after`: every
/// matching event) or, with the read's snapshot, when that snapshot could not see it (see
/// [`unseen_rows`]). A condition derived from a read guards only the latter ([`unseen_guard`]).
///
/// Every guard has one good plan whatever its values, so that the append's statement runs a
/// cached generic plan and skips the planner (which cost more than the guard's execution). The
/// events after `after` are looked for in two ways, because neither plan is good for every
/// value: the tail of the log after `after` (CTE `tail`, at most [`TAIL_ROWS`] rows by the
/// primary key, filtered by the query) answers alone when it holds fewer than [`TAIL_ROWS`]
/// rows, which is the rule for a condition from a recent read, even on a boundary of millions
/// of events. Only when the tail is full does the second part run (a one-time filter): the
/// query's own indexes (tag, payload, type), with the position as a filter (`"position" + 0`
/// keeps the primary key out of the plan: a generic plan does not know that the range after an
/// old `after` is most of the table). An item of types only keeps the range on its
/// `(event_type, position)` index. A query with an item that matches every event needs no second
/// part: a full tail already fails it.
///
/// The guard itself is MATERIALIZED and without LIMIT: planned for its whole (normally empty)
/// result, so PostgreSQL uses the indexes instead of a "fast start" walk of the primary key,
/// which visits the whole table when the boundary is empty or its events are old.
fn guard(schema: &SchemaName, condition: Guard<'_>) -> Vec<CommonTableExpression> {
    if condition.covered() {
        let snapshot = condition
            .snapshot
            .expect("a covered condition has a snapshot");
        return unseen_guard(schema, condition.query, condition.after, snapshot);
    }
    let query = condition.query;
    let Some(after) = condition.after else {
        // Every matching event fails it, also those the snapshot could not see.
        return vec![materialized("guard", matching(schema.events(), query))];
    };
    let mut ctes = Vec::new();
    let mut tail = Sql::select();
    tail.columns(FILTERED)
        .from(schema.events())
        .and_where(Expr::col("position").gt(after))
        .order_by("position", Order::Asc)
        .limit(TAIL_ROWS);
    ctes.push(materialized("tail", tail));
    let mut guard = matching("tail", query);
    if let Some(beyond) = filter_after(query, after) {
        let mut full = Sql::select();
        full.expr(Expr::cust("count(*)")).from("tail");
        let mut rest = Sql::select();
        rest.expr(Expr::cust("1"))
            .from(schema.events())
            .and_where(Expr::SubQuery(None, Box::new(full.into())).gte(TAIL_ROWS))
            .cond_where(beyond);
        guard.union(UnionType::All, rest);
    }
    if let Some(snapshot) = condition.snapshot {
        ctes.push(materialized(
            "unseen",
            unseen_rows(schema, snapshot, &FILTERED),
        ));
        guard.union(UnionType::All, matching("unseen", query));
    }
    ctes.push(materialized("guard", guard));
    ctes
}

/// The columns a guard's filter reads, of the rows it collects first.
const FILTERED: [&str; 4] = ["event_type", "tags", "payload", "occurred_at"];

/// The events a read's snapshot could not see: those of transactions at or above its `xmin`
/// that it does not show. They are an index range at the end of `(tx_id, position)`, bounded on
/// both sides so that a generic plan keeps the index, and open up to the largest `xid8`, above
/// the snapshot's `xmax`: transactions that began after the read are not visible in it either.
/// Visibility, not a test on the snapshot's list of transactions in progress: a writer draws its
/// position before its transaction id, so an event can sit below the positions a read returned
/// with a transaction id at or above the snapshot's `xmax`.
/// `columns` are those the caller reads of them.
pub(super) fn unseen_rows(
    schema: &SchemaName,
    snapshot: &PgSnapshot,
    columns: &[&'static str],
) -> SelectStatement {
    let mut unseen = Sql::select();
    unseen
        .columns(columns.iter().copied())
        .from(schema.events())
        .and_where(Expr::cust_with_values(
            r#""tx_id" >= pg_snapshot_xmin($1::pg_snapshot) AND "tx_id" <= '9223372036854775807'::xid8 AND NOT pg_visible_in_snapshot("tx_id", $1::pg_snapshot)"#,
            [snapshot.sql_text()],
        ));
    unseen
}

/// The guard of a condition derived from a read ([`ReadResult::append_condition`]): the read
/// returned every event of the query its snapshot showed (above what it skipped, which lies at
/// or below `after`), so only events the snapshot could not see can fail it: those of
/// transactions at or above its `xmin` that it does not show. The position adds nothing. They
/// are an index range at the end of `(tx_id, position)` (bounded on both sides, so that a
/// generic plan keeps the index), collected first (CTE `unseen`, materialized: the query's
/// filter cannot pull the plan onto the tag or payload indexes) and filtered by the query
/// after. Its cost follows the events written since the oldest transaction running at the
/// read, not the size of the boundary, and its plan does not depend on the values: the
/// append's statement can run a cached generic plan.
///
/// The range stays open up to the largest `xid8`, above the snapshot's `xmax`: transactions
/// that began after the read are not visible in it either. And a snapshot shows every write of
/// its own transaction, so the events of the current transaction above `after` count too (a
/// read with `read_in` in a transaction that then appends).
///
/// [`ReadResult::append_condition`]: crate::ReadResult::append_condition
fn unseen_guard(
    schema: &SchemaName,
    query: &Query,
    after: Option<i64>,
    snapshot: &PgSnapshot,
) -> Vec<CommonTableExpression> {
    let mut unseen = unseen_rows(schema, snapshot, &FILTERED);
    // A snapshot shows its own transaction's writes, also those made after it was taken: the
    // events this transaction wrote above `after` (when the read ran in it, `read_in`).
    let mut own = Sql::select();
    own.columns(FILTERED)
        .from(schema.events())
        .and_where(Expr::cust(r#""tx_id" = pg_current_xact_id_if_assigned()"#))
        .and_where(Expr::col("position").gt(after.unwrap_or(0)));
    unseen.union(UnionType::All, own);
    vec![
        materialized("unseen", unseen),
        materialized("guard", matching("unseen", query)),
    ]
}

/// `SELECT 1 FROM <from> WHERE <query>`.
pub(super) fn matching(from: impl IntoTableRef, query: &Query) -> SelectStatement {
    let mut select = Sql::select();
    select.expr(Expr::cust("1")).from(from);
    if let Some(filter) = filter(query) {
        select.cond_where(filter);
    }
    select
}

/// A `MATERIALIZED` CTE named `name`.
pub(super) fn materialized(name: &'static str, query: SelectStatement) -> CommonTableExpression {
    cte(name, query, Some(true))
}

/// The CTE `name`: `MATERIALIZED`, `NOT MATERIALIZED`, or (`None`) as PostgreSQL decides. Built
/// in place: the builder's `to_owned()` would copy the whole query, the batch's JSON included.
fn cte(
    name: &'static str,
    query: impl Into<SubQueryStatement>,
    materialized: Option<bool>,
) -> CommonTableExpression {
    let mut cte = CommonTableExpression::new();
    cte.query(query).table_name(name);
    if let Some(materialized) = materialized {
        cte.materialized(materialized);
    }
    cte
}

/// `NOT EXISTS (SELECT 1 FROM <cte>)`.
fn empty(cte: &'static str) -> Expr {
    let mut select = Sql::select();
    select.expr(Expr::cust("1")).from(cte);
    Expr::not_exists(select)
}

/// The unguarded appends of a group in one statement (see the file), in `schema`. Its one
/// parameter is a JSONB array of their events, each with the index of its append.
pub(crate) fn unguarded_group(schema: &SchemaName) -> String {
    include_str!("unguarded_group.sql").replace("__SCHEMA__", &schema.quoted())
}
