//! The guard under concurrency: many writers (for PostgreSQL, each on its own connection) race
//! on one boundary, and an invariant is checked afterwards by replaying the log. Every race runs
//! on both backends.

use std::sync::Arc;

use dcbstore::{AppendCondition, Event, EventStore, Query, QueryItem, ReadOptions};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;
use tokio::sync::Barrier;

use crate::common::{Backend, Store, StoreExt, backends, store_on};

const WRITERS: usize = 32;

/// Runs `WRITERS` tasks that each get their own pooled connection and start together.
async fn race<F, Fut, T>(store: &Store, writer: F) -> Vec<T>
where
    F: Fn(Store, usize, Arc<Barrier>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| tokio::spawn(writer(store.clone(), i, barrier.clone())))
        .collect();
    let mut results = Vec::with_capacity(WRITERS);
    for t in tasks {
        results.push(t.await.expect("writer task"));
    }
    results
}

/// Defines `course` with `capacity` seats.
async fn define_course(store: &Store, course: &str, capacity: usize) {
    store
        .append(
            [Event::new("CourseDefined", json!({"capacity": capacity})).with_tags([course])],
            None,
        )
        .await
        .unwrap();
}

/// The subscriptions to `course`, counted by replaying the log.
async fn subscriptions_in_log(store: &Store, course: &str) -> usize {
    store
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "StudentSubscribed" && e.has_tag(course))
        .count()
}

/// (a) Students compete for the seats of a course with capacity 5: read the course's events,
/// decide, append guarded; retry on conflict. Every round ends with exactly 5 subscriptions.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn course_capacity_is_never_exceeded(backend: Backend) {
    const CAPACITY: usize = 5;
    const ROUNDS: usize = 8;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let course = format!("course:r{round}");
        define_course(&store, &course, CAPACITY).await;
        let outcomes = race(&store, |store, student, barrier| {
            let course = course.clone();
            async move {
                let query = Query::from(QueryItem::tagged([course.clone()]));
                let mut first = true;
                loop {
                    let read = store.read(&query, ReadOptions::default()).await.unwrap();
                    if first {
                        barrier.wait().await;
                        first = false;
                    }
                    let capacity = read
                        .iter()
                        .find(|e| e.event_type == "CourseDefined")
                        .map(|e| e.payload["capacity"].as_u64().unwrap() as usize)
                        .unwrap();
                    let taken = read
                        .iter()
                        .filter(|e| e.event_type == "StudentSubscribed")
                        .count();
                    if taken >= capacity {
                        return false;
                    }
                    let subscribe = Event::new("StudentSubscribed", json!({"student": student}))
                        .with_tags([course.clone(), format!("student:{student}")]);
                    match store
                        .append(
                            [subscribe],
                            Some(AppendCondition::new(query.clone(), read.last_position())),
                        )
                        .await
                    {
                        Ok(_) => return true,
                        Err(e) if e.is_append_condition_failed() => continue,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
        })
        .await;
        let winners = outcomes.iter().filter(|w| **w).count();
        let subscriptions = subscriptions_in_log(&store, &course).await;
        assert_eq!(
            subscriptions, CAPACITY,
            "round {round}: the log holds {subscriptions} subscriptions"
        );
        assert_eq!(winners, CAPACITY, "round {round}");
    }
}

/// (a') The same seats while four writers flood the log with batches of unrelated events, so
/// that a decision's guard usually finds more events after its read than the tail it checks
/// first (64): the seats still never run over.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn course_capacity_holds_while_the_log_floods(backend: Backend) {
    const CAPACITY: usize = 5;
    const ROUNDS: usize = 4;
    const FLOODERS: usize = 4;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let course = format!("course:flood{round}");
        define_course(&store, &course, CAPACITY).await;
        let outcomes = race(&store, |store, writer, barrier| {
            let course = course.clone();
            async move {
                barrier.wait().await;
                if writer < FLOODERS {
                    for batch in 0..20 {
                        let noise = (0..100).map(|i| {
                            Event::new("Noise", json!({"writer": writer, "batch": batch, "i": i}))
                                .with_tags(["noise"])
                        });
                        store.append(noise, None).await.unwrap();
                    }
                    return false;
                }
                let query = Query::from(QueryItem::tagged([course.clone()]));
                loop {
                    let read = store.read(&query, ReadOptions::default()).await.unwrap();
                    let taken = read
                        .iter()
                        .filter(|e| e.event_type == "StudentSubscribed")
                        .count();
                    if taken >= CAPACITY {
                        return false;
                    }
                    // Let the floods in between the read and the append.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    let subscribe = Event::new("StudentSubscribed", json!({"student": writer}))
                        .with_tags([course.clone()]);
                    match store
                        .append(
                            [subscribe],
                            Some(AppendCondition::new(query.clone(), read.last_position())),
                        )
                        .await
                    {
                        Ok(_) => return true,
                        Err(e) if e.is_append_condition_failed() => continue,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
        })
        .await;
        let subscriptions = subscriptions_in_log(&store, &course).await;
        assert_eq!(
            subscriptions, CAPACITY,
            "round {round}: the log holds {subscriptions} subscriptions"
        );
        assert_eq!(outcomes.iter().filter(|w| **w).count(), CAPACITY);
    }
}

/// (b) Everyone claims the same username at once: exactly one wins.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_username_is_claimed_once(backend: Backend) {
    const ROUNDS: usize = 10;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let tag = format!("username:user{round}");
        let outcomes = race(&store, |store, writer, barrier| {
            let tag = tag.clone();
            async move {
                let query = Query::from(QueryItem::tagged([tag.clone()]));
                let read = store.read(&query, ReadOptions::default()).await.unwrap();
                assert!(read.is_empty());
                barrier.wait().await;
                let claim = Event::new("UsernameClaimed", json!({"by": writer})).with_tags([tag]);
                match store
                    .append(
                        [claim],
                        Some(AppendCondition::new(query, read.last_position())),
                    )
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.is_append_condition_failed() => false,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        })
        .await;
        let claims = store
            .all_events()
            .await
            .into_iter()
            .filter(|e| e.has_tag(&tag))
            .count();
        assert_eq!(claims, 1, "round {round}: the log holds {claims} claims");
        assert_eq!(outcomes.iter().filter(|w| **w).count(), 1, "round {round}");
    }
}

/// (c) Half the writers guard with a type-only query, half with a tag-only query; both match
/// the event every writer appends. Only one may commit per round.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn type_only_and_tag_only_conditions_exclude_each_other(backend: Backend) {
    const ROUNDS: usize = 10;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let event_type = format!("SlotTaken{round}");
        let tag = format!("slot:{round}");
        let outcomes = race(&store, |store, writer, barrier| {
            let (event_type, tag) = (event_type.clone(), tag.clone());
            async move {
                let query = if writer % 2 == 0 {
                    Query::from(QueryItem::typed([event_type.clone()]))
                } else {
                    Query::from(QueryItem::tagged([tag.clone()]))
                };
                barrier.wait().await;
                let taken = Event::new(event_type, json!({"by": writer})).with_tags([tag]);
                match store
                    .append([taken], Some(AppendCondition::new(query, None)))
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.is_append_condition_failed() => false,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        })
        .await;
        let taken = store
            .all_events()
            .await
            .into_iter()
            .filter(|e| e.has_tag(&tag))
            .count();
        assert_eq!(
            taken, 1,
            "round {round}: the log holds {taken} events for one slot"
        );
        assert_eq!(outcomes.iter().filter(|w| **w).count(), 1, "round {round}");
    }
}

/// (c') Half the writers append, unguarded, one event with 200 tags (far more lock keys than one
/// append takes, so the store locks buckets of keys for it) that carries the round's tag; the
/// other half read that tag's events and record, guarded by their read, how many they saw. The
/// log must agree with every record: exactly that many tagged events precede it.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guard_sees_every_event_of_an_oversized_append_before_it(backend: Backend) {
    const ROUNDS: usize = 12;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let tag = format!("slot:{round}");
        race(&store, |store, writer, barrier| {
            let tag = tag.clone();
            async move {
                barrier.wait().await;
                if writer % 2 == 0 {
                    let mut tags: Vec<String> = (0..200)
                        .map(|i| format!("many:{round}:{writer}:{i}"))
                        .collect();
                    tags.push(tag);
                    let wide = Event::new("Imported", json!({})).with_tags(tags);
                    store.append([wide], None).await.unwrap();
                    return;
                }
                let query = Query::from(QueryItem::tagged([tag]));
                loop {
                    let read = store.read(&query, ReadOptions::default()).await.unwrap();
                    let seen = Event::new("Counted", json!({"seen": read.len()}))
                        .with_tags([format!("count:{round}:{writer}")]);
                    let condition = read.append_condition().unwrap();
                    match store.append([seen], Some(condition)).await {
                        Ok(_) => return,
                        Err(e) if e.is_append_condition_failed() => continue,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
        })
        .await;
        let log = store.all_events().await;
        let tagged_before = |position: u64| {
            log.iter()
                .filter(|e| e.position < position && e.has_tag(&tag))
                .count()
        };
        let counts: Vec<_> = log
            .iter()
            .filter(|e| {
                e.event_type == "Counted" && e.tags[0].starts_with(&format!("count:{round}:"))
            })
            .collect();
        assert_eq!(counts.len(), WRITERS / 2, "round {round}");
        for c in counts {
            assert_eq!(
                c.payload["seen"],
                json!(tagged_before(c.position)),
                "round {round}: a guard missed an event before it at position {}",
                c.position
            );
        }
    }
}

/// (d) A payload-keyed condition against writers whose events carry no tags: the lending rule
/// "a copy is lent to one reader at a time" with the book identified only in the payload.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payload_conditions_exclude_each_other(backend: Backend) {
    const ROUNDS: usize = 6;
    let store = store_on(backend).await;
    for round in 0..ROUNDS {
        let book = format!("b{round}");
        let outcomes = race(&store, |store, reader, barrier| {
            let book = book.clone();
            async move {
                // Readers guard on "book or reader", the query a lending decision reads.
                let query = Query::from(
                    QueryItem::typed(["BookCopyLent", "BookCopyReturned"])
                        .payload_any_of([("BookID", json!(book)), ("ReaderID", json!(reader))]),
                );
                barrier.wait().await;
                let lent = Event::new("BookCopyLent", json!({"BookID": book, "ReaderID": reader}));
                match store
                    .append([lent], Some(AppendCondition::new(query, None)))
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.is_append_condition_failed() => false,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        })
        .await;
        let lent = store
            .all_events()
            .await
            .into_iter()
            .filter(|e| e.payload["BookID"] == json!(book))
            .count();
        assert_eq!(lent, 1, "round {round}: book lent {lent} times");
        assert_eq!(outcomes.iter().filter(|w| **w).count(), 1, "round {round}");
    }
}

/// Writers on disjoint boundaries all succeed: the locks do not make them conflict.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_boundaries_all_succeed(backend: Backend) {
    let store = store_on(backend).await;
    let outcomes = race(&store, |store, writer, barrier| async move {
        let tag = format!("account:{writer}");
        let query = Query::from(QueryItem::tagged([tag.clone()]));
        barrier.wait().await;
        for n in 0..5 {
            let read = store.read(&query, ReadOptions::default()).await.unwrap();
            assert_eq!(read.len(), n);
            store
                .append(
                    [Event::new("Deposited", json!({"n": n})).with_tags([tag.clone()])],
                    Some(AppendCondition::new(query.clone(), read.last_position())),
                )
                .await
                .expect("no one else writes to this boundary");
        }
        true
    })
    .await;
    assert!(outcomes.into_iter().all(|ok| ok));
    assert_eq!(store.event_count().await, WRITERS * 5);
}
