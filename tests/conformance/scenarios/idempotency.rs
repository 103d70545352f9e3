//! Prevent record duplication: a client's idempotency token makes a re-submitted command a no-op
//! with an error, and re-sending the very same events (same ids) is a replay.

use dcbstore::{AppendCondition, Error, Event, EventStore, Projection, Query, QueryItem, decide};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, Store, StoreExt, backends, store_on};

async fn place_order(store: &Store, order: &str, token: &str) -> Result<(), String> {
    let used = Projection::new(
        QueryItem::tagged([format!("idempotency:{token}")]),
        false,
        |used, _| *used = true,
    );
    decide(store, &used, |used| {
        if used {
            return Err("re-submission".to_string());
        }
        Ok(vec![
            Event::new("OrderPlaced", json!({"order": order, "token": token}))
                .with_tags([format!("idempotency:{token}"), format!("order:{order}")]),
        ])
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[tokio::test]
async fn idempotency_token(backend: Backend) {
    let store = store_on(backend).await;
    assert_eq!(place_order(&store, "o1", "t1").await, Ok(()));
    assert_eq!(
        place_order(&store, "o2", "t1").await,
        Err("re-submission".into())
    );
    assert_eq!(place_order(&store, "o2", "t2").await, Ok(()));
    assert_eq!(store.event_count().await, 2);
}

#[apply(backends)]
#[tokio::test]
async fn resending_the_same_events_is_a_replay(backend: Backend) {
    let store = store_on(backend).await;
    let boundary = Query::from(QueryItem::tagged(["order:o1"]));
    let batch = vec![
        Event::new("OrderPlaced", json!({})).with_tags(["order:o1"]),
        Event::new("OrderPaid", json!({})).with_tags(["order:o1"]),
    ];
    let condition = AppendCondition::new(boundary, None);
    let first = store
        .append(batch.clone(), Some(condition.clone()))
        .await
        .unwrap();
    // The outcome was lost (say, a timeout): the same events are sent again, with the same
    // condition, which these very events would now fail.
    let again = store.append(batch.clone(), Some(condition)).await.unwrap();
    assert!(again.is_replay() && !first.is_replay());
    assert_eq!(again.positions(), first.positions());
    let unguarded = store.append(batch.clone(), None).await.unwrap();
    assert!(unguarded.is_replay());
    assert_eq!(store.event_count().await, 2);
    // Part of a batch stored already is a duplicate, not a replay; nothing is written.
    let mixed = vec![batch[0].clone(), Event::new("OrderShipped", json!({}))];
    let err = store.append(mixed, None).await.unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { event_id } if event_id == batch[0].id),
        "{err}"
    );
    assert_eq!(store.event_count().await, 2);
}
