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

use std::time::{Duration, Instant};

use dcbstore::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{PgEventStore, PgEventStoreBuilder};
use tokio::sync::{Mutex, MutexGuard};

use crate::common;

mod consumers;
mod decisions;
mod faults;
mod routing;

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
    (turn, primary, replica)
}

/// The store `primary` on the standby, once the standby has replayed its schema.
async fn on_replica(primary: &PgEventStore) -> PgEventStore {
    let replica = PgEventStore::builder()
        .schema(primary.schema())
        .from_pool(replica_pool(4))
        .unwrap();
    // Replaying, whatever an earlier test that failed while replay was paused left behind.
    replay(&replica, true).await;
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

/// A store on the primary's schema `schema` that reads on the standby, built as an application
/// would (`builder` holds the replica settings of the test).
async fn routed(schema: &str, builder: PgEventStoreBuilder) -> PgEventStore {
    builder
        .schema(schema)
        .pool_size(8)
        .replica(&replica_url())
        .connect(common::database_url())
        .await
        .expect("a store on the test server and its standby")
}

/// Waits (at most `bound`) until the store's only replica is in `state`.
async fn replica_becomes(store: &PgEventStore, state: dcbstore::pg::ReplicaState, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let status = store.replicas().remove(0);
        if status.state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not become {state} within {bound:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
