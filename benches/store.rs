//! Single-writer latency of the PostgreSQL store's appends and reads, with 100k events in the
//! store (and the same calls on the in-memory store for scale). Reads run first, at exactly 100k
//! events; the appends then add a few thousand.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench store`
//!
//! Without `DATABASE_URL` only the in-memory benchmarks run. The PostgreSQL data lives in the
//! schema `bench_store`, loaded once and reused by later runs.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use dcbstore::{
    AppendCondition, Event, EventStore, MemoryEventStore, PgEventStore, Query, QueryItem,
    ReadOptions,
};
use serde_json::json;
use tokio::runtime::Runtime;

const EVENTS_IN_STORE: u64 = 100_000;
const BATCH: u64 = 1_000;
const COURSES: u64 = 5_000;

fn loaded_event(i: u64) -> Event {
    let (course, student) = (i % COURSES, i % 20_000);
    Event::new(
        ["CourseDefined", "StudentSubscribed", "StudentUnsubscribed"][(i % 3) as usize],
        json!({"course": format!("c{course}"), "student": format!("s{student}"), "n": i}),
    )
    .with_tags([format!("course:c{course}"), format!("student:s{student}")])
}

/// Fills `store` up to `EVENTS_IN_STORE` events (a no-op when a previous run did).
async fn load(store: &impl EventStore) {
    let have = store.head().await.expect("head").unwrap_or(0);
    for start in (have..EVENTS_IN_STORE).step_by(BATCH as usize) {
        let end = (start + BATCH).min(EVENTS_IN_STORE);
        store
            .append((start..end).map(loaded_event), None)
            .await
            .expect("loading");
    }
}

static FRESH: AtomicU64 = AtomicU64::new(0);

/// A tag no event carries yet.
fn fresh_tag() -> String {
    format!(
        "claim:{}-{}",
        std::process::id(),
        FRESH.fetch_add(1, Ordering::Relaxed)
    )
}

fn bench_store<S: EventStore + Clone + 'static>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: S,
) {
    rt.block_on(load(&store));
    let mut group = c.benchmark_group(name);

    group.bench_function("read_boundary_20_events", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let query = Query::from(QueryItem::tagged(["course:c4711", "student:s4711"]));
                store
                    .read(&query, ReadOptions::default())
                    .await
                    .expect("read")
            }
        })
    });

    group.bench_function("read_empty_boundary", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let query = Query::from(QueryItem::tagged(["course:none"]));
                store
                    .read(&query, ReadOptions::default())
                    .await
                    .expect("read")
            }
        })
    });
    group.bench_function("append_unguarded", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let e = Event::new("Ping", json!({"n": 1})).with_tags([fresh_tag()]);
                store.append([e], None).await.expect("append")
            }
        })
    });

    group.bench_function("append_guarded_empty_boundary", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let tag = fresh_tag();
                let query = Query::from(QueryItem::tagged([tag.clone()]));
                let e = Event::new("Claimed", json!({"by": "bench"})).with_tags([tag]);
                store
                    .append([e], Some(AppendCondition::new(query, None)))
                    .await
                    .expect("append")
            }
        })
    });

    group.bench_function("read_then_append_guarded_course", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                // Courses in turn, so that each boundary stays near its 20 loaded events.
                let tag = format!(
                    "course:c{}",
                    FRESH.fetch_add(1, Ordering::Relaxed) % COURSES
                );
                let query = Query::from(QueryItem::tagged([tag.clone()]));
                let read = store
                    .read(&query, ReadOptions::default())
                    .await
                    .expect("read");
                let e = Event::new("StudentSubscribed", json!({"by": "bench"})).with_tags([tag]);
                store
                    .append([e], Some(read.append_condition().expect("a whole read")))
                    .await
                    .expect("append")
            }
        })
    });

    // The checkpoint after the first 50k events: pages from there read loaded events.
    let middle = rt.block_on(async {
        let mut at = None;
        for _ in 0..(50_000 / 5_000) {
            at = Some(
                store
                    .feed(&Query::all(), at, 5_000)
                    .await
                    .expect("feed")
                    .next,
            );
        }
        at
    });
    group.bench_function("feed_page_512_events", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let page = store.feed(&Query::all(), middle, 512).await.expect("feed");
                assert_eq!(page.events.len(), 512);
                page
            }
        })
    });

    group.bench_function("feed_caught_up_course", |b| {
        b.to_async(rt).iter(|| {
            let store = store.clone();
            async move {
                let query = Query::from(QueryItem::tagged(["course:none"]));
                store.feed(&query, None, 512).await.expect("feed")
            }
        })
    });

    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("a tokio runtime");
    bench_store(c, &rt, "memory_100k", MemoryEventStore::new());
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let store = rt
                .block_on(async {
                    let store = PgEventStore::builder()
                        .schema("bench_store")
                        .connect(&url)
                        .await?;
                    store.migrate().await?;
                    Ok::<_, dcbstore::Error>(store)
                })
                .expect("connecting to DATABASE_URL");
            bench_store(c, &rt, "postgres_100k", store);
        }
        _ => eprintln!("DATABASE_URL is not set: skipping the PostgreSQL benchmarks"),
    }
}

criterion_group!(store, benches);
criterion_main!(store);
