//! `decide-cached`: decisions over a 10-event and a 10,000-event boundary, each made with
//! `decide` (a read of the whole boundary every time) and with a `DecisionCache` (the first
//! decision reads the whole boundary, each later one only what its state did not see),
//! alternating in one run, one client. The figure: a decision's p50 on the large boundary over
//! its p50 on the small one.
//!
//! Also `decide-disjoint --cached`: the decisions of `decide-disjoint` (each writer on a course
//! of its own that grows by one event per decision), each writer through a `DecisionCache`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dcbstore::{DecisionCache, EventStore, PgEventStore, Projection, Query, QueryItem, decide};
use serde_json::json;
use tokio::sync::Mutex;

use super::{Bench, BoxError, Measured, ONE_APPENDED, Report, Scenario, event, fresh_store};
use super::{measure, percentile, round};

/// A course's subscriptions, counted: the model of every decision here.
fn subscriptions(course: &str) -> Projection<u64> {
    let boundary = Query::from(QueryItem::tagged([format!("course:{course}")]));
    Projection::new(boundary, 0u64, |n: &mut u64, _| *n += 1)
}

/// The boundaries' sizes: a decision's usual and a large one.
const SIZES: [u64; 2] = [10, 10_000];

impl Bench {
    pub(super) async fn decide_cached(&mut self) -> Result<Vec<Report>, BoxError> {
        let store = fresh_store(&self.url, "bench_cached", 2).await?;
        let sizes = if self.args.quick { [10, 1_000] } else { SIZES };
        let course = |size: u64| format!("{}-{size}", self.run);
        for size in sizes {
            let mut written = 0;
            while written < size {
                let batch = (written..size.min(written + 1_000))
                    .map(|n| event("StudentSubscribed", &course(size), &format!("s{n}"), n));
                store.append(batch, None).await?;
                written = size.min(written + 1_000);
            }
        }
        // The model counts the course's subscriptions; each decision adds one.
        let model = |size: u64| subscriptions(&course(size));
        let models = sizes.map(model);
        let mut caches = sizes.map(|size| DecisionCache::new(model(size)));
        let mut latencies: [[Vec<Duration>; 2]; 2] = Default::default();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed().as_secs_f64() < self.args.seconds || n < 2 {
            n += 1;
            for (i, size) in sizes.into_iter().enumerate() {
                let subscribe = |taken: u64| {
                    let student = format!("d{n}-{taken}");
                    Ok::<_, String>(vec![event("StudentSubscribed", &course(size), &student, n)])
                };
                let began = Instant::now();
                decide(&store, &models[i], subscribe).await?;
                latencies[0][i].push(began.elapsed());
                let began = Instant::now();
                caches[i].decide(&store, subscribe).await?;
                // The first decision of a cache reads the whole boundary: not its steady cost.
                if n > 1 {
                    latencies[1][i].push(began.elapsed());
                }
            }
        }
        let mut reports = Vec::new();
        for (op, runs) in ["decide", "cached"].into_iter().zip(&mut latencies) {
            for run in runs.iter_mut() {
                run.sort();
            }
            let small = percentile(&runs[0], 0.5);
            for (i, size) in sizes.into_iter().enumerate() {
                let p50 = percentile(&runs[i], 0.5);
                let mut report = Report {
                    scenario: Scenario::DecideCached.name(),
                    writers: 1,
                    events_in_store: Self::head(&store).await?,
                    appends_per_s: runs[i].len() as f64 / started.elapsed().as_secs_f64(),
                    p50_ms: p50,
                    p99_ms: percentile(&runs[i], 0.99),
                    ..Report::default()
                };
                report.extra.push(("op", json!(op)));
                report.extra.push(("boundary", json!(size)));
                if i > 0 {
                    report
                        .extra
                        .push(("p50_vs_small_boundary", json!(round(p50 / small, 2))));
                }
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// `decide-disjoint --cached`: `writers` writers, each deciding on a course of its own
    /// through its `DecisionCache` (its first decision reads the course, each later one only
    /// what the cache's state did not see), measured.
    pub(super) async fn decide_disjoint_cached(
        &self,
        store: &PgEventStore,
        writers: usize,
    ) -> Result<Measured, BoxError> {
        let run = &self.run;
        let courses: Vec<String> = (0..writers)
            .map(|w| format!("r{run}-{writers}-c{w}"))
            .collect();
        let caches: Arc<Vec<_>> = Arc::new(
            courses
                .iter()
                .map(|c| Mutex::new(DecisionCache::new(subscriptions(c))))
                .collect(),
        );
        let (store, courses) = (store.clone(), Arc::new(courses));
        measure(writers, self.duration(), move |w, i| {
            let (store, caches, courses) = (store.clone(), caches.clone(), courses.clone());
            async move {
                let course = &courses[w];
                let subscribe = |taken: u64| {
                    let student = format!("s{i}-{taken}");
                    Ok::<_, String>(vec![event("Subscribed", course, &student, i)])
                };
                caches[w].lock().await.decide(&store, subscribe).await?;
                Ok(ONE_APPENDED)
            }
        })
        .await
    }
}
