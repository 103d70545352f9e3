//! Append contention benchmark: guarded appends against plain inserts, measured side by side in
//! one run, on one server, through the same connection setup (a deadpool pool with one
//! connection per writer).
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --release --example contention -- all [--writers 1,8,32,64] [--json]
//! ```
//!
//! Scenarios: `raw-insert` (the baseline), `append-unguarded`, `append-disjoint`, `append-hot`,
//! `append-mixed`, `decide-disjoint` (a read and its guarded append per decision, each writer on
//! a boundary of its own), `decide-cached` (decisions over a 10- and a 10,000-event boundary,
//! with `decide` and with a `DecisionCache`), `beside-bulk`, `guard-latency`, `read-throughput`, `feed-catch-up`,
//! `live-latency`, or `all`. Options:
//! `--writers` (a list), `--seconds` (per measurement, default 10), `--events` (events loaded
//! before the append scenarios, default 100000), `--group N` and `--in-flight N` (group commit:
//! appends per transaction, 1 for none, and groups in flight; the store's defaults otherwise),
//! `--no-notify` (appends send no notification for subscriptions), `--whole-boundary-guard`
//! (`decide-disjoint` builds its conditions by hand: the guard before conditions derived from
//! reads looked only at what the read could not see), `--cached` (`decide-disjoint` decides
//! through a `DecisionCache` per writer: each decision reads only what its state did not see),
//! `--json` (one JSON object per result line), `--quick` (tiny sizes and 1 s runs: checks that
//! everything runs), `--ten-million` (guard-latency also at 10M events).
//!
//! The data lives in the schemas `bench_contention`, `bench_raw` and `bench_guard`, which the
//! runner drops and recreates. fsync stays as the server has it (on by default).

mod args;
mod cached;
mod consumers;
mod latency;
mod report;
mod stores;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcbstore::{AppendCondition, Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions};
use serde_json::json;

use args::{Args, Scenario, parse_args};
use latency::rss_mb;
use report::{Measured, ONE_APPENDED, Outcome, Report, measure, percentile, print_header, round};
use stores::{
    BULK_BATCH, WIDE_TAGS, event, fresh_grouped_store, fresh_store, load, resized, store_at,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `--whole-boundary-guard`: `decide-disjoint` builds its conditions by hand from the read
/// (the same guarantee, but the guard searches the whole boundary instead of what the read
/// could not see).
static WHOLE_BOUNDARY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--no-notify`, for every store the runner opens.
static NOTIFY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

struct Bench {
    url: String,
    args: Args,
    contention: PgEventStore,
    raw: PgEventStore,
    /// Run-unique prefix so that boundaries of different measurements never overlap.
    run: String,
    /// raw-insert and append-hot (1 writer) figures of this run, per writer count.
    baselines: HashMap<(Scenario, usize), f64>,
}

impl Bench {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }

    /// The contention store behind a pool of one connection per writer, and its size now.
    async fn contention_store(&self, writers: usize) -> Result<(PgEventStore, u64), BoxError> {
        let store = resized(&self.url, &self.contention, writers, self.args.group).await?;
        let in_store = Self::head(&store).await?;
        Ok((store, in_store))
    }

    async fn head(store: &PgEventStore) -> Result<u64, BoxError> {
        Ok(store.head().await?.unwrap_or(0))
    }

    async fn raw_insert(&mut self, writers: usize) -> Result<Report, BoxError> {
        let raw = resized(&self.url, &self.raw, writers, self.args.group).await?;
        let in_store = Self::head(&raw).await?;
        let sql = format!(
            "INSERT INTO \"{}\".events (event_id, event_type, tags, payload) VALUES ($1, $2, $3, $4)",
            raw.schema()
        );
        let (pool, run) = (raw.pool().clone(), self.run.clone());
        let measured = measure(writers, self.duration(), move |w, i| {
            let (pool, sql) = (pool.clone(), sql.clone());
            let e = event(
                "Inserted",
                &format!("raw{run}-{w}"),
                &format!("raw{run}-{w}"),
                i,
            );
            async move {
                // Prepared once per connection, like the store's own statements: one round trip.
                let client = pool.get().await?;
                let insert = client.prepare_cached(&sql).await?;
                client
                    .execute(&insert, &[&e.id, &e.event_type, &e.tags, &e.payload])
                    .await?;
                Ok(ONE_APPENDED)
            }
        })
        .await?;
        let report = measured.report(Scenario::RawInsert, writers, in_store);
        self.baselines
            .insert((Scenario::RawInsert, writers), report.appends_per_s);
        Ok(report)
    }

    async fn baseline(&mut self, of: Scenario, writers: usize) -> Result<f64, BoxError> {
        if let Some(b) = self.baselines.get(&(of, writers)) {
            return Ok(*b);
        }
        let report = match of {
            Scenario::RawInsert => self.raw_insert(writers).await?,
            // Boxed: append-hot itself asks for its one-writer baseline.
            Scenario::AppendHot => Box::pin(self.append_hot(writers)).await?,
            Scenario::AppendDisjoint => Box::pin(self.append_disjoint(writers)).await?,
            _ => unreachable!("only raw-insert, append-disjoint and append-hot are baselines"),
        };
        eprintln!(
            "  (baseline measured now: {} at {} writers)",
            of.name(),
            writers
        );
        Ok(report.appends_per_s)
    }

    /// `report` with its ratio to raw-insert at the same writer count, measured in this run.
    async fn against_raw(&mut self, report: Report) -> Result<Report, BoxError> {
        let baseline = self.baseline(Scenario::RawInsert, report.writers).await?;
        Ok(Self::with_ratio(report, baseline))
    }

    fn with_ratio(mut report: Report, baseline: f64) -> Report {
        report.baseline_per_s = Some(baseline);
        report.ratio = Some(report.appends_per_s / baseline);
        report
    }

    async fn append_unguarded(&mut self, writers: usize) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers).await?;
        let run = self.run.clone();
        let measured = measure(writers, self.duration(), move |w, i| {
            let store = store.clone();
            let e = event(
                "Appended",
                &format!("u{run}-{w}"),
                &format!("u{run}-{w}"),
                i,
            );
            async move {
                store.append([e], None).await?;
                Ok(ONE_APPENDED)
            }
        })
        .await?;
        self.against_raw(measured.report(Scenario::AppendUnguarded, writers, in_store))
            .await
    }

    /// A guarded append on the writer's own boundary; the writer knows its boundary's last
    /// position (no one else writes there), so no read is needed.
    async fn append_disjoint(&mut self, writers: usize) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers).await?;
        let measured = self.disjoint_guarded(&store, writers, "d").await?;
        let report = measured.report(Scenario::AppendDisjoint, writers, in_store);
        self.baselines
            .insert((Scenario::AppendDisjoint, writers), report.appends_per_s);
        self.against_raw(report).await
    }

    /// Decisions on boundaries of their own: each reads its boundary and appends guarded by
    /// the condition the read gives (the path of `decide`). Counted per decision, against
    /// `raw-insert` like the appends.
    async fn decide_disjoint(&mut self, writers: usize) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers).await?;
        if self.args.cached {
            let measured = self.decide_disjoint_cached(&store, writers).await?;
            let mut report = measured.report(Scenario::DecideDisjoint, writers, in_store);
            report.extra.push(("decisions", json!("cached")));
            return self.against_raw(report).await;
        }
        let (shared, run) = (store.clone(), self.run.clone());
        let measured = measure(writers, self.duration(), move |w, i| {
            let store = shared.clone();
            let course = format!("r{run}-{writers}-{w}");
            async move {
                let query = Query::from(QueryItem::tagged([format!("course:{course}")]));
                let read = store.read(&query, ReadOptions::default()).await?;
                let e = event("Subscribed", &course, &course, i);
                let condition = if WHOLE_BOUNDARY.load(std::sync::atomic::Ordering::Relaxed) {
                    // The same guarantee, built by hand: the guard searches the whole boundary.
                    AppendCondition::new(query, read.last_position())
                        .with_snapshot(read.snapshot().clone())
                } else {
                    read.append_condition()?
                };
                store.append([e], Some(condition)).await?;
                Ok(ONE_APPENDED)
            }
        })
        .await?;
        let report = measured.report(Scenario::DecideDisjoint, writers, in_store);
        self.against_raw(report).await
    }

    /// `writers` guarded appends on boundaries of their own (prefixed `prefix`), measured.
    async fn disjoint_guarded(
        &self,
        store: &PgEventStore,
        writers: usize,
        prefix: &str,
    ) -> Result<Measured, BoxError> {
        let (store, run, prefix) = (store.clone(), self.run.clone(), prefix.to_string());
        let last: Arc<Vec<std::sync::Mutex<Option<u64>>>> =
            Arc::new((0..writers).map(|_| std::sync::Mutex::new(None)).collect());
        measure(writers, self.duration(), move |w, i| {
            let (store, last) = (store.clone(), last.clone());
            let course = format!("{prefix}{run}-{writers}-{w}");
            async move {
                let after = *last[w].lock().expect("not poisoned");
                let query = Query::from(QueryItem::tagged([format!("course:{course}")]));
                let e = event("Subscribed", &course, &course, i);
                let written = store
                    .append([e], Some(AppendCondition::new(query, after)))
                    .await?;
                *last[w].lock().expect("not poisoned") = Some(written.last_position());
                Ok(ONE_APPENDED)
            }
        })
        .await
    }

    /// Disjoint guarded appends while one more connection keeps appending oversized appends, far
    /// more lock keys than one append takes one by one: batches of [`BULK_BATCH`] events with
    /// tags of their own, then single events with [`WIDE_TAGS`] tags. Compared with
    /// append-disjoint at the same writer count: how much of the store such a writer holds up.
    async fn beside_bulk(&mut self, writers: usize) -> Result<Vec<Report>, BoxError> {
        let baseline = self.baseline(Scenario::AppendDisjoint, writers).await?;
        let mut reports = Vec::new();
        for wide in [false, true] {
            let run = self.run.clone();
            let bulk = move |n: u64| -> Vec<Event> {
                if wide {
                    let tags = (0..WIDE_TAGS).map(|t| format!("wide{run}-{writers}-{n}-{t}"));
                    vec![Event::new("Imported", json!({})).with_tags(tags)]
                } else {
                    let id = |i| format!("bulk{run}-{writers}-{n}-{i}");
                    (0..BULK_BATCH)
                        .map(|i| event("Imported", &id(i), &id(i), i))
                        .collect()
                }
            };
            let prefix = if wide { "bw" } else { "bb" };
            let mut report = self.beside(writers, prefix, bulk).await?;
            report.extra.insert(
                0,
                ("bulk", json!(if wide { "1x70tags" } else { "100x2tags" })),
            );
            reports.push(Self::with_ratio(report, baseline));
        }
        Ok(reports)
    }

    /// Disjoint guarded appends (on boundaries named `prefix`…) beside one writer that keeps
    /// appending `bulk(n)`, its n-th append.
    async fn beside(
        &mut self,
        writers: usize,
        prefix: &str,
        bulk: impl Fn(u64) -> Vec<Event> + Send + 'static,
    ) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers + 1).await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bulk = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut appends, mut busy) = (0u64, Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch = bulk(appends);
                    let t0 = Instant::now();
                    store.append(batch, None).await?;
                    busy += t0.elapsed();
                    appends += 1;
                }
                Ok::<_, BoxError>((appends, busy))
            })
        };
        let measured = self.disjoint_guarded(&store, writers, prefix).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (appends, busy) = bulk.await??;
        let mut report = measured?.report(Scenario::BesideBulk, writers, in_store);
        let bulk_ms = busy.as_secs_f64() * 1000.0 / appends.max(1) as f64;
        report.extra.push(("bulk_appends", json!(appends)));
        report.extra.push(("bulk_ms", json!(round(bulk_ms, 1))));
        Ok(report)
    }

    /// Every writer on one boundary: read, decide the next sequence number, append guarded,
    /// retry on conflict. The log must then hold 0, 1, 2, … without a gap or a repeat.
    async fn append_hot(&mut self, writers: usize) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers).await?;
        let boundary = format!("hot{}-{writers}-{}", self.run, self.baselines.len());
        let tag = format!("course:{boundary}");
        let query = Query::from(QueryItem::tagged([tag.clone()]));
        let measured = {
            let (store, query, boundary) = (store.clone(), query.clone(), boundary.clone());
            measure(writers, self.duration(), move |w, _| {
                let (store, query, boundary) = (store.clone(), query.clone(), boundary.clone());
                async move { decide_next(&store, &query, &boundary, &format!("w{w}")).await }
            })
            .await?
        };
        let log = store.read(&query, ReadOptions::default()).await?;
        let sequence: Vec<u64> = log
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap_or(u64::MAX))
            .collect();
        let lost_updates = sequence
            .iter()
            .enumerate()
            .filter(|(i, n)| *i as u64 != **n)
            .count();
        let mut report = measured.report(Scenario::AppendHot, writers, in_store);
        report
            .extra
            .push(("invariant_ok", json!(lost_updates == 0)));
        report
            .extra
            .push(("boundary_events", json!(sequence.len())));
        if writers == 1 {
            self.baselines
                .insert((Scenario::AppendHot, 1), report.appends_per_s);
        }
        let baseline = self.baseline(Scenario::AppendHot, 1).await?;
        assert_eq!(lost_updates, 0, "append-hot lost updates: {sequence:?}");
        Ok(Self::with_ratio(report, baseline))
    }

    /// 90% guarded appends on the writer's own boundary, 10% read-decide-append on one of four
    /// hot boundaries.
    async fn append_mixed(&mut self, writers: usize) -> Result<Report, BoxError> {
        let (store, in_store) = self.contention_store(writers).await?;
        let run = self.run.clone();
        let measured = measure(writers, self.duration(), move |w, i| {
            let store = store.clone();
            let run = run.clone();
            async move {
                if i % 10 == 9 {
                    let boundary = format!("mixhot{run}-{writers}-{}", (w as u64 + i) % 4);
                    let query = Query::from(QueryItem::tagged([format!("course:{boundary}")]));
                    decide_next(&store, &query, &boundary, &format!("w{w}")).await
                } else {
                    let course = format!("mix{run}-{writers}-{w}-{i}");
                    let query = Query::from(QueryItem::tagged([format!("course:{course}")]));
                    let e = event("Subscribed", &course, &course, i);
                    store
                        .append([e], Some(AppendCondition::new(query, None)))
                        .await?;
                    Ok(ONE_APPENDED)
                }
            }
        })
        .await?;
        self.against_raw(measured.report(Scenario::AppendMixed, writers, in_store))
            .await
    }
}

/// Read the hot boundary's last event, decide the next number, append guarded by the whole
/// boundary; on conflict back off (jittered, growing) and retry.
async fn decide_next(
    store: &PgEventStore,
    query: &Query,
    boundary: &str,
    writer: &str,
) -> Result<Outcome, BoxError> {
    let mut conflicts = 0;
    loop {
        let last = store
            .read(query, ReadOptions::default().backwards().limit(1))
            .await?;
        let next = last
            .events()
            .first()
            .map_or(0, |e| e.payload["n"].as_u64().expect("a counted event") + 1);
        let e = event("Counted", boundary, writer, next);
        match store.append([e], Some(last.append_condition()?)).await {
            Ok(_) => {
                return Ok(Outcome {
                    events: 1,
                    conflicts,
                });
            }
            Err(e) if e.is_append_condition_failed() => {
                conflicts += 1;
                tokio::time::sleep(backoff(conflicts)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Full jitter: a random wait up to 1 ms × 2^attempt, at most 250 ms.
fn backoff(attempt: u64) -> Duration {
    let cap_us = (1_000u64 << attempt.min(8)).min(250_000);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_micros(random % cap_us)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "The contention benchmark needs PostgreSQL: set DATABASE_URL, e.g.\n  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --release --example contention -- all"
        );
        std::process::exit(2);
    };
    let max_writers = *args.writers.iter().max().expect("writers");
    let needs_stores = args.scenarios.iter().any(|s| {
        !matches!(
            s,
            Scenario::GuardLatency
                | Scenario::DecideCached
                | Scenario::ReadThroughput
                | Scenario::FeedCatchUp
                | Scenario::LiveLatency
        )
    });
    eprintln!(
        "contention: {} s per measurement, writers {:?}, {} events loaded",
        args.seconds, args.writers, args.events
    );
    let (contention, raw) = if needs_stores {
        let contention = fresh_store(&url, "bench_contention", max_writers.max(2)).await?;
        let raw = fresh_store(&url, "bench_raw", max_writers.max(2)).await?;
        load(&contention, 1, args.events).await?;
        load(&raw, 1, args.events).await?;
        (contention, raw)
    } else {
        let s = store_at(&url, dcbstore::pg::DEFAULT_SCHEMA, 1, args.group).await?;
        (s.clone(), s)
    };
    let mut bench = Bench {
        url,
        run: format!("{:x}", std::process::id()),
        args,
        contention,
        raw,
        baselines: HashMap::new(),
    };
    let json_lines = bench.args.json;
    print_header(json_lines);
    for scenario in bench.args.scenarios.clone() {
        match scenario {
            Scenario::GuardLatency => {
                for r in bench.guard_latency().await? {
                    r.print(json_lines);
                }
            }
            Scenario::DecideCached => {
                for r in bench.decide_cached().await? {
                    r.print(json_lines);
                }
            }
            Scenario::ReadThroughput => {
                for r in bench.read_throughput().await? {
                    r.print(json_lines);
                }
            }
            Scenario::FeedCatchUp => {
                for r in bench.feed_catch_up().await? {
                    r.print(json_lines);
                }
            }
            Scenario::LiveLatency => {
                for writers in bench.args.writers.clone() {
                    bench.live_latency(writers).await?.print(json_lines);
                }
            }
            Scenario::BesideBulk => {
                for writers in bench.args.writers.clone() {
                    for r in bench.beside_bulk(writers).await? {
                        r.print(json_lines);
                    }
                }
            }
            _ => {
                for writers in bench.args.writers.clone() {
                    let report = match scenario {
                        Scenario::RawInsert => bench.raw_insert(writers).await?,
                        Scenario::AppendUnguarded => bench.append_unguarded(writers).await?,
                        Scenario::AppendDisjoint => bench.append_disjoint(writers).await?,
                        Scenario::AppendHot => bench.append_hot(writers).await?,
                        Scenario::AppendMixed => bench.append_mixed(writers).await?,
                        Scenario::DecideDisjoint => bench.decide_disjoint(writers).await?,
                        _ => unreachable!(),
                    };
                    report.print(json_lines);
                }
            }
        }
    }
    Ok(())
}
