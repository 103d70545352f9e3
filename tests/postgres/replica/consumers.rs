//! Consumers on a replica: the feed's frontier holds there, and a consumer moves between the
//! primary and a replica with its checkpoint.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{Checkpoint, EventStore, FeedEvent, Query, ReadOptions};
use serde_json::json;

use super::{replay, replayed, turn};
use crate::common::{self, event};

/// The types of `events`, in order.
fn types(events: &[FeedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.event_type.as_str()).collect()
}

/// A transaction held open on the primary holds the replica's feed back: what committed after
/// it (at a higher position) waits until it commits, and then both come, in feed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_transaction_open_on_the_primary_holds_the_replica_s_feed_back() {
    let (_turn, primary, replica) = turn(2).await;
    let holder = common::store_with_pool_in(1, primary.schema()).await;
    primary
        .append([event("First", &["a"], json!({}))], None)
        .await
        .unwrap();
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    holder
        .append_in(&open, [event("Held", &["a"], json!({}))], None)
        .await
        .unwrap();
    primary
        .append([event("Late", &["a"], json!({}))], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;

    // Read by position, the replica shows Late above the position Held holds in flight.
    let by_position = replica
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap();
    let shown: Vec<&str> = by_position.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(shown, ["First", "Late"]);
    let page = replica.feed(&Query::all(), None, 100).await.unwrap();
    assert_eq!(types(&page.events), ["First"], "Late waits for Held");
    let again = replica
        .feed(&Query::all(), Some(page.next), 100)
        .await
        .unwrap();
    assert!(again.events.is_empty(), "{:?}", types(&again.events));

    open.commit().await.unwrap();
    replayed(&primary, &replica).await;
    let rest = replica
        .feed(&Query::all(), Some(again.next), 100)
        .await
        .unwrap();
    assert_eq!(types(&rest.events), ["Held", "Late"]);
    let end = replica
        .feed(&Query::all(), Some(rest.next), 100)
        .await
        .unwrap();
    assert!(end.events.is_empty());
}

/// Events committed on the primary but not replayed yet (replay paused) are not delivered on
/// the replica, nor passed: once replay resumes they come from the same checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn what_the_replica_has_not_replayed_is_not_delivered_nor_passed() {
    let (_turn, primary, replica) = turn(2).await;
    primary
        .append([event("Replayed", &["a"], json!({}))], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;

    replay(&replica, false).await;
    let unreplayed = async {
        primary
            .append([event("Unreplayed", &["a"], json!({}))], None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let page = replica.feed(&Query::all(), None, 100).await.unwrap();
        let again = replica
            .feed(&Query::all(), Some(page.next), 100)
            .await
            .unwrap();
        let on_primary = primary
            .feed(&Query::all(), Some(page.next), 100)
            .await
            .unwrap();
        (page, again, on_primary)
    }
    .await;
    // Resume before asserting, so that a failure leaves the standby replaying.
    replay(&replica, true).await;
    let (page, again, on_primary) = unreplayed;
    assert_eq!(types(&page.events), ["Replayed"]);
    assert!(again.events.is_empty(), "{:?}", types(&again.events));
    assert_eq!(
        types(&on_primary.events),
        ["Unreplayed"],
        "committed on the primary"
    );

    replayed(&primary, &replica).await;
    let rest = replica
        .feed(&Query::all(), Some(again.next), 100)
        .await
        .unwrap();
    assert_eq!(types(&rest.events), ["Unreplayed"]);
}

/// Writers on the primary (some in transactions held open a moment, so that commits land out of
/// position order) against a consumer that follows the feed on the replica, then on the
/// primary, then on the replica again, then once more on the replica, resuming each time from
/// the checkpoint it stored: every committed event exactly once, in strictly increasing feed
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_consumer_moving_between_replica_and_primary_sees_every_event_once() {
    const WRITERS: usize = 3;
    let (_turn, primary, replica) = turn(6).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (primary, stop) = (primary.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let e = event("Written", &[&format!("w:{w}")], json!({"w": w, "n": n}));
                    if n % 4 == 0 {
                        // Held open while the others commit past it.
                        let mut client = primary.pool().get().await.unwrap();
                        let tx = client.transaction().await.unwrap();
                        primary.append_in(&tx, [e], None).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        tx.commit().await.unwrap();
                    } else {
                        primary.append([e], None).await.unwrap();
                    }
                }
            })
        })
        .collect();

    let mut delivered: Vec<FeedEvent> = Vec::new();
    let mut stored: Option<Checkpoint> = None;
    for (run, store) in [&replica, &primary, &replica, &replica]
        .into_iter()
        .enumerate()
    {
        let before = delivered.len();
        let until = Instant::now() + Duration::from_millis(400);
        let mut at = stored;
        while Instant::now() < until {
            let page = store.feed(&Query::all(), at, 25).await.unwrap();
            at = Some(page.next);
            if page.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            delivered.extend(page.events);
        }
        // The consumer stops and stores where it stands: the last checkpoint it was given.
        stored = at;
        assert!(delivered.len() > before, "run {run} delivered nothing");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    replayed(&primary, &replica).await;
    loop {
        let page = replica.feed(&Query::all(), stored, 100).await.unwrap();
        stored = Some(page.next);
        if page.events.is_empty() {
            break;
        }
        delivered.extend(page.events);
    }

    let log = common::all_events(&primary).await;
    eprintln!("{} events delivered", delivered.len());
    let unique: HashSet<_> = delivered.iter().map(|e| e.event.id).collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an event was delivered twice"
    );
    let committed: HashSet<_> = log.iter().map(|e| e.id).collect();
    assert_eq!(unique, committed, "delivered and committed differ");
    assert!(
        delivered
            .windows(2)
            .all(|w| w[0].checkpoint < w[1].checkpoint),
        "not in feed order"
    );
}
