//! Test harness shared by the test binaries: the backends a case runs on, a store of either
//! behind `Arc<dyn DynEventStore>`, and on PostgreSQL (`postgres.rs`) a fresh schema per test.
#![allow(dead_code, unused_macros)]

use std::sync::Arc;

use dcbstore::{
    DynEventStore, Event, EventStore, MemoryEventStore, Query, ReadOptions, SequencedEvent,
};
use rstest_reuse::template;
use serde_json::json;

#[cfg(feature = "postgres")]
mod postgres;
pub mod race;
#[cfg(feature = "postgres")]
pub use postgres::*;

/// The problem with an argument that `err` reports, if it reports one.
pub fn argument_problem(err: &dcbstore::Error) -> Option<&dcbstore::ArgumentProblem> {
    match err {
        dcbstore::Error::InvalidInput(dcbstore::InvalidInput::Argument(problem)) => Some(problem),
        _ => None,
    }
}

/// An event of type `event_type` with `tags` and payload `payload`.
pub fn event(event_type: &str, tags: &[&str], payload: serde_json::Value) -> Event {
    Event::new(event_type, payload).with_tags(tags.iter().copied())
}

/// Which backend a conformance case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, in a schema of the running test (built with the `postgres` feature).
    #[cfg(feature = "postgres")]
    Postgres,
    Memory,
}

/// Every backend: a case that takes `backend: Backend` and applies this template
/// (`#[apply(backends)]`) runs once on each. Without the `postgres` feature it runs in memory
/// only, with no database.
#[cfg(feature = "postgres")]
#[template]
#[rstest]
pub fn backends(#[values(Backend::Postgres, Backend::Memory)] backend: Backend) {}

/// Every backend: without the `postgres` feature, memory only.
#[cfg(not(feature = "postgres"))]
#[template]
#[rstest]
pub fn backends(#[values(Backend::Memory)] backend: Backend) {}

/// A store of either backend, as an application picking it at run time holds it.
pub type Store = Arc<dyn DynEventStore>;

/// A fresh, empty store of `backend`.
pub async fn store_on(backend: Backend) -> Store {
    store_on_with_max_batch_size(backend, dcbstore::DEFAULT_MAX_BATCH_SIZE).await
}

/// Like [`store_on`], accepting at most `max` events per append.
pub async fn store_on_with_max_batch_size(backend: Backend, max: usize) -> Store {
    match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Arc::new(
            emptied(
                dcbstore::PgEventStore::builder()
                    .schema(&test_schema())
                    .max_batch_size(max)
                    .from_pool(pool(40))
                    .expect("a valid schema name"),
            )
            .await,
        ),
        Backend::Memory => Arc::new(MemoryEventStore::new().with_max_batch_size(max)),
    }
}

/// Every event in `store`, in position order.
pub async fn all_events(store: &impl EventStore) -> Vec<SequencedEvent> {
    store
        .read(&Query::all(), ReadOptions::default())
        .await
        .expect("reading the whole log")
        .into_events()
}

/// A decision model that collects the positions of `query`'s events, in the order it folds
/// them: a state that shows both what a decision saw and in which order.
pub fn positions_of(query: Query) -> dcbstore::Projection<Vec<u64>> {
    dcbstore::Projection::new(query, Vec::new(), |seen: &mut Vec<u64>, e| {
        seen.push(e.position)
    })
}

/// The positions of `query`'s events, read whole.
pub async fn positions(store: &impl EventStore, query: &Query) -> Vec<u64> {
    store
        .read(query, ReadOptions::default())
        .await
        .expect("reading the positions")
        .iter()
        .map(|e| e.position)
        .collect()
}

/// What every test asks of a store beside its API.
#[allow(async_fn_in_trait)]
pub trait StoreExt: EventStore + Sized {
    /// Every event, in position order.
    async fn all_events(&self) -> Vec<SequencedEvent> {
        all_events(self).await
    }

    /// How many events the store holds.
    async fn event_count(&self) -> usize {
        self.all_events().await.len()
    }
}

impl<S: EventStore> StoreExt for S {}

/// Appends `per_course` events for each of `courses` courses, from one writer per course.
pub async fn subscribe_students(
    store: &(impl EventStore + Clone + 'static),
    courses: usize,
    per_course: u64,
) {
    let writers: Vec<_> = (0..courses)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per_course {
                    let course = format!("c{c}");
                    let e = event(
                        "Subscribed",
                        &[&format!("course:{course}")],
                        json!({"course": course, "n": n}),
                    );
                    store.append([e], None).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}
