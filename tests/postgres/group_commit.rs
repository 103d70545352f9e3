//! Group commit on PostgreSQL: appends that arrive while others are in flight share one
//! transaction, and each keeps its own outcome. Proven by replaying the log after races, and by
//! holding the store's one group in flight while a group forms behind it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dcbstore::{
    AppendCondition, AppendResult, Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions,
};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::common::{self, event};

/// The transaction id each stored event was written by.
async fn tx_ids(store: &PgEventStore) -> HashMap<u64, String> {
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            &format!(
                "SELECT position, tx_id::text FROM \"{}\".events",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
        .collect()
}

fn tagged(tag: &str) -> Query {
    Query::from(QueryItem::tagged([tag.to_string()]))
}

/// An append claiming `tag`, guarded by it.
fn claim(tag: &str) -> (Vec<Event>, Option<AppendCondition>) {
    (
        vec![event("Claimed", &[tag], json!({}))],
        Some(AppendCondition::new(tagged(tag), None)),
    )
}

/// Writers on four hot counters and on boundaries of their own, through two groups in flight (so
/// that appends share transactions and groups race each other): every counter counts 0, 1, 2, … without a gap or a repeat,
/// every acknowledged append is in the log at its positions, nothing else is, replays give the
/// original positions, and transactions did hold several appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_appends_keep_their_own_outcomes() {
    const WRITERS: usize = 24;
    const DECISIONS: usize = 12;
    let store = common::store_with_pool(4).await;
    let store = common::reconfigured(&store, |b| b.max_group_size(16).groups_in_flight(2));
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut acknowledged: Vec<(Vec<Event>, AppendResult)> = Vec::new();
                for d in 0..DECISIONS {
                    let counter = if d % 2 == 0 {
                        format!("counter:{}", (w + d) % 4)
                    } else {
                        format!("own:{w}")
                    };
                    loop {
                        let read = store.read(&tagged(&counter), ReadOptions::default()).await;
                        let read = read.unwrap();
                        let next = event("Counted", &[&counter], json!({"n": read.len()}));
                        let batch = vec![next];
                        let condition = read.append_condition().unwrap();
                        match store.append(batch.clone(), Some(condition)).await {
                            Ok(written) => {
                                acknowledged.push((batch, written));
                                break;
                            }
                            Err(e) if e.is_append_condition_failed() => continue,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
                // The same append again: a replay with the original positions.
                let (batch, first) = acknowledged.last().unwrap().clone();
                let again = store.append(batch, None).await.unwrap();
                assert!(again.is_replay());
                assert_eq!(again.positions(), first.positions());
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }

    let log = common::all_events(&store).await;
    assert_eq!(
        log.len(),
        WRITERS * DECISIONS,
        "every acknowledged append, nothing else"
    );
    let by_id: HashMap<Uuid, u64> = log.iter().map(|e| (e.event.id, e.position)).collect();
    for (batch, written) in &acknowledged {
        let stored: Vec<u64> = batch.iter().map(|e| by_id[&e.id]).collect();
        assert_eq!(stored, written.positions());
    }
    let mut counters: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &log {
        counters
            .entry(e.tags[0].as_str())
            .or_default()
            .push(e.payload["n"].as_u64().unwrap());
    }
    for (counter, counts) in counters {
        let expected: Vec<u64> = (0..counts.len() as u64).collect();
        assert_eq!(counts, expected, "{counter}: a lost update or a gap");
    }
    let transactions: std::collections::HashSet<String> =
        tx_ids(&store).await.into_values().collect();
    assert!(
        transactions.len() < log.len(),
        "{} transactions for {} appends: nothing was grouped",
        transactions.len(),
        log.len()
    );
}

/// Holds the store's one group in flight (an append waiting for a boundary held by an open
/// transaction) so that the appends sent meanwhile form the next group; returns what each of
/// them gave and the holder's transaction, still open.
async fn one_group(
    store: &PgEventStore,
    appends: Vec<(Vec<Event>, Option<AppendCondition>)>,
) -> Vec<dcbstore::Result<AppendResult>> {
    let holder = common::store_with_pool_in(1, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    holder
        .append_in(&open, [event("Held", &["held:first"], json!({}))], None)
        .await
        .unwrap();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            let claim = event("Claimed", &["held:first"], json!({}));
            store
                .append(
                    [claim],
                    Some(AppendCondition::new(tagged("held:first"), None)),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks: Vec<_> = appends
        .into_iter()
        .map(|(batch, condition)| {
            let store = store.clone();
            tokio::spawn(async move { store.append(batch, condition).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    open.rollback().await.unwrap();
    first.await.unwrap().expect("the first group's append");
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes
}

/// Appends of one group share its transaction; a failed condition fails its own append only,
/// and two appends of the group on one boundary conflict as they would one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_one_transaction_each_its_own_outcome() {
    let store = common::store_with_pool(4).await;
    let store = common::reconfigured(&store, |b| b.groups_in_flight(1));
    store
        .append([event("Taken", &["taken"], json!({}))], None)
        .await
        .unwrap();
    let outcomes = one_group(
        &store,
        vec![
            claim("free:a"),
            claim("taken"),
            claim("free:b"),
            claim("free:b"),
            (vec![event("Plain", &["plain"], json!({}))], None),
        ],
    )
    .await;
    // The two claims of free:b arrive in either order: the first wins, the second sees it.
    let ok: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    assert!(ok[0] && !ok[1] && ok[4], "{ok:?}");
    assert!(ok[2] != ok[3], "exactly one claim of free:b wins: {ok:?}");
    let lost = if ok[2] { &outcomes[3] } else { &outcomes[2] };
    for failed in [&outcomes[1], lost] {
        let err = failed.as_ref().unwrap_err();
        assert!(
            err.is_append_condition_failed() && !err.is_retryable(),
            "{err}"
        );
    }
    let won = if ok[2] { 2 } else { 3 };
    let tx = tx_ids(&store).await;
    let written: Vec<&String> = [0, won, 4]
        .iter()
        .map(|i| &tx[&outcomes[*i].as_ref().unwrap().positions()[0]])
        .collect();
    assert!(
        written.windows(2).all(|w| w[0] == w[1]),
        "one transaction: {written:?}"
    );
}

/// A database error in a group (one of its appends waits past the lock timeout for a boundary
/// held elsewhere) fails that append alone: the group runs again append by append, the others
/// are written, and the bad one gets its own honest, retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_in_a_group_fails_only_its_own_append() {
    let store = common::store_with_pool(4).await;
    let store = common::reconfigured(&store, |b| {
        b.lock_timeout(Duration::from_millis(400))
            .groups_in_flight(1)
    });
    let other = common::store_with_pool_in(1, store.schema()).await;
    let mut client = other.pool().get().await.unwrap();
    let blocking = client.transaction().await.unwrap();
    other
        .append_in(&blocking, [event("Held", &["held:bad"], json!({}))], None)
        .await
        .unwrap();
    let outcomes = one_group(
        &store,
        vec![
            claim("fine:1"),
            claim("held:bad"),
            claim("fine:2"),
            (vec![event("Plain", &["plain"], json!({}))], None),
        ],
    )
    .await;
    blocking.rollback().await.unwrap();
    let err = outcomes[1].as_ref().unwrap_err();
    assert_eq!(err.sql_state(), Some("55P03"), "{err}");
    assert!(err.is_retryable(), "{err}");
    for i in [0, 2, 3] {
        outcomes[i].as_ref().expect("a neighbour of the bad append");
    }
    let log = common::all_events(&store).await;
    let tags: Vec<&str> = log.iter().map(|e| e.tags[0].as_str()).collect();
    assert_eq!(tags.iter().filter(|t| **t == "held:bad").count(), 0);
    for tag in ["fine:1", "fine:2", "plain", "held:first"] {
        assert_eq!(tags.iter().filter(|t| **t == tag).count(), 1, "{tag}");
    }
}

/// The unguarded appends of a group go in one statement, and each still gets its own outcome:
/// new events written in order, a resent batch a replay at its original positions, a stored id
/// with other content a conflict, a batch of which only some ids are stored a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unguarded_appends_of_a_group_keep_their_own_outcomes() {
    let store = common::store_with_pool(4).await;
    let store = common::reconfigured(&store, |b| b.groups_in_flight(1));
    let stored = vec![
        event("Stored", &["s"], json!({"n": 1})),
        event("Stored", &["s"], json!({"n": 2})),
    ];
    let first = store.append(stored.clone(), None).await.unwrap();
    let other_content = stored[0].clone().with_metadata(json!({"changed": true}));
    let some_stored = vec![stored[1].clone(), event("New", &["s"], json!({}))];
    let new = |n: usize| {
        (0..n)
            .map(|i| event("New", &["new"], json!({"i": i})))
            .collect::<Vec<_>>()
    };
    let outcomes = one_group(
        &store,
        vec![
            (new(3), None),
            (stored.clone(), None),
            (vec![other_content], None),
            (some_stored, None),
            (new(1), None),
        ],
    )
    .await;
    let written = outcomes[0].as_ref().unwrap();
    assert!(!written.is_replay());
    assert!(written.positions().windows(2).all(|w| w[0] < w[1]));
    let replay = outcomes[1].as_ref().unwrap();
    assert!(replay.is_replay());
    assert_eq!(replay.positions(), first.positions());
    assert!(
        matches!(
            outcomes[2],
            Err(dcbstore::Error::IdempotencyConflict { .. })
        ),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], Err(dcbstore::Error::DuplicateEventId { .. })),
        "{:?}",
        outcomes[3]
    );
    let last = outcomes[4].as_ref().unwrap();
    let tx = tx_ids(&store).await;
    assert_eq!(
        tx[&written.positions()[0]],
        tx[&last.positions()[0]],
        "one transaction"
    );
    let log = common::all_events(&store).await;
    // The two stored, the held group's first append, and the 3 + 1 new ones.
    assert_eq!(log.len(), 2 + 1 + 4);
}
