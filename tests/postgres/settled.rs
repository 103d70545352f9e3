//! `PgEventStore::settled_head`: a position below which the log is complete, for clients that
//! know only positions.

use std::time::Duration;

use dcbstore::{Event, EventStore, Query, ReadOptions};
use serde_json::json;

use crate::common;

/// `below` appended in `transaction`, which the caller holds open, then `above` appended and
/// committed: their positions, the held one below the other.
async fn held_below(
    store: &dcbstore::PgEventStore,
    transaction: &dcbstore::tokio_postgres::Transaction<'_>,
    below: Event,
    above: Event,
) -> (u64, u64) {
    let below = store.append_in(transaction, [below], None).await.unwrap();
    let above = store.append([above], None).await.unwrap();
    assert!(below.last_position() < above.last_position());
    (below.last_position(), above.last_position())
}

/// The settled head waits for an append in flight below the positions it would report, then
/// covers it; one rolled back leaves a gap it passes.
#[tokio::test]
async fn the_settled_head_waits_for_an_append_in_flight_below_it() {
    let store = common::store_with_pool(4).await;
    assert_eq!(store.settled_head().await.unwrap(), None, "an empty store");
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let (_, above) = held_below(
        &store,
        &transaction,
        Event::new("Below", json!({})),
        Event::new("Above", json!({})),
    )
    .await;
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.settled_head().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "it waits for the append in flight");
    transaction.commit().await.unwrap();
    let settled = waiting.await.unwrap().unwrap();
    assert_eq!(settled, Some(above));
    let read = store
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 2, "a read after it holds everything below it");

    // Rolled back: a gap, and the head passes it.
    let transaction = held.transaction().await.unwrap();
    store
        .append_in(&transaction, [Event::new("Gone", json!({}))], None)
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(store.settled_head().await.unwrap(), Some(above));
    let last = store
        .append([Event::new("Last", json!({}))], None)
        .await
        .unwrap();
    assert_eq!(
        store.settled_head().await.unwrap(),
        Some(last.last_position())
    );
}

/// Writers on separate connections: each one's settled head, taken after its append returned,
/// covers that append (read-your-writes), and a read cut at it holds every event below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_settled_head_covers_every_append_that_returned_before_it() {
    let store = common::store_with_pool(12).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..150 {
                let written = store
                    .append([Event::new("Tick", json!({"w": w, "n": n}))], None)
                    .await
                    .unwrap();
                let settled = store.settled_head().await.unwrap().expect("not empty");
                assert!(
                    settled >= written.last_position(),
                    "writer {w}, append {n}: settled {settled} below its own append at {}",
                    written.last_position()
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The settled head of a query waits only for appends in flight that write events matching it:
/// an append held open on another boundary holds up the whole log's settled head, not the
/// query's; one on the query's boundary holds up both.
#[tokio::test]
async fn the_settled_head_of_a_query_waits_only_for_its_own_events() {
    use dcbstore::QueryItem;
    let store = common::store_with_pool(4).await;
    let course = Query::from(QueryItem::tagged(["course:c1"]));
    store
        .append(
            [Event::new("Defined", json!({})).with_tags(["course:c1"])],
            None,
        )
        .await
        .unwrap();
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let (_, joined) = held_below(
        &store,
        &transaction,
        Event::new("Other", json!({})).with_tags(["course:c2"]),
        Event::new("Joined", json!({})).with_tags(["course:c1"]),
    )
    .await;
    let settled = tokio::time::timeout(Duration::from_secs(2), store.settled_head_for(&course))
        .await
        .expect("not held up by another boundary")
        .unwrap();
    assert_eq!(settled, Some(joined));
    let whole = tokio::spawn({
        let store = store.clone();
        async move { store.settled_head().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !whole.is_finished(),
        "the whole log's settled head waits for it"
    );
    transaction.commit().await.unwrap();
    assert_eq!(whole.await.unwrap().unwrap(), Some(joined));

    // Held open on the query's own boundary: the query's settled head waits too.
    let transaction = held.transaction().await.unwrap();
    let (below, _) = held_below(
        &store,
        &transaction,
        Event::new("Left", json!({})).with_tags(["course:c1"]),
        Event::new("Other", json!({})),
    )
    .await;
    let waiting = tokio::spawn({
        let store = store.clone();
        let course = course.clone();
        async move { store.settled_head_for(&course).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "it waits for an event of its boundary"
    );
    transaction.commit().await.unwrap();
    assert!(waiting.await.unwrap().unwrap() > Some(below));
}

/// A settled read waits for an append in flight below the head it would report, returns it, and
/// nothing above the head; read backwards, it is refused.
#[tokio::test]
async fn a_settled_read_is_a_prefix_of_its_query() {
    use dcbstore::{InvalidInput, QueryItem};
    let store = common::store_with_pool(4).await;
    let course = Query::from(QueryItem::tagged(["course:c1"]));
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let (below, above) = held_below(
        &store,
        &transaction,
        Event::new("Joined", json!({})).with_tags(["course:c1"]),
        Event::new("Joined", json!({})).with_tags(["course:c1"]),
    )
    .await;
    let reading = tokio::spawn({
        let (store, course) = (store.clone(), course.clone());
        async move { store.read_settled(&course, ReadOptions::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !reading.is_finished(),
        "it waits for the append in flight below"
    );
    transaction.commit().await.unwrap();
    let (events, head) = reading.await.unwrap().unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, [below, above]);
    assert_eq!(head, Some(above));
    // Nothing in flight: one round trip, the same answer.
    let (again, head_again) = store
        .read_settled(&course, ReadOptions::default())
        .await
        .unwrap();
    assert_eq!((again.len(), head_again), (2, head));
    let refused = store
        .read_settled(&course, ReadOptions::default().backwards())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            dcbstore::Error::InvalidInput(InvalidInput::Argument(_))
        ),
        "{refused}"
    );
}

/// A writer whose event brings more lock keys than one append takes locks whole buckets in
/// place of them (see `locks.rs`): held open, it holds up the settled head of a query on one of
/// its tags, which finds it by that tag's bucket (the query's own key is free).
#[tokio::test]
async fn the_settled_head_waits_for_a_writer_that_locks_buckets() {
    use dcbstore::QueryItem;
    let store = common::store_with_pool(4).await;
    let course = Query::from(QueryItem::tagged(["course:c1"]));
    let mut tags: Vec<String> = (0..1000).map(|i| format!("student:s{i}")).collect();
    tags.push("course:c1".to_string());
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let (oversized, other) = held_below(
        &store,
        &transaction,
        Event::new("Enrolled", json!({})).with_tags(tags),
        Event::new("Other", json!({})).with_tags(["course:c2"]),
    )
    .await;
    let waiting = tokio::spawn({
        let store = store.clone();
        let course = course.clone();
        async move { store.read_settled(&course, ReadOptions::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "it waits for the oversized writer");
    transaction.commit().await.unwrap();
    let (events, head) = waiting.await.unwrap().unwrap();
    assert_eq!(head, Some(other));
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![oversized]);
}
