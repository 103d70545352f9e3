//! Conditions derived from reads ([`ReadResult::append_condition`](dcbstore::ReadResult)): what
//! they cover, what they refuse, and the snapshot they carry.

use dcbstore::{
    AppendCondition, ArgumentProblem, Error, EventStore, InvalidInput, Query, QueryItem,
    ReadOptions, ReadSnapshot,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, Store, StoreExt, argument_problem, backends, event, store_on};

fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

async fn with_course_events(backend: Backend, n: usize) -> Store {
    let store = store_on(backend).await;
    for i in 0..n {
        store
            .append([event("Subscribed", &["course:c1"], json!({"i": i}))], None)
            .await
            .unwrap();
        store
            .append([event("Other", &["course:c2"], json!({"i": i}))], None)
            .await
            .unwrap();
    }
    store
}

/// Appends a subscription guarded by `condition`, which must pass (`why`), then a second one
/// guarded by the same condition, which must fail and write nothing: the first changed the
/// boundary.
async fn passes_once(store: &Store, condition: AppendCondition, why: &str) {
    store
        .append(
            [event("Subscribed", &["course:c1"], json!({"first": true}))],
            Some(condition.clone()),
        )
        .await
        .expect(why);
    let before = store.event_count().await;
    let err = store
        .append(
            [event("Subscribed", &["course:c1"], json!({"second": true}))],
            Some(condition),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
    assert_eq!(store.event_count().await, before, "nothing written");
}

#[apply(backends)]
#[tokio::test]
async fn derived_condition_holds_until_the_boundary_changes(backend: Backend) {
    let store = with_course_events(backend, 2).await;
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    let condition = read.append_condition().unwrap();
    assert_eq!(condition.after, Some(3));
    assert_eq!(condition.fail_if_events_match, course("c1"));
    // The read's snapshot; on PostgreSQL marked as covering this query and `after`.
    let token = condition.snapshot.as_ref().expect("a snapshot").to_string();
    assert!(
        token.starts_with(&read.snapshot().to_string()),
        "{token} {}",
        read.snapshot()
    );

    // Another boundary changing does not matter.
    store
        .append([event("Other", &["course:c2"], json!({}))], None)
        .await
        .unwrap();
    passes_once(
        &store,
        condition,
        "nothing of the boundary changed since the read",
    )
    .await;
}

#[apply(backends)]
#[tokio::test]
async fn a_forward_read_cut_by_its_limit_gives_no_condition(backend: Backend) {
    let store = with_course_events(backend, 3).await;
    let first_two = store
        .read(&course("c1"), ReadOptions::default().limit(2))
        .await
        .unwrap();
    let err = first_two.append_condition().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput(InvalidInput::Argument(ArgumentProblem::IncompleteRead {
                limit: 2
            }))
        ),
        "{err}"
    );
    // A limit the read did not reach saw everything.
    let all = store
        .read(&course("c1"), ReadOptions::default().limit(10))
        .await
        .unwrap();
    assert_eq!(all.append_condition().unwrap().after, Some(5));
}

/// The gapless-number pattern: read the newest event only (backwards, limit 1); the older ones
/// the limit left out do not fail the condition, a newer one does.
#[apply(backends)]
#[tokio::test]
async fn a_backwards_read_with_a_limit_guards_from_the_newest_event(backend: Backend) {
    let store = with_course_events(backend, 3).await;
    let newest = store
        .read(&course("c1"), ReadOptions::default().backwards().limit(1))
        .await
        .unwrap();
    let condition = newest.append_condition().unwrap();
    assert_eq!(condition.after, Some(5));
    passes_once(&store, condition, "older events were left out on purpose").await;
}

/// A read from position `n` that finds nothing guards after `n - 1`: the events before `n` were
/// the caller's to know, anything matching from `n` on fails it.
#[apply(backends)]
#[tokio::test]
async fn an_empty_read_from_a_position_guards_after_the_position_before(backend: Backend) {
    let store = with_course_events(backend, 2).await;
    let from_five = store
        .read(&course("c1"), ReadOptions::default().from_position(5))
        .await
        .unwrap();
    assert!(from_five.is_empty());
    let condition = from_five.append_condition().unwrap();
    assert_eq!(condition.after, Some(4));
    passes_once(
        &store,
        condition,
        "positions 1 and 3 are before the read's start",
    )
    .await;

    let from_start = store
        .read(&course("c9"), ReadOptions::default().from_position(1))
        .await
        .unwrap();
    assert_eq!(from_start.append_condition().unwrap().after, None);
}

#[apply(backends)]
#[tokio::test]
async fn a_snapshot_survives_its_text_form(backend: Backend) {
    let store = with_course_events(backend, 1).await;
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    // Sent to a client and back, e.g. in a form.
    let (token, after) = (read.snapshot().to_string(), read.last_position());
    store
        .append(
            [event("Subscribed", &["course:c1"], json!({"late": true}))],
            None,
        )
        .await
        .unwrap();
    let snapshot: ReadSnapshot = token.parse().unwrap();
    assert_eq!(&snapshot, read.snapshot());
    let condition = AppendCondition::new(course("c1"), after).with_snapshot(snapshot);
    let err = store
        .append(
            [event("Subscribed", &["course:c1"], json!({}))],
            Some(condition),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

#[apply(backends)]
#[tokio::test]
async fn a_snapshot_of_the_other_backend_is_refused(backend: Backend) {
    let store = store_on(backend).await;
    let foreign: ReadSnapshot = match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => dcbstore::MemoryEventStore::new()
            .read(&Query::all(), ReadOptions::default())
            .await
            .unwrap()
            .snapshot()
            .clone(),
        Backend::Memory => "pg:10:12:11".parse().unwrap(),
    };
    let condition = AppendCondition::new(course("c1"), Some(1)).with_snapshot(foreign);
    let err = store
        .append(
            [event("Subscribed", &["course:c1"], json!({}))],
            Some(condition),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            argument_problem(&err),
            Some(ArgumentProblem::ForeignSnapshot { .. })
        ),
        "{err}"
    );
    assert_eq!(store.event_count().await, 0, "nothing written");
}
