//! Reads on a streaming replica, measured beside reads on the primary in one run: what a
//! replica takes off the primary, and what its lag costs decisions.
//!
//! ```sh
//! .ci/standby   # a hot standby of the local server on 127.0.0.1:5433 (as root)
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//! DATABASE_REPLICA_URL=postgres://postgres@127.0.0.1:5433/postgres \
//!     cargo run --release --example replicas -- [--seconds 5] [--writers 4] [--lags 0,20,100]
//! ```
//!
//! - `decisions`: `--writers` deciders enrol students in 200 shared courses (read the course's
//!   boundary, append guarded by it, re-read the latest after a conflict, as `decide` does),
//!   reading on the primary, on the replica with `LatestReads::OnPrimary` and on the replica with
//!   `LatestReads::AwaitReplay`, at each replica lag of `--lags` (milliseconds, made with the
//!   standby's `recovery_min_apply_delay`). Per run: decisions/s, p50 and p99 latency,
//!   conflicts per decision, and the CPU time the primary's and the replica's server processes
//!   spent per decision (from `/proc`: run it on the servers' machine, as root or as
//!   `postgres`).
//! - `catch-up`: a subscription from the start of a log of `--events` events to its end, on the
//!   primary and on the replica: events/s and the primary's CPU per 1,000 events.
//!
//! The data lives in the schema `bench_replicas`, which the runner drops and recreates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcbstore::pg::{LatestReads, ReadOn};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{Event, EventStore, PgEventStore, Query, QueryItem, ReadOptions, SubscribeOptions};
use futures::StreamExt;
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &str = "bench_replicas";
const COURSES: usize = 200;
/// Events in each course before the runs start.
const PRELOAD: usize = 20;

struct Args {
    seconds: f64,
    writers: usize,
    lags: Vec<u64>,
    events: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        seconds: 5.0,
        writers: 4,
        lags: vec![0, 20, 100],
        events: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad {flag} {value:?}");
        match flag.as_str() {
            "--seconds" => parsed.seconds = value.parse().map_err(|_| bad())?,
            "--writers" => parsed.writers = value.parse().map_err(|_| bad())?,
            "--events" => parsed.events = value.parse().map_err(|_| bad())?,
            "--lags" => {
                parsed.lags = value
                    .split(',')
                    .map(|l| l.trim().parse().map_err(|_| format!("bad lag {l:?}")))
                    .collect::<Result<_, _>>()?;
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}\nusage: replicas [--seconds S] [--writers N] [--lags 0,20,100] [--events N]"
                ));
            }
        }
    }
    Ok(parsed)
}

/// The CPU time (user and system) a PostgreSQL server's processes have spent: its postmaster's,
/// its children's still running, and those of its children that ended (the postmaster's
/// `cutime`/`cstime`). Read from `/proc`, in clock ticks of 10 ms.
struct ServerCpu {
    postmaster: u32,
}

impl ServerCpu {
    async fn of(client: &tokio_postgres::Client) -> Result<Self, BoxError> {
        let dir: String = client
            .query_one("SELECT current_setting('data_directory')", &[])
            .await?
            .get(0);
        let pid = std::fs::read_to_string(format!("{dir}/postmaster.pid"))?;
        let postmaster = pid.lines().next().unwrap_or_default().trim().parse()?;
        Ok(Self { postmaster })
    }

    /// CPU time so far.
    fn spent(&self) -> Duration {
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command (which may hold spaces), from field 3 on.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<u64> = rest
                .split(' ')
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            // ppid is field 4, utime 14, stime 15, cutime 16, cstime 17 (1-based).
            let (ppid, own, children) =
                (fields[0], fields[10] + fields[11], fields[12] + fields[13]);
            if pid == self.postmaster {
                ticks += own + children;
            } else if ppid == u64::from(self.postmaster) {
                ticks += own;
            }
        }
        Duration::from_millis(ticks * 10)
    }
}

/// One configuration of the decision runs.
#[derive(Clone, Copy)]
struct Reading {
    name: &'static str,
    reads: ReadOn,
    latest: LatestReads,
}

const READINGS: [Reading; 3] = [
    Reading {
        name: "primary",
        reads: ReadOn::Primary,
        latest: LatestReads::OnPrimary,
    },
    Reading {
        name: "replica, latest on primary",
        reads: ReadOn::Replicas,
        latest: LatestReads::OnPrimary,
    },
    Reading {
        name: "replica, latest awaits replay",
        reads: ReadOn::Replicas,
        latest: LatestReads::AwaitReplay,
    },
];

struct Servers {
    url: String,
    replica_url: String,
    primary: ServerCpu,
    replica: ServerCpu,
    admin: tokio_postgres::Client,
    replica_admin: tokio_postgres::Client,
}

async fn client(url: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl Servers {
    async fn open() -> Result<Self, BoxError> {
        let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
        let replica_url = std::env::var("DATABASE_REPLICA_URL")
            .map_err(|_| "DATABASE_REPLICA_URL is not set (.ci/standby starts a standby)")?;
        let (admin, replica_admin) = (client(&url).await?, client(&replica_url).await?);
        Ok(Self {
            primary: ServerCpu::of(&admin).await?,
            replica: ServerCpu::of(&replica_admin).await?,
            url,
            replica_url,
            admin,
            replica_admin,
        })
    }

    async fn store(&self, reads: ReadOn, latest: LatestReads) -> Result<PgEventStore, BoxError> {
        Ok(PgEventStore::builder()
            .schema(SCHEMA)
            .pool_size(16)
            .replica(&self.replica_url)
            .reads_on(reads)
            .consumers_on(reads)
            .latest_reads(latest)
            .connect(&self.url)
            .await?)
    }

    /// Delays the standby's replay of each commit by `lag` (`recovery_min_apply_delay`).
    async fn set_lag(&self, lag: Duration) -> Result<(), BoxError> {
        let millis = lag.as_millis();
        self.replica_admin
            .batch_execute(&format!(
                "ALTER SYSTEM SET recovery_min_apply_delay = '{millis}ms'"
            ))
            .await?;
        self.replica_admin
            .batch_execute("SELECT pg_reload_conf()")
            .await?;
        // The new setting applies from the next commit record; let the last ones through.
        tokio::time::sleep(lag + Duration::from_millis(200)).await;
        Ok(())
    }

    /// Waits until the standby has replayed what the primary has flushed.
    async fn replayed(&self) -> Result<(), BoxError> {
        let flushed: String = self
            .admin
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await?
            .get(0);
        loop {
            let done: bool = self
                .replica_admin
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&flushed],
                )
                .await?
                .get(0);
            if done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn course(c: usize) -> Query {
    Query::from(QueryItem::tagged([format!("course:{c}")]))
}

fn subscribed(c: usize, n: u64) -> Event {
    Event::new("StudentSubscribed", json!({"course": c, "student": n}))
        .with_tags([format!("course:{c}")])
}

/// What one decision run measured.
struct DecisionRun {
    decisions: u64,
    conflicts: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
    primary_cpu: Duration,
    replica_cpu: Duration,
}

/// `writers` deciders for `seconds` on `store`.
async fn decide_for(
    servers: &Servers,
    store: &PgEventStore,
    writers: usize,
    seconds: f64,
) -> Result<DecisionRun, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (conflicts, students) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (primary_before, replica_before) = (servers.primary.spent(), servers.replica.spent());
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, conflicts, students) = (
                store.clone(),
                stop.clone(),
                conflicts.clone(),
                students.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let c = (rng % COURSES as u64) as usize;
                    let student = students.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    let mut options = ReadOptions::default();
                    loop {
                        let read = store.read(&course(c), options).await?;
                        let condition = read.append_condition()?;
                        match store
                            .append([subscribed(c, student)], Some(condition))
                            .await
                        {
                            Ok(_) => break,
                            Err(e) if e.is_append_condition_failed() => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                options = options.latest();
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    latencies.push(began.elapsed());
                }
                Ok::<_, dcbstore::Error>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(DecisionRun {
        decisions: latencies.len() as u64,
        conflicts: conflicts.load(Ordering::Relaxed),
        latencies,
        elapsed,
        primary_cpu: servers.primary.spent() - primary_before,
        replica_cpu: servers.replica.spent() - replica_before,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Drops and recreates the schema, with `PRELOAD` events in each course.
async fn prepare(servers: &Servers) -> Result<PgEventStore, BoxError> {
    servers
        .admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await?;
    let store = servers
        .store(ReadOn::Primary, LatestReads::OnPrimary)
        .await?;
    store.migrate().await?;
    for c in 0..COURSES {
        let events = (0..PRELOAD as u64).map(|n| subscribed(c, n));
        store.append(events, None).await?;
    }
    servers.replayed().await?;
    Ok(store)
}

async fn decisions(servers: &Servers, args: &Args) -> Result<(), BoxError> {
    prepare(servers).await?;
    println!(
        "\ndecisions: {} deciders, {COURSES} shared courses, {} s per run",
        args.writers, args.seconds
    );
    println!(
        "{:>6}  {:<30} {:>10} {:>8} {:>8} {:>10} {:>12} {:>12}",
        "lag_ms",
        "reads",
        "decided/s",
        "p50_ms",
        "p99_ms",
        "conflicts",
        "primary_cpu",
        "replica_cpu"
    );
    println!(
        "{:>6}  {:<30} {:>10} {:>8} {:>8} {:>10} {:>12} {:>12}",
        "", "", "", "", "", "/decision", "ms/decision", "ms/decision"
    );
    let mut baseline_cpu = None;
    for &lag in &args.lags {
        servers.set_lag(Duration::from_millis(lag)).await?;
        for reading in READINGS {
            // Reads on the primary do not depend on the replica's lag: measured once.
            if reading.reads == ReadOn::Primary && lag != args.lags[0] {
                continue;
            }
            let store = servers.store(reading.reads, reading.latest).await?;
            let run = decide_for(servers, &store, args.writers, args.seconds).await?;
            let per = |cpu: Duration| cpu.as_secs_f64() * 1e3 / run.decisions.max(1) as f64;
            let primary_cpu = per(run.primary_cpu);
            let ratio = match baseline_cpu {
                None if reading.reads == ReadOn::Primary => {
                    baseline_cpu = Some(primary_cpu);
                    String::new()
                }
                Some(base) => format!(
                    "  primary_cpu_vs_reads_on_primary={:.2}",
                    primary_cpu / base
                ),
                None => String::new(),
            };
            println!(
                "{:>6}  {:<30} {:>10.0} {:>8.2} {:>8.2} {:>10.3} {:>12.3} {:>12.3}{ratio}",
                lag,
                reading.name,
                run.decisions as f64 / run.elapsed.as_secs_f64(),
                percentile(&run.latencies, 0.5),
                percentile(&run.latencies, 0.99),
                run.conflicts as f64 / run.decisions.max(1) as f64,
                primary_cpu,
                per(run.replica_cpu),
            );
        }
    }
    servers.set_lag(Duration::ZERO).await?;
    Ok(())
}

async fn catch_up(servers: &Servers, args: &Args) -> Result<(), BoxError> {
    let store = prepare(servers).await?;
    let mut written = (COURSES * PRELOAD) as u64;
    while written < args.events as u64 {
        let batch = (0..1_000).map(|n| subscribed((written + n) as usize % COURSES, written + n));
        store.append(batch, None).await?;
        written += 1_000;
    }
    servers.replayed().await?;
    println!("\ncatch-up: a subscription from the start of {written} events to the end");
    println!(
        "{:<10} {:>10} {:>22}",
        "on", "events/s", "primary_cpu_ms/1k_ev"
    );
    let mut first = None;
    for (name, on) in [("primary", ReadOn::Primary), ("replica", ReadOn::Replicas)] {
        let store = servers.store(on, LatestReads::OnPrimary).await?;
        let before = servers.primary.spent();
        let started = Instant::now();
        let options = SubscribeOptions::default().page_size(512);
        let mut subscription = store.subscribe(&Query::all(), None, options);
        let mut seen = 0u64;
        while seen < written {
            subscription
                .next()
                .await
                .ok_or("the subscription ended")??;
            seen += 1;
        }
        let rate = seen as f64 / started.elapsed().as_secs_f64();
        let cpu = (servers.primary.spent() - before).as_secs_f64() * 1e3 / (seen as f64 / 1e3);
        let ratio = first.map_or(String::new(), |f: f64| {
            format!("  vs_primary={:.2}", rate / f)
        });
        first.get_or_insert(rate);
        println!("{name:<10} {rate:>10.0} {cpu:>22.3}{ratio}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let servers = Servers::open().await?;
    println!(
        "replicas: primary {} (postmaster {}), replica {} (postmaster {})",
        servers.url, servers.primary.postmaster, servers.replica_url, servers.replica.postmaster
    );
    let outcome = async {
        decisions(&servers, &args).await?;
        catch_up(&servers, &args).await
    }
    .await;
    // Whatever happened, the standby replays without delay again.
    servers.set_lag(Duration::ZERO).await?;
    outcome
}
