//! The feed on PostgreSQL under the condition that breaks reading by position: transactions
//! commit in any order. An event that commits below a position a consumer has passed is still
//! delivered, exactly once, proven here by holding a transaction open; the race of writers
//! against a consumer that stops and resumes is in `tests/subscriptions.rs`.

use std::time::{Duration, Instant};

use dcbstore::{Checkpoint, EventStore, Query, ReadOptions};
use serde_json::json;

use crate::common::{self, event};

/// Pages of the feed from `after` until `want` events came or `wait` passed.
async fn feed_for(
    store: &impl EventStore,
    after: Option<Checkpoint>,
    want: usize,
    wait: Duration,
) -> (Vec<dcbstore::FeedEvent>, Option<Checkpoint>) {
    let deadline = Instant::now() + wait;
    let (mut events, mut at) = (Vec::new(), after);
    loop {
        let page = store.feed(&Query::all(), at, 100).await.unwrap();
        at = Some(page.next);
        events.extend(page.events);
        if events.len() >= want || Instant::now() > deadline {
            return (events, at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A writer holds position 1 in an open transaction while another commits position 2: reading
/// by position shows 2 and would move past 1 for ever; the feed shows neither until the first
/// transaction ends, then both, 1 first, from the checkpoint it had given before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_below_a_passed_position_is_still_delivered() {
    let store = common::store_with_pool(2).await;
    let holder = common::store_with_pool_in(1, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    holder
        .append_in(&open, [event("Early", &["a"], json!({}))], None)
        .await
        .unwrap();
    store
        .append([event("Late", &["b"], json!({}))], None)
        .await
        .unwrap();

    let by_position = store
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap();
    let seen: Vec<u64> = by_position.iter().map(|e| e.position).collect();
    assert_eq!(
        seen,
        [2],
        "reading by position shows 2 while 1 is in flight"
    );
    let (early, checkpoint) = feed_for(&store, None, 1, Duration::from_millis(300)).await;
    assert!(
        early.is_empty(),
        "the feed waits for the open transaction: {early:?}"
    );

    open.commit().await.unwrap();
    let (events, _) = feed_for(&store, checkpoint, 2, Duration::from_secs(20)).await;
    let positions: Vec<u64> = events.iter().map(|e| e.event.position).collect();
    assert_eq!(
        positions,
        [1, 2],
        "both, in commit-safe order, nothing skipped"
    );
}
