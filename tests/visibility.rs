//! A decision's guard covers what its read could not see. Positions are drawn when a row is
//! inserted and transactions commit in any order, so a read can return position 11 while
//! position 10 is still in flight; the condition derived from the read
//! ([`ReadResult::append_condition`](dcbstore::ReadResult::append_condition)) must then fail once
//! 10 commits, although 10 is not "after" 11.
//!
//! First deterministic interleavings on PostgreSQL (one transaction held open while others
//! commit), then races on separate connections, replayed from the log, on both backends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{
    AppendCondition, DecideError, Event, EventStore, PgEventStore, Projection, Query, QueryItem,
    ReadOptions, ReadResult, RetryPolicy, decide_with,
};
use rstest::rstest;
use serde_json::json;

use common::{AnyStore, Backend, event};

fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

/// Appends a `SeatBlocked` event tagged `tag` in a transaction that stays open until the returned
/// sender fires (or is dropped); returns the event's position, the sender and the task.
async fn open_append(
    store: &PgEventStore,
    tag: &str,
) -> (
    u64,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (position_tx, position_rx) = tokio::sync::oneshot::channel();
    let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
    let (store, tag) = (store.clone(), tag.to_string());
    let task = tokio::spawn(async move {
        let mut client = store.pool().get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let written = store
            .append_in(&tx, [event("SeatBlocked", &[&tag], json!({}))], None)
            .await
            .unwrap();
        position_tx.send(written.last_position()).unwrap();
        let _ = commit_rx.await;
        tx.commit().await.unwrap();
    });
    (position_rx.await.unwrap(), commit_tx, task)
}

/// A held open on `held_tag` (position 1), then B on `course:c1` committed (position 2), then C's
/// read of course `c1`, which sees B only. Returns the read and A's commit trigger and task.
async fn read_between(
    store: &PgEventStore,
    held_tag: &str,
) -> (
    ReadResult,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (a, commit_a, a_task) = open_append(store, held_tag).await;
    let b = store
        .append([event("SeatBlocked", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    assert!(a < b.last_position(), "A drew its position first");
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.last_position(), Some(b.last_position()));
    assert_eq!(read.len(), 1, "A has not committed: the read sees B only");
    (read, commit_a, a_task)
}

/// The reproduction of the gap: A appends to the course in a transaction that commits late
/// (position 1), B appends and commits at once (position 2), C reads (sees 2 only), decides and
/// appends guarded by its read. C's append waits for A's lock; when A commits, C must fail: its
/// decision never saw A's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_fails_for_an_event_that_committed_below_what_it_read() {
    let store = common::store_with_pool(4).await;
    let (read, commit_a, a_task) = read_between(&store, "course:c1").await;
    let condition = read.append_condition().unwrap();
    let c = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    [event("StudentSubscribed", &["course:c1"], json!({}))],
                    Some(condition),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!c.is_finished(), "C waits for A's lock on the course");
    commit_a.send(()).unwrap();
    a_task.await.unwrap();

    let err = c.await.unwrap().unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
    assert_eq!(common::row_count(&store).await, 2, "C wrote nothing");
}

/// A condition built by hand from a bare position keeps the DCB specification's position
/// semantics, exactly as documented: the same interleaving lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_built_condition_has_position_semantics_only() {
    let store = common::store_with_pool(4).await;
    let (read, commit_a, a_task) = read_between(&store, "course:c1").await;
    let by_hand = AppendCondition::new(course("c1"), read.last_position());
    commit_a.send(()).unwrap();
    a_task.await.unwrap();
    store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            Some(by_hand),
        )
        .await
        .expect("nothing matching is after the position read");
}

/// The trap of the transaction id: a writer draws its position before its transaction id, so an
/// event can sit below the positions a read returned with a transaction id at or above the read
/// snapshot's `xmax` (not among the transactions the snapshot lists as in progress). Here
/// position 1 is drawn from the sequence, B commits position 2, C reads, and only then does a
/// writer whose transaction has no id yet insert position 1 and commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_transaction_started_after_the_read_still_fails_the_guard() {
    let store = common::store_with_pool(4).await;
    let events = format!("\"{}\".events", store.schema());
    let client = store.pool().get().await.unwrap();
    // The position is drawn first (in a transaction of its own: `nextval` may assign the
    // drawing transaction an id, and the point is a writer that has none yet)...
    let position: i64 = client
        .query_one(
            &format!("SELECT nextval(pg_get_serial_sequence('{events}', 'position'))"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut writer = store.pool().get().await.unwrap();
    let writer = writer.transaction().await.unwrap();
    store
        .append([event("SeatBlocked", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    let read = store
        .read(&course("c1"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);

    writer
        .execute(
            &format!(
                "INSERT INTO {events} (position, event_id, event_type, tags, payload) \
                 OVERRIDING SYSTEM VALUE \
                 VALUES ($1, gen_random_uuid(), 'SeatBlocked', ARRAY['course:c1'], '{{}}')"
            ),
            &[&position],
        )
        .await
        .unwrap();
    let xmax = read.snapshot().to_string();
    let xmax: u64 = xmax.split(':').nth(2).unwrap().parse().unwrap();
    let tx_id: String = writer
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        tx_id.parse::<u64>().unwrap() >= xmax,
        "the writer's transaction id {tx_id} is not below the read's xmax {xmax}"
    );
    writer.commit().await.unwrap();

    let err = store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            Some(read.append_condition().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// No new false conflicts: an event the read saw does not fail the condition, nor does an event
/// of another boundary whose transaction was in progress during the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_read_saw_and_other_boundaries_do_not_fail_it() {
    let store = common::store_with_pool(4).await;
    let (read, commit_other, other_task) = read_between(&store, "course:c2").await;
    commit_other.send(()).unwrap();
    other_task.await.unwrap();
    store
        .append(
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            Some(read.append_condition().unwrap()),
        )
        .await
        .expect("the decision saw everything of its boundary");
}

/// The same gap inside the caller's transaction: `read_in`, then `append_in` guarded by that
/// read, in one READ COMMITTED transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_in_and_append_in_carry_what_the_read_saw() {
    let store = common::store_with_pool(4).await;
    let (_, commit_a, a_task) = open_append(&store, "course:c1").await;
    store
        .append([event("SeatBlocked", &["course:c1"], json!({}))], None)
        .await
        .unwrap();

    let decider = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut client = store.pool().get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let read = store
                .read_in(&*tx, &course("c1"), ReadOptions::default())
                .await
                .unwrap();
            assert_eq!(read.len(), 1);
            let condition = read.append_condition().unwrap();
            let outcome = store
                .append_in(
                    &tx,
                    [event("StudentSubscribed", &["course:c1"], json!({}))],
                    Some(condition),
                )
                .await;
            tx.rollback().await.unwrap();
            outcome
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    commit_a.send(()).unwrap();
    a_task.await.unwrap();
    let err = decider.await.unwrap().unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// Two decisions in one caller's transaction, which had written before the first read (so its
/// own transaction id is below the snapshot's `xmax`, and its snapshot shows its own writes):
/// what the transaction appended after a read still fails a condition derived from that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_s_own_append_after_its_read_fails_the_read_s_condition() {
    let store = common::store_with_pool(4).await;
    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    store
        .append_in(
            &tx,
            [event("CourseDefined", &["course:c1"], json!({}))],
            None,
        )
        .await
        .unwrap();
    // Others commit meanwhile, so that the next snapshot's xmax passes this transaction's id.
    for _ in 0..3 {
        store
            .append([event("Elsewhere", &["course:c2"], json!({}))], None)
            .await
            .unwrap();
    }
    let read = store
        .read_in(&*tx, &course("c1"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "the read shows the transaction's own event");
    let condition = read.append_condition().unwrap();
    store
        .append_in(
            &tx,
            [event("StudentSubscribed", &["course:c1"], json!({}))],
            None,
        )
        .await
        .unwrap();
    let err = store
        .append_in(
            &tx,
            [event(
                "StudentSubscribed",
                &["course:c1"],
                json!({"second": true}),
            )],
            Some(condition),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
    tx.rollback().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Races: writers of unguarded events on a shared tag, each leaving a gap in commit order again
// and again (an event appended in a transaction held open a moment while the next one commits,
// as when a read model is updated in the same commit), while deciders decide over a tag of their
// own plus the shared one. Every decision writes how many events of its boundary it saw and the
// last position it read; replaying the log afterwards, the boundary must hold exactly that many
// events at or below that position: nothing below it was missed. The tags move on to a new epoch
// every `EPOCH` rounds of the noise writers, so that boundaries (and reads) stay small however
// long the race runs.

const DECIDERS: usize = 4;
const NOISE_WRITERS: usize = 2;
const DECISIONS: usize = 2_000;
const EPOCH: usize = 40;
const RACE_LIMIT: Duration = Duration::from_secs(240);

fn shared(epoch: usize) -> String {
    format!("shared:{epoch}")
}

fn own(decider: usize, epoch: usize) -> String {
    format!("decider:{decider}:{epoch}")
}

fn boundary(decider: usize, epoch: usize) -> Query {
    Query::from_items([
        QueryItem::tagged([own(decider, epoch)]),
        QueryItem::tagged([shared(epoch)]),
    ])
}

fn decided(decider: usize, epoch: usize, seen: usize, last: Option<u64>) -> Event {
    Event::new(
        "Decided",
        json!({"decider": decider, "epoch": epoch, "seen": seen, "last": last.unwrap_or(0)}),
    )
    .with_tags([own(decider, epoch)])
}

/// How the deciders of a race decide.
#[derive(Debug, Clone, Copy)]
enum Decider {
    /// `read`, then `append` guarded by `read.append_condition()`.
    ReadThenAppend,
    /// `decide` with a projection of the boundary.
    Decide,
}

/// Until `stop`: appends an unguarded event on the shared tag, and while it is not committed yet
/// appends the next one on another connection (which commits first unless it has to wait for a
/// lock); then commits the first and pauses.
async fn noise(store: AnyStore, writer: usize, rounds: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tag = shared(rounds.fetch_add(1, Ordering::Relaxed) / EPOCH);
        let mut noise = || {
            n += 1;
            Event::new("Noise", json!({"writer": writer, "n": n})).with_tags([tag.clone()])
        };
        let (first, second) = (noise(), noise());
        match &store {
            AnyStore::Postgres(pg) => {
                let mut client = pg.pool().get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                pg.append_in(&tx, [first], None).await.unwrap();
                // On its own connection and not awaited before the commit: behind a decider
                // queued for the shared tag's lock, it waits for that commit.
                let next = tokio::spawn({
                    let pg = pg.clone();
                    async move { pg.append([second], None).await }
                });
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.commit().await.unwrap();
                next.await.unwrap().unwrap();
            }
            AnyStore::Memory(memory) => {
                memory.append([first], None).await.unwrap();
                memory.append([second], None).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(10 + n % 16)).await;
    }
}

/// Makes decisions until `DECISIONS` have succeeded in all (or the time is up).
async fn decider(
    store: AnyStore,
    id: usize,
    how: Decider,
    done: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
) {
    let started = Instant::now();
    while done.load(Ordering::Relaxed) < DECISIONS && started.elapsed() < RACE_LIMIT {
        let epoch = rounds.load(Ordering::Relaxed) / EPOCH;
        let query = boundary(id, epoch);
        let succeeded = match how {
            Decider::ReadThenAppend => {
                let read = store.read(&query, ReadOptions::default()).await.unwrap();
                let event = decided(id, epoch, read.len(), read.last_position());
                match store
                    .append([event], Some(read.append_condition().unwrap()))
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.is_append_condition_failed() => false,
                    Err(e) => panic!("decider {id}: {e}"),
                }
            }
            Decider::Decide => {
                let seen = Projection::new(query, (0usize, None), |s, e| {
                    *s = (s.0 + 1, Some(e.position));
                });
                let once = RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                };
                match decide_with(&store, &seen, once, |(n, last)| {
                    Ok::<_, String>(vec![decided(id, epoch, n, last)])
                })
                .await
                {
                    Ok(_) => true,
                    Err(DecideError::TooManyConflicts { .. }) => false,
                    Err(e) => panic!("decider {id}: {e}"),
                }
            }
        };
        // The in-memory store answers without awaiting: let the noise writers run.
        tokio::task::yield_now().await;
        if succeeded {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::time::sleep(Duration::from_micros(200 * (id as u64 % 4 + 1))).await;
        }
    }
}

/// Runs the race and checks every decision against the log.
async fn race(backend: Backend, how: Decider) {
    let store = AnyStore::new(backend).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..NOISE_WRITERS)
        .map(|w| tokio::spawn(noise(store.clone(), w, rounds.clone(), stop.clone())))
        .collect();
    let deciders: Vec<_> = (0..DECIDERS)
        .map(|d| tokio::spawn(decider(store.clone(), d, how, done.clone(), rounds.clone())))
        .collect();
    for d in deciders {
        d.await.expect("decider task");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("noise writer task");
    }

    let log = store.all_events().await;
    let decisions: Vec<_> = log.iter().filter(|e| e.event_type == "Decided").collect();
    assert!(
        decisions.len() >= DECISIONS,
        "only {} decisions in {RACE_LIMIT:?}",
        decisions.len()
    );
    let noise = log.iter().filter(|e| e.event_type == "Noise").count();
    eprintln!(
        "{backend:?} {how:?}: {} decisions and {noise} noise events in {:?}",
        decisions.len(),
        started.elapsed()
    );
    let mut blind = Vec::new();
    for d in &decisions {
        let field = |name: &str| d.payload[name].as_u64().unwrap();
        let query = boundary(field("decider") as usize, field("epoch") as usize);
        let (seen, last) = (field("seen") as usize, field("last"));
        let in_log = log
            .iter()
            .filter(|e| e.position <= last && query.matches(e))
            .count();
        if in_log != seen {
            blind.push((d.position, seen, in_log, last));
        }
    }
    assert!(
        blind.is_empty(),
        "{} of {} decisions missed events at or below the position they read \
         (position, seen, in the log, last read): {:?}",
        blind.len(),
        decisions.len(),
        &blind[..blind.len().min(10)]
    );
    assert!(noise > 0, "the noise writers wrote");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deciders_never_miss_an_event_of_their_boundary(
    #[values(Backend::Postgres, Backend::Memory)] backend: Backend,
) {
    race(backend, Decider::ReadThenAppend).await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_decide_calls_never_miss_an_event_of_their_boundary(
    #[values(Backend::Postgres, Backend::Memory)] backend: Backend,
) {
    race(backend, Decider::Decide).await;
}
