//! Appends: positions, the guard's semantics and event ids.

use dcbstore::{AppendCondition, Error, Event, EventStore, Query, QueryItem, ReadOptions};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, StoreExt, backends, event, store_on};

fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

#[apply(backends)]
#[tokio::test]
async fn positions_increase_in_batch_order(backend: Backend) {
    let store = store_on(backend).await;
    let a = store
        .append(
            [
                event("A", &[], json!({"i": 0})),
                event("A", &[], json!({"i": 1})),
                event("A", &[], json!({"i": 2})),
            ],
            None,
        )
        .await
        .unwrap();
    let b = store
        .append([event("B", &[], json!({}))], None)
        .await
        .unwrap();
    assert!(a.positions().windows(2).all(|w| w[0] < w[1]));
    assert!(b.last_position() > a.last_position());
    let stored = store.all_events().await;
    let order: Vec<i64> = stored[..3]
        .iter()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(stored[0].metadata, None);
}

#[apply(backends)]
#[tokio::test]
async fn condition_fails_when_a_matching_event_was_appended_after(backend: Backend) {
    let store = store_on(backend).await;
    store
        .append([event("CourseDefined", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    // Someone else appends to the same boundary after our read.
    store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            None,
        )
        .await
        .unwrap();
    let before = store.event_count().await;
    let err = store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({"s": 2}))],
            Some(AppendCondition::new(course("c1"), read.last_position())),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
    assert!(matches!(
        err,
        Error::AppendConditionFailed { after: Some(1) }
    ));
    assert_eq!(store.event_count().await, before, "nothing written");
}

#[apply(backends)]
#[tokio::test]
async fn condition_holds_when_only_other_events_were_appended(backend: Backend) {
    let store = store_on(backend).await;
    store
        .append([event("CourseDefined", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    store
        .append(
            [event("StudentSubscribed", &["course:c2"], json!({}))],
            None,
        )
        .await
        .unwrap();
    store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            Some(AppendCondition::new(course("c1"), read.last_position())),
        )
        .await
        .expect("the boundary did not change");
}

#[apply(backends)]
#[tokio::test]
async fn condition_at_the_last_read_position_holds(backend: Backend) {
    let store = store_on(backend).await;
    let written = store
        .append([event("X", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    store
        .append(
            [event("Y", &["course:c1"], json!({}))],
            Some(AppendCondition::new(
                course("c1"),
                Some(written.last_position()),
            )),
        )
        .await
        .expect("nothing matching after the last position");
}

#[apply(backends)]
#[tokio::test]
async fn condition_without_after_fails_if_any_matching_event_exists(backend: Backend) {
    let store = store_on(backend).await;
    let claim = |who: &str| {
        Event::new("UsernameClaimed", json!({"username": "ada", "by": who}))
            .with_tags(["username:ada"])
    };
    let username = Query::from(QueryItem::tagged(["username:ada"]));
    store
        .append(
            [claim("first")],
            Some(AppendCondition::new(username.clone(), None)),
        )
        .await
        .expect("nothing matched yet");
    let err = store
        .append(
            [claim("second")],
            Some(AppendCondition::new(username, None)),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed());
    assert_eq!(store.event_count().await, 1);
}

#[apply(backends)]
#[tokio::test]
async fn condition_with_match_all_query_sees_every_event(backend: Backend) {
    let store = store_on(backend).await;
    let first = store
        .append([event("A", &[], json!({}))], None)
        .await
        .unwrap();
    store
        .append([event("B", &[], json!({}))], None)
        .await
        .unwrap();
    let err = store
        .append(
            [event("C", &[], json!({}))],
            Some(AppendCondition::new(
                Query::all(),
                Some(first.last_position()),
            )),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed());
}

#[apply(backends)]
#[tokio::test]
async fn condition_with_payload_predicates(backend: Backend) {
    let store = store_on(backend).await;
    let lent = |book: &str, reader: &str| {
        Event::new("BookCopyLent", json!({"BookID": book, "ReaderID": reader}))
    };
    let book_or_reader = Query::from(
        QueryItem::typed(["BookCopyLent", "BookCopyReturned"])
            .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r1"))]),
    );
    store.append([lent("b2", "r2")], None).await.unwrap();
    store
        .append(
            [lent("b1", "r1")],
            Some(AppendCondition::new(book_or_reader.clone(), None)),
        )
        .await
        .expect("neither b1 nor r1 was lent yet");
    let err = store
        .append(
            [lent("b1", "r3")],
            Some(AppendCondition::new(book_or_reader, None)),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed());
}

#[apply(backends)]
#[tokio::test]
async fn duplicate_event_id_is_reported_and_writes_nothing(backend: Backend) {
    let store = store_on(backend).await;
    let original = event("A", &[], json!({}));
    store.append([original.clone()], None).await.unwrap();
    let err = store
        .append([event("B", &[], json!({})), original.clone()], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { event_id } if event_id == original.id),
        "{err}"
    );
    assert_eq!(store.event_count().await, 1);
}

/// A resend counts as a replay when it is the same event as stored, compared as the store
/// compares JSON: key order, the spelling of a number and the order of tags do not matter.
#[apply(backends)]
#[tokio::test]
async fn a_resend_equal_as_stored_is_a_replay(backend: Backend) {
    let store = store_on(backend).await;
    let original = Event::new(
        "Paid",
        json!({"amount": 10, "order": {"id": "o1", "lines": [1, 2]}}),
    )
    .with_tags(["order:o1", "customer:c1"])
    .with_metadata(json!({"by": "ada"}));
    let first = store.append([original.clone()], None).await.unwrap();
    let resent = Event::new(
        "Paid",
        json!({"order": {"lines": [1, 2.0], "id": "o1"}, "amount": 1e1}),
    )
    .with_id(original.id)
    .with_tags(["customer:c1", "order:o1"])
    .with_metadata(json!({"by": "ada"}));
    let again = store.append([resent], None).await.unwrap();
    assert!(again.is_replay());
    assert_eq!(again.positions(), first.positions());
    assert_eq!(store.event_count().await, 1);
}

/// The same id with other content is not a replay: an error of its own, and nothing written.
#[apply(backends)]
#[tokio::test]
async fn a_resend_with_other_content_is_an_idempotency_conflict(
    backend: Backend,
    #[values("type", "payload", "array order", "tags", "metadata")] change: &str,
) {
    let store = store_on(backend).await;
    let original = Event::new("Paid", json!({"amount": 10, "lines": [1, 2]}))
        .with_tags(["order:o1"])
        .with_metadata(json!({"by": "ada"}));
    let first = store.append([original.clone()], None).await.unwrap();
    let mut changed = original.clone();
    match change {
        "type" => changed.event_type = "Refunded".into(),
        "payload" => changed.payload["amount"] = json!(11),
        "array order" => changed.payload["lines"] = json!([2, 1]),
        "tags" => changed.tags.push("order:o2".into()),
        _ => changed.metadata = None,
    }
    let err = store.append([changed], None).await.unwrap_err();
    assert!(
        matches!(err, Error::IdempotencyConflict { event_id, position }
            if event_id == original.id && position == first.last_position()),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(store.event_count().await, 1);
}

/// More events than a guard reads of the log's tail (64) lie between `after` and a matching
/// event: the guard still finds it, whatever indexes its query uses, and holds when nothing
/// past `after` matches.
#[apply(backends)]
#[tokio::test]
async fn condition_sees_a_match_past_a_long_run_of_other_events(backend: Backend) {
    let store = store_on(backend).await;
    let shapes = [
        (
            "tags",
            Query::from(QueryItem::tagged(["course:c1"])),
            event("Subscribed", &["course:c1"], json!({})),
        ),
        (
            "types only",
            Query::from(QueryItem::typed(["Rare"])),
            event("Rare", &[], json!({})),
        ),
        (
            "type and payload",
            Query::from(QueryItem::typed(["Lent"]).payload_contains(json!({"book": "b9"}))),
            event("Lent", &[], json!({"book": "b9"})),
        ),
        (
            "types only or tags",
            Query::from_items([
                QueryItem::typed(["Scarce"]),
                QueryItem::tagged(["reader:r1"]),
            ]),
            event("Borrowed", &["reader:r1"], json!({})),
        ),
    ];
    let others = |n: usize| {
        (0..n)
            .map(|i| event("Other", &["course:c2"], json!({"i": i})))
            .collect::<Vec<_>>()
    };
    store.append(others(3), None).await.unwrap();
    for (shape, query, matching) in shapes {
        let after = store.append(others(1), None).await.unwrap().last_position();
        store.append(others(100), None).await.unwrap();
        let holds = store
            .append(
                [event("Probe", &[], json!({}))],
                Some(AppendCondition::new(query.clone(), Some(after))),
            )
            .await;
        assert!(
            holds.is_ok(),
            "{shape}: nothing matches past after: {holds:?}"
        );
        store.append([matching], None).await.unwrap();
        store.append(others(100), None).await.unwrap();
        let before = store.event_count().await;
        let err = store
            .append(
                [event("Probe", &[], json!({}))],
                Some(AppendCondition::new(query.clone(), Some(after))),
            )
            .await
            .unwrap_err();
        assert!(err.is_append_condition_failed(), "{shape}: {err}");
        assert_eq!(
            store.event_count().await,
            before,
            "{shape}: nothing written"
        );
    }
}
