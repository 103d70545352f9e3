//! The generated SQL, asserted: reads, the feed, appends and their guards.

use super::append::insert_events;
use super::read::{select_events, select_events_seen, select_first_page};
use super::*;
use crate::event::Event;
use crate::options::ReadOptions;
use crate::pg::locks::LockPlan;
use crate::query::{Query, QueryItem};
use crate::snapshot::PgSnapshot;
use serde_json::json;

fn schema() -> SchemaName {
    SchemaName::new("dcb").unwrap()
}

const SELECT: &str = r#"SELECT "position", "event_id", "event_type", "tags", "payload", "metadata", "occurred_at" FROM "dcb"."events""#;

#[test]
fn read_of_everything_has_no_filter() {
    let s = select_events(&schema(), &Query::all(), &ReadOptions::default()).unwrap();
    assert_eq!(s.sql, format!(r#"{SELECT} ORDER BY "position" ASC"#));
    assert!(s.params().is_empty());
}

#[test]
fn feed_reads_below_the_frontier_in_transaction_order() {
    let query = Query::from(QueryItem::tagged(["course:c1"]));
    let s = select_feed(&schema(), &query, (7, 3), 512).unwrap();
    let xmin = "pg_snapshot_xmin(pg_current_snapshot())";
    let columns =
        r#""position", "event_id", "event_type", "tags", "payload", "metadata", "occurred_at""#;
    let e_columns = r#""e"."position", "e"."event_id", "e"."event_type", "e"."tags", "e"."payload", "e"."metadata", "e"."occurred_at""#;
    assert_eq!(
        s.sql,
        format!(
            r#"SELECT "f"."frontier", "f"."held", "e"."tx", {e_columns} FROM (SELECT {xmin}::text AS "frontier", (SELECT "tx_id" FROM "dcb"."events" WHERE ("tx_id" >= {xmin}) AND "tags" @> $1 ORDER BY "tx_id" ASC LIMIT $2) IS NOT NULL AS "held") AS "f" LEFT JOIN LATERAL (SELECT "tx_id"::text AS "tx", {columns} FROM "dcb"."events" WHERE "tags" @> $3 AND (("tx_id", "position") > (CAST($4 AS xid8), $5)) AND ("tx_id" < {xmin}) ORDER BY "tx_id" ASC, "position" ASC LIMIT $6) AS "e" ON TRUE"#
        )
    );
    // The held-back check is a scalar subquery on the tx_id index range, not an EXISTS
    // (whose ORDER BY PostgreSQL drops, and which it may answer with a sequential scan).
    assert!(!str::contains(&s.sql, "EXISTS"));
}

#[test]
fn read_compiles_types_tags_and_payload_predicates() {
    let query = Query::from_items([
        QueryItem::typed(["Lent", "Returned"])
            .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r1"))]),
        QueryItem::typed(["CourseDefined"]).tags(["course:c1"]),
    ]);
    let s = select_events(&schema(), &query, &ReadOptions::default()).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"{SELECT} WHERE (("event_type" || '') = ANY($1) AND ("payload" @> $2 OR "payload" @> $3)) OR (("event_type" || '') = $4 AND "tags" @> $5) ORDER BY "position" ASC"#
        )
    );
    let types: Vec<Type> = s.params().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        types,
        [
            Type::TEXT_ARRAY,
            Type::JSONB,
            Type::JSONB,
            Type::TEXT,
            Type::TEXT_ARRAY
        ]
    );
}

#[test]
fn read_options_bind_from_and_limit() {
    let query = Query::from(QueryItem::new().payload_all_of([(["a", "b"], json!(1))]));
    let forward = ReadOptions::default().from_position(5).limit(10);
    let s = select_events(&schema(), &query, &forward).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"{SELECT} WHERE "payload" @> $1 AND "position" >= $2 ORDER BY "position" ASC LIMIT $3"#
        )
    );
    let backwards = forward.backwards();
    let s = select_events(&schema(), &query, &backwards).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"{SELECT} WHERE "payload" @> $1 AND "position" <= $2 ORDER BY "position" DESC LIMIT $3"#
        )
    );
    assert_eq!(s.params()[2].1, Type::INT8);
}

#[test]
fn first_page_cuts_a_materialized_read_of_every_matching_event() {
    let query = Query::from(QueryItem::typed(["A", "B"]).tags(["t"]));
    let options = ReadOptions::default().limit(10);
    let s = select_first_page(&schema(), &query, &options).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"WITH "page" AS  MATERIALIZED ({SELECT} WHERE ("event_type" || '') = ANY($1) AND "tags" @> $2 ORDER BY "position" ASC) SELECT "position", "event_id", "event_type", "tags", "payload", "metadata", "occurred_at" FROM "page" LIMIT $3"#
        )
    );
    assert_eq!(s.params()[2].1, Type::INT8);
    let every = select_first_page(&schema(), &query, &ReadOptions::default()).unwrap();
    assert_eq!(
        every.sql,
        select_events(&schema(), &query, &ReadOptions::default())
            .unwrap()
            .sql
    );
}

#[test]
fn read_with_time_range() {
    let t = time::OffsetDateTime::UNIX_EPOCH;
    let query = Query::all().occurred_from(t).occurred_before(t);
    let s = select_events(&schema(), &query, &ReadOptions::default()).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"{SELECT} WHERE "occurred_at" >= $1 AND "occurred_at" < $2 ORDER BY "position" ASC"#
        )
    );
}

#[test]
fn large_ors_render_as_one_flat_or() {
    let nine = Query::from_items((0..9).map(|i| QueryItem::typed([format!("T{i}")])));
    let s = select_events(&schema(), &nine, &ReadOptions::default()).unwrap();
    let all: Vec<String> = (1..=9).map(|p| format!(r#""event_type" = ${p}"#)).collect();
    assert_eq!(
        s.sql,
        format!(
            r#"{SELECT} WHERE {} ORDER BY "position" ASC"#,
            all.join(" OR ")
        )
    );
}

/// 15,000 items overflowed the stack when the OR was one left-deep chain; nested, 50,000
/// render on a thread with a 2 MiB stack (the default of test and runtime threads).
#[test]
fn huge_ors_render_without_exhausting_the_stack() {
    let huge = Query::from_items((0..50_000).map(|i| QueryItem::tagged([format!("t:{i}")])));
    let sql = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || select_events(&schema(), &huge, &ReadOptions::default()).map(|s| s.sql))
        .unwrap()
        .join()
        .expect("rendered without overflowing")
        .unwrap();
    assert!(sql.as_str().contains(r#""tags" @> $50000"#));
}

#[test]
fn positions_beyond_bigint_are_rejected() {
    let opts = ReadOptions::default().from_position(u64::MAX);
    assert_eq!(
        select_events(&schema(), &Query::all(), &opts).unwrap_err(),
        InvalidInput::Argument(crate::error::ArgumentProblem::PositionOutOfRange(u64::MAX))
    );
}

/// The insert CTE and the final select of every append; `{p}` is the first parameter after
/// the guard's.
fn append_sql(guard: &str, first: usize) -> String {
    let (ids, batch) = (first, first + 1);
    let guard_check = if guard.is_empty() {
        String::new()
    } else {
        r#" AND (NOT EXISTS(SELECT 1 FROM "guard"))"#.to_string()
    };
    let existing_check = if guard.is_empty() {
        r#"NOT EXISTS(SELECT 1 FROM "existing")"#
    } else {
        r#"(NOT EXISTS(SELECT 1 FROM "existing"))"#
    };
    format!(
        r#"WITH {guard}"existing" AS  MATERIALIZED (SELECT "position", "event_id", "event_type", "tags", "payload", "metadata", "tx_id" FROM "dcb"."events" WHERE "event_id" = ANY(${ids})) , "inserted" AS (INSERT INTO "dcb"."events" ("event_id", "event_type", "tags", "payload", "metadata") SELECT "batch"."event_id", "batch"."event_type", "batch"."tags", "batch"."payload", "batch"."metadata" FROM jsonb_populate_recordset(NULL::"dcb"."events", ${batch}) AS "batch" WHERE {existing_check}{guard_check} RETURNING "position", "event_id", "tx_id") SELECT "position", "event_id", FALSE AS "existed", NULL::text AS "event_type", NULL::text[] AS "tags", NULL::jsonb AS "payload", NULL::jsonb AS "metadata", "tx_id"::text AS "tx" FROM "inserted" UNION ALL (SELECT "position", "event_id", TRUE AS "existed", "event_type", "tags", "payload", "metadata", "tx_id"::text AS "tx" FROM "existing")"#
    )
}

/// The append of one event guarded by `query`, `after` and `snapshot`.
fn guarded(query: &Query, after: Option<i64>, snapshot: Option<&PgSnapshot>) -> Statement {
    let guard = Guard {
        query,
        after,
        snapshot,
    };
    insert_events(&schema(), &[Event::new("A", json!({}))], Some(guard))
}

#[test]
fn unconditional_append_inserts_unless_an_id_is_stored() {
    let s = insert_events(&schema(), &[Event::new("A", json!({}))], None);
    assert_eq!(s.sql, append_sql("", 1));
    let types: Vec<Type> = s.params().into_iter().map(|(_, t)| t).collect();
    assert_eq!(types, [Type::UUID_ARRAY, Type::JSONB]);
}

#[test]
fn guarded_append_is_one_cte_guarded_statement() {
    let query = Query::from(QueryItem::typed(["A"]).tags(["t:1"]));
    let s = guarded(&query, Some(42), None);
    assert_eq!(
        s.sql,
        append_sql(
            &format!(
                "{TAIL}{}",
                r#""guard" AS  MATERIALIZED (SELECT 1 FROM "tail" WHERE ("event_type" || '') = $3 AND "tags" @> $4 UNION ALL (SELECT 1 FROM "dcb"."events" WHERE (SELECT count(*) FROM "tail") >= $5 AND (("event_type" || '') = $6 AND "tags" @> $7 AND ("position" + 0 > $8)))) , "#
            ),
            9
        )
    );
    let values: Vec<String> = s.params().iter().map(|(v, _)| format!("{v:?}")).collect();
    assert_eq!(
        [&values[0], &values[1], &values[4], &values[7]],
        [
            "PostgresValue(BigInt(Some(42)))",
            "PostgresValue(BigUnsigned(Some(64)))",
            "PostgresValue(BigUnsigned(Some(64)))",
            "PostgresValue(BigInt(Some(42)))"
        ],
        "after, the tail's length, its test, after"
    );
}

/// The tail of the log after `after` ($1), at most `TAIL_ROWS` ($2) rows: the first CTE of a
/// guard with an `after`.
const TAIL: &str = r#""tail" AS  MATERIALIZED (SELECT "event_type", "tags", "payload", "occurred_at" FROM "dcb"."events" WHERE "position" > $1 ORDER BY "position" ASC LIMIT $2) , "#;

#[test]
fn guard_past_its_tail_keeps_each_item_on_its_own_index() {
    // Types only: the range of their (event_type, position) index; tags: the primary key kept
    // out of the plan.
    let query = Query::from_items([QueryItem::typed(["A", "B"]), QueryItem::tagged(["t:1"])]);
    let s = guarded(&query, Some(7), None);
    assert!(
        str::contains(
            &s.sql,
            r#"WHERE (SELECT count(*) FROM "tail") >= $5 AND (("event_type" = ANY($6) AND "position" > $7) OR ("tags" @> $8 AND ("position" + 0 > $9))))"#
        ),
        "{}",
        s.sql
    );
    // Everything after `after` fails a guard of every event: the tail alone decides.
    let s = guarded(&Query::all(), Some(7), None);
    assert_eq!(
        s.sql,
        append_sql(
            &format!(
                "{TAIL}{}",
                r#""guard" AS  MATERIALIZED (SELECT 1 FROM "tail") , "#
            ),
            3
        )
    );
}

#[test]
fn guard_without_after_looks_at_every_matching_event() {
    let s = guarded(&Query::all(), None, None);
    assert_eq!(
        s.sql,
        append_sql(
            r#""guard" AS  MATERIALIZED (SELECT 1 FROM "dcb"."events") , "#,
            1
        )
    );
}

#[test]
fn guard_with_a_snapshot_also_fails_for_what_the_read_could_not_see() {
    let query = Query::from(QueryItem::tagged(["t:1"]));
    let snapshot = PgSnapshot::parse("100:105:101,103").unwrap();
    let s = guarded(&query, Some(42), Some(&snapshot));
    assert_eq!(
        s.sql,
        append_sql(
            &format!(
                "{TAIL}{}",
                r#""unseen" AS  MATERIALIZED (SELECT "event_type", "tags", "payload", "occurred_at" FROM "dcb"."events" WHERE "tx_id" >= pg_snapshot_xmin($3::pg_snapshot) AND "tx_id" <= '9223372036854775807'::xid8 AND NOT pg_visible_in_snapshot("tx_id", $4::pg_snapshot)) , "guard" AS  MATERIALIZED (SELECT 1 FROM "tail" WHERE "tags" @> $5 UNION ALL (SELECT 1 FROM "dcb"."events" WHERE (SELECT count(*) FROM "tail") >= $6 AND ("tags" @> $7 AND ("position" + 0 > $8))) UNION ALL (SELECT 1 FROM "unseen" WHERE "tags" @> $9)) , "#
            ),
            10
        )
    );
    let types: Vec<Type> = s.params().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        types[..5],
        [
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT_ARRAY
        ]
    );
}

#[test]
fn read_of_a_decision_returns_its_snapshot_even_when_nothing_matches() {
    let query = Query::from(QueryItem::tagged(["t:1"]));
    let s = select_events_seen(&schema(), &query, &ReadOptions::default().limit(3)).unwrap();
    assert_eq!(
        s.sql,
        format!(
            r#"SELECT "read"."snapshot", "e"."position", "e"."event_id", "e"."event_type", "e"."tags", "e"."payload", "e"."metadata", "e"."occurred_at" FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_snapshot_xmin(pg_current_snapshot())::text || ':' || pg_snapshot_xmin(pg_current_snapshot())::text || ':' ELSE pg_current_snapshot()::text END AS "snapshot") AS "read" LEFT JOIN LATERAL ({SELECT} WHERE "tags" @> $1 ORDER BY "position" ASC LIMIT $2) AS "e" ON TRUE"#
        )
    );
}

#[test]
fn lock_statement_takes_the_sorted_keys_in_order() {
    let locks = LockPlan {
        keys: vec![-5, 7],
        exclusive: vec![true, false],
    };
    let lock = lock_keys(&SchemaName::new("s").unwrap(), &locks);
    // sea-query numbers each placeholder where it appears, binding the value it names.
    assert_eq!(
        lock.sql,
        concat!(
            r#"SELECT CASE WHEN ($1)[i] THEN pg_advisory_xact_lock(($2)[i]) ELSE pg_advisory_xact_lock_shared(($3)[i]) END, "#,
            // The append publishes the last position drawn (see settled.rs), once.
            r#"(SELECT pg_advisory_xact_lock_shared((($4::int8 << 48) | least(coalesce(pg_sequence_last_value('"s"."events_position_seq"'::regclass), 0), 281474976710655)))) "#,
            r#"FROM generate_subscripts($5, $6) AS "i""#
        )
    );
    let types: Vec<Type> = lock.params().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        types,
        [
            Type::BOOL_ARRAY,
            Type::INT8_ARRAY,
            Type::INT8_ARRAY,
            Type::INT8,
            Type::INT8_ARRAY,
            Type::INT4
        ]
    );
}

#[test]
fn schema_names_are_validated() {
    for bad in [
        "",
        "Upper",
        "1abc",
        "a-b",
        "a\"b",
        "pg_catalog",
        &"x".repeat(64),
    ] {
        assert!(SchemaName::new(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["dcb", "_x", "tenant_42"] {
        assert!(SchemaName::new(good).is_ok());
    }
}

#[test]
fn a_condition_derived_from_a_read_guards_what_its_snapshot_could_not_see() {
    let query = Query::from(QueryItem::tagged(["t:1"]));
    let read: PgSnapshot = PgSnapshot::parse("100:120:107").unwrap();
    let derived = read.covering(&query, Some(42));
    let s = guarded(&query, Some(42), Some(&derived));
    let unseen = r#"WITH "unseen" AS  MATERIALIZED (SELECT "event_type", "tags", "payload", "occurred_at" FROM "dcb"."events" WHERE "tx_id" >= pg_snapshot_xmin($1::pg_snapshot) AND "tx_id" <= '9223372036854775807'::xid8 AND NOT pg_visible_in_snapshot("tx_id", $2::pg_snapshot) UNION ALL (SELECT "event_type", "tags", "payload", "occurred_at" FROM "dcb"."events" WHERE ("tx_id" = pg_current_xact_id_if_assigned()) AND "position" > $3)) , "guard" AS  MATERIALIZED (SELECT 1 FROM "unseen" WHERE "tags" @> $4) , "existing""#;
    assert!(s.sql.starts_with(unseen), "{}", s.sql);
    let values: Vec<String> = s
        .params()
        .iter()
        .take(2)
        .map(|(v, _)| format!("{v:?}"))
        .collect();
    assert!(
        values.iter().all(|v| str::contains(v, "\"100:120:107\"")),
        "the snapshot as PostgreSQL reads it, without the mark: {values:?}"
    );

    // A condition whose query or `after` changed since it was derived guards the whole
    // boundary after `after`, as a hand-built one does; so does one with the read's unmarked
    // snapshot.
    for (query, after, snapshot) in [
        (Query::from(QueryItem::tagged(["t:2"])), Some(42), &derived),
        (query.clone(), Some(41), &derived),
        (query.clone(), Some(42), &read),
    ] {
        let s = guarded(&query, after.map(|a| a as i64), Some(snapshot));
        assert!(s.sql.starts_with(&format!("WITH {TAIL}")), "{}", s.sql);
        assert!(
            !str::contains(&s.sql, "pg_current_xact_id_if_assigned"),
            "{}",
            s.sql
        );
    }
}

/// Both insert forms return the columns declared in [`APPENDED`] (the group's form also
/// `append`), by the server's account: each statement is prepared on a real schema and its
/// result columns compared, so that the append reads them by the right names.
#[tokio::test]
async fn both_insert_forms_return_the_declared_columns() {
    let url = std::env::var("DATABASE_URL")
        .expect("this test prepares the statements on PostgreSQL: set DATABASE_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a connection to DATABASE_URL");
    tokio::spawn(connection);
    let schema = SchemaName::new("dcb_sql_appended_columns").unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; BEGIN; {}\n{}\nCOMMIT;",
            schema.quoted(),
            admin::create_schema(&schema),
            admin::EVENTS_DDL
        ))
        .await
        .expect("the schema");
    let columns = |statement: &tokio_postgres::Statement| -> Vec<String> {
        statement
            .columns()
            .iter()
            .map(|c| c.name().into())
            .collect()
    };
    let events = [Event::new("A", json!({})).with_tags(["t:1"])];
    let query = Query::from(QueryItem::tagged(["t:1"]));
    let guard = Guard {
        query: &query,
        after: Some(1),
        snapshot: None,
    };
    for insert in [
        insert_events(&schema, &events, None),
        insert_events(&schema, &events, Some(guard)),
    ] {
        let prepared = client
            .prepare_typed(&insert.sql, insert.types())
            .await
            .expect("the insert prepares");
        assert_eq!(columns(&prepared), APPENDED, "{}", insert.sql);
    }
    let group = client
        .prepare(&unguarded_group(&schema))
        .await
        .expect("the group's insert prepares");
    let mut expected: Vec<&str> = APPENDED.to_vec();
    expected.push("append");
    assert_eq!(columns(&group), expected);
    client
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
        .await
        .unwrap();
}
