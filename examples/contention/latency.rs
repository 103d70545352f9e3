//! `guard-latency` (a guarded append's and a read's latency as the store grows) and
//! `read-throughput` (streaming a large boundary, with the process's memory).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dcbstore::{AppendCondition, Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions};
use futures::TryStreamExt;
use serde_json::json;

use super::args::Scenario;
use super::report::{Report, percentile, round};
use super::{Bench, BoxError, fresh_grouped_store, load, store_at};

impl Bench {
    pub(super) async fn guard_latency(&mut self) -> Result<Vec<Report>, BoxError> {
        let (small, large) = if self.args.quick {
            (2_000, 10_000)
        } else {
            (10_000, 1_000_000)
        };
        let mut sizes = vec![small, large];
        if self.args.ten_million && !self.args.quick {
            sizes.push(10_000_000);
        }
        let iterations = if self.args.quick { 20 } else { 200 };
        let store = fresh_grouped_store(&self.url, "bench_guard", 2, self.args.group).await?;
        let mut reports = Vec::new();
        let mut baseline: HashMap<(&str, &str), f64> = HashMap::new();
        let mut loaded = 0;
        for (step, size) in sizes.iter().enumerate() {
            load(&store, loaded + 1, *size).await?;
            loaded = *size;
            let in_store = Self::head(&store).await?;
            let mut samples = guard_samples(&store, step, iterations, &self.run, false).await?;
            // The same appends with conditions built by hand (no read's snapshot): the guard
            // searches the query's events after `after`.
            let by_hand = guard_samples(&store, step, iterations, &self.run, true).await?;
            samples.extend(by_hand.into_iter().filter(|(_, op, _)| *op != "read"));
            for (shape, op, mut samples) in samples {
                samples.sort_unstable();
                let p50 = percentile(&samples, 0.5);
                let mut report = Report {
                    scenario: Scenario::GuardLatency.name(),
                    writers: 1,
                    events_in_store: in_store,
                    appends_per_s: if op == "read" { 0.0 } else { 1000.0 / p50 },
                    p50_ms: p50,
                    p99_ms: percentile(&samples, 0.99),
                    ..Report::default()
                };
                report.extra.push(("boundary", json!(shape)));
                report.extra.push(("op", json!(op)));
                match baseline.get(&(shape, op)) {
                    None => {
                        baseline.insert((shape, op), p50);
                    }
                    Some(b) => report
                        .extra
                        .push(("p50_vs_smallest_store", json!(round(p50 / b, 2)))),
                }
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// The store of `bench_guard` holding at least 1M events (10k with `--quick`), and how many
    /// it holds.
    pub(super) async fn large_store(&self) -> Result<(PgEventStore, u64), BoxError> {
        let size = if self.args.quick { 10_000 } else { 1_000_000 };
        let store = store_at(&self.url, "bench_guard", 2, self.args.group).await?;
        store.migrate().await?;
        let have = Self::head(&store).await?;
        if have < size {
            load(&store, have + 1, size).await?;
        }
        let in_store = Self::head(&store).await?;
        Ok((store, in_store))
    }

    pub(super) async fn read_throughput(&mut self) -> Result<Vec<Report>, BoxError> {
        let (store, in_store) = self.large_store().await?;
        let size = if self.args.quick { 10_000 } else { 1_000_000 };
        let query = Query::from(QueryItem::typed([
            "CourseDefined",
            "StudentSubscribed",
            "StudentUnsubscribed",
        ]));
        let mut reports = Vec::new();
        for limit in [size / 10, size] {
            let base_rss = rss_mb();
            let mut peak = base_rss;
            let started = Instant::now();
            let mut stream = store.read_stream(&query, ReadOptions::default().limit(limit));
            let mut n = 0u64;
            while let Some(e) = stream.try_next().await? {
                n += 1;
                std::hint::black_box(&e);
                if n.is_multiple_of(10_000) {
                    peak = peak.max(rss_mb());
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let mut report = Report {
                scenario: Scenario::ReadThroughput.name(),
                writers: 1,
                events_in_store: in_store,
                events_per_s: n as f64 / secs,
                ..Report::default()
            };
            report.extra.push(("events_read", json!(n)));
            report
                .extra
                .push(("peak_rss_growth_mb", json!(round(peak - base_rss, 1))));
            report.extra.push(("peak_rss_mb", json!(round(peak, 1))));
            reports.push(report);
        }
        Ok(reports)
    }
}

/// Latency samples of one guarded append and one read, per boundary shape. The append's
/// condition is the one the read gives, or `by_hand` the same query and `after` without the
/// read's snapshot (op `append-by-hand`).
async fn guard_samples(
    store: &PgEventStore,
    round: usize,
    iterations: usize,
    run: &str,
    by_hand: bool,
) -> Result<Vec<(&'static str, &'static str, Vec<Duration>)>, BoxError> {
    let condition = |r: &dcbstore::ReadResult| -> Result<AppendCondition, BoxError> {
        Ok(if by_hand {
            AppendCondition::new(r.query().clone(), r.last_position())
        } else {
            r.append_condition()?
        })
    };
    let op = if by_hand { "append-by-hand" } else { "append" };
    let run = if by_hand {
        format!("{run}h")
    } else {
        run.to_string()
    };
    let mut out = Vec::new();
    let (mut append, mut read) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        let tag = format!("empty{run}-{round}-{i}");
        let claimed = Event::new("Claimed", json!({"n": i})).with_tags([tag.clone()]);
        let (r, a) = read_then_append(store, &tag, claimed, &condition).await?;
        read.push(r);
        append.push(a);
    }
    out.push(("empty", op, append));
    out.push(("empty", "read", read));

    let (mut append, mut read) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        // Boundaries old:1 … old:1000 hold one event each, among the first loaded.
        let tag = format!("old:{}", 1 + (round * iterations + i) % 1000);
        let touched = Event::new("Touched", json!({"n": i})).with_tags([format!("touch:{tag}")]);
        let (r, a) = read_then_append(store, &tag, touched, &condition).await?;
        read.push(r);
        append.push(a);
    }
    out.push(("old", op, append));
    out.push(("old", "read", read));

    let query = Query::from(QueryItem::tagged(["big"]));
    let (mut append, mut read) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        // The newest event of the boundary (not timed), and the condition it gives.
        let newest = store
            .read(&query, ReadOptions::default().backwards().limit(1))
            .await?;
        let t = Instant::now();
        let written = store
            .append(
                [Event::new("Grown", json!({"n": i})).with_tags(["big"])],
                Some(condition(&newest)?),
            )
            .await?;
        append.push(t.elapsed());
        let last = Some(written.last_position());
        if i.is_multiple_of(10) {
            let t = Instant::now();
            let r = store.read(&query, ReadOptions::default()).await?;
            read.push(t.elapsed());
            assert_eq!(
                r.last_position(),
                last,
                "the read sees the boundary's last append"
            );
        }
    }
    out.push(("big", op, append));
    out.push(("big", "read", read));
    Ok(out)
}

/// Reads the boundary of `tag`, then appends `event` guarded by the condition `condition`
/// makes of that read: how long each took.
async fn read_then_append(
    store: &PgEventStore,
    tag: &str,
    event: Event,
    condition: &impl Fn(&dcbstore::ReadResult) -> Result<AppendCondition, BoxError>,
) -> Result<(Duration, Duration), BoxError> {
    let query = Query::from(QueryItem::tagged([tag]));
    let t = Instant::now();
    let read = store.read(&query, ReadOptions::default()).await?;
    let read_took = t.elapsed();
    let t = Instant::now();
    store.append([event], Some(condition(&read)?)).await?;
    Ok((read_took, t.elapsed()))
}

/// Resident memory of this process, in MiB (Linux).
pub(super) fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1024.0 * 1024.0))
}
