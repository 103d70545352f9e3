//! Decisions that keep their state: `read_unseen` reads what a read did not see, and a
//! `DecisionCache` decides from exactly the state a read of the whole boundary would give.

use dcbstore::{
    AppendCondition, ArgumentProblem, Consistency, DecisionCache, EventStore, Query, QueryItem,
    ReadOptions, ReadSnapshot,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{
    Backend, StoreExt, argument_problem, backends, event, positions, positions_of, store_on,
};

fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

/// What a read did not see: the matching events appended after it, with a condition that
/// guards a state folded from both; a condition built by hand gives what lies after its `after`.
#[apply(backends)]
#[tokio::test]
async fn read_unseen_returns_what_the_read_did_not_see(backend: Backend) {
    let store = store_on(backend).await;
    let subscribed = |c: &str| event("Subscribed", &[&format!("course:{c}")], json!({}));
    store.append([subscribed("c1")], None).await.unwrap();
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    let condition = read.append_condition().unwrap();
    let nothing = store
        .read_unseen(&condition, Consistency::Eventual)
        .await
        .unwrap();
    assert!(nothing.events().is_empty() && nothing.continues());

    store.append([subscribed("c2")], None).await.unwrap();
    let later = store.append([subscribed("c1")], None).await.unwrap();
    let unseen = store
        .read_unseen(&condition, Consistency::Latest)
        .await
        .unwrap();
    let positions: Vec<u64> = unseen.events().iter().map(|e| e.position).collect();
    assert_eq!(positions, later.positions());
    assert!(unseen.continues());
    assert_eq!(unseen.append_condition().after, Some(later.last_position()));

    // The continued condition guards both reads: it holds now, and fails once the course
    // changes; the first read's condition already fails.
    let stale = store.append([subscribed("c1")], Some(condition)).await;
    assert!(stale.unwrap_err().is_append_condition_failed());
    let continued = unseen.append_condition().clone();
    let again = store
        .read_unseen(&continued, Consistency::Eventual)
        .await
        .unwrap();
    assert!(again.events().is_empty(), "the stale append was refused");
    let continued = again.append_condition().clone();
    store
        .append([subscribed("c1")], Some(continued.clone()))
        .await
        .unwrap();
    let err = store
        .append([subscribed("c1")], Some(continued))
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");

    // By hand: the events after `after`.
    let by_hand = AppendCondition::new(course("c1"), Some(read.last_position().unwrap()));
    let after = store
        .read_unseen(&by_hand, Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(after.events().len(), 2);
    assert_eq!(store.event_count().await, 4);
}

/// A condition carrying the other backend's snapshot is refused, like an append's.
#[apply(backends)]
#[tokio::test]
async fn read_unseen_refuses_a_snapshot_of_the_other_backend(backend: Backend) {
    let store = store_on(backend).await;
    let foreign: ReadSnapshot = match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => "mem:3".parse().unwrap(),
        Backend::Memory => "pg:10:12:11".parse().unwrap(),
    };
    let condition = AppendCondition::new(course("c1"), Some(1)).with_snapshot(foreign);
    let err = store
        .read_unseen(&condition, Consistency::Eventual)
        .await
        .unwrap_err();
    assert!(
        matches!(
            argument_problem(&err),
            Some(ArgumentProblem::ForeignSnapshot { .. })
        ),
        "{err}"
    );
}

/// Decisions of a cache, with other writers appending between them (to its boundary and
/// elsewhere): each decides from exactly the events, in order, that a read of the whole
/// boundary returns at that moment.
#[apply(backends)]
#[tokio::test]
async fn a_cached_decision_sees_what_a_whole_read_sees(backend: Backend) {
    let store = store_on(backend).await;
    let mut cache = DecisionCache::new(positions_of(course("c1")));
    for round in 0..30u64 {
        for n in 0..round % 4 {
            let tag = if n % 2 == 0 { "course:c1" } else { "course:c2" };
            store
                .append([event("Other", &[tag], json!({"round": round}))], None)
                .await
                .unwrap();
        }
        let mut decided_from = Vec::new();
        let appended = cache
            .decide(&store, |seen| {
                decided_from = seen;
                Ok::<_, String>(vec![event("Decided", &["course:c1"], json!({}))])
            })
            .await
            .unwrap()
            .expect("an append");
        let mut whole = positions(&store, &course("c1")).await;
        whole.retain(|p| *p != appended.last_position());
        assert_eq!(decided_from, whole, "round {round}");
    }
}
