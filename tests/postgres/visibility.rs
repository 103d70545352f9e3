//! A decision's guard covers what its read could not see. Positions are drawn when a row is
//! inserted and transactions commit in any order, so a read can return position 11 while
//! position 10 is still in flight; the condition derived from the read
//! ([`ReadResult::append_condition`](dcbstore::ReadResult::append_condition)) must then fail once
//! 10 commits, although 10 is not "after" 11.
//!
//! Deterministic interleavings on PostgreSQL: one transaction held open while others commit.
//! The races on separate connections, replayed from the log, run on both backends in the
//! conformance suite (`tests/conformance/visibility.rs`).

use std::time::Duration;

use dcbstore::{
    AppendCondition, EventStore, PgEventStore, Query, QueryItem, ReadOptions, ReadResult,
};
use serde_json::json;

use crate::common::{self, event};

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

/// A kept decision state must see an event committed out of position order. A's event of the
/// course (position 1) is in flight while B's (position 2) commits; the cache's first decision
/// folds B only (and appends nothing). A then commits below what was folded: the next decision
/// must decide from A and B, in position order (the cache reads the whole boundary again, since
/// folding A after B would change the fold's order), and its append holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_decision_sees_an_event_committed_below_what_it_folded() {
    let store = common::store().await;
    let (a, commit_a, a_task) = open_append(&store, "course:c1").await;
    let b = store
        .append([event("SeatBlocked", &["course:c1"], json!({}))], None)
        .await
        .unwrap();
    let mut cache = dcbstore::DecisionCache::new(common::positions_of(course("c1")));
    let mut first = Vec::new();
    cache
        .decide(&store, |seen| {
            first = seen;
            Ok::<_, String>(vec![])
        })
        .await
        .unwrap();
    assert_eq!(first, [b.last_position()], "A is in flight");

    commit_a.send(()).unwrap();
    a_task.await.unwrap();
    let mut second = Vec::new();
    let decided = cache
        .decide(&store, |seen| {
            second = seen;
            Ok::<_, String>(vec![event("Decided", &["course:c1"], json!({}))])
        })
        .await
        .unwrap();
    assert_eq!(second, [a, b.last_position()], "A, below B, in order");
    assert!(decided.is_some());

    // A decision that folded A after B, or missed A, is what the cache must not make: the
    // state it decided from is a whole read's at that moment.
    let whole = common::positions(&store, &course("c1")).await;
    assert_eq!(&whole[..2], &second[..]);
}
