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

mod cached;
mod consumers;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcbstore::{AppendCondition, Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions};
use futures::TryStreamExt;
use serde_json::{Value, json};
use tokio::sync::Barrier;

const LOAD_SQL: &str = include_str!("load.sql");
const EVENTS_DDL: &str = include_str!("../../initdb/02_events.sql");
const BIG_BOUNDARY: u64 = 10_000;
/// Events per batch of the bulk writer in beside-bulk: each brings four lock keys of its own.
const BULK_BATCH: u64 = 100;
/// Tags of the one event of the wide writer in beside-bulk.
const WIDE_TAGS: u64 = 70;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scenario {
    RawInsert,
    AppendUnguarded,
    AppendDisjoint,
    AppendHot,
    AppendMixed,
    BesideBulk,
    GuardLatency,
    ReadThroughput,
    FeedCatchUp,
    LiveLatency,
    DecideDisjoint,
    DecideCached,
}

impl Scenario {
    const ALL: [Scenario; 12] = [
        Scenario::RawInsert,
        Scenario::AppendUnguarded,
        Scenario::AppendDisjoint,
        Scenario::AppendHot,
        Scenario::AppendMixed,
        Scenario::BesideBulk,
        Scenario::GuardLatency,
        Scenario::ReadThroughput,
        Scenario::DecideDisjoint,
        Scenario::DecideCached,
        Scenario::FeedCatchUp,
        Scenario::LiveLatency,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::RawInsert => "raw-insert",
            Scenario::AppendUnguarded => "append-unguarded",
            Scenario::AppendDisjoint => "append-disjoint",
            Scenario::AppendHot => "append-hot",
            Scenario::AppendMixed => "append-mixed",
            Scenario::BesideBulk => "beside-bulk",
            Scenario::GuardLatency => "guard-latency",
            Scenario::DecideCached => "decide-cached",
            Scenario::ReadThroughput => "read-throughput",
            Scenario::FeedCatchUp => "feed-catch-up",
            Scenario::LiveLatency => "live-latency",
            Scenario::DecideDisjoint => "decide-disjoint",
        }
    }
}

#[derive(Debug)]
struct Args {
    scenarios: Vec<Scenario>,
    writers: Vec<usize>,
    seconds: f64,
    events: u64,
    json: bool,
    quick: bool,
    ten_million: bool,
    /// `--cached`: `decide-disjoint` decides through a `DecisionCache` per writer.
    cached: bool,
    /// Group commit: the most appends per transaction and the groups in flight.
    group: (usize, usize),
}

fn usage() -> String {
    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    format!(
        "usage: contention <{}|all> [--writers 1,8,32,64] [--seconds S] [--events N] [--group N] [--in-flight N] [--no-notify] [--whole-boundary-guard] [--cached] [--json] [--quick] [--ten-million]",
        names.join("|")
    )
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or_else(usage)?;
    let scenarios = if which == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![
            *Scenario::ALL
                .iter()
                .find(|s| s.name() == which)
                .ok_or_else(|| format!("unknown scenario {which:?}\n{}", usage()))?,
        ]
    };
    let mut parsed = Args {
        scenarios,
        writers: vec![1, 8, 32, 64],
        seconds: 10.0,
        events: 100_000,
        json: false,
        quick: false,
        ten_million: false,
        cached: false,
        group: (
            dcbstore::pg::DEFAULT_MAX_GROUP_SIZE,
            dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT,
        ),
    };
    let mut writers_given = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => {
                parsed.writers = value()?
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse()
                            .map_err(|_| format!("bad writer count {w:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                writers_given = true;
            }
            "--seconds" => parsed.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--events" => parsed.events = value()?.parse().map_err(|_| "bad --events")?,
            "--group" => parsed.group.0 = value()?.parse().map_err(|_| "bad --group")?,
            "--in-flight" => parsed.group.1 = value()?.parse().map_err(|_| "bad --in-flight")?,
            "--no-notify" => NOTIFY.store(false, std::sync::atomic::Ordering::Relaxed),
            "--whole-boundary-guard" => {
                WHOLE_BOUNDARY.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            "--cached" => parsed.cached = true,
            "--json" => parsed.json = true,
            "--quick" => parsed.quick = true,
            "--ten-million" => parsed.ten_million = true,
            other => return Err(format!("unknown option {other:?}\n{}", usage())),
        }
    }
    if parsed.quick {
        parsed.seconds = parsed.seconds.min(1.0);
        parsed.events = parsed.events.min(2_000);
        if !writers_given {
            parsed.writers = vec![1, 4];
        }
    }
    if parsed.writers.is_empty() || parsed.writers.contains(&0) {
        return Err("--writers needs positive counts".into());
    }
    Ok(parsed)
}

/// One line of the report.
#[derive(Debug, Default, Clone)]
struct Report {
    scenario: &'static str,
    writers: usize,
    events_in_store: u64,
    appends_per_s: f64,
    events_per_s: f64,
    conflicts_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    baseline_per_s: Option<f64>,
    ratio: Option<f64>,
    extra: Vec<(&'static str, Value)>,
}

impl Report {
    fn to_json(&self) -> Value {
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

    fn print(&self, json_lines: bool) {
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

fn print_header(json_lines: bool) {
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

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// What one operation did.
struct Outcome {
    events: u64,
    conflicts: u64,
}

/// One event appended, no conflict on the way.
const ONE_APPENDED: Outcome = Outcome {
    events: 1,
    conflicts: 0,
};

/// Totals of one measurement.
struct Measured {
    ops: u64,
    events: u64,
    conflicts: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn report(mut self, scenario: Scenario, writers: usize, events_in_store: u64) -> Report {
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
async fn measure<F, Fut>(writers: usize, duration: Duration, op: F) -> Result<Measured, BoxError>
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

/// `--whole-boundary-guard`: `decide-disjoint` builds its conditions by hand from the read
/// (the same guarantee, but the guard searches the whole boundary instead of what the read
/// could not see).
static WHOLE_BOUNDARY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--no-notify`, for every store the runner opens.
static NOTIFY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// A store in `schema` behind a pool of `size` connections, grouping appends as `group` says.
async fn store_at(
    url: &str,
    schema: &str,
    size: usize,
    (group, in_flight): (usize, usize),
) -> Result<PgEventStore, BoxError> {
    Ok(PgEventStore::builder()
        .pool_size(size)
        .schema(schema)
        .max_group_size(group)
        .groups_in_flight(in_flight)
        .notifications(NOTIFY.load(std::sync::atomic::Ordering::Relaxed))
        .connect(url)
        .await?)
}

/// A store in `schema`, dropped and recreated.
async fn fresh_store(url: &str, schema: &str, pool_size: usize) -> Result<PgEventStore, BoxError> {
    let defaults = (
        dcbstore::pg::DEFAULT_MAX_GROUP_SIZE,
        dcbstore::pg::DEFAULT_GROUPS_IN_FLIGHT,
    );
    fresh_grouped_store(url, schema, pool_size, defaults).await
}

/// Like [`fresh_store`], grouping appends as `group` says.
async fn fresh_grouped_store(
    url: &str,
    schema: &str,
    pool_size: usize,
    group: (usize, usize),
) -> Result<PgEventStore, BoxError> {
    let store = store_at(url, schema, pool_size, group).await?;
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    drop(client);
    store.migrate().await?;
    Ok(store)
}

/// The same store (and data) behind a pool of `size` connections.
async fn resized(
    url: &str,
    store: &PgEventStore,
    size: usize,
    group: (usize, usize),
) -> Result<PgEventStore, BoxError> {
    store_at(url, store.schema(), size, group).await
}

/// Loads events `from..=to` with `load.sql`; large loads drop the secondary indexes first and
/// rebuild them with `migrate()` (the same DDL), which is much faster than maintaining them.
async fn load(store: &PgEventStore, from: u64, to: u64) -> Result<(), BoxError> {
    if to < from {
        return Ok(());
    }
    let started = Instant::now();
    let schema = store.schema().to_string();
    let mut client = store.pool().get().await?;
    let bulk = to - from >= 100_000;
    if bulk {
        client
            .batch_execute(&format!(
                "DROP INDEX \"{schema}\".events_type_position_idx, \"{schema}\".events_tags_idx, \"{schema}\".events_payload_idx, \"{schema}\".events_tx_id_position_idx"
            ))
            .await?;
    }
    let chunk = 250_000;
    let mut start = from;
    while start <= to {
        let end = (start + chunk - 1).min(to);
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
            .await?;
        tx.execute(
            LOAD_SQL,
            &[&(start as i64), &(end as i64), &(BIG_BOUNDARY as i64)],
        )
        .await?;
        tx.commit().await?;
        start = end + 1;
    }
    if bulk {
        // The schema's own DDL recreates the dropped indexes (`migrate()` would not: the
        // schema's version is current).
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL search_path TO \"{schema}\"; {EVENTS_DDL}"
        ))
        .await?;
        tx.commit().await?;
    }
    drop(client);
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".events"))
        .await?;
    eprintln!(
        "  loaded events {from}..={to} into {schema} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn event(kind: &str, course: &str, student: &str, n: u64) -> Event {
    Event::new(kind, json!({"course": course, "student": student, "n": n}))
        .with_tags([format!("course:{course}"), format!("student:{student}")])
}

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

    async fn guard_latency(&mut self) -> Result<Vec<Report>, BoxError> {
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
    async fn large_store(&self) -> Result<(PgEventStore, u64), BoxError> {
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

    async fn read_throughput(&mut self) -> Result<Vec<Report>, BoxError> {
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
        let query = Query::from(QueryItem::tagged([tag.clone()]));
        let t = Instant::now();
        let r = store.read(&query, ReadOptions::default()).await?;
        read.push(t.elapsed());
        let t = Instant::now();
        store
            .append(
                [Event::new("Claimed", json!({"n": i})).with_tags([tag])],
                Some(condition(&r)?),
            )
            .await?;
        append.push(t.elapsed());
    }
    out.push(("empty", op, append));
    out.push(("empty", "read", read));

    let (mut append, mut read) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        // Boundaries old:1 … old:1000 hold one event each, among the first loaded.
        let tag = format!("old:{}", 1 + (round * iterations + i) % 1000);
        let query = Query::from(QueryItem::tagged([tag.clone()]));
        let t = Instant::now();
        let r = store.read(&query, ReadOptions::default()).await?;
        read.push(t.elapsed());
        let t = Instant::now();
        store
            .append(
                [Event::new("Touched", json!({"n": i})).with_tags([format!("touch:{tag}")])],
                Some(condition(&r)?),
            )
            .await?;
        append.push(t.elapsed());
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

/// Resident memory of this process, in MiB (Linux).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1024.0 * 1024.0))
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
