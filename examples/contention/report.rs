//! What a measurement reports: its writers' outcomes and latencies, and a line of the report.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Barrier;

use super::BoxError;
use super::args::Scenario;

/// One line of the report.
#[derive(Debug, Default, Clone)]
pub(super) struct Report {
    pub(super) scenario: &'static str,
    pub(super) writers: usize,
    pub(super) events_in_store: u64,
    pub(super) appends_per_s: f64,
    pub(super) events_per_s: f64,
    pub(super) conflicts_per_s: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) baseline_per_s: Option<f64>,
    pub(super) ratio: Option<f64>,
    pub(super) extra: Vec<(&'static str, Value)>,
}

impl Report {
    pub(super) fn to_json(&self) -> Value {
        let mut v = json!({
            "scenario": self.scenario,
            "writers": self.writers,
            "events_in_store": self.events_in_store,
            "appends_per_s": round(self.appends_per_s, 1),
            "events_per_s": round(self.events_per_s, 1),
            "conflicts_per_s": round(self.conflicts_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        });
        let map = v.as_object_mut().expect("an object");
        if let (Some(b), Some(r)) = (self.baseline_per_s, self.ratio) {
            map.insert("baseline_per_s".into(), json!(round(b, 1)));
            map.insert("ratio".into(), json!(round(r, 3)));
        }
        for (k, x) in &self.extra {
            map.insert((*k).into(), x.clone());
        }
        v
    }

    pub(super) fn print(&self, json_lines: bool) {
        if json_lines {
            println!("{}", self.to_json());
            return;
        }
        let ratio = match (self.baseline_per_s, self.ratio) {
            (Some(b), Some(r)) => format!("{r:>6.2} of {b:>8.0}"),
            _ => String::new(),
        };
        let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<17} {:>3} {:>9} {:>10.0} {:>10.0} {:>9.0} {:>8.3} {:>8.3}  {:<18} {}",
            self.scenario,
            self.writers,
            self.events_in_store,
            self.appends_per_s,
            self.events_per_s,
            self.conflicts_per_s,
            self.p50_ms,
            self.p99_ms,
            ratio,
            extra.join(" ")
        );
    }
}

pub(super) fn print_header(json_lines: bool) {
    if !json_lines {
        println!(
            "{:<17} {:>3} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8}  {:<18} notes",
            "scenario",
            "w",
            "events",
            "appends/s",
            "events/s",
            "confl/s",
            "p50 ms",
            "p99 ms",
            "ratio of baseline"
        );
    }
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// What one operation did.
pub(super) struct Outcome {
    pub(super) events: u64,
    pub(super) conflicts: u64,
}

/// One event appended, no conflict on the way.
pub(super) const ONE_APPENDED: Outcome = Outcome {
    events: 1,
    conflicts: 0,
};

/// Totals of one measurement.
pub(super) struct Measured {
    pub(super) ops: u64,
    pub(super) events: u64,
    pub(super) conflicts: u64,
    pub(super) elapsed: Duration,
    pub(super) latencies: Vec<Duration>,
}

impl Measured {
    pub(super) fn report(
        mut self,
        scenario: Scenario,
        writers: usize,
        events_in_store: u64,
    ) -> Report {
        self.latencies.sort_unstable();
        let secs = self.elapsed.as_secs_f64();
        Report {
            scenario: scenario.name(),
            writers,
            events_in_store,
            appends_per_s: self.ops as f64 / secs,
            events_per_s: self.events as f64 / secs,
            conflicts_per_s: self.conflicts as f64 / secs,
            p50_ms: percentile(&self.latencies, 0.5),
            p99_ms: percentile(&self.latencies, 0.99),
            ..Report::default()
        }
    }
}

/// Runs `op` in `writers` concurrent tasks for `duration` (after a warm-up that is not counted).
pub(super) async fn measure<F, Fut>(
    writers: usize,
    duration: Duration,
    op: F,
) -> Result<Measured, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, BoxError>> + Send,
{
    let op = Arc::new(op);
    let warmup = (duration / 5).min(Duration::from_secs(1));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let (op, barrier) = (op.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let (measure_from, end) = (start + warmup, start + warmup + duration);
            let (mut ops, mut events, mut conflicts) = (0u64, 0u64, 0u64);
            let mut latencies = Vec::new();
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let outcome = op(w, i).await?;
                i += 1;
                if t0 >= measure_from {
                    latencies.push(t0.elapsed());
                    ops += 1;
                    events += outcome.events;
                    conflicts += outcome.conflicts;
                }
            }
            Ok::<_, BoxError>((ops, events, conflicts, latencies))
        }));
    }
    barrier.wait().await;
    let mut total = Measured {
        ops: 0,
        events: 0,
        conflicts: 0,
        elapsed: duration,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ops, events, conflicts, latencies) = t.await??;
        total.ops += ops;
        total.events += events;
        total.conflicts += conflicts;
        total.latencies.extend(latencies);
    }
    Ok(total)
}
