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

use std::time::{Duration, Instant};

use dcbstore::{
    AppendCondition, Event, EventStore, MemoryEventStore, PgEventStore, Query, QueryItem,
};
use dcbstore::{ReadOptions, SequencedEvent};
use serde_json::{Value, json};
use umadb_client::AsyncUmaDbClient;
use umadb_dcb::{DcbAppendCondition, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const COURSES: usize = 10;
const STUDENTS: usize = 10;
const CAPACITY: u64 = 10;

/// One event as the decision folds it, whatever the store.
struct Seen {
    event_type: String,
    tags: Vec<String>,
    payload: Value,
}

/// The decision: may `student` join `course`, given the events of their boundary?
fn may_join(events: &[Seen], course: &str, student: &str) -> bool {
    let (mut capacity, mut joined, mut registered, mut already) = (None, 0, false, false);
    for e in events {
        let has = |tag: &str| e.tags.iter().any(|t| t == tag);
        match e.event_type.as_str() {
            "CourseRegistered" if has(course) => capacity = e.payload["capacity"].as_u64(),
            "StudentRegistered" if has(student) => registered = true,
            "StudentJoinedCourse" => {
                if has(course) {
                    joined += 1;
                }
                if has(course) && has(student) {
                    already = true;
                }
            }
            _ => {}
        }
    }
    registered && !already && capacity.is_some_and(|c| joined < c)
}

/// A store the speedrun drives.
#[derive(Clone)]
enum Target {
    /// A server of UmaDB's protocol, through UmaDB's client: its URL and label (`umadb`, or
    /// `server` and `server@PORT` for dcbstore's).
    UmaDb(String, String),
    /// A store and its label: `dcbstore`, or `dcbstore@GxF` for a group size and groups in
    /// flight of its own.
    DcbStore(PgEventStore, String),
    Floor(PgEventStore),
    Memory(MemoryEventStore),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::UmaDb(_, label) => label,
            Target::DcbStore(_, label) => label,
            Target::Floor(_) => "floor",
            Target::Memory(_) => "memory",
        }
    }
}

/// A client of one target: one task's connection to it.
enum Client {
    UmaDb(Box<AsyncUmaDbClient>),
    Store(PgEventStore),
    Floor(PgEventStore),
    Memory(MemoryEventStore),
}

fn boundary(course: &str, student: &str) -> Query {
    Query::from_items([
        QueryItem::typed(["StudentRegistered", "StudentJoinedCourse"]).tags([student]),
        QueryItem::typed(["CourseRegistered", "StudentJoinedCourse"]).tags([course]),
    ])
}

fn uma_query(items: &[(&[&str], &[&str])]) -> DcbQuery {
    DcbQuery::new().items(items.iter().map(|(types, tags)| {
        DcbQueryItem::new()
            .types(types.iter().copied())
            .tags(tags.iter().copied())
    }))
}

/// The floor's read of a boundary, in `schema`: the same query as the store's, its types kept
/// off the type index as the store's are (on a new table a cached generic plan otherwise walks
/// every event of the type).
fn floor_read(schema: &str) -> String {
    format!(
        "SELECT position, event_type, tags, payload FROM \"{schema}\".events \
         WHERE ((event_type || '') = ANY($1) AND tags @> $2) \
            OR ((event_type || '') = ANY($3) AND tags @> $4) \
         ORDER BY position"
    )
}

/// The floor's append: one row, no guard, its own commit.
fn floor_insert(schema: &str) -> String {
    format!(
        "INSERT INTO \"{schema}\".events (event_id, event_type, tags, payload) \
         VALUES ($1, $2, $3, $4)"
    )
}

impl Client {
    async fn open(target: &Target) -> Result<Self, BoxError> {
        Ok(match target {
            Target::UmaDb(url, _) => Client::UmaDb(Box::new(
                AsyncUmaDbClient::connect(url.clone(), None, None, None).await?,
            )),
            Target::DcbStore(s, _) => Client::Store(s.clone()),
            Target::Floor(s) => Client::Floor(s.clone()),
            Target::Memory(s) => Client::Memory(s.clone()),
        })
    }

    /// Registers an entity: `event_type` tagged `tag`, unless one is registered already.
    async fn register(&self, event_type: &str, tag: &str, payload: Value) -> Result<(), BoxError> {
        match self {
            Client::UmaDb(c) => {
                let event = DcbEvent::new()
                    .event_type(event_type)
                    .tags([tag])
                    .data(serde_json::to_vec(&payload)?);
                let condition = DcbAppendCondition::new(uma_query(&[(&[event_type], &[tag])]));
                c.append(vec![event], Some(condition), None).await?;
            }
            Client::Store(s) | Client::Floor(s) => register(s, event_type, tag, payload).await?,
            Client::Memory(s) => register(s, event_type, tag, payload).await?,
        }
        Ok(())
    }

    /// One decision: `student` joins `course` if the boundary allows it. Returns when its
    /// read ended (the rest is deciding and appending).
    async fn decide(&self, course: &str, student: &str) -> Result<Instant, BoxError> {
        let joined = json!({"course": course, "student": student});
        let read_at = match self {
            Client::UmaDb(c) => {
                let query = uma_query(&[
                    (&["StudentRegistered", "StudentJoinedCourse"], &[student]),
                    (&["CourseRegistered", "StudentJoinedCourse"], &[course]),
                ]);
                let (events, head) = c
                    .read_with_head(Some(query.clone()), None, false, None)
                    .await?;
                let read_at = Instant::now();
                let seen: Vec<Seen> = events
                    .into_iter()
                    .map(|e| Seen {
                        payload: serde_json::from_slice(&e.event.data).unwrap_or(Value::Null),
                        event_type: e.event.event_type,
                        tags: e.event.tags,
                    })
                    .collect();
                assert!(may_join(&seen, course, student), "no conflicts by design");
                let event = DcbEvent::new()
                    .event_type("StudentJoinedCourse")
                    .tags([student, course])
                    .data(serde_json::to_vec(&joined)?);
                let condition = DcbAppendCondition::new(query).after(head);
                c.append(vec![event], Some(condition), None).await?;
                read_at
            }
            Client::Store(s) => decide(s, course, student, joined).await?,
            Client::Memory(s) => decide(s, course, student, joined).await?,
            Client::Floor(s) => {
                let client = s.pool().get().await?;
                let read = client.prepare_cached(&floor_read(s.schema())).await?;
                let rows = client
                    .query(
                        &read,
                        &[
                            &vec!["StudentRegistered", "StudentJoinedCourse"],
                            &vec![student],
                            &vec!["CourseRegistered", "StudentJoinedCourse"],
                            &vec![course],
                        ],
                    )
                    .await?;
                let read_at = Instant::now();
                let seen: Vec<Seen> = rows
                    .iter()
                    .map(|r| Seen {
                        event_type: r.get(1),
                        tags: r.get(2),
                        payload: r.get(3),
                    })
                    .collect();
                assert!(may_join(&seen, course, student), "no conflicts by design");
                let insert = client.prepare_cached(&floor_insert(s.schema())).await?;
                let tags = vec![student, course];
                client
                    .execute(
                        &insert,
                        &[
                            &uuid::Uuid::new_v4(),
                            &"StudentJoinedCourse",
                            &tags,
                            &joined,
                        ],
                    )
                    .await?;
                read_at
            }
        };
        Ok(read_at)
    }
}

impl Client {
    /// A conditional append of one event to the boundary of `tag`, guarded by it and `after`
    /// (what the client appended there last). Returns its position (the floor inserts without a
    /// guard and returns none).
    async fn append_after(
        &self,
        tag: &str,
        n: u64,
        after: Option<u64>,
    ) -> Result<Option<u64>, BoxError> {
        let payload = json!({"n": n});
        Ok(match self {
            Client::UmaDb(c) => {
                let event = DcbEvent::new()
                    .event_type("Ticked")
                    .tags([tag])
                    .data(serde_json::to_vec(&payload)?);
                let condition = DcbAppendCondition::new(uma_query(&[(&[], &[tag])])).after(after);
                Some(c.append(vec![event], Some(condition), None).await?)
            }
            Client::Store(s) => Some(append_after(s, tag, payload, after).await?),
            Client::Memory(s) => Some(append_after(s, tag, payload, after).await?),
            Client::Floor(s) => {
                let client = s.pool().get().await?;
                let insert = client.prepare_cached(&floor_insert(s.schema())).await?;
                let (id, tags) = (uuid::Uuid::new_v4(), vec![tag]);
                client
                    .execute(&insert, &[&id, &"Ticked", &tags, &payload])
                    .await?;
                None
            }
        })
    }
}

async fn append_after(
    store: &impl EventStore,
    tag: &str,
    payload: Value,
    after: Option<u64>,
) -> dcbstore::Result<u64> {
    let condition = AppendCondition::new(Query::from(QueryItem::tagged([tag])), after);
    let event = Event::new("Ticked", payload).with_tags([tag]);
    let written = store.append([event], Some(condition)).await?;
    Ok(written.last_position())
}

async fn register(
    store: &impl EventStore,
    event_type: &str,
    tag: &str,
    payload: Value,
) -> dcbstore::Result<()> {
    let query = Query::from(QueryItem::typed([event_type]).tags([tag]));
    let event = Event::new(event_type, payload).with_tags([tag]);
    store
        .append([event], Some(AppendCondition::new(query, None)))
        .await?;
    Ok(())
}

async fn decide(
    store: &impl EventStore,
    course: &str,
    student: &str,
    joined: Value,
) -> dcbstore::Result<Instant> {
    let read = store
        .read(&boundary(course, student), ReadOptions::default())
        .await?;
    let read_at = Instant::now();
    let seen: Vec<Seen> = read
        .iter()
        .map(|e: &SequencedEvent| Seen {
            event_type: e.event_type.clone(),
            tags: e.tags.clone(),
            payload: e.payload.clone(),
        })
        .collect();
    assert!(may_join(&seen, course, student), "no conflicts by design");
    let event = Event::new("StudentJoinedCourse", joined).with_tags([student, course]);
    store
        .append([event], Some(read.append_condition()?))
        .await?;
    Ok(read_at)
}

/// Latencies of one client's operations.
#[derive(Default)]
struct Samples {
    register: Vec<Duration>,
    decide: Vec<Duration>,
    /// A decision's read, and the rest of it (its append, mostly).
    read: Vec<Duration>,
    append: Vec<Duration>,
}

/// Runs `op` and records how long it took in `into`.
async fn timed(
    into: &mut Vec<Duration>,
    op: impl Future<Output = Result<(), BoxError>>,
) -> Result<(), BoxError> {
    let started = Instant::now();
    op.await?;
    into.push(started.elapsed());
    Ok(())
}

/// One client until `deadline`: iterations of the workload with ids of its own.
async fn client_loop(
    target: Target,
    run: String,
    deadline: Instant,
    workload: Workload,
) -> Result<Samples, BoxError> {
    let client = Client::open(&target).await?;
    let mut samples = Samples::default();
    if workload == Workload::Appends {
        let (tag, mut after) = (format!("stream:{run}"), None);
        for n in 0.. {
            let started = Instant::now();
            after = client.append_after(&tag, n, after).await?;
            samples.register.push(started.elapsed());
            if Instant::now() >= deadline {
                break;
            }
        }
        return Ok(samples);
    }
    for iteration in 0.. {
        let id = |kind: &str, n: usize| format!("{kind}:{run}-{iteration}-{n}");
        let courses: Vec<String> = (0..COURSES).map(|n| id("course", n)).collect();
        let students: Vec<String> = (0..STUDENTS).map(|n| id("student", n)).collect();
        for course in &courses {
            let payload = json!({"course": course, "capacity": CAPACITY});
            let register = client.register("CourseRegistered", course, payload);
            timed(&mut samples.register, register).await?;
        }
        for student in &students {
            let payload = json!({"student": student});
            let register = client.register("StudentRegistered", student, payload);
            timed(&mut samples.register, register).await?;
        }
        for student in &students {
            for course in &courses {
                let started = Instant::now();
                let read_at = client.decide(course, student).await?;
                samples.decide.push(started.elapsed());
                samples.read.push(read_at - started);
                samples.append.push(read_at.elapsed());
                if Instant::now() >= deadline {
                    return Ok(samples);
                }
            }
        }
    }
    Ok(samples)
}

/// One measurement: `clients` clients of `target` for `seconds`.
struct Measured {
    ops_per_s: f64,
    decisions_per_s: f64,
    decide_p50_ms: f64,
    read_p50_ms: f64,
    append_p50_ms: f64,
    register_p50_ms: f64,
}

fn p50(mut samples: Vec<Duration>) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

async fn measure(
    target: &Target,
    clients: usize,
    seconds: f64,
    (round, workload): (usize, Workload),
) -> Result<Measured, BoxError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let stamp = uuid::Uuid::new_v4().simple().to_string();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                target.clone(),
                format!("{}{round}x{c}x{}", target.name(), &stamp[..8]),
                deadline,
                workload,
            ))
        })
        .collect();
    let mut all = Samples::default();
    for task in tasks {
        let samples = task.await??;
        all.register.extend(samples.register);
        all.decide.extend(samples.decide);
        all.read.extend(samples.read);
        all.append.extend(samples.append);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Measured {
        ops_per_s: (all.register.len() + all.decide.len()) as f64 / elapsed,
        decisions_per_s: all.decide.len() as f64 / elapsed,
        decide_p50_ms: p50(all.decide),
        read_p50_ms: p50(all.read),
        append_p50_ms: p50(all.append),
        register_p50_ms: p50(all.register),
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// What each client does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// The course-enrolment speedrun: registrations, then decisions.
    Speedrun,
    /// Conditional appends alone, each after the client's previous one on its own boundary.
    Appends,
}

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
