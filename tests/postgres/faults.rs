//! Faults injected against PostgreSQL while the store works: connections killed mid-append while
//! writers retry with the same ids, a boundary held by an idle transaction, appends cancelled on
//! a pool of one, `migrate()` under load. Each test asserts that nothing is lost or written
//! twice, that no call waits past its bound, and that every error is classified honestly: a
//! retryable error succeeded when the same call was retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{AppendCondition, Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::common::{self, event};

/// A store made by the builder (a pool of 8, bounded waits) in a fresh schema,
/// whose connections carry the schema's name as `application_name`, so that a killer can find
/// exactly them.
async fn connected_store(lock_timeout: Duration) -> PgEventStore {
    let schema = common::test_schema();
    let url = common::database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = PgEventStore::builder()
        .pool_size(8)
        .schema(&schema)
        .lock_timeout(lock_timeout)
        .statement_timeout(Duration::from_secs(2))
        .connect(&format!("{url}{separator}application_name={schema}"))
        .await
        .expect("connecting");
    common::emptied(store).await
}

/// How each failure a writer saw was classified, by SQLSTATE or kind.
#[derive(Default)]
struct Seen(std::sync::Mutex<BTreeMap<String, u64>>);

impl Seen {
    fn record(&self, e: &dcbstore::Error) {
        let key = match e.sql_state() {
            Some(state) => state.to_string(),
            // What the driver or the pool saw, e.g. "connection closed".
            None => std::error::Error::source(e).map_or(e.to_string(), ToString::to_string),
        };
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

/// Writers append guarded batches with fixed ids on boundaries of their own for a few seconds
/// while a killer terminates their connections every 20 ms. Every failure must be retryable, and retrying the
/// same call (same ids, same condition) must end in success: afterwards every batch is in the log
/// exactly once, at the positions its acknowledgement gave, in the order each writer wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_nothing_and_write_nothing_twice() {
    const WRITERS: usize = 6;
    const BATCH: usize = 3;
    const FOR: Duration = Duration::from_secs(4);
    // Pool wait (5 s) plus the statement bound (2 s), and some scheduling slack.
    const BOUND: Duration = Duration::from_secs(10);

    let store = connected_store(Duration::from_secs(1)).await;
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU64::new(0));
    let killer = {
        let (done, killed) = (done.clone(), killed.clone());
        let (pool, app) = (common::pool(1), store.schema().to_string());
        tokio::spawn(async move {
            let client = pool.get().await.expect("the killer's connection");
            while !done.load(Ordering::Relaxed) {
                let terminated = common::kill_connections(&client, &app).await;
                killed.fetch_add(terminated, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let seen = Arc::new(Seen::default());
    let (replays, slowest_us) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, seen) = (store.clone(), seen.clone());
        let (replays, slowest_us) = (replays.clone(), slowest_us.clone());
        writers.push(tokio::spawn(async move {
            let query = Query::from(QueryItem::tagged([format!("writer:{w}")]));
            let mut after = None;
            let mut acknowledged: Vec<(Uuid, u64)> = Vec::new();
            let start = Instant::now();
            let mut batches = 0;
            while start.elapsed() < FOR {
                let b = batches;
                batches += 1;
                let batch: Vec<Event> = (0..BATCH)
                    .map(|i| {
                        event(
                            "Written",
                            &[&format!("writer:{w}")],
                            json!({"b": b, "i": i}),
                        )
                    })
                    .collect();
                let condition = AppendCondition::new(query.clone(), after);
                let started = Instant::now();
                let written = loop {
                    let call = Instant::now();
                    let outcome = store.append(batch.clone(), Some(condition.clone())).await;
                    let took = call.elapsed();
                    assert!(took < BOUND, "one call took {took:?}");
                    slowest_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                    match outcome {
                        Ok(written) => break written,
                        Err(e) => {
                            assert!(e.is_retryable(), "not retryable: {e}");
                            seen.record(&e);
                            assert!(started.elapsed() < Duration::from_secs(60), "{e}");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                };
                if written.is_replay() {
                    replays.fetch_add(1, Ordering::Relaxed);
                }
                after = Some(written.last_position());
                acknowledged.extend(batch.iter().map(|e| e.id).zip(written.positions().to_vec()));
            }
            (batches, acknowledged)
        }));
    }
    let mut acknowledged = HashMap::new();
    let mut batches = Vec::new();
    for w in writers {
        let (n, acks) = w.await.expect("a writer");
        batches.push(n);
        acknowledged.extend(acks);
    }
    done.store(true, Ordering::Relaxed);
    killer.await.expect("the killer");

    let log = common::all_events(&common::store_with_pool_in(1, store.schema()).await).await;
    let total: u64 = batches.iter().sum();
    assert_eq!(log.len() as u64, total * BATCH as u64, "every event once");
    for e in &log {
        assert_eq!(acknowledged.get(&e.event.id), Some(&e.position), "{e:?}");
    }
    for (w, written) in batches.iter().enumerate() {
        let order: Vec<(u64, u64)> = log
            .iter()
            .filter(|e| e.has_tag(&format!("writer:{w}")))
            .map(|e| {
                (
                    e.payload["b"].as_u64().unwrap(),
                    e.payload["i"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(u64, u64)> = (0..*written)
            .flat_map(|b| (0..BATCH as u64).map(move |i| (b, i)))
            .collect();
        assert_eq!(order, expected, "writer {w}'s batches in order");
    }
    let killed = killed.load(Ordering::Relaxed);
    eprintln!(
        "faults: {total} batches, {killed} connections killed, {} retried failures {:?}, {} replays, \
         slowest call {} ms",
        seen.total(),
        seen.0.lock().unwrap(),
        replays.load(Ordering::Relaxed),
        slowest_us.load(Ordering::Relaxed) / 1000
    );
    assert!(
        killed > 0 && seen.total() > 0,
        "the killer did hit the writers"
    );
}

/// A boundary held by a transaction left idle: every guarded append on it gives up after the
/// lock timeout with a retryable error, appends elsewhere go ahead, and once the transaction
/// ends the same calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_boundary_bounds_its_waiters_and_holds_up_no_one_else() {
    let store = connected_store(Duration::from_millis(300)).await;
    let holder = common::store_with_pool_in(1, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let idle = client.transaction().await.unwrap();
    holder
        .append_in(&idle, [event("Held", &["slot:held"], json!({}))], None)
        .await
        .unwrap();

    let claim = |tag: String| {
        let store = store.clone();
        let query = Query::from(QueryItem::tagged([tag.clone()]));
        let claim = event("Claimed", &[&tag], json!({}));
        async move {
            let started = Instant::now();
            let outcome = store
                .append(
                    [claim.clone()],
                    Some(AppendCondition::new(query.clone(), None)),
                )
                .await;
            (outcome, started.elapsed(), claim, query)
        }
    };
    let waiters: Vec<_> = (0..4)
        .map(|_| tokio::spawn(claim("slot:held".into())))
        .collect();
    let others: Vec<_> = (0..4)
        .map(|i| tokio::spawn(claim(format!("slot:other{i}"))))
        .collect();
    for other in others {
        let (outcome, waited, _, _) = other.await.unwrap();
        outcome.expect("an append elsewhere goes ahead");
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    }
    let mut retries = Vec::new();
    for waiter in waiters {
        let (outcome, waited, claim, query) = waiter.await.unwrap();
        let err = outcome.expect_err("the held boundary");
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.sql_state(), Some("55P03"), "{err}");
        // One lock timeout and some slack: each waiter has a connection of its own.
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        retries.push((claim, query));
    }

    idle.rollback().await.unwrap();
    let mut won = 0;
    for (claim, query) in retries {
        match store
            .append([claim], Some(AppendCondition::new(query, None)))
            .await
        {
            Ok(_) => won += 1,
            Err(e) => assert!(e.is_append_condition_failed() && !e.is_retryable(), "{e}"),
        }
    }
    assert_eq!(won, 1, "retried, exactly one claim of the slot wins");
    let held = store
        .read(
            &Query::from(QueryItem::tagged(["slot:held"])),
            ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
}

/// Appends cancelled at every point of their flight on a pool of one: the next call always gets
/// a working connection within its bound, and each cancelled append, retried with its ids, is
/// in the log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_appends_on_a_pool_of_one_never_block_the_next_call() {
    const ROUNDS: u64 = 60;
    let store = common::store_with_pool(1).await;
    let mut cancelled = 0;
    let mut batches = Vec::new();
    for round in 0..ROUNDS {
        let batch: Vec<Event> = (0..5)
            .map(|i| event("Cancelled", &[&format!("round:{round}")], json!({"i": i})))
            .collect();
        // From "before anything was sent" to "probably committed": 0 to 3 ms in 50 µs steps.
        let budget = Duration::from_micros(50 * (round % 60));
        if tokio::time::timeout(budget, store.append(batch.clone(), None))
            .await
            .is_err()
        {
            cancelled += 1;
        }
        let next = tokio::time::timeout(
            Duration::from_secs(3),
            store.read(&Query::all(), ReadOptions::default().limit(1)),
        )
        .await
        .expect("the pool's one connection is free for the next call");
        next.expect("the next call works");
        batches.push(batch);
    }
    for batch in &batches {
        store.append(batch.clone(), None).await.expect("the retry");
    }
    let log = common::all_events(&store).await;
    assert_eq!(log.len(), batches.len() * 5, "every batch exactly once");
    eprintln!("faults: {cancelled} of {ROUNDS} appends cancelled in flight");
    assert!(cancelled > 0, "some appends were cancelled");
}

/// `migrate()` called again and again while writers append and a reader streams: it never takes
/// a lock that makes them wait, so every call stays fast and nothing queues behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_under_load_holds_up_no_one() {
    let store = common::store_with_pool(6).await;
    for _ in 0..2 {
        let load = (0..1_000).map(|i| event("Loaded", &["load"], json!({"i": i})));
        store.append(load, None).await.unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    // A reader holds a stream open, rows unread, for the whole test.
    let mut stream = store.read_stream(&Query::all(), ReadOptions::default());
    stream.next().await.expect("a first row").unwrap();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    store
                        .append([event("Busy", &[&format!("w:{w}")], json!({"n": n}))], None)
                        .await
                        .unwrap();
                    slowest = slowest.max(started.elapsed());
                    n += 1;
                }
                (n, slowest)
            })
        })
        .collect();
    let mut slowest_migrate = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        store.migrate().await.expect("migrate");
        slowest_migrate = slowest_migrate.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut appended = 0;
    for w in writers {
        let (n, slowest) = w.await.unwrap();
        appended += n;
        assert!(
            slowest < Duration::from_secs(1),
            "an append waited {slowest:?}"
        );
    }
    assert!(appended > 0);
    assert!(
        slowest_migrate < Duration::from_secs(1),
        "migrate took {slowest_migrate:?}"
    );
    drop(stream);
    eprintln!("faults: 20 migrations beside {appended} appends, slowest {slowest_migrate:?}");
}
