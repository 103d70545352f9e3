//! The feed on PostgreSQL under the condition that breaks reading by position: transactions
//! commit in any order. An event that commits below a position a consumer has passed is still
//! delivered, exactly once; proven by holding a transaction open, then by a race of writers
//! (guarded, unguarded, held open, rolled back) against a consumer that stops and resumes from
//! its stored checkpoint, replayed against the log.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{Checkpoint, EventStore, Query, QueryItem, ReadOptions};
use serde_json::json;
use uuid::Uuid;

use common::event;

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

/// 32 writers for 10 s: guarded appends on boundaries of their own, unguarded appends, appends
/// in transactions held open for a while, some of them rolled back. A consumer follows the feed
/// and is stopped and resumed from its stored checkpoint (as text) three times. Afterwards it has
/// seen every committed event exactly once, in strictly increasing feed order, and nothing that
/// was rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_consumer_sees_every_committed_event_once() {
    const WRITERS: usize = 32;
    const FOR: Duration = Duration::from_secs(10);
    let store = common::store_with_pool(WRITERS + 2).await;
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, done) = (store.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut rolled_back: Vec<Uuid> = Vec::new();
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let tag = format!("w:{w}");
                let e = event("Written", &[&tag], json!({"w": w, "n": n}));
                match w % 4 {
                    0 => {
                        let query = Query::from(QueryItem::tagged([tag.clone()]));
                        let read = store.read(&query, ReadOptions::default()).await.unwrap();
                        let condition = read.append_condition().unwrap();
                        store.append([e], Some(condition)).await.unwrap();
                    }
                    1 | 2 => {
                        store.append([e], None).await.unwrap();
                    }
                    _ => {
                        let mut client = store.pool().get().await.unwrap();
                        let tx = client.transaction().await.unwrap();
                        let id = e.id;
                        store.append_in(&tx, [e], None).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5 + n % 20)).await;
                        if n.is_multiple_of(3) {
                            tx.rollback().await.unwrap();
                            rolled_back.push(id);
                        } else {
                            tx.commit().await.unwrap();
                        }
                    }
                }
                n += 1;
            }
            rolled_back
        }));
    }

    let consumer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut stored: Option<String> = None;
            let mut restarts = 0;
            let started = Instant::now();
            loop {
                // A (re)started consumer reads its checkpoint back from storage.
                let mut at: Option<Checkpoint> = stored.as_deref().map(|s| s.parse().unwrap());
                let run_until = started + FOR * (restarts + 1) / 4;
                loop {
                    let page = store.feed(&Query::all(), at, 50).await.unwrap();
                    seen.extend(page.events.into_iter().map(|e| (e.checkpoint, e.event)));
                    at = Some(page.next);
                    stored = at.map(|c| c.to_string());
                    if Instant::now() > run_until && restarts < 3 {
                        break;
                    }
                    if done.load(Ordering::Relaxed) && restarts >= 3 {
                        return (seen, at);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                restarts += 1;
            }
        })
    };

    tokio::time::sleep(FOR).await;
    done.store(true, Ordering::Relaxed);
    let mut rolled_back = HashSet::new();
    for w in writers {
        rolled_back.extend(w.await.unwrap());
    }
    let (mut seen, at) = consumer.await.unwrap();
    // Drain what committed last.
    let log = common::all_events(&store).await;
    let (rest, _) = feed_for(&store, at, log.len() - seen.len(), Duration::from_secs(30)).await;
    seen.extend(rest.into_iter().map(|e| (e.checkpoint, e.event)));

    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "feed order strictly increasing"
    );
    let delivered: Vec<Uuid> = seen.iter().map(|(_, e)| e.event.id).collect();
    let unique: HashSet<Uuid> = delivered.iter().copied().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an event was delivered twice"
    );
    let committed: HashSet<Uuid> = log.iter().map(|e| e.event.id).collect();
    assert_eq!(unique, committed, "delivered and committed differ");
    assert!(rolled_back.iter().all(|id| !unique.contains(id)));
    assert!(
        !rolled_back.is_empty() && log.len() > 1_000,
        "{} events",
        log.len()
    );
    eprintln!(
        "feed: {} committed events delivered once each, {} rolled back",
        log.len(),
        rolled_back.len()
    );
}
