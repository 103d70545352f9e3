//! What the store reports: its `tracing` spans printed as they close, and its `metrics` printed
//! at the end, while a few writers claim seats of a course (some of them losing races).
//!
//! Run: `cargo run --example observability` (in memory), or with `DATABASE_URL` set
//! (PostgreSQL: also the pool wait, lock wait and group-size histograms).

#[path = "shared/mod.rs"]
mod shared;

use std::sync::Arc;

use dcbstore::{DynEventStore, Event, MemoryEventStore, Projection, QueryItem, decide};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use tracing_subscriber::fmt::format::FmtSpan;

const SEATS: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Spans at DEBUG, printed when they close, with their fields and duration.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    let course = format!("course:c1{}", shared::run_suffix());
    let store: Arc<dyn DynEventStore> = match shared::database_url() {
        Some(url) => Arc::new(shared::postgres(&url, "example_observability").await?),
        None => Arc::new(MemoryEventStore::new()),
    };

    let writers: Vec<_> = (0..5)
        .map(|student| {
            let (store, course) = (store.clone(), course.clone());
            tokio::spawn(async move {
                let taken = Projection::new(QueryItem::tagged([course.clone()]), 0u32, |n, _| {
                    *n += 1;
                });
                decide(&store, &taken, |seats_taken| {
                    if seats_taken >= SEATS {
                        return Err("the course is full");
                    }
                    Ok(vec![
                        Event::new("StudentSubscribed", json!({"student": student}))
                            .with_tags([course.clone()]),
                    ])
                })
                .await
            })
        })
        .collect();
    for (student, writer) in writers.into_iter().enumerate() {
        match writer.await? {
            Ok(_) => println!("student {student}: subscribed"),
            Err(e) => println!("student {student}: {e}"),
        }
    }

    println!("\nMetrics:");
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.to_string(),
                DebugValue::Histogram(samples) => {
                    let mut v: Vec<f64> = samples.iter().map(|s| s.into_inner()).collect();
                    v.sort_by(f64::total_cmp);
                    format!("{} samples, median {:.6}", v.len(), v[v.len() / 2])
                }
            };
            format!("  {}{{{}}} {value}", key.key().name(), labels.join(","))
        })
        .collect();
    lines.sort();
    println!("{}", lines.join("\n"));
    Ok(())
}
