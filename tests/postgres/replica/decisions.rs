//! Decisions that read on the replica and append on the primary.

use std::sync::Arc;
use std::time::Duration;

use dcbstore::{EventStore, Query, QueryItem, ReadOptions};
use serde_json::json;

use super::{replay, replayed, turn};
use crate::common::race::{self, Decider, Race};
use crate::common::{self, event};

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

/// The same race through one store that reads on the replica (`PgEventStoreBuilder::replica`):
/// its deciders `decide` (the first read on the replica, the re-reads after a conflict the
/// latest), and its appends go to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn racing_decisions_of_a_store_with_a_replica_never_miss_an_event() {
    let (_turn, primary, _replica) = turn(8).await;
    let store = super::routed(primary.schema(), dcbstore::PgEventStore::builder()).await;
    let race = Race {
        reader: Arc::new(store.clone()),
        writer: Arc::new(store.clone()),
        postgres: Some(store),
    };
    race::run(race, Decider::Decide).await;
}
