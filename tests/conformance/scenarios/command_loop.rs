//! The command loop itself: bounded retries, fresh state on every attempt, no append when the
//! decision returns no events.

use dcbstore::{DecideError, Event, EventStore, Projection, Query, QueryItem, decide};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, StoreExt, backends, store_on};

#[tokio::test]
async fn decide_retries_with_fresh_state_and_gives_up_after_the_policy() {
    use futures::FutureExt;

    let store = dcbstore::MemoryEventStore::new();
    let seen_in_boundary = Projection::new(QueryItem::tagged(["hot"]), 0u32, |n, _| *n += 1);
    let policy = dcbstore::RetryPolicy {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(2),
    };
    let mut attempts = 0;
    let outcome = dcbstore::decide_with(&store, &seen_in_boundary, policy, |seen| {
        attempts += 1;
        // Each attempt sees what interfered with the previous one.
        assert_eq!(seen, attempts - 1);
        // Someone else appends to the boundary between this read and this append.
        store
            .append([Event::new("Other", json!({})).with_tags(["hot"])], None)
            .now_or_never()
            .expect("the in-memory store answers at once")
            .expect("the interfering append");
        Ok::<_, std::convert::Infallible>(vec![Event::new("Mine", json!({})).with_tags(["hot"])])
    })
    .await;
    assert!(
        matches!(outcome, Err(DecideError::TooManyConflicts { attempts: 3 })),
        "{outcome:?}"
    );
    assert_eq!(attempts, 3);
    assert_eq!(store.len(), 3, "only the interfering events were written");
}

#[apply(backends)]
#[tokio::test]
async fn decide_appends_nothing_when_the_decision_returns_no_events(backend: Backend) {
    let store = store_on(backend).await;
    let anything = Projection::new(Query::all(), (), |_, _| {});
    let outcome = decide(&store, &anything, |()| Ok::<_, String>(vec![])).await;
    assert!(matches!(outcome, Ok(None)), "{outcome:?}");
    assert_eq!(store.event_count().await, 0);
}

#[test]
fn retry_waits_stay_within_the_policy() {
    let policy = dcbstore::RetryPolicy::default();
    for retry in 1..40 {
        let cap = (policy.initial_backoff * (1u32 << (retry - 1).min(20))).min(policy.max_backoff);
        assert!(policy.backoff(retry) <= cap, "retry {retry}");
    }
}
