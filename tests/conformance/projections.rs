//! Checkpointed projections: the runner on both backends (order per key across partitions,
//! status and lag, shutdown, rebuild, read-your-writes) and its failures. A read model in
//! PostgreSQL whose rows and checkpoint commit in one transaction is in the PostgreSQL suite
//! (`tests/postgres/projections.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dcbstore::{
    Checkpoint, EventStore, FeedEvent, Projector, ProjectorError, ProjectorHandle, ProjectorRunner,
    Query, QueryItem, RetryPolicy, rebuild,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, backends, event, store_on, subscribe_students};

/// Per course: the `n` of every event applied, in the order applied.
type Seen = Arc<std::sync::Mutex<HashMap<String, Vec<u64>>>>;

/// A projector in memory: records, per course, the order in which events arrive.
struct Recorder {
    name: String,
    seen: Seen,
    at: Option<Checkpoint>,
}

impl Projector for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn query(&self) -> Query {
        Query::from(QueryItem::typed(["Subscribed"]))
    }
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
        Ok(self.at)
    }
    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<(), ProjectorError> {
        let mut seen = self.seen.lock().unwrap();
        for e in batch {
            let course = e.event.payload["course"].as_str().ok_or("no course")?;
            let n = e.event.payload["n"].as_u64().ok_or("no n")?;
            seen.entry(course.to_string()).or_default().push(n);
        }
        self.at = batch.last().map(|e| e.checkpoint);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), ProjectorError> {
        self.seen.lock().unwrap().clear();
        self.at = None;
        Ok(())
    }
}

/// Waits until every projector of `handle` is caught up and has applied `applied` in all.
async fn until_caught_up(handle: &ProjectorHandle, applied: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = handle.status();
        let total: u64 = status.iter().map(|s| s.applied).sum();
        if total >= applied && status.iter().all(|s| s.caught_up) {
            assert!(status.iter().all(|s| s.lag() == Some(Duration::ZERO)));
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {status:?}");
        assert!(status.iter().all(|s| s.failure.is_none()), "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_keep_the_order_of_each_key_and_report_their_lag(backend: Backend) {
    let store = store_on(backend).await;
    let seen: Seen = Arc::default();
    let handle = ProjectorRunner::new(store.clone())
        .batch_size(7)
        .with_partitioned(3, "course:", |k| Recorder {
            name: format!("seats#{k}"),
            seen: seen.clone(),
            at: None,
        })
        .start()
        .unwrap();
    subscribe_students(&store, 6, 40).await;
    until_caught_up(&handle, 240).await;
    let status = handle.status();
    assert_eq!(status.len(), 3);
    assert!(
        status.iter().filter(|s| s.applied > 0).count() >= 2,
        "keys spread over partitions: {status:?}"
    );
    handle.shutdown().await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    for (course, ns) in seen.iter() {
        assert_eq!(
            *ns,
            (0..40).collect::<Vec<_>>(),
            "{course}: in order, once each"
        );
    }
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_resumes_and_rebuild_starts_over(backend: Backend) {
    let store = store_on(backend).await;
    let seen: Seen = Arc::default();
    let recorder = |at| Recorder {
        name: "seats".into(),
        seen: seen.clone(),
        at,
    };
    subscribe_students(&store, 2, 10).await;
    let handle = ProjectorRunner::new(store.clone())
        .with(recorder(None))
        .start()
        .unwrap();
    until_caught_up(&handle, 20).await;
    let stopped_at = handle.status()[0].checkpoint;
    handle.shutdown().await.unwrap();

    subscribe_students(&store, 2, 5).await;
    // The state (here: `seen`) and its checkpoint survive; the new runner goes on from there.
    let handle = ProjectorRunner::new(store.clone())
        .with(recorder(stopped_at))
        .start()
        .unwrap();
    until_caught_up(&handle, 10).await;
    assert_eq!(
        handle.status()[0].applied,
        10,
        "only what came after the checkpoint"
    );
    handle.shutdown().await.unwrap();
    for ns in seen.lock().unwrap().values() {
        assert_eq!(
            *ns,
            [(0..10).collect::<Vec<u64>>(), (0..5).collect()].concat()
        );
    }

    let mut again = recorder(stopped_at);
    assert_eq!(rebuild(&store, &mut again, 6).await.unwrap(), 30);
    assert_eq!(
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>(),
        30
    );
}

/// A projector that fails: the runner retries its batch, then stops it and says why; the
/// others go on.
#[tokio::test]
async fn a_failing_projector_stops_alone_and_reports_why() {
    struct Failing;
    impl Projector for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn query(&self) -> Query {
            Query::all()
        }
        async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
            Ok(None)
        }
        async fn apply(&mut self, _: &[FeedEvent]) -> Result<(), ProjectorError> {
            Err("the read model's table is gone".into())
        }
        async fn reset(&mut self) -> Result<(), ProjectorError> {
            Ok(())
        }
    }
    let store = store_on(Backend::Memory).await;
    let seen: Seen = Arc::default();
    let handle = ProjectorRunner::new(store.clone())
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        })
        .with(Failing)
        .with(Recorder {
            name: "seats".into(),
            seen: seen.clone(),
            at: None,
        })
        .start()
        .unwrap();
    subscribe_students(&store, 1, 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status()[0].failure.is_none() || handle.status()[1].applied < 3 {
        assert!(Instant::now() < deadline, "{:?}", handle.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        handle.status()[0].failure.as_deref(),
        Some("the read model's table is gone")
    );
    let err = handle.shutdown().await.unwrap_err();
    assert!(
        matches!(&err, dcbstore::Error::Projector { projector, .. } if projector == "failing"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

/// Two projectors with one name would share a checkpoint: the runner refuses to start.
#[tokio::test]
async fn projectors_need_names_of_their_own() {
    let store = store_on(Backend::Memory).await;
    let seen: Seen = Arc::default();
    let refused = ProjectorRunner::new(store)
        .with_partitioned(2, "course:", |_| Recorder {
            name: "seats".into(),
            seen: seen.clone(),
            at: None,
        })
        .start();
    assert!(
        matches!(
            refused,
            Err(dcbstore::Error::InvalidInput(dcbstore::InvalidInput::Config(
                dcbstore::ConfigProblem::DuplicateProjector(ref n)
            ))) if n == "seats"
        ),
        "{refused:?}"
    );
}

/// A projector that cannot say where it stands does not start; shutting the runner down
/// reports its own error.
#[tokio::test]
async fn a_projector_whose_checkpoint_cannot_be_loaded_reports_why() {
    struct Lost;
    impl Projector for Lost {
        fn name(&self) -> &str {
            "lost"
        }
        fn query(&self) -> Query {
            Query::all()
        }
        async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
            Err("the checkpoint table is gone".into())
        }
        async fn apply(&mut self, _: &[FeedEvent]) -> Result<(), ProjectorError> {
            Ok(())
        }
        async fn reset(&mut self) -> Result<(), ProjectorError> {
            Ok(())
        }
    }
    let store = store_on(Backend::Memory).await;
    let handle = ProjectorRunner::new(store).with(Lost).start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status()[0].failure.is_none() {
        assert!(Instant::now() < deadline, "{:?}", handle.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = handle.shutdown().await.unwrap_err();
    assert!(
        matches!(&err, dcbstore::Error::Projector { projector, source }
            if projector == "lost" && source.to_string() == "the checkpoint table is gone"),
        "{err}"
    );
}

/// Events applied per course, shared with the test (a partition writes its courses only).
type Counts = Arc<std::sync::Mutex<HashMap<String, u64>>>;

/// A projector counting the events of type `counted` per course.
struct Counter {
    name: String,
    counted: &'static str,
    counts: Counts,
    at: Option<Checkpoint>,
}

impl Projector for Counter {
    fn name(&self) -> &str {
        &self.name
    }
    fn query(&self) -> Query {
        Query::from(QueryItem::typed([self.counted]))
    }
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
        Ok(self.at)
    }
    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<(), ProjectorError> {
        let mut counts = self.counts.lock().unwrap();
        for e in batch {
            let course = e.event.payload["course"].as_str().ok_or("no course")?;
            *counts.entry(course.to_string()).or_default() += 1;
        }
        self.at = batch.last().map(|e| e.checkpoint);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), ProjectorError> {
        self.counts.lock().unwrap().clear();
        self.at = None;
        Ok(())
    }
}

/// Read-your-writes: 1,000 times, append a subscription and at once wait for the projections,
/// then check that the read model includes it. Three writers append beside it all along (to
/// other courses, and events no projector matches), on separate connections on PostgreSQL. The
/// runner holds a counter partitioned two ways and a projector whose query matches none of the
/// loop's events: `wait_for` waits for both. (The flag `caught_up` cannot do this: it is already
/// true from before the append.)
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_once_the_projections_include_the_append(backend: Backend) {
    let store = store_on(backend).await;
    let (counts, defined): (Counts, Counts) = Default::default();
    let handle = ProjectorRunner::new(store.clone())
        .with_partitioned(2, "course:", |k| Counter {
            name: format!("counts#{k}"),
            counted: "Subscribed",
            counts: counts.clone(),
            at: None,
        })
        .with(Counter {
            name: "defined".into(),
            counted: "CourseDefined",
            counts: defined.clone(),
            at: None,
        })
        .start()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let course = format!("other{w}");
                    let subscribed = event(
                        "Subscribed",
                        &[&format!("course:{course}")],
                        json!({"course": course, "n": n}),
                    );
                    let noise = event("Noise", &["noise"], json!({"n": n}));
                    store.append([subscribed], None).await.unwrap();
                    store.append([noise], None).await.unwrap();
                    n += 1;
                    // In memory an append takes no time: keep the log (and the runtime) sane.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    for i in 1..=1000u64 {
        let mine = event(
            "Subscribed",
            &["course:mine"],
            json!({"course": "mine", "n": i}),
        );
        let written = store.append([mine], None).await.unwrap();
        handle
            .wait_for(&written, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        let status = handle.status();
        assert!(status.iter().all(|s| s.has_applied(&written)), "{status:?}");
        assert_eq!(
            counts.lock().unwrap().get("mine").copied(),
            Some(i),
            "after waiting for append {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(defined.lock().unwrap().is_empty());
    handle.shutdown().await.unwrap();
}
