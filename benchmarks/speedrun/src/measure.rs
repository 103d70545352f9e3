//! One measurement: clients of a target running the workload until a deadline, and the figures
//! of their samples.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::BoxError;
use crate::clients::{CAPACITY, COURSES, Client, STUDENTS, Target};

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
pub(crate) struct Measured {
    pub(crate) ops_per_s: f64,
    pub(crate) decisions_per_s: f64,
    pub(crate) decide_p50_ms: f64,
    pub(crate) read_p50_ms: f64,
    pub(crate) append_p50_ms: f64,
    pub(crate) register_p50_ms: f64,
}

fn p50(mut samples: Vec<Duration>) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

pub(crate) async fn measure(
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

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// What each client does.

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// The course-enrolment speedrun: registrations, then decisions.
    Speedrun,
    /// Conditional appends alone, each after the client's previous one on its own boundary.
    Appends,
}
