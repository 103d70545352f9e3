//! A store with a replica (`PgEventStoreBuilder::replica`): what reads where, read-your-writes
//! and `Consistency::Latest` on a replica that has not replayed an append, and a replica that
//! lags past the bound skipped, then used again once it caught up.

use std::time::{Duration, Instant};

use dcbstore::pg::{LatestReads, ReadOn, ReplicaState};
use dcbstore::{EventStore, PgEventStore, Query, ReadOptions};
use serde_json::json;

use super::{replay, replayed, replica_becomes, routed, turn};
use crate::common::event;

/// The types of the events `read` returned.
async fn types_read(store: &PgEventStore, options: ReadOptions) -> Vec<String> {
    let read = store.read(&Query::all(), options).await.unwrap();
    read.iter().map(|e| e.event_type.clone()).collect()
}

/// Reads go to the replica (with replay paused, a read misses what the primary committed); a
/// read that includes an append, or the latest, sees it at once on the primary, or after at
/// most the lag bound when it waits for the replica; once replay has been paused past the bound
/// (with the primary writing) the replica is skipped, and it serves again when it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn reads_go_to_the_replica_and_skip_it_past_the_lag_bound() {
    const LAG: Duration = Duration::from_millis(1_500);
    let (_turn, primary, replica) = turn(2).await;
    let store = routed(
        primary.schema(),
        PgEventStore::builder()
            .max_replica_lag(LAG)
            .replica_check_interval(Duration::from_millis(20)),
    )
    .await;
    let awaiting = routed(
        primary.schema(),
        PgEventStore::builder()
            .max_replica_lag(LAG)
            .replica_check_interval(Duration::from_millis(20))
            .latest_reads(LatestReads::AwaitReplay),
    )
    .await;
    let on_primary = routed(
        primary.schema(),
        PgEventStore::builder().reads_on(ReadOn::Primary),
    )
    .await;
    assert_eq!(store.replicas()[0].state, ReplicaState::Usable);
    store
        .append([event("Replayed", &["a"], json!({}))], None)
        .await
        .unwrap();
    replayed(&primary, &replica).await;

    replay(&replica, false).await;
    let paused = async {
        let written = store
            .append([event("Unreplayed", &["a"], json!({}))], None)
            .await
            .unwrap();
        let eventual = types_read(&store, ReadOptions::default()).await;
        let policy_primary = types_read(&on_primary, ReadOptions::default()).await;
        let started = Instant::now();
        let latest = types_read(&store, ReadOptions::default().latest()).await;
        let latest_took = started.elapsed();
        let started = Instant::now();
        let awaited = types_read(&awaiting, ReadOptions::default().latest()).await;
        let awaited_took = started.elapsed();
        let started = Instant::now();
        let included = types_read(
            &store,
            ReadOptions::default().including(written.checkpoint()),
        )
        .await;
        let included_took = started.elapsed();
        // Still paused, past the bound: the replica is skipped and reads see everything.
        let skipped = async {
            replica_becomes(&store, ReplicaState::Lagging, LAG * 4).await;
            types_read(&store, ReadOptions::default()).await
        }
        .await;
        (
            (eventual, policy_primary),
            (latest, latest_took),
            (awaited, awaited_took),
            (included, included_took),
            skipped,
        )
    }
    .await;
    // Resume before asserting, so that a failure leaves the standby replaying.
    replay(&replica, true).await;
    let ((eventual, policy_primary), latest, awaited, included, skipped) = paused;
    let both = ["Replayed", "Unreplayed"];
    assert_eq!(eventual, ["Replayed"], "read on the replica");
    assert_eq!(policy_primary, both, "ReadOn::Primary reads on the primary");
    assert_eq!(latest.0, both, "LatestReads::OnPrimary");
    assert!(latest.1 < Duration::from_millis(500), "{:?}", latest.1);
    assert_eq!(
        awaited.0, both,
        "LatestReads::AwaitReplay, then the primary"
    );
    assert!(
        awaited.1 >= LAG / 2 && awaited.1 < LAG * 2,
        "waited for the replica at most the bound: {:?}",
        awaited.1
    );
    assert_eq!(included.0, both, "read-your-writes");
    assert!(
        included.1 < LAG * 2,
        "waited at most the bound: {:?}",
        included.1
    );
    assert_eq!(skipped, both, "the lagging replica is skipped");
    let status = store.replicas().remove(0);
    assert!(status.lag.is_some_and(|lag| lag > LAG), "{status:?}");

    replica_becomes(&store, ReplicaState::Usable, Duration::from_secs(20)).await;
    replayed(&primary, &replica).await;
    assert_eq!(types_read(&store, ReadOptions::default()).await, both);
    // On a replica that replays, read-your-writes and the latest need no wait for the bound.
    let written = store
        .append([event("Third", &["a"], json!({}))], None)
        .await
        .unwrap();
    let started = Instant::now();
    let read = types_read(
        &awaiting,
        ReadOptions::default().including(written.checkpoint()),
    )
    .await;
    assert_eq!(read.last().map(String::as_str), Some("Third"));
    let read = types_read(&awaiting, ReadOptions::default().latest()).await;
    assert_eq!(read.len(), 3);
    assert!(started.elapsed() < LAG / 2, "{:?}", started.elapsed());
}

/// Consumers follow the replica: a subscription of a store that reads on the replica delivers
/// every append of its own store soon after it (the replica replays within milliseconds, and a
/// caught-up consumer on a replica that has not replayed yet looks again soon), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a streaming standby: .ci/standby and DATABASE_REPLICA_URL"]
async fn a_subscription_on_the_replica_delivers_each_append_soon() {
    use futures::StreamExt;
    let (_turn, primary, _replica) = turn(2).await;
    // No notifications: the append's own wake-up is the only one, and it comes before the
    // replica has replayed the append.
    let store = routed(
        primary.schema(),
        PgEventStore::builder().notifications(false),
    )
    .await;
    let mut subscription = store.subscribe(&Query::all(), None, Default::default());
    let mut slowest = Duration::ZERO;
    for n in 0..50 {
        let started = Instant::now();
        let written = store
            .append([event("Live", &["a"], json!({ "n": n }))], None)
            .await
            .unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("delivered within 5 s")
            .expect("a live subscription")
            .unwrap();
        assert_eq!(delivered.event.position, written.last_position());
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest delivery on the replica: {slowest:?}");
    // The poll interval is 500 ms: a delivery that waited for it would show here.
    assert!(slowest < Duration::from_millis(250), "{slowest:?}");
}
