//! The filter AST compiled into a `WHERE` condition: OR of items, each the AND of its types,
//! tags and payload predicates, and the query's time range.

use sea_query::extension::postgres::{PgExpr, PgFunc};
use sea_query::{Condition, Expr, ExprTrait};

use crate::query::{Query, QueryItem};

/// The `WHERE` condition of `query`; `None` when it matches everything.
pub(super) fn filter(query: &Query) -> Option<Condition> {
    let items = (!query.is_all()).then(|| query.items().iter().map(item_filter).collect());
    with_time_range(query, items)
}

/// The `WHERE` condition of the events matching `query` after `after`, with each item's own
/// bound on the position: `"position" > after` for an item of types only (its index is
/// `(event_type, position)`), `"position" + 0 > after` for the others (a generic plan then
/// takes the item's tag or payload index, not the primary key). `None` when an item matches
/// every event (see [`guard`]).
pub(super) fn filter_after(query: &Query, after: i64) -> Option<Condition> {
    if query.is_all() {
        return None;
    }
    let mut items = Vec::with_capacity(query.items().len());
    for item in query.items() {
        let cond = item_filter(item);
        if cond.is_empty() {
            // The item matches every event (see `matches_every_event`).
            return None;
        }
        items.push(cond.add(if !keyed(item) {
            Expr::col("position").gt(after)
        } else {
            Expr::cust_with_values(r#""position" + 0 > $1"#, [after])
        }));
    }
    with_time_range(query, Some(items))
}

/// The OR of `items` (`None`: every event) AND the time range of `query`; `None` when it
/// matches everything.
fn with_time_range(query: &Query, items: Option<Vec<Condition>>) -> Option<Condition> {
    let mut cond = Condition::all();
    if let Some(items) = items {
        cond = cond.add(any_balanced(items));
    }
    let (from, before) = query.occurred_range();
    if let Some(from) = from {
        cond = cond.add(Expr::col("occurred_at").gte(from));
    }
    if let Some(before) = before {
        cond = cond.add(Expr::col("occurred_at").lt(before));
    }
    (!cond.is_empty()).then_some(cond)
}

/// Operands an OR takes before it is nested (see [`any_balanced`]).
const OR_FAN_OUT: usize = 8;

/// The OR of `parts`, as a tree of ORs of at most [`OR_FAN_OUT`] operands each. sea-query renders
/// a flat OR as a left-deep chain and recurses once per operand, so a query of thousands of items
/// rendered flat exhausts the stack; nested, the depth grows with the logarithm. PostgreSQL
/// flattens nested ORs again. Up to [`OR_FAN_OUT`] operands the SQL is the flat OR.
fn any_balanced<C: Into<Condition>>(parts: impl IntoIterator<Item = C>) -> Condition {
    let mut level: Vec<Condition> = parts.into_iter().map(Into::into).collect();
    while level.len() > OR_FAN_OUT {
        let mut operands = level.into_iter().peekable();
        let mut next = Vec::new();
        while operands.peek().is_some() {
            next.push(
                operands
                    .by_ref()
                    .take(OR_FAN_OUT)
                    .fold(Condition::any(), Condition::add),
            );
        }
        level = next;
    }
    level.into_iter().fold(Condition::any(), Condition::add)
}

/// The condition of one item: the AND of its types, tags and payload predicates.
///
/// An item with tags or payload predicates is found through their GIN indexes, and its types
/// filter what those return: the type is then written `"event_type" || ''`, which no index
/// serves. Otherwise a generic plan made while the table was small could take the
/// `(event_type, position)` index instead and walk every event of the type at each call once
/// the table has grown (measured: the guard of a registration, 26 ms at 200k events). An item
/// of types only keeps that index.
fn item_filter(item: &QueryItem) -> Condition {
    let mut cond = Condition::all();
    let event_type = || match keyed(item) {
        true => Expr::cust(r#""event_type" || ''"#),
        false => Expr::col("event_type"),
    };
    match item.type_list() {
        Some([one]) => cond = cond.add(event_type().eq(one.as_str())),
        Some(many) => cond = cond.add(event_type().eq(PgFunc::any(Expr::val(many.to_vec())))),
        None => {}
    }
    if !item.tag_list().is_empty() {
        cond = cond.add(Expr::col("tags").contains(Expr::val(item.tag_list().to_vec())));
    }
    for p in item.all_of() {
        cond = cond.add(Expr::col("payload").contains(Expr::val(p.containment())));
    }
    if let Some(any_of) = item.any_of() {
        cond =
            cond.add(any_balanced(any_of.iter().map(|p| {
                Expr::col("payload").contains(Expr::val(p.containment()))
            })));
    }
    cond
}

/// Whether `item` constrains nothing, so that its condition is empty and it matches every
/// event: [`filter_after`] has no condition then.
pub(super) fn matches_every_event(item: &QueryItem) -> bool {
    item_filter(item).is_empty()
}

/// Whether `item` has tags or payload predicates, whose GIN indexes find its events.
fn keyed(item: &QueryItem) -> bool {
    !item.tag_list().is_empty() || !item.all_of().is_empty() || item.any_of().is_some()
}
