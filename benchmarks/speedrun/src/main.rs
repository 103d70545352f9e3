//! The course-enrolment "speedrun" of a published DCB benchmark, on dcbstore and on UmaDB, side
//! by side in one run, alternating, with the same workload and the same measurement.
//!
//! Per iteration, each client registers 10 courses and 10 students (each an append guarded by a
//! condition on its own tag, no `after`), then every student joins every course: 100 decisions,
//! each a read of the two-item query
//! `(StudentRegistered|StudentJoinedCourse, [student]) OR (CourseRegistered|StudentJoinedCourse, [course])`,
//! a capacity check and an append of `StudentJoinedCourse` tagged `[student, course]` guarded by
//! what the read saw. Ids are fresh per client, so nothing conflicts: it measures the cost of
//! the operations, not of contention.
//!
//! Targets (`--targets`, default all that are reachable):
//! - `umadb`: UmaDB's server at `UMADB_URL` through its Rust client, `after` = the read's head;
//! - `server`: dcbstore's server (`dcbstore serve`, UmaDB's protocol on PostgreSQL) at
//!   `DCBSTORE_SERVER_URL`, through the same client in the same way;
//! - `dcbstore`: one `PgEventStore` at `DATABASE_URL` shared by the clients (one task each),
//!   guarded by `ReadResult::append_condition()`;
//! - `floor`: the same decisions with no guard, by hand through the same pool: the read of the
//!   boundary as a prepared statement, then a single-row `INSERT` with its commit (what a
//!   decision costs PostgreSQL when nothing is checked);
//! - `memory`: dcbstore's in-memory store;
//! - `dcbstore@GxF`: dcbstore with at most `G` appends per group commit and `F` groups in flight
//!   (e.g. `dcbstore@1x2`: no grouping), to compare settings side by side;
//! - `server@PORT`: another dcbstore server, on loopback at `PORT` (e.g. a build of other code,
//!   to compare two servers side by side).
//!
//! `--workload appends` measures conditional appends alone instead: each client appends one
//! event after another to a boundary of its own (its tag), each guarded by that boundary and
//! `after` the position of its previous append (no read; the `floor` inserts unguarded).
//!
//! Run it with `benchmarks/speedrun/run`, which installs and starts the peer.

mod clients;
mod measure;

use dcbstore::{MemoryEventStore, PgEventStore};

use clients::Target;
use measure::{Measured, Workload, measure, median};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    clients: Vec<usize>,
    seconds: f64,
    rounds: usize,
    targets: Vec<String>,
    workload: Workload,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: vec![1, 8, 32],
        seconds: 10.0,
        rounds: 2,
        targets: ["umadb", "server", "dcbstore", "floor"]
            .map(String::from)
            .to_vec(),
        workload: Workload::Speedrun,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => {
                args.clients = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|_| "--clients takes numbers".to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|_| "--seconds takes a number")?
            }
            "--rounds" => args.rounds = value()?.parse().map_err(|_| "--rounds takes a number")?,
            "--targets" => args.targets = value()?.split(',').map(String::from).collect(),
            "--workload" => {
                args.workload = match value()?.as_str() {
                    "speedrun" => Workload::Speedrun,
                    "appends" => Workload::Appends,
                    _ => return Err("--workload takes speedrun or appends".to_string()),
                }
            }
            other => {
                return Err(format!(
                    "unknown option {other}: [--clients 1,8,32] [--seconds S] [--rounds N] [--targets umadb,server,dcbstore,floor,memory] [--workload speedrun|appends]"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let url = std::env::var("DATABASE_URL").ok();
    let uma = std::env::var("UMADB_URL").ok();
    let server = std::env::var("DCBSTORE_SERVER_URL").ok();
    let mut targets = Vec::new();
    for name in &args.targets {
        match (name.as_str(), &url, &uma) {
            ("umadb", _, Some(uma)) => targets.push(Target::UmaDb(uma.clone(), name.clone())),
            ("server", _, _) if server.is_some() => {
                let url = server.clone().expect("checked");
                targets.push(Target::UmaDb(url, name.clone()));
            }
            (name, _, _) if name.starts_with("server@") => {
                let port: u16 = name["server@".len()..].parse()?;
                let url = format!("http://127.0.0.1:{port}");
                targets.push(Target::UmaDb(url, name.to_string()));
            }
            (name, Some(url), _) if name == "floor" || name.starts_with("dcbstore") => {
                // `dcbstore@GxF`: at most G appends per group, F groups in flight.
                let grouping = match name.split_once('@') {
                    None => None,
                    Some((_, g)) => {
                        let (group, in_flight) = g.split_once('x').ok_or("dcbstore@GxF")?;
                        Some((group.parse::<usize>()?, in_flight.parse::<usize>()?))
                    }
                };
                let schema = format!("speedrun_{}", name.replace(['@', 'x'], "_"));
                let mut builder = PgEventStore::builder()
                    .schema(&schema)
                    .pool_size(args.clients.iter().copied().max().unwrap_or(1).max(4));
                if let Some((group, in_flight)) = grouping {
                    builder = builder.max_group_size(group).groups_in_flight(in_flight);
                }
                let store = builder.connect(url).await?;
                // From an empty log, like the peer's fresh database.
                let client = store.pool().get().await?;
                let reset = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
                client.batch_execute(&reset).await?;
                std::mem::drop(client);
                store.migrate().await?;
                targets.push(if name == "floor" {
                    Target::Floor(store)
                } else {
                    Target::DcbStore(store, name.to_string())
                });
            }
            ("memory", _, _) => targets.push(Target::Memory(MemoryEventStore::new())),
            (other, _, _) => {
                eprintln!(
                    "skipping {other}: its URL is not set (UMADB_URL, DATABASE_URL, DCBSTORE_SERVER_URL)"
                )
            }
        }
    }
    let ops = match args.workload {
        Workload::Speedrun => "ops = registrations + decisions",
        Workload::Appends => {
            "ops = conditional appends, each after the client's previous one (register p50: theirs)"
        }
    };
    println!(
        "speedrun: {} s per measurement, {} rounds, medians; {ops}",
        args.seconds, args.rounds
    );
    println!(
        "{:>8} {:>7} {:>10} {:>12} {:>14} {:>11} {:>13} {:>15}",
        "target",
        "clients",
        "ops/s",
        "decisions/s",
        "decide p50 ms",
        "read p50 ms",
        "its append ms",
        "register p50 ms"
    );
    let mut results: Vec<(String, usize, f64, f64)> = Vec::new();
    for &clients in &args.clients {
        let mut per_target: Vec<Vec<Measured>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            // Alternate the order from round to round, so that no target always goes first.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..targets.len()).collect()
            } else {
                (0..targets.len()).rev().collect()
            };
            for i in order {
                let run = (round, args.workload);
                per_target[i].push(measure(&targets[i], clients, args.seconds, run).await?);
            }
        }
        for (target, measured) in targets.iter().zip(per_target) {
            let ops = median(measured.iter().map(|m| m.ops_per_s).collect());
            let decisions = median(measured.iter().map(|m| m.decisions_per_s).collect());
            let p50 = |f: fn(&Measured) -> f64| median(measured.iter().map(f).collect());
            println!(
                "{:>8} {:>7} {:>10.0} {:>12.0} {:>14.3} {:>11.3} {:>13.3} {:>15.3}",
                target.name(),
                clients,
                ops,
                decisions,
                p50(|m| m.decide_p50_ms),
                p50(|m| m.read_p50_ms),
                p50(|m| m.append_p50_ms),
                p50(|m| m.register_p50_ms),
            );
            results.push((target.name().to_string(), clients, ops, decisions));
        }
    }
    println!("\nratios, measured side by side in this run:");
    let decisions = args.workload == Workload::Speedrun;
    for &clients in &args.clients {
        let get = |name: &str| results.iter().find(|r| r.0 == name && r.1 == clients);
        if let (Some(d), Some(u)) = (get("dcbstore"), get("umadb")) {
            println!(
                "  {clients:>3} clients: dcbstore / umadb ops/s = {:.2}",
                d.2 / u.2
            );
        }
        if let (Some(s), Some(u)) = (get("server"), get("umadb")) {
            println!(
                "  {clients:>3} clients: server / umadb ops/s = {:.2}",
                s.2 / u.2
            );
        }
        if let (Some(s), Some(d)) = (get("server"), get("dcbstore")) {
            println!(
                "  {clients:>3} clients: server / dcbstore (the library) ops/s = {:.2}",
                s.2 / d.2
            );
        }
        if let (Some(d), Some(f)) = (get("dcbstore"), get("floor")) {
            println!(
                "  {clients:>3} clients: dcbstore / floor ops/s = {:.2}",
                d.2 / f.2
            );
        }
        if let (Some(d), Some(f), true) = (get("dcbstore"), get("floor"), decisions) {
            println!(
                "  {clients:>3} clients: dcbstore / floor decisions/s = {:.2}",
                d.3 / f.3
            );
        }
        for other in results
            .iter()
            .filter(|r| r.0.starts_with("server@") && r.1 == clients)
        {
            if let Some(s) = get("server") {
                println!(
                    "  {clients:>3} clients: server / {} ops/s = {:.2}",
                    other.0,
                    s.2 / other.2
                );
            }
        }
    }
    Ok(())
}
