//! Query semantics: every kind of query item and combination, and the read options, against a
//! fixed set of events.

use std::collections::HashMap;

use dcbstore::{EventStore, Query, QueryItem, ReadOptions};
use futures::TryStreamExt;
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, Store, StoreExt, backends, event, store_on};

/// Appends the fixture and returns the store with a map from position to fixture number
/// (1-based, in append order).
async fn fixture(backend: Backend) -> (Store, HashMap<u64, usize>) {
    let store = store_on(backend).await;
    let events = vec![
        event(
            "CourseDefined",
            &["course:c1"],
            json!({"course": "c1", "capacity": 2}),
        ),
        event(
            "CourseDefined",
            &["course:c2"],
            json!({"course": "c2", "capacity": 5}),
        ),
        event(
            "StudentSubscribed",
            &["course:c1", "student:s1"],
            json!({"course": "c1", "student": "s1", "address": {"city": "Paris", "zip": 75001}, "levels": [1, 2]}),
        ),
        event(
            "StudentSubscribed",
            &["course:c2", "student:s1"],
            json!({"course": "c2", "student": "s1", "address": {"city": "Lyon"}, "levels": [3]}),
        ),
        event(
            "StudentSubscribed",
            &["course:c1", "student:s2"],
            json!({"course": "c1", "student": "s2", "score": 1.0, "active": true, "note": null}),
        ),
        event(
            "CourseCapacityChanged",
            &["course:c1"],
            json!({"course": "c1", "capacity": 3}),
        ),
        event(
            "BookCopyLent",
            &[],
            json!({"BookID": "b1", "ReaderID": "r1"}),
        ),
        event(
            "BookCopyReturned",
            &[],
            json!({"BookID": "b1", "ReaderID": "r1"}),
        ),
        event(
            "BookCopyLent",
            &[],
            json!({"BookID": "b2", "ReaderID": "r2"}),
        ),
    ];
    let written = store.append(events, None).await.expect("fixture appended");
    let numbers = written
        .positions()
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i + 1))
        .collect();
    (store, numbers)
}

#[apply(backends)]
#[case::one_type(QueryItem::typed(["CourseDefined"]), &[1, 2])]
#[case::several_types(QueryItem::typed(["CourseDefined", "CourseCapacityChanged"]), &[1, 2, 6])]
#[case::unknown_type(QueryItem::typed(["NoSuchType"]), &[])]
#[case::one_tag(QueryItem::tagged(["course:c1"]), &[1, 3, 5, 6])]
#[case::all_tags_required(QueryItem::tagged(["course:c1", "student:s1"]), &[3])]
#[case::unknown_tag(QueryItem::tagged(["course:c9"]), &[])]
#[case::type_and_tag(QueryItem::typed(["StudentSubscribed"]).tags(["student:s1"]), &[3, 4])]
#[case::top_level_field(QueryItem::new().payload_all_of([("student", json!("s1"))]), &[3, 4])]
#[case::nested_path(QueryItem::new().payload_all_of([(["address", "city"], json!("Paris"))]), &[3])]
#[case::nested_object(QueryItem::new().payload_contains(json!({"address": {"zip": 75001}})), &[3])]
#[case::array_element(QueryItem::new().payload_all_of([("levels", json!([2]))]), &[3])]
#[case::array_any_order(QueryItem::new().payload_all_of([("levels", json!([2, 1]))]), &[3])]
#[case::array_not_subset(QueryItem::new().payload_all_of([("levels", json!([1, 3]))]), &[])]
#[case::number_numeric(QueryItem::new().payload_all_of([("score", json!(1))]), &[5])]
#[case::boolean(QueryItem::new().payload_all_of([("active", json!(true))]), &[5])]
#[case::null(QueryItem::new().payload_all_of([("note", json!(null))]), &[5])]
#[case::all_of(
    QueryItem::new().payload_all_of([("course", json!("c1")), ("student", json!("s2"))]),
    &[5]
)]
#[case::any_of(
    QueryItem::typed(["BookCopyLent"]).payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r2"))]),
    &[7, 9]
)]
#[case::all_of_and_any_of(
    QueryItem::typed(["StudentSubscribed"])
        .payload_all_of([("course", json!("c1"))])
        .payload_any_of([("student", json!("s1")), ("student", json!("s2"))]),
    &[3, 5]
)]
#[case::wrong_type_for_payload(QueryItem::typed(["CourseDefined"]).payload_all_of([("student", json!("s1"))]), &[])]
#[tokio::test]
async fn items(backend: Backend, #[case] item: QueryItem, #[case] expected: &[usize]) {
    let (store, numbers) = fixture(backend).await;
    assert_matches(&store, &numbers, &Query::from(item), expected).await;
}

#[apply(backends)]
#[case::or_of_items(
    Query::from_items([
        QueryItem::typed(["CourseDefined"]).tags(["course:c2"]),
        QueryItem::typed(["BookCopyReturned"]),
    ]),
    &[2, 8]
)]
#[case::overlapping_items_return_each_event_once(
    Query::from_items([QueryItem::tagged(["course:c1"]), QueryItem::tagged(["student:s1"])]),
    &[1, 3, 4, 5, 6]
)]
#[case::lending_decision(
    Query::from_items([
        QueryItem::typed(["BookCopyLent", "BookCopyReturned"])
            .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r1"))]),
        QueryItem::typed(["CourseDefined"]).tags(["course:c1"]),
    ]),
    &[1, 7, 8]
)]
#[case::all(Query::all(), &[1, 2, 3, 4, 5, 6, 7, 8, 9])]
#[tokio::test]
async fn queries(backend: Backend, #[case] query: Query, #[case] expected: &[usize]) {
    let (store, numbers) = fixture(backend).await;
    assert_matches(&store, &numbers, &query, expected).await;
}

async fn assert_matches(
    store: &Store,
    numbers: &HashMap<u64, usize>,
    query: &Query,
    expected: &[usize],
) {
    let read = store
        .read(query, ReadOptions::default())
        .await
        .expect("read");
    let got: Vec<usize> = read.iter().map(|e| numbers[&e.position]).collect();
    assert_eq!(got, expected, "query {query:?}");
}

#[apply(backends)]
#[case::forward(ReadOptions::default(), &[1, 3, 5, 6])]
#[case::from_is_inclusive(ReadOptions::default().from_position(3), &[3, 5, 6])]
#[case::limit(ReadOptions::default().limit(2), &[1, 3])]
#[case::from_and_limit(ReadOptions::default().from_position(2).limit(2), &[3, 5])]
#[case::backwards(ReadOptions::default().backwards(), &[6, 5, 3, 1])]
#[case::backwards_limit_one(ReadOptions::default().backwards().limit(1), &[6])]
#[case::backwards_from_is_inclusive(ReadOptions::default().backwards().from_position(5), &[5, 3, 1])]
#[case::limit_zero(ReadOptions::default().limit(0), &[])]
#[case::from_beyond_head(ReadOptions::default().from_position(1000), &[])]
#[tokio::test]
async fn read_options(backend: Backend, #[case] options: ReadOptions, #[case] expected: &[usize]) {
    let (store, numbers) = fixture(backend).await;
    // The fixture's positions are 1..=9 in a fresh schema; `from` refers to them directly.
    assert!(numbers.iter().all(|(p, n)| *p as usize == *n));
    let read = store
        .read(&Query::from(QueryItem::tagged(["course:c1"])), options)
        .await
        .expect("read");
    let got: Vec<usize> = read.iter().map(|e| numbers[&e.position]).collect();
    assert_eq!(got, expected, "{options:?}");
}

#[apply(backends)]
#[tokio::test]
async fn last_position_is_the_highest_position_read(backend: Backend) {
    let (store, _) = fixture(backend).await;
    let course = Query::from(QueryItem::tagged(["course:c1"]));
    let forward = store.read(&course, ReadOptions::default()).await.unwrap();
    let backwards = store
        .read(&course, ReadOptions::default().backwards())
        .await
        .unwrap();
    assert_eq!(forward.last_position(), Some(6));
    assert_eq!(backwards.last_position(), Some(6));
    let nothing = store
        .read(
            &Query::from(QueryItem::tagged(["none"])),
            ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(nothing.last_position(), None);
    assert_eq!(store.head().await.unwrap(), Some(9));
}

#[apply(backends)]
#[tokio::test]
async fn occurred_at_range(backend: Backend) {
    let store = store_on(backend).await;
    let first = store
        .append([event("Tick", &[], json!({"n": 1}))], None)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .append([event("Tick", &[], json!({"n": 2}))], None)
        .await
        .unwrap();
    let all = store.all_events().await;
    let (t1, t2) = (all[0].occurred_at, all[1].occurred_at);
    assert!(t1 < t2);
    let ticks = || Query::from(QueryItem::typed(["Tick"]));
    let ns = |r: dcbstore::ReadResult| -> Vec<i64> {
        r.iter().map(|e| e.payload["n"].as_i64().unwrap()).collect()
    };
    let opts = ReadOptions::default();
    assert_eq!(
        ns(store.read(&ticks().occurred_from(t2), opts).await.unwrap()),
        [2]
    );
    assert_eq!(
        ns(store
            .read(&ticks().occurred_before(t2), opts)
            .await
            .unwrap()),
        [1]
    );
    assert_eq!(
        ns(store
            .read(&ticks().occurred_from(t1).occurred_before(t2), opts)
            .await
            .unwrap()),
        [1]
    );
    assert_eq!(first.positions(), [all[0].position]);
}

#[apply(backends)]
#[tokio::test]
async fn stream_yields_what_read_collects(backend: Backend) {
    let (store, _) = fixture(backend).await;
    let query = Query::from(QueryItem::typed(["StudentSubscribed", "BookCopyLent"]));
    let options = ReadOptions::default().backwards();
    let streamed: Vec<_> = store
        .read_stream(&query, options)
        .try_collect()
        .await
        .unwrap();
    let read = store.read(&query, options).await.unwrap();
    assert_eq!(streamed, read.events());
    assert_eq!(streamed.len(), 5);
}

#[apply(backends)]
#[tokio::test]
async fn events_round_trip(backend: Backend) {
    let store = store_on(backend).await;
    let original = event(
        "Everything",
        &["a:1", "b:2"],
        json!({"nested": {"list": [1, "two", null, 3.5]}, "unicode": "héllo ✓"}),
    )
    .with_metadata(json!({"correlation": "x"}));
    let written = store.append([original.clone()], None).await.unwrap();
    let stored = store.all_events().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].position, written.last_position());
    assert_eq!(stored[0].event, original);
}

/// Every consistency level reads what a store that reads from one place has: the latest, and an
/// append it is asked to include (read-your-writes); a checkpoint of the other backend is
/// refused, and the read takes nothing.
#[apply(backends)]
#[tokio::test]
async fn every_consistency_reads_the_latest_and_refuses_a_foreign_checkpoint(backend: Backend) {
    use crate::common::argument_problem;
    use dcbstore::{ArgumentProblem, Checkpoint};
    let store = store_on(backend).await;
    let written = store
        .append([event("Written", &["a"], json!({}))], None)
        .await
        .unwrap();
    for options in [
        ReadOptions::default(),
        ReadOptions::default().latest(),
        ReadOptions::default().including(written.checkpoint()),
    ] {
        let read = store.read(&Query::all(), options).await.unwrap();
        assert_eq!(read.len(), 1, "{options:?}");
        let streamed: Vec<_> = store
            .read_stream(&Query::all(), options)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed.len(), 1, "{options:?}");
    }
    let foreign: Checkpoint = match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => "mem:1".parse().unwrap(),
        Backend::Memory => "pg:700:1".parse().unwrap(),
    };
    let err = store
        .read(&Query::all(), ReadOptions::default().including(foreign))
        .await
        .unwrap_err();
    assert!(
        matches!(
            argument_problem(&err),
            Some(ArgumentProblem::ForeignCheckpoint { .. })
        ),
        "{err}"
    );
}
