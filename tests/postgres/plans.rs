//! Plans that cannot degrade: the cached generic plans of every statement a read or an append
//! prepares stay on the indexes, on a store that grew without statistics and on one analyzed.

use dcbstore::{
    AppendCondition, Consistency, EventStore, PgEventStore, Query, QueryItem, ReadOptions,
};
use serde_json::json;

use crate::common::{self, event};

/// The plans of every statement an append or a read prepares stay on the indexes when a new
/// store grows without statistics. The statements are prepared (and their generic plans cached, as every
/// append transaction runs them) while the table holds 40 events and was never analyzed; then
/// 200,000 events are added with autovacuum off, so nothing replans them. A plan made for the
/// small table would scan the whole table at every append from then on (the idempotency
/// look-up `event_id = ANY(…)`, a guard past its tail, the group's join on the batch), or walk
/// every event of a type where the item's tags would find its few (a registration's guard).
/// The cached plans, asked for on the same connection, must read no table sequentially and
/// use the type index only for items of types only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_plans_stay_on_the_indexes_when_a_new_store_grows_without_statistics() {
    let store = common::store_with_pool(1).await;
    let events = format!("\"{}\".events", store.schema());
    let bulk = |from: i64, to: i64| {
        format!(
            "INSERT INTO {events} (event_id, event_type, tags, payload) \
             SELECT gen_random_uuid(), (ARRAY['R', 'A', 'D'])[1 + i % 3], ARRAY['bulk:' || i], \
                    jsonb_build_object('n', i) \
             FROM generate_series({from}, {to}) i"
        )
    };
    let admin = common::pool(1).get().await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER TABLE {events} SET (autovacuum_enabled = off); {}",
            bulk(1, 40)
        ))
        .await
        .unwrap();

    // Every kind of append, so that every statement is prepared and planned on the small table:
    // unguarded alone and grouped, guarded by hand (tail and past it) and by a read; and the
    // prepared reads (a whole query: by tags, types, payload, or everything; what a read could
    // not see).
    let course = |c: &str| Query::from(QueryItem::tagged([format!("course:{c}")]));
    let by_payload =
        Query::from(QueryItem::typed(["Lent"]).payload_all_of([("book", json!("b1"))]));
    for round in 0..3 {
        let e = |t: &str, c: &str| event(t, &[&format!("course:{c}")], json!({"book": "b1"}));
        store.append([e("A", "u")], None).await.unwrap();
        let grouped = (0..4).map(|i| store.append([e("A", &format!("g{round}{i}"))], None));
        for written in futures::future::join_all(grouped).await {
            written.unwrap();
        }
        // A registration: guarded by its type and tag, with no `after`.
        let entity = format!("course:n{round}");
        let registered = Query::from(QueryItem::typed(["R"]).tags([entity.as_str()]));
        let registration = event("R", &[&entity], json!({}));
        let condition = AppendCondition::new(registered, None);
        store.append([registration], Some(condition)).await.unwrap();
        let guarded = AppendCondition::new(course(&format!("h{round}")), Some(1));
        store
            .append([e("B", &format!("h{round}"))], Some(guarded))
            .await
            .unwrap();
        let by_hand = AppendCondition::new(by_payload.clone(), Some(1));
        store.append([e("C", "p")], Some(by_hand)).await.unwrap();
        let read = store
            .read(&course("r"), ReadOptions::default())
            .await
            .unwrap();
        let derived = read.append_condition().unwrap();
        // What a decision cache reads before its next decision: what the read could not see.
        let unseen = store.read_unseen(&derived, Consistency::Latest).await;
        assert!(unseen.unwrap().events().is_empty());
        store.append([e("D", "r")], Some(derived)).await.unwrap();
        let types = Query::from(QueryItem::typed(["D"]));
        for query in [types, by_payload.clone(), Query::all()] {
            store.read(&query, ReadOptions::default()).await.unwrap();
        }
        // The first pages of settled reads (the server's): prepared, with a limit.
        let first_page = ReadOptions::default().limit(100);
        for query in [
            course("r"),
            by_payload.clone(),
            registered_types(),
            Query::all(),
        ] {
            store.read_settled(&query, first_page).await.unwrap();
        }
    }

    admin.batch_execute(&bulk(41, 200_000)).await.unwrap();
    assert_cached_plans_use_the_indexes(&store).await;
    // Among them, the read of what a read could not see.
    let client = store.pool().get().await.unwrap();
    let unseen = "SELECT count(*) FROM pg_prepared_statements \
                  WHERE statement LIKE 'WITH \"unseen\"%SELECT \"read\".\"snapshot\"%'";
    let prepared: i64 = client.query_one(unseen, &[]).await.unwrap().get(0);
    assert!(
        prepared >= 1,
        "the read of what a read could not see is prepared"
    );
}

/// The first page of a settled read (a prepared statement with a `LIMIT`) stays on the tag and
/// payload indexes on a store with statistics, where a generic plan that saw the limit walks
/// the whole log in position order and filters it (20 ms on 35k events, measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pages_of_settled_reads_stay_on_the_indexes_of_an_analyzed_store() {
    let store = common::store_with_pool(1).await;
    let events = format!("\"{}\".events", store.schema());
    let admin = common::pool(1).get().await.unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO {events} (event_id, event_type, tags, payload) \
             SELECT gen_random_uuid(), (ARRAY['R', 'A', 'Lent'])[1 + i % 3], \
                    ARRAY['course:' || i % 5000], jsonb_build_object('book', 'b' || i % 5000) \
             FROM generate_series(1, 50000) i; ANALYZE {events}"
        ))
        .await
        .unwrap();
    let course = Query::from(QueryItem::tagged(["course:7"]));
    let by_payload =
        Query::from(QueryItem::typed(["Lent"]).payload_all_of([("book", json!("b7"))]));
    let first_page = ReadOptions::default().limit(100);
    for _ in 0..3 {
        for query in [&course, &by_payload, &registered_types(), &Query::all()] {
            store.read_settled(query, first_page).await.unwrap();
        }
    }
    let (page, _) = store.read_settled(&course, first_page).await.unwrap();
    let positions: Vec<u64> = page.iter().map(|e| e.position).collect();
    let expected: Vec<u64> = (0..10).map(|k| 7 + 5000 * k).collect();
    assert_eq!(
        positions, expected,
        "the boundary's events, in position order"
    );
    let (page, _) = store.read_settled(&Query::all(), first_page).await.unwrap();
    let positions: Vec<u64> = page.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=100).collect::<Vec<u64>>());
    assert_cached_plans_use_the_indexes(&store).await;
}

/// Asks for the cached generic plan of every statement on `store`'s one connection that reads
/// the events, and checks that none reads the table sequentially, walks every event of a type
/// to find a few by their tags or payload, or walks the log in position order to do so.
async fn assert_cached_plans_use_the_indexes(store: &PgEventStore) {
    let client = store.pool().get().await.unwrap();
    let prepared = client
        .query(
            "SELECT name, coalesce(array_length(parameter_types, 1), 0), statement \
             FROM pg_prepared_statements WHERE statement LIKE '%events%'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        prepared.len() >= 4,
        "the append's statements are prepared: {prepared:?}"
    );
    for row in prepared {
        let (name, params, statement): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        let args = match params {
            0 => String::new(),
            n => format!("({})", vec!["NULL"; n as usize].join(", ")),
        };
        let explain = format!(
            "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
             EXPLAIN (COSTS OFF) EXECUTE {name}{args}"
        );
        let plan: Vec<String> = client
            .simple_query(&explain)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                dcbstore::tokio_postgres::SimpleQueryMessage::Row(r) => {
                    r.get(0).map(str::to_string)
                }
                _ => None,
            })
            .collect();
        client.batch_execute("ROLLBACK").await.unwrap();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on events"),
            "the cached plan of {name} scans the table:\n{plan}"
        );
        assert!(
            !walks_a_type(&plan),
            "the cached plan of {name} walks every event of a type:\n{statement}\n{plan}"
        );
        assert!(
            !walks_the_log(&plan),
            "the cached plan of {name} walks the log in position order:\n{statement}\n{plan}"
        );
    }
}

/// Two types and a tag: the item of the speedrun's decisions.
fn registered_types() -> Query {
    Query::from(QueryItem::typed(["R", "A"]).tags(["course:r"]))
}

/// The nodes of a plan: each node's line with the lines of detail below it.
fn plan_nodes(plan: &str) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for line in plan.lines() {
        let detail = !line.contains("->") && nodes.last().is_some() && !line.contains("CTE ");
        match nodes.last_mut() {
            Some(node) if detail => node.push_str(line),
            _ => nodes.push(line.to_string()),
        }
    }
    nodes
}

/// Whether a node filters events by their tags or payload (it found them some other way).
fn filters_by_key(node: &str) -> bool {
    node.split("Filter:")
        .skip(1)
        .any(|f| f.contains("tags @>") || f.contains("payload @>"))
}

/// Whether a plan walks the position index and only then filters events by their tags or
/// payload: it reads the whole log to find a boundary's few events (a generic plan with a
/// `LIMIT` it cannot see through).
fn walks_the_log(plan: &str) -> bool {
    plan_nodes(plan)
        .iter()
        .any(|node| node.contains("using events_pkey") && filters_by_key(node))
}

/// Whether a plan finds events by their type's index and only then filters them by their tags
/// or payload: it reads every event of the type, however few match.
fn walks_a_type(plan: &str) -> bool {
    plan_nodes(plan).iter().any(|node| {
        let by_type = node.contains("Recheck Cond: (event_type")
            || node.contains("using events_type_position_idx");
        by_type && filters_by_key(node)
    })
}
