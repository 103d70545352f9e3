//! Decisions through the protocol stay exact under out-of-order commits: a read (or a head) that
//! reports position p has seen every event at or below p that will ever commit, so a client
//! that guards its decision with `after` alone is never blind. PostgreSQL only: in memory, one
//! writer at a time makes every read a prefix.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dcbstore::{Event, EventStore, Query, QueryItem, ReadOptions};
use dcbstore_server::proto;
use serde_json::json;

use crate::common::*;

/// The protocol decision of these tests: claim `name` unless a claim of it is seen; guard the
/// claim with the read's head. `Ok(true)`: claimed.
async fn claim(client: &mut Client, name: &str, by: &str) -> Result<bool, tonic::Status> {
    let tag = format!("username:{name}");
    let q = query(&[(&["Claimed"], &[tag.as_str()])]);
    let request = proto::ReadRequest {
        query: Some(q.clone()),
        ..Default::default()
    };
    let responses = read_all(client, request).await?;
    let head = responses.last().and_then(|r| r.head);
    if responses.iter().any(|r| !r.events.is_empty()) {
        SEEN.fetch_add(1, Ordering::SeqCst);
        return Ok(false);
    }
    let condition = proto::AppendCondition {
        fail_if_events_match: Some(q),
        after: head,
    };
    let data = json!({"name": name, "by": by}).to_string();
    match append(
        client,
        vec![event("Claimed", &[tag.as_str()], data.as_bytes())],
        Some(condition),
    )
    .await
    {
        Ok(_) => {
            CLAIMED.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            REFUSED.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        }
        Err(s) => Err(s),
    }
}

// What the protocol's decisions did, for the race's report.
static SEEN: AtomicUsize = AtomicUsize::new(0);
static CLAIMED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// Claims of each name, replayed from the log through the library.
async fn claims(store: &dcbstore::PgEventStore) -> HashMap<String, usize> {
    let all = store
        .read(
            &Query::from(QueryItem::typed(["Claimed"])),
            ReadOptions::default(),
        )
        .await
        .expect("the log");
    let mut counts = HashMap::new();
    for e in all.events() {
        *counts
            .entry(e.payload["name"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

fn claimed(name: &str, by: &str) -> Event {
    Event::new("Claimed", json!({"name": name, "by": by})).with_tags([format!("username:{name}")])
}

#[tokio::test]
async fn a_read_waits_for_an_append_in_flight_below_what_it_would_report() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let server = start(&backend).await;
    let store = backend.store().await;
    let mut client = client(&server).await;
    // A claim of ada drawn at p1 and held open, then an unrelated event committed above it.
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let p1 = store
        .append_in(&transaction, [claimed("ada", "library")], None)
        .await
        .unwrap();
    let p2 = store
        .append([Event::new("Other", json!({}))], None)
        .await
        .unwrap();
    assert!(p2.last_position() > p1.last_position());
    // The protocol decision starts while the claim is in flight...
    let decision = tokio::spawn(async move { claim(&mut client, "ada", "protocol").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !decision.is_finished(),
        "the read waits for the append in flight below it"
    );
    // ...and sees the claim once it commits: it does not claim ada a second time.
    transaction.commit().await.unwrap();
    let claimed_again = decision.await.unwrap().expect("the decision runs");
    assert!(
        !claimed_again,
        "the decision saw the claim committed below its head"
    );
    assert_eq!(claims(&store).await["ada"], 1);
    // The same for a held append that rolls back: the decision then claims.
    let transaction = held.transaction().await.unwrap();
    store
        .append_in(&transaction, [claimed("bob", "library")], None)
        .await
        .unwrap();
    store
        .append([Event::new("Other", json!({}))], None)
        .await
        .unwrap();
    let mut client2 = crate::common::client(&server).await;
    let decision = tokio::spawn(async move { claim(&mut client2, "bob", "protocol").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    transaction.rollback().await.unwrap();
    assert!(decision.await.unwrap().unwrap(), "nothing was in the way");
    assert_eq!(claims(&store).await["bob"], 1);
    end(server, &backend).await;
}

#[tokio::test]
async fn a_head_covers_every_event_below_it() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let server = start(&backend).await;
    let store = backend.store().await;
    let mut client = client(&server).await;
    let mut held = store.pool().get().await.unwrap();
    let transaction = held.transaction().await.unwrap();
    let below = store
        .append_in(&transaction, [Event::new("A", json!({}))], None)
        .await
        .unwrap();
    let above = store
        .append([Event::new("B", json!({}))], None)
        .await
        .unwrap();
    let head = tokio::spawn(async move { client.head(proto::HeadRequest {}).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!head.is_finished(), "no head above an append in flight");
    transaction.commit().await.unwrap();
    let head = head.await.unwrap().unwrap().into_inner().position;
    assert_eq!(head, Some(above.last_position()));
    assert!(below.last_position() < above.last_position());
    end(server, &backend).await;
}

/// Protocol clients and library writers claim the same names at once: every fourth decision
/// moves on to a fresh name, which the library's writers claim too. They hold their transactions
/// open for a moment after they draw positions, so commits land out of position order. Replayed
/// from the log: no name is claimed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_protocol_decisions_never_claim_a_name_twice() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    const CLIENTS: usize = 8;
    const DECISIONS: usize = 2_000;
    const HOLD_MS: u64 = 20;
    let server = start(&backend).await;
    let store = backend.store().await;
    let decided = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = client(&server).await;
        let decided = decided.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = decided.fetch_add(1, Ordering::SeqCst);
                if n >= DECISIONS {
                    break;
                }
                let name = format!("n{}", n / 4);
                let by = format!("client {c}");
                claim(&mut client, &name, &by)
                    .await
                    .unwrap_or_else(|s| panic!("{by}: {s:?}"));
            }
        }));
    }
    // Library writers: read with a snapshot, append in a transaction held open a moment.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let stop = stop.clone();
        let decided = decided.clone();
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let name = format!("n{}", decided.load(Ordering::SeqCst) / 4 + 1);
                let q =
                    Query::from(QueryItem::typed(["Claimed"]).tags([format!("username:{name}")]));
                let read = store.read(&q, ReadOptions::default()).await.unwrap();
                let mut client = store.pool().get().await.unwrap();
                let transaction = client.transaction().await.unwrap();
                let written = if read.is_empty() {
                    let guard = Some(read.append_condition().unwrap());
                    store
                        .append_in(&transaction, [claimed(&name, "library")], guard)
                        .await
                } else {
                    store
                        .append_in(&transaction, [Event::new("Other", json!({}))], None)
                        .await
                };
                if written.is_err() {
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(HOLD_MS)).await;
                transaction.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let counts = claims(&store).await;
    eprintln!(
        "{} names; protocol decisions that saw a claim {SEEN:?}, claimed {CLAIMED:?}, were refused {REFUSED:?}",
        counts.len()
    );
    assert!(
        CLAIMED.load(Ordering::SeqCst) > 0,
        "protocol clients won some names"
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} names claimed twice, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert!(
        counts.len() >= DECISIONS / 4,
        "every name was claimed: {}",
        counts.len()
    );
    end(server, &backend).await;
}

/// Clients on boundaries of their own never conflict: each decision's read includes the
/// client's own appends (read-your-writes through the settled head).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_protocol_decisions_never_conflict() {
    for backend in Backend::all() {
        let server = start(&backend).await;
        let mut tasks = Vec::new();
        for c in 0..8 {
            let mut client = client(&server).await;
            tasks.push(tokio::spawn(async move {
                let mine = format!("client:{c}:{}", uuid::Uuid::new_v4());
                for n in 0..150 {
                    let q = query(&[(&["Step"], &[mine.as_str()])]);
                    let (seen, head) = read(&mut client, Some(q.clone())).await;
                    assert_eq!(seen.len(), n, "the read includes this client's appends");
                    let condition = proto::AppendCondition {
                        fail_if_events_match: Some(q),
                        after: head,
                    };
                    append(
                        &mut client,
                        vec![event("Step", &[mine.as_str()], b"{}")],
                        Some(condition),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("client {c}, decision {n}: {e:?}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        end(server, &backend).await;
    }
}
