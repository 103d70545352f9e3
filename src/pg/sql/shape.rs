//! Statements by shape: rendered once per store, then only their values collected.
//!
//! The SQL of a read or of an append depends on the *shape* of its query, condition and
//! options (how many items, which constraints each item has, whether there is an `after`, a
//! snapshot, a limit), never on their values, which are bound parameters. Building and rendering
//! it with sea-query cost 30% of the library's CPU under 32 concurrent decisions (measured with
//! `perf`: the append's statement 20%, the decision's read 9%). [`Statements`] keeps each
//! shape's SQL and parameter types,
//! rendered by the builders of this folder the first time the shape is met; every later call
//! collects its values (`*_values` below) in the order that SQL binds them.
//!
//! The builders stay the one source of the SQL. The order of the values is written twice, here
//! and by the builders' order of binding, so debug builds check every statement: they build it
//! as well and compare (the whole test suite runs that check), and the unit tests compare the
//! two over generated shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sea_query::Value as SqlValue;
use tokio_postgres::types::Type;

use super::append::{Guard, TAIL_ROWS, batch, insert_events};
use super::filter::matches_every_event;
use super::read::{select_events, select_events_seen, select_first_page};
use super::{SchemaName, Statement};
use crate::error::InvalidInput;
use crate::event::Event;
use crate::options::ReadOptions;
use crate::query::{Query, QueryItem};
use crate::validate;

/// A store keeps at most this many shapes; past it, it starts again (a program whose queries
/// take ever new shapes renders each as before).
const MAX_SHAPES: usize = 512;

/// What the SQL of one query item depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ItemShape {
    /// 0: any type; 1: one type (`=`); 2: a list (`= ANY`).
    types: u8,
    tags: bool,
    all_of: usize,
    any_of: Option<usize>,
}

impl ItemShape {
    fn of(item: &QueryItem) -> Self {
        Self {
            types: match item.type_list() {
                None => 0,
                Some([_]) => 1,
                Some(_) => 2,
            },
            tags: !item.tag_list().is_empty(),
            all_of: item.all_of().len(),
            any_of: item.any_of().map(<[_]>::len),
        }
    }
}

/// What the SQL of a query's filter depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueryShape {
    all: bool,
    items: Vec<ItemShape>,
    from: bool,
    before: bool,
}

impl QueryShape {
    fn of(query: &Query) -> Self {
        let (from, before) = query.occurred_range();
        Self {
            all: query.is_all(),
            items: query.items().iter().map(ItemShape::of).collect(),
            from: from.is_some(),
            before: before.is_some(),
        }
    }
}

/// Which read statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ReadKind {
    /// A read's events ([`select_events`]).
    Plain,
    /// A decision's read: the events with the snapshot it ran in ([`select_events_seen`]).
    Seen,
    /// The first page of a settled read, to be prepared ([`select_first_page`]).
    FirstPage,
}

/// The shape of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape {
    Read {
        kind: ReadKind,
        query: QueryShape,
        from: bool,
        limit: bool,
        backwards: bool,
    },
    Insert {
        /// The guard: its query, whether it has `after`, a snapshot, and covers the query.
        guard: Option<(QueryShape, bool, bool, bool)>,
    },
}

/// A shape's SQL and the types of its parameters.
#[derive(Debug)]
struct Rendered {
    sql: String,
    types: Vec<Type>,
}

/// The statements of one store, by shape (see the module).
#[derive(Debug, Default)]
pub(crate) struct Statements {
    shapes: Mutex<HashMap<Shape, Arc<Rendered>>>,
}

impl Statements {
    /// The read statement of `kind` (`read.rs`), by shape.
    pub(crate) fn read(
        &self,
        kind: ReadKind,
        schema: &SchemaName,
        query: &Query,
        options: &ReadOptions,
    ) -> Result<Statement, InvalidInput> {
        let values = read_values(query, options)?;
        let shape = Shape::Read {
            kind,
            query: QueryShape::of(query),
            from: options.from.is_some(),
            limit: options.limit.is_some(),
            backwards: options.backwards,
        };
        self.statement(shape, values, || match kind {
            ReadKind::Plain => select_events(schema, query, options),
            ReadKind::Seen => select_events_seen(schema, query, options),
            ReadKind::FirstPage => select_first_page(schema, query, options),
        })
    }

    /// [`insert_events`], by shape.
    pub(crate) fn insert_events(
        &self,
        schema: &SchemaName,
        events: &[Event],
        guard: Option<Guard<'_>>,
    ) -> Statement {
        let shape = Shape::Insert {
            guard: guard.map(|g| {
                let query = QueryShape::of(g.query);
                (query, g.after.is_some(), g.snapshot.is_some(), g.covered())
            }),
        };
        let values = insert_values(events, guard);
        let built = self.statement(shape, values, || Ok(insert_events(schema, events, guard)));
        built.expect("an append's values are checked before it is compiled")
    }

    /// The statement of `shape` with `values`: its SQL rendered by `build` the first time the
    /// shape is met (and, in debug builds, every time, to check `values` against it).
    fn statement(
        &self,
        shape: Shape,
        values: Vec<SqlValue>,
        build: impl FnOnce() -> Result<Statement, InvalidInput>,
    ) -> Result<Statement, InvalidInput> {
        let known = self.lock().get(&shape).cloned();
        match known {
            Some(rendered) if !cfg!(debug_assertions) => Ok(Statement::rendered(
                rendered.sql.clone(),
                values,
                rendered.types.clone(),
            )),
            known => {
                let built = build()?;
                if built.bound() != values {
                    // A shape whose values are collected wrong is never kept: its statements
                    // are built every time (correct, only slower). The tests fail here.
                    debug_assert!(
                        false,
                        "the values collected for {shape:?} are not those its SQL binds:\n{:?}\n{values:?}",
                        built.bound()
                    );
                    return Ok(built);
                }
                if let Some(rendered) = known {
                    debug_assert_eq!(rendered.sql, built.sql, "one SQL per shape: {shape:?}");
                } else {
                    let mut shapes = self.lock();
                    if shapes.len() >= MAX_SHAPES {
                        shapes.clear();
                    }
                    let rendered = Rendered {
                        sql: built.sql.clone(),
                        types: built.types().to_vec(),
                    };
                    shapes.insert(shape, Arc::new(rendered));
                }
                Ok(built)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Shape, Arc<Rendered>>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The values of a read (`read.rs`): its filter's, then `from`, then the limit.
fn read_values(query: &Query, options: &ReadOptions) -> Result<Vec<SqlValue>, InvalidInput> {
    let mut values = Vec::new();
    filter_values(query, &mut values);
    if let Some(from) = options.from {
        values.push(validate::position(from)?.into());
    }
    if let Some(limit) = options.limit {
        values.push(limit.into());
    }
    Ok(values)
}

/// The values of an item's condition (`filter.rs`): its types, tags, then each payload
/// predicate of "all of", then of "any of".
fn item_values(item: &QueryItem, values: &mut Vec<SqlValue>) {
    match item.type_list() {
        Some([one]) => values.push(one.as_str().into()),
        Some(many) => values.push(many.to_vec().into()),
        None => {}
    }
    if !item.tag_list().is_empty() {
        values.push(item.tag_list().to_vec().into());
    }
    for p in item.all_of() {
        values.push(p.containment().into());
    }
    for p in item.any_of().into_iter().flatten() {
        values.push(p.containment().into());
    }
}

/// The values of the filter of `query` (`filter`): each item's, then the time range.
fn filter_values(query: &Query, values: &mut Vec<SqlValue>) {
    if !query.is_all() {
        for item in query.items() {
            item_values(item, values);
        }
    }
    time_values(query, values);
}

/// The values of `filter_after` (each item's, then `after`; then the time range), or `false`
/// when it has none (an item matches every event).
fn filter_after_values(query: &Query, after: i64, values: &mut Vec<SqlValue>) -> bool {
    if query.is_all() || query.items().iter().any(matches_every_event) {
        return false;
    }
    for item in query.items() {
        item_values(item, values);
        values.push(after.into());
    }
    time_values(query, values);
    true
}

fn time_values(query: &Query, values: &mut Vec<SqlValue>) {
    let (from, before) = query.occurred_range();
    values.extend(from.into_iter().chain(before).map(SqlValue::from));
}

/// The values of an append's statement (`append.rs`): its guard's, then the ids it looks up,
/// then the batch.
fn insert_values(events: &[Event], guard: Option<Guard<'_>>) -> Vec<SqlValue> {
    let mut values = Vec::new();
    if let Some(guard) = guard {
        guard_values(guard, &mut values);
    }
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    values.push(ids.into());
    values.push(batch(events).into());
    values
}

/// The values of a guard's CTEs, in their order (`append::guard`).
fn guard_values(guard: Guard<'_>, values: &mut Vec<SqlValue>) {
    // `unseen_rows` names the snapshot twice.
    let snapshot = |values: &mut Vec<SqlValue>, text: &str| {
        values.push(text.into());
        values.push(text.into());
    };
    if guard.covered() {
        let text = guard.snapshot.expect("covered").sql_text();
        snapshot(values, &text);
        values.push(guard.after.unwrap_or(0).into());
        filter_values(guard.query, values);
        return;
    }
    let Some(after) = guard.after else {
        filter_values(guard.query, values);
        return;
    };
    values.push(after.into());
    values.push(TAIL_ROWS.into());
    if let Some(s) = guard.snapshot {
        snapshot(values, &s.sql_text());
    }
    filter_values(guard.query, values);
    let mut beyond = vec![SqlValue::from(TAIL_ROWS)];
    if filter_after_values(guard.query, after, &mut beyond) {
        values.extend(beyond);
    }
    if guard.snapshot.is_some() {
        filter_values(guard.query, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::AppendCondition;
    use crate::snapshot::{PgSnapshot, ReadSnapshot};
    use serde_json::json;

    /// A small deterministic generator (the shapes must be the same at every run).
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// A query of a drawn shape, its values drawn from `seed` (so two seeds give the same
    /// shape with other values when the shape draw is the same).
    fn query(shape: &mut Draw, seed: u64) -> Query {
        let v = |name: &str, i: u64| format!("{name}{}", seed * 100 + i);
        let mut query = if shape.below(8) == 0 {
            Query::all()
        } else {
            let items = (0..1 + shape.below(11)).map(|i| {
                let mut item = QueryItem::new();
                match shape.below(3) {
                    0 => {}
                    1 => item = item.types([v("T", i)]),
                    _ => item = item.types([v("T", i), v("U", i)]),
                }
                if shape.below(2) == 0 {
                    item = item.tags([v("t:", i)]);
                }
                for _ in 0..shape.below(3) {
                    item = item.payload_all_of([("f", json!(v("x", i)))]);
                }
                if shape.below(3) == 0 {
                    let preds = (0..1 + shape.below(2)).map(|_| ("g", json!(seed)));
                    item = item.payload_any_of(preds);
                }
                item
            });
            Query::from_items(items.collect::<Vec<_>>())
        };
        let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seed as i64);
        if shape.below(4) == 0 {
            query = query.occurred_from(t);
        }
        if shape.below(4) == 0 {
            query = query.occurred_before(t);
        }
        query
    }

    /// Over generated shapes, each drawn twice with other values: the values collected are
    /// those the builders bind, and one shape has one SQL and one list of types.
    #[test]
    fn values_by_shape_are_those_the_builders_bind() {
        let schema = SchemaName::new("dcb").unwrap();
        for case in 0..400u64 {
            let mut statements: Vec<(Statement, Vec<SqlValue>)> = Vec::new();
            for seed in [1, 2] {
                let mut shape = Draw(case);
                let query = query(&mut shape, seed);
                let mut options = ReadOptions::default();
                if shape.below(2) == 0 {
                    options = options.limit(10 + seed);
                }
                let first = options;
                if shape.below(2) == 0 {
                    options = options.from_position(5 + seed);
                }
                if shape.below(2) == 0 {
                    options = options.backwards();
                }
                let read = || read_values(&query, &options).unwrap();
                statements.push((select_events(&schema, &query, &options).unwrap(), read()));
                statements.push((
                    select_events_seen(&schema, &query, &options).unwrap(),
                    read(),
                ));
                let page = select_first_page(&schema, &query, &first).unwrap();
                statements.push((page, read_values(&query, &first).unwrap()));

                let events: Vec<Event> = (0..1 + shape.below(3))
                    .map(|i| Event::new("E", json!({"n": seed + i})).with_tags([format!("t:{i}")]))
                    .collect();
                let after = (shape.below(2) == 0).then_some(40 + seed);
                let mut condition = AppendCondition::new(query.clone(), after);
                let snapshot = PgSnapshot::parse(&format!("{}:120:107", 100 + seed)).unwrap();
                match shape.below(3) {
                    0 => {}
                    1 => condition.snapshot = Some(ReadSnapshot::postgres(snapshot)),
                    _ => {
                        let covering = snapshot.covering(&query, after);
                        condition.snapshot = Some(ReadSnapshot::postgres(covering));
                    }
                }
                for guard in [None, Some(Guard::of(&condition))] {
                    let insert = insert_events(&schema, &events, guard);
                    statements.push((insert, insert_values(&events, guard)));
                }
            }
            let (first, second) = statements.split_at(statements.len() / 2);
            for ((one, one_values), (other, other_values)) in first.iter().zip(second) {
                assert_eq!(one.bound(), *one_values, "case {case}: {}", one.sql);
                assert_eq!(other.bound(), *other_values, "case {case}: {}", other.sql);
                assert_eq!(one.sql, other.sql, "case {case}: one shape, one SQL");
                assert_eq!(one.types(), other.types(), "case {case}: {}", one.sql);
            }
        }
    }
}
