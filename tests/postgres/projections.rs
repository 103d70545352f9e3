//! A read model in PostgreSQL whose rows and checkpoint commit in one transaction: applied
//! exactly once across failed batches and restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{
    Checkpoint, FeedEvent, PgEventStore, Projector, ProjectorError, ProjectorRunner, Query,
    QueryItem, RetryPolicy, rebuild,
};

use crate::common::{self, subscribe_students};

/// Seats per course as a table in PostgreSQL, written with the checkpoint in one transaction.
/// Every `fail_every`-th batch fails after its writes, before its commit.
struct PgSeats {
    store: PgEventStore,
    name: String,
    calls: Arc<AtomicU32>,
    fail_every: u32,
}

impl PgSeats {
    fn table(&self) -> String {
        format!("\"{}\".seats", self.store.schema())
    }
}

impl Projector for PgSeats {
    fn name(&self) -> &str {
        &self.name
    }
    fn query(&self) -> Query {
        Query::from(QueryItem::typed(["Subscribed"]))
    }
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
        let client = self.store.pool().get().await?;
        Ok(self.store.load_checkpoint(&**client, &self.name).await?)
    }
    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<(), ProjectorError> {
        let mut client = self.store.pool().get().await?;
        let tx = client.transaction().await?;
        let upsert = format!(
            "INSERT INTO {} (course, taken) VALUES ($1, 1) \
             ON CONFLICT (course) DO UPDATE SET taken = seats.taken + 1",
            self.table()
        );
        for e in batch {
            let course = e.event.payload["course"].as_str().ok_or("no course")?;
            tx.execute(&upsert, &[&course]).await?;
        }
        let last = batch.last().expect("batches are not empty").checkpoint;
        self.store.save_checkpoint_in(&tx, &self.name, last).await?;
        if self.calls.fetch_add(1, Ordering::Relaxed) % self.fail_every == self.fail_every - 1 {
            return Err("injected: the process died before COMMIT".into()); // tx rolls back
        }
        tx.commit().await?;
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), ProjectorError> {
        let mut client = self.store.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(&format!("DELETE FROM {}", self.table()), &[])
            .await?;
        self.store.delete_checkpoint_in(&tx, &self.name).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The read model's rows: course → seats taken.
async fn seats(store: &PgEventStore) -> HashMap<String, i64> {
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            &format!(
                "SELECT course, taken::int8 FROM \"{}\".seats",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Writers append while a partitioned read model in PostgreSQL follows; every third batch
/// fails before its commit, and the runner is shut down and started again (new projector
/// instances, which read their checkpoints from the table) twice. Afterwards the table holds
/// exactly what the log says: nothing lost, nothing counted twice. Then `rebuild` builds the
/// same table from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_in_postgres_is_applied_exactly_once() {
    let store = common::store_with_pool(12).await;
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{}\".seats (course text PRIMARY KEY, taken int NOT NULL)",
            store.schema()
        ))
        .await
        .unwrap();
    drop(client);
    let calls = Arc::new(AtomicU32::new(0));
    let start = || {
        let (store, calls) = (store.clone(), calls.clone());
        ProjectorRunner::new(store.clone())
            .batch_size(10)
            .retry(RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
            })
            .with_partitioned(2, "course:", move |k| PgSeats {
                store: store.clone(),
                name: format!("seats#{k}"),
                calls: calls.clone(),
                fail_every: 3,
            })
            .start()
            .unwrap()
    };

    for _round in 0..3 {
        let handle = start();
        subscribe_students(&store, 4, 25).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.shutdown().await.unwrap();
    }
    let handle = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected: HashMap<String, i64> = (0..4).map(|c| (format!("c{c}"), 75)).collect();
    while seats(&store).await != expected {
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}",
            seats(&store).await,
            handle.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.unwrap();
    assert!(calls.load(Ordering::Relaxed) >= 3, "failures were injected");

    let mut whole = PgSeats {
        store: store.clone(),
        name: "seats#0".into(),
        calls: Arc::new(AtomicU32::new(0)),
        fail_every: u32::MAX,
    };
    // One partition rebuilt alone sees every course: the table is recounted from scratch.
    assert_eq!(rebuild(&store, &mut whole, 50).await.unwrap(), 300);
    let totals: i64 = seats(&store).await.values().sum();
    assert_eq!(totals, 300);
}
