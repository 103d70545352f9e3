//! The consumer scenarios: `feed-catch-up` (a subscription reading a large log from the start,
//! beside a position-ordered read of the same events) and `live-latency` (a subscriber in
//! another store, woken by notifications, while writers append: commit to delivery).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcbstore::{EventStore, Query, ReadOptions, SubscribeOptions};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use uuid::Uuid;

use super::{Bench, BoxError, Report, Scenario, event, percentile, round, rss_mb, store_at};

impl Bench {
    /// Catch-up: every event of a large log through `subscribe` from the start (until caught
    /// up), against `read_stream` of the same events by position; events/s and memory growth.
    pub(super) async fn feed_catch_up(&mut self) -> Result<Vec<Report>, BoxError> {
        let (store, in_store) = self.large_store().await?;

        let started = Instant::now();
        let mut stream = store.read_stream(&Query::all(), ReadOptions::default());
        let mut baseline_n = 0u64;
        while let Some(e) = stream.try_next().await? {
            baseline_n += 1;
            std::hint::black_box(&e);
        }
        let baseline = baseline_n as f64 / started.elapsed().as_secs_f64();

        let mut reports = Vec::new();
        for page_size in [512, 4096] {
            let base_rss = rss_mb();
            let mut peak = base_rss;
            let options = SubscribeOptions::default().page_size(page_size);
            let started = Instant::now();
            let mut live = store.subscribe(&Query::all(), None, options);
            let mut n = 0u64;
            while n < in_store {
                let Some(e) = live.next().await else { break };
                std::hint::black_box(&e?);
                n += 1;
                if n.is_multiple_of(10_000) {
                    peak = peak.max(rss_mb());
                }
            }
            let rate = n as f64 / started.elapsed().as_secs_f64();
            let mut report = Report {
                scenario: Scenario::FeedCatchUp.name(),
                writers: 1,
                events_in_store: in_store,
                events_per_s: rate,
                baseline_per_s: Some(baseline),
                ratio: Some(rate / baseline),
                ..Report::default()
            };
            report.extra.push(("page_size", json!(page_size)));
            report.extra.push(("events_read", json!(n)));
            report
                .extra
                .push(("peak_rss_growth_mb", json!(round(peak - base_rss, 1))));
            reports.push(report);
        }
        Ok(reports)
    }

    /// Live delivery: `writers` append unguarded events as fast as they can for the measured
    /// time; a subscriber on another store (its own pool and `LISTEN` connection, as in another
    /// process) receives them. Latency: from the moment an append returned (its commit is
    /// done) to delivery, 0 when the event came first.
    pub(super) async fn live_latency(&mut self, writers: usize) -> Result<Report, BoxError> {
        let writing = store_at(&self.url, "bench_live", writers.max(2), self.args.group).await?;
        let client = writing.pool().get().await?;
        client
            .batch_execute("DROP SCHEMA IF EXISTS bench_live CASCADE")
            .await?;
        drop(client);
        writing.migrate().await?;
        let reading = store_at(&self.url, "bench_live", 2, self.args.group).await?;

        let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
        let measure = Duration::from_secs_f64(self.args.seconds);
        let mut live = reading.subscribe(&Query::all(), None, SubscribeOptions::default());
        // The subscription is listening before the writers start.
        tokio::time::timeout(Duration::from_millis(200), live.next())
            .await
            .ok();
        let until = Instant::now() + measure;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, committed) = (writing.clone(), committed.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let e = event("Ticked", &format!("c{w}"), &format!("s{n}"), n);
                        let id = e.id;
                        store.append([e], None).await?;
                        committed
                            .lock()
                            .expect("not poisoned")
                            .insert(id, Instant::now());
                        n += 1;
                    }
                    Ok::<u64, dcbstore::Error>(n)
                })
            })
            .collect();
        let mut delivered: Vec<(Uuid, Instant)> = Vec::new();
        let drain_until = until + Duration::from_secs(5);
        let mut appended = 0u64;
        let mut writers_done = false;
        let mut tasks = Some(tasks);
        loop {
            if !writers_done && Instant::now() >= until {
                for t in tasks.take().into_iter().flatten() {
                    appended += t.await??;
                }
                writers_done = true;
            }
            if writers_done && delivered.len() as u64 >= appended {
                break;
            }
            let left = drain_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(Duration::from_millis(50));
            if let Ok(Some(e)) = tokio::time::timeout(wait, live.next()).await {
                delivered.push((e?.event.id, Instant::now()));
            }
        }
        let committed = committed.lock().expect("not poisoned");
        let mut latencies: Vec<Duration> = delivered
            .iter()
            .filter_map(|(id, at)| Some(at.saturating_duration_since(*committed.get(id)?)))
            .collect();
        latencies.sort();
        let mut report = Report {
            scenario: Scenario::LiveLatency.name(),
            writers,
            events_in_store: appended,
            appends_per_s: appended as f64 / measure.as_secs_f64(),
            events_per_s: appended as f64 / measure.as_secs_f64(),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            ..Report::default()
        };
        report.extra.push(("delivered", json!(delivered.len())));
        report.extra.push((
            "max_ms",
            json!(round(
                latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
                3
            )),
        ));
        Ok(report)
    }
}
