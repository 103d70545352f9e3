//! Consumers and decisions on a streaming replica. A hot standby keeps the bound the store
//! relies on, its snapshot's `xmin`: the transactions running on the primary, and those whose
//! records it has not replayed yet, count as running there.
//! - The feed's frontier is that `xmin`, so the feed read on a replica holds back what commits
//!   out of order on the primary, delivers nothing the replica has not replayed, and a consumer
//!   can move between the primary and the replica with its checkpoint without skipping or
//!   repeating an event.
//! - A decision's read on a replica reports only that `xmin` as its snapshot (the standby's list
//!   of transactions in progress leaves the primary's out), so its append on the primary is
//!   guarded exactly: deterministic interleavings, then 2,000 racing decisions replayed from the
//!   log.
//!
//! These tests need a standby of the test server: `.ci/standby` starts one on 127.0.0.1:5433, and
//! `DATABASE_REPLICA_URL` names it. They take turns (one of them pauses replay) and run with
//! `cargo test --test postgres replica:: -- --ignored`, as CI does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dcbstore::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{Checkpoint, EventStore, FeedEvent, PgEventStore, Query, QueryItem, ReadOptions};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

use crate::common::race::{self, Decider, Race};
use crate::common::{self, event};

/// One replica test at a time: pausing replay holds up every other reader of the standby.
static TURN: Mutex<()> = Mutex::const_new(());

/// How long a test waits for the standby to replay what the primary wrote.
const REPLAY_BOUND: Duration = Duration::from_secs(20);

fn replica_url() -> String {
    std::env::var("DATABASE_REPLICA_URL").expect(
        "DATABASE_REPLICA_URL names a streaming standby of DATABASE_URL (.ci/standby starts one \
         on 127.0.0.1:5433)",
    )
}

/// A pool of `size` connections to the standby.
fn replica_pool(size: usize) -> Pool {
    let config: tokio_postgres::Config = replica_url().parse().expect("a valid replica URL");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(size).build().unwrap()
}

/// This test's turn on the standby (replaying), a fresh store on the primary with a pool of
/// `size`, and the same store on the standby.
async fn turn(size: usize) -> (MutexGuard<'static, ()>, PgEventStore, PgEventStore) {
    let turn = TURN.lock().await;
    let primary = common::store_with_pool(size).await;
    let replica = on_replica(&primary).await;
    replay(&replica, true).await;
    (turn, primary, replica)
}

/// The store `primary` on the standby, once the standby has replayed its schema.
async fn on_replica(primary: &PgEventStore) -> PgEventStore {
    let replica = PgEventStore::builder()
        .schema(primary.schema())
        .from_pool(replica_pool(4))
        .unwrap();
    replayed(primary, &replica).await;
    replica
}

/// Waits until the standby has replayed everything the primary had written when called.
async fn replayed(primary: &PgEventStore, replica: &PgEventStore) {
    let written: String = primary
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let client = replica.pool().get().await.unwrap();
    let deadline = Instant::now() + REPLAY_BOUND;
    loop {
        let caught_up: bool = client
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&written],
            )
            .await
            .unwrap()
            .get(0);
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {written} within {REPLAY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Replay on the standby, paused or resumed.
async fn replay(replica: &PgEventStore, on: bool) {
    let sql = if on {
        "SELECT pg_wal_replay_resume()"
    } else {
        "SELECT pg_wal_replay_pause()"
    };
    let client = replica.pool().get().await.unwrap();
    client.execute(sql, &[]).await.unwrap();
}

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

// ---------------------------------------------------------------------------------------------
// Decisions that read on the replica and append on the primary. A standby's snapshot keeps the
// transactions running on the primary out of its in-progress list (PostgreSQL keeps them in a
// list `pg_current_snapshot()` does not copy), so taken as it is, the guard would take an event
// of such a transaction for one the read saw. A read on a standby keeps only the snapshot's
// `xmin` (every transaction at or above it counts as unseen): the guard is exact, and fails for
// boundary events of transactions at or above that `xmin` even when the read returned them.

/// The boundary of one course.
fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

/// A decision of the course `id`: a subscription.
fn subscribed(id: &str, student: &str) -> dcbstore::Event {
    event(
        "StudentSubscribed",
        &[&format!("course:{id}")],
        json!({"student": student}),
    )
}

/// With nothing in flight on the primary, a decision read on the replica appends on the
/// primary; a second decision from the same read then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_decision_read_on_the_replica_appends_on_the_primary() {
    let (_turn, primary, replica) = turn(2).await;
    primary
        .append([subscribed("c1", "s0")], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;

    let read = replica
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let condition = read.append_condition().unwrap();
    primary
        .append([subscribed("c1", "s1")], Some(condition.clone()))
        .await
        .expect("nothing happened to the boundary since the read");
    let err = primary
        .append([subscribed("c1", "s2")], Some(condition))
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// A decision reads on the replica while a transaction writing an event of its boundary is
/// open on the primary (its row already replayed there, in progress) and a later transaction,
/// elsewhere, has committed (so the open one lies below the snapshot's `xmax`). The open
/// transaction commits; the decision's append must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_replica_read_fails_for_a_transaction_in_flight_on_the_primary() {
    let (_turn, primary, replica) = turn(2).await;
    primary
        .append([subscribed("c1", "s0")], None)
        .await
        .unwrap();
    let holder = common::store_with_pool_in(1, primary.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    holder
        .append_in(&open, [subscribed("c1", "in flight")], None)
        .await
        .unwrap();
    primary
        .append([subscribed("c2", "s9")], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;

    let read = replica
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "the event in flight is not visible");
    open.commit().await.unwrap();
    let err = primary
        .append(
            [subscribed("c1", "s1")],
            Some(read.append_condition().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// The same for an event below the positions the read returned: it was in flight on the
/// primary while a later event of the boundary committed, and the replica read the later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_replica_read_fails_for_an_event_that_commits_below_what_it_read() {
    let (_turn, primary, replica) = turn(2).await;
    let holder = common::store_with_pool_in(1, primary.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    let below = holder
        .append_in(&open, [subscribed("c1", "below")], None)
        .await
        .unwrap();
    let above = primary
        .append([subscribed("c1", "above")], None)
        .await
        .unwrap();
    assert!(below.last_position() < above.last_position());
    replayed(&primary, &replica).await;

    let read = replica
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    let seen: Vec<u64> = read.iter().map(|e| e.position).collect();
    assert_eq!(seen, [above.last_position()]);
    open.commit().await.unwrap();
    let err = primary
        .append(
            [subscribed("c1", "s1")],
            Some(read.append_condition().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// A decision reads on the replica while an event of its boundary is committed on the primary
/// but not replayed yet (replay paused): its append must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_replica_read_fails_for_an_event_the_replica_has_not_replayed() {
    let (_turn, primary, replica) = turn(2).await;
    primary
        .append([subscribed("c1", "s0")], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;
    replay(&replica, false).await;
    let read = async {
        primary
            .append([subscribed("c1", "unreplayed")], None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        replica.read(&course("c1"), ReadOptions::default()).await
    }
    .await;
    replay(&replica, true).await;
    let read = read.unwrap();
    assert_eq!(read.len(), 1, "the unreplayed event is not visible");
    let err = primary
        .append(
            [subscribed("c1", "s1")],
            Some(read.append_condition().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// Deciders that read on the replica and append on the primary, against writers on the primary
/// that leave gaps in commit order: the race of `common::race` (2,000 decisions, replayed from
/// the log), with its reads on the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn racing_decisions_read_on_the_replica_never_miss_an_event() {
    let (_turn, primary, replica) = turn(8).await;
    let race = Race::reading_on(Arc::new(replica), primary);
    race::run(race, Decider::ReadThenAppend).await;
}
