//! Live subscriptions on PostgreSQL: woken across stores by `LISTEN/NOTIFY`, surviving killed
//! connections and a server restart, and a race of 32 writers against a subscriber that is
//! stopped and resumed from its stored checkpoint, replayed against the log.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{
    Checkpoint, EventStore, FeedEvent, PgEventStore, Query, QueryItem, ReadOptions,
    SubscribeOptions, Subscription,
};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::common::{self, event};

/// Takes events from `live` until it holds `want` or `wait` has passed; panics on an error.
async fn take(live: &mut Subscription, want: usize, wait: Duration) -> Vec<FeedEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while events.len() < want {
        match tokio::time::timeout_at(deadline, live.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(e))) => panic!("the subscription failed: {e}"),
            Ok(None) => panic!("the subscription ended"),
            Err(_) => break,
        }
    }
    events
}

/// `delivered` holds each event of `store`'s log exactly once, and the log holds `committed`.
async fn assert_each_committed_event_once(
    delivered: &[FeedEvent],
    store: &PgEventStore,
    committed: usize,
) {
    let ids: Vec<Uuid> = delivered.iter().map(|e| e.event.event.id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered twice");
    let log: HashSet<Uuid> = common::all_events(store)
        .await
        .iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(unique, log, "delivered and committed differ");
    assert_eq!(log.len(), committed);
}

/// A subscriber whose poll interval is a minute receives, within seconds, what another store
/// (another pool, as in another process) appends, through `append` and through `append_in`:
/// the wake-up came by `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_wakes_a_subscriber_through_notify() {
    let writer = common::store().await;
    let application = format!("notify_{}", &writer.schema()[..20]);
    let reader = common::built_store_in(writer.schema(), &application).await;
    let slow = SubscribeOptions::default().poll_interval(Duration::from_secs(60));
    let mut live = reader.subscribe(&Query::all(), None, slow);
    assert!(
        take(&mut live, 1, Duration::from_millis(200))
            .await
            .is_empty()
    );

    let started = Instant::now();
    writer
        .append([event("Appended", &["a"], json!({}))], None)
        .await
        .unwrap();
    let got = take(&mut live, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "woken by the other store's notification");
    let by_append = started.elapsed();

    let mut client = writer.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    writer
        .append_in(&tx, [event("AppendedIn", &["a"], json!({}))], None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let started = Instant::now();
    let got = take(&mut live, 1, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        1,
        "append_in notifies when its transaction commits"
    );
    assert_eq!(got[0].event.event.event_type, "AppendedIn");
    let by_append_in = started.elapsed();
    assert!(
        by_append < Duration::from_secs(20) && by_append_in < Duration::from_secs(20),
        "{by_append:?} {by_append_in:?}"
    );
}

/// Subscribers' connections are killed (the `LISTEN` connection and every pooled one) while
/// writers append: the subscription logs, reconnects, and resumes after its last event:
/// afterwards it has delivered every committed event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_killed_connections() {
    let writer = common::store_with_pool(4).await;
    let application = format!("killed_{}", &writer.schema()[..20]);
    let reader = common::built_store_in(writer.schema(), &application).await;
    let options = SubscribeOptions::default().poll_interval(Duration::from_secs(60));
    let mut live = reader.subscribe(&Query::all(), None, options);

    let mut delivered = Vec::new();
    for round in 0..3 {
        for n in 0..20 {
            writer
                .append(
                    [event("Written", &["k"], json!({"round": round, "n": n}))],
                    None,
                )
                .await
                .unwrap();
        }
        delivered.extend(
            take(
                &mut live,
                20 * (round + 1) - delivered.len(),
                Duration::from_secs(20),
            )
            .await,
        );
        assert_eq!(
            delivered.len(),
            20 * (round + 1),
            "round {round}: all delivered"
        );
        let admin = common::pool(1).get().await.unwrap();
        assert!(
            common::kill_connections(&admin, &application).await >= 1,
            "the subscriber's connections were found"
        );
    }
    // After the last kill: the subscriber catches up with nothing new (its pooled connections
    // are dead: it retries), then new events still arrive within seconds, woken by the
    // reopened listener (its poll interval is a minute).
    assert!(take(&mut live, 1, Duration::from_secs(1)).await.is_empty());
    writer
        .append([event("Written", &["k"], json!({"after": "kill"}))], None)
        .await
        .unwrap();
    let last = take(&mut live, 1, Duration::from_secs(20)).await;
    assert_eq!(last.len(), 1, "woken after the listener reconnected");
    delivered.extend(last);

    assert_each_committed_event_once(&delivered, &writer, 61).await;
}

/// 32 writers for 20 s: guarded appends on boundaries of their own, unguarded appends, appends
/// in transactions held open for a while, some of them rolled back. A subscriber (another store,
/// woken by notifications) is dropped and subscribed again from its stored checkpoint (as text)
/// three times. Afterwards it has seen every committed event exactly once, in strictly
/// increasing feed order, and nothing that was rolled back. Commit-to-delivery latency is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_subscriber_sees_every_committed_event_once() {
    const WRITERS: usize = 32;
    const FOR: Duration = Duration::from_secs(20);
    let store = common::store_with_pool(WRITERS + 2).await;
    let application = format!("race_{}", &store.schema()[..20]);
    let reader = common::built_store_in(store.schema(), &application).await;
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

    let restarts = Arc::new(AtomicU64::new(0));
    let subscriber = {
        let (reader, done, restarts) = (reader.clone(), done.clone(), restarts.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(Checkpoint, dcbstore::SequencedEvent)> = Vec::new();
            let mut stored: Option<String> = None;
            let started = Instant::now();
            for run in 1..=4u32 {
                // A (re)started consumer reads its checkpoint back from storage.
                let at: Option<Checkpoint> = stored.as_deref().map(|s| s.parse().unwrap());
                let mut live = reader.subscribe(&Query::all(), at, SubscribeOptions::default());
                let until = started + FOR * run / 4;
                loop {
                    let wait = until.saturating_duration_since(Instant::now());
                    let last_run_over = run == 4 && done.load(Ordering::Relaxed);
                    if (run < 4 && wait.is_zero()) || last_run_over {
                        break;
                    }
                    match tokio::time::timeout(wait.max(Duration::from_millis(50)), live.next())
                        .await
                    {
                        Ok(Some(Ok(e))) => {
                            stored = Some(e.checkpoint.to_string());
                            seen.push((e.checkpoint, e.event));
                        }
                        Ok(other) => panic!("the subscription stopped: {other:?}"),
                        Err(_) => {}
                    }
                }
                if run < 4 {
                    restarts.fetch_add(1, Ordering::Relaxed);
                }
            }
            (seen, stored)
        })
    };

    tokio::time::sleep(FOR).await;
    done.store(true, Ordering::Relaxed);
    let mut rolled_back = HashSet::new();
    for w in writers {
        rolled_back.extend(w.await.unwrap());
    }
    let (mut seen, stored) = subscriber.await.unwrap();
    // What committed last, through one more subscription from the stored checkpoint.
    let log = common::all_events(&store).await;
    let at = stored.as_deref().map(|s| s.parse().unwrap());
    let mut live = reader.subscribe(&Query::all(), at, SubscribeOptions::default());
    let rest = take(&mut live, log.len() - seen.len(), Duration::from_secs(30)).await;
    seen.extend(rest.into_iter().map(|e| (e.checkpoint, e.event)));

    assert_eq!(restarts.load(Ordering::Relaxed), 3);
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
        "subscription: {} committed events delivered once each across 3 restarts, {} rolled back",
        log.len(),
        rolled_back.len()
    );
}

/// Across a restart of the PostgreSQL server, a subscription waits, reconnects and resumes:
/// nothing lost, nothing twice. It restarts the server, so it does not run with the other tests:
/// `.ci/run` runs it alone afterwards (as root, with `pg_ctlcluster`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the PostgreSQL server; run alone: cargo test --test subscriptions -- --ignored"]
async fn a_subscription_survives_a_server_restart() {
    let restart = std::env::var("DCBSTORE_RESTART_COMMAND")
        .unwrap_or_else(|_| "pg_ctlcluster --skip-systemctl-redirect 15 main restart".into());
    let writer = common::store().await;
    let reader: PgEventStore = common::built_store_in(writer.schema(), "restart_test").await;
    let mut live = reader.subscribe(&Query::all(), None, SubscribeOptions::default());
    for n in 0..10 {
        writer
            .append([event("Before", &["r"], json!({"n": n}))], None)
            .await
            .unwrap();
    }
    let mut delivered = take(&mut live, 10, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 10);

    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .expect("running the restart command");
    assert!(status.success(), "{restart}: {status}");

    // The writer's pooled connections died with the server: its first appends may fail.
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while written < 10 && Instant::now() < deadline {
        match writer
            .append([event("After", &["r"], json!({"n": written}))], None)
            .await
        {
            Ok(_) => written += 1,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e}"),
        }
    }
    delivered.extend(take(&mut live, 10, Duration::from_secs(60)).await);
    assert_each_committed_event_once(&delivered, &writer, 20).await;
}

/// The last subscription of a store is dropped and a new one starts at once: the new one is
/// still woken across stores (the listener serves it, or a new one does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_after_the_last_one_is_still_woken() {
    let writer = common::store().await;
    let application = format!("again_{}", &writer.schema()[..20]);
    let reader = common::built_store_in(writer.schema(), &application).await;
    let slow = SubscribeOptions::default().poll_interval(Duration::from_secs(60));
    for round in 0..3 {
        let mut live = reader.subscribe(&Query::all(), None, slow.clone());
        assert_eq!(
            take(&mut live, round, Duration::from_secs(20)).await.len(),
            round
        );
        writer
            .append([event("Appended", &["a"], json!({"round": round}))], None)
            .await
            .unwrap();
        let got = take(&mut live, 1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1, "round {round}: woken by the other store");
        drop(live);
    }
}

/// A plain `LISTEN` connection on `channel`: each notification it receives is sent on the
/// returned channel.
async fn raw_listener(
    channel: &str,
) -> (
    dcbstore::tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use dcbstore::tokio_postgres::{AsyncMessage, NoTls};
    let (client, mut connection) = dcbstore::tokio_postgres::connect(common::database_url(), NoTls)
        .await
        .unwrap();
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message {
                let _ = sender.send(());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .unwrap();
    (client, received)
}

/// Appends notify only while a subscriber listens somewhere: with nobody listening (a plain
/// `LISTEN` of the channel holds no listener's lock) 20 appends, half of them `append_in`,
/// send no notification; once a subscription of another store listens, the next append
/// notifies again (after the notifier's recheck interval), and so does an `append_in` when its
/// transaction commits, and each notification wakes the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_notify_only_while_a_subscriber_listens() {
    // A short schema, so that the channel is `dcbstore_<schema>` (longer names are hashed).
    let test = common::test_schema();
    let schema = format!("t_listen_{}", &test[test.len() - 16..]);
    let writer = common::emptied(common::store_with_pool_in(4, &schema).await).await;
    let (_raw, mut notified) = raw_listener(&format!("dcbstore_{schema}")).await;

    for n in 0..20 {
        let e = event("Appended", &["a"], json!({"n": n}));
        if n % 2 == 0 {
            writer.append([e], None).await.unwrap();
        } else {
            // In the caller's transaction, which notifies on commit only when someone listens.
            let mut client = writer.pool().get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            writer.append_in(&tx, [e], None).await.unwrap();
            tx.commit().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        notified.try_recv().is_err(),
        "no notification while no subscriber listens"
    );

    let reader =
        common::built_store_in(&schema, &format!("listen_{}", &test[test.len() - 16..])).await;
    let slow = SubscribeOptions::default().poll_interval(Duration::from_secs(60));
    let mut live = reader.subscribe(&Query::all(), None, slow);
    assert_eq!(take(&mut live, 20, Duration::from_secs(20)).await.len(), 20);
    // Past the notifier's recheck interval (250 ms): it finds the listener.
    tokio::time::sleep(Duration::from_millis(600)).await;
    writer
        .append([event("Appended", &["a"], json!({"n": 20}))], None)
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(10), notified.recv()).await;
    assert!(
        matches!(woke, Ok(Some(()))),
        "a notification once a subscriber listens"
    );
    let got = take(&mut live, 1, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        1,
        "the subscriber is woken by it, not by its 60 s poll"
    );
    // So does an append in the caller's transaction, as soon as it commits.
    while notified.try_recv().is_ok() {}
    let mut client = writer.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let e = event("Appended", &["a"], json!({"n": 21}));
    writer.append_in(&tx, [e], None).await.unwrap();
    tx.commit().await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(10), notified.recv()).await;
    assert!(
        matches!(woke, Ok(Some(()))),
        "append_in notifies once a subscriber listens"
    );
    let got = take(&mut live, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "woken by append_in's notification");
}
