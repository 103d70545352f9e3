//! Course subscriptions with Dynamic Consistency Boundaries.
//!
//! Rules: a course has a capacity (that can change); a student subscribes to a course at most
//! once and to at most 3 courses. The decision "subscribe student S to course C" reads one
//! dynamic stream that spans two entities, the course and the student, and appends guarded by
//! the same query.
//!
//! Run: `cargo run --example course_subscriptions` (in memory), or with `DATABASE_URL` set
//! (PostgreSQL).

#[path = "shared/mod.rs"]
mod shared;

use std::sync::Arc;

use dcbstore::{
    AppendCondition, Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions,
    SequencedEvent,
};
use serde_json::json;
use tokio::sync::Barrier;

const MAX_COURSES_PER_STUDENT: usize = 3;

fn course_tag(course: &str) -> String {
    format!("course:{course}")
}

fn student_tag(student: &str) -> String {
    format!("student:{student}")
}

/// Everything the subscription decision needs: the course's definition, capacity changes and
/// subscriptions, and the student's subscriptions.
fn subscription_boundary(course: &str, student: &str) -> Query {
    Query::from_items([
        QueryItem::types([
            "CourseDefined",
            "CourseCapacityChanged",
            "StudentSubscribedToCourse",
        ])
        .tags([course_tag(course)]),
        QueryItem::types(["StudentSubscribedToCourse"]).tags([student_tag(student)]),
    ])
}

/// The state of one subscription decision, folded from the boundary's events.
#[derive(Debug, Default)]
struct SubscriptionState {
    capacity: Option<u64>,
    course_subscriptions: usize,
    student_courses: usize,
    already_subscribed: bool,
}

impl SubscriptionState {
    fn fold(course: &str, student: &str, events: &[SequencedEvent]) -> Self {
        let mut state = Self::default();
        for e in events {
            let in_course = e.has_tag(&course_tag(course));
            match e.event_type.as_str() {
                "CourseDefined" | "CourseCapacityChanged" => {
                    state.capacity = e.payload["capacity"].as_u64();
                }
                "StudentSubscribedToCourse" => {
                    let by_student = e.has_tag(&student_tag(student));
                    state.course_subscriptions += usize::from(in_course);
                    state.student_courses += usize::from(by_student);
                    state.already_subscribed |= in_course && by_student;
                }
                _ => {}
            }
        }
        state
    }

    fn decide(&self, course: &str, student: &str) -> Result<Event, String> {
        let capacity = self
            .capacity
            .ok_or(format!("course {course} does not exist"))?;
        if self.already_subscribed {
            return Err(format!("{student} is already subscribed to {course}"));
        }
        if self.course_subscriptions as u64 >= capacity {
            return Err(format!("course {course} is full (capacity {capacity})"));
        }
        if self.student_courses >= MAX_COURSES_PER_STUDENT {
            return Err(format!(
                "{student} already has {MAX_COURSES_PER_STUDENT} courses"
            ));
        }
        Ok(Event::new(
            "StudentSubscribedToCourse",
            json!({"course": course, "student": student}),
        )
        .with_tags([course_tag(course), student_tag(student)]))
    }
}

/// Why a subscription did not happen.
#[derive(Debug)]
enum Rejected {
    /// A business rule said no.
    Rule(String),
    /// Someone else changed the boundary between our read and our append.
    Conflict,
}

/// One attempt: read the boundary, decide, append guarded by the same query.
async fn try_subscribe(
    store: &impl EventStore,
    course: &str,
    student: &str,
) -> dcbstore::Result<Result<u64, Rejected>> {
    let query = subscription_boundary(course, student);
    let read = store.read(&query, ReadOptions::default()).await?;
    let state = SubscriptionState::fold(course, student, read.events());
    let event = match state.decide(course, student) {
        Ok(event) => event,
        Err(rule) => return Ok(Err(Rejected::Rule(rule))),
    };
    let condition = AppendCondition::new(query, read.last_position());
    match store.append([event], Some(condition)).await {
        Ok(written) => Ok(Ok(written.last_position())),
        Err(e) if e.is_append_condition_failed() => Ok(Err(Rejected::Conflict)),
        Err(e) => Err(e),
    }
}

/// Subscribes, retrying when a concurrent append changed the boundary.
async fn subscribe(
    store: &impl EventStore,
    course: &str,
    student: &str,
) -> dcbstore::Result<Result<u64, String>> {
    loop {
        match try_subscribe(store, course, student).await? {
            Ok(position) => return Ok(Ok(position)),
            Err(Rejected::Rule(rule)) => return Ok(Err(rule)),
            Err(Rejected::Conflict) => continue,
        }
    }
}

async fn define_course(
    store: &impl EventStore,
    course: &str,
    capacity: u64,
) -> dcbstore::Result<()> {
    let query = Query::from(QueryItem::types(["CourseDefined"]).tags([course_tag(course)]));
    let event = Event::new(
        "CourseDefined",
        json!({"course": course, "capacity": capacity}),
    )
    .with_tags([course_tag(course)]);
    // Guarded by "no such course yet": defining a course twice fails.
    store
        .append([event], Some(AppendCondition::new(query, None)))
        .await?;
    println!("  defined {course}, capacity {capacity}");
    Ok(())
}

async fn show(store: &impl EventStore, course: &str, student: &str) -> dcbstore::Result<()> {
    match subscribe(store, course, student).await? {
        Ok(position) => println!("  {student} -> {course}: subscribed (position {position})"),
        Err(rule) => println!("  {student} -> {course}: rejected, {rule}"),
    }
    Ok(())
}

/// The demo. `suffix` makes the ids unique to this run (empty in memory).
async fn run(store: impl EventStore + Clone + 'static, suffix: &str) -> dcbstore::Result<()> {
    let c = |name: &str| format!("{name}{suffix}");
    let (math, art, music, chess, robotics) =
        (c("math"), c("art"), c("music"), c("chess"), c("robotics"));

    println!("Courses:");
    define_course(&store, &math, 2).await?;
    for course in [&art, &music, &chess] {
        define_course(&store, course, 10).await?;
    }
    define_course(&store, &robotics, 1).await?;
    let again = define_course(&store, &math, 5).await;
    println!(
        "  defining {math} again: {}",
        match again {
            Err(e) if e.is_append_condition_failed() => "rejected, it exists",
            Err(_) => "failed",
            Ok(()) => "accepted?!",
        }
    );

    println!(
        "\nSubscriptions (capacity of {math}: 2; at most {MAX_COURSES_PER_STUDENT} courses per student):"
    );
    show(&store, &math, "ada").await?;
    show(&store, &math, "ada").await?;
    show(&store, &math, "bob").await?;
    show(&store, &math, "eve").await?;
    let query = Query::from(
        QueryItem::types(["CourseDefined", "CourseCapacityChanged"]).tags([course_tag(&math)]),
    );
    let read = store.read(&query, ReadOptions::default()).await?;
    store
        .append(
            [Event::new(
                "CourseCapacityChanged",
                json!({"course": math, "capacity": 3}),
            )
            .with_tags([course_tag(&math)])],
            Some(AppendCondition::new(query, read.last_position())),
        )
        .await?;
    println!("  capacity of {math} changed to 3");
    show(&store, &math, "eve").await?;
    for course in [&art, &music, &chess] {
        show(&store, course, "ada").await?;
    }

    println!("\nA stale decision: two decisions read the same boundary, the second append loses:");
    let query = subscription_boundary(&art, "yan");
    let stale = store.read(&query, ReadOptions::default()).await?;
    println!("  yan's decision reads {art} ({} events)", stale.len());
    try_subscribe(&store, &art, "zoe")
        .await?
        .expect("zoe gets a seat");
    println!("  meanwhile zoe subscribes to {art}");
    let yan = SubscriptionState::fold(&art, "yan", stale.events())
        .decide(&art, "yan")
        .expect("the stale read says there is room");
    let err = store
        .append(
            [yan],
            Some(AppendCondition::new(query, stale.last_position())),
        )
        .await
        .expect_err("the boundary changed after the read");
    println!("  yan's append: {err}");
    assert!(err.is_append_condition_failed());

    println!("\nA race: 12 students try to take the only seat of {robotics} at the same time:");
    let barrier = Arc::new(Barrier::new(12));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, course, barrier) = (store.clone(), robotics.clone(), barrier.clone());
            tokio::spawn(async move {
                let student = format!("racer{i}");
                barrier.wait().await;
                let outcome = subscribe(&store, &course, &student).await;
                (student, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (student, outcome) = task.await.expect("task");
        if outcome?.is_ok() {
            winners.push(student);
        }
    }
    let seats_taken = store
        .read(
            &Query::from(
                QueryItem::types(["StudentSubscribedToCourse"]).tags([course_tag(&robotics)]),
            ),
            ReadOptions::default(),
        )
        .await?
        .len();
    println!("  winners: {winners:?}; subscriptions in the log: {seats_taken}");
    assert_eq!(seats_taken, 1, "the guard kept the course within capacity");
    println!("\nThe guard held: the course never went over capacity.");
    Ok(())
}

#[tokio::main]
async fn main() -> dcbstore::Result<()> {
    println!("Course subscriptions with Dynamic Consistency Boundaries");
    match shared::database_url() {
        Some(url) => {
            let store = shared::postgres(&url, "example_courses").await?;
            run(store, &shared::run_suffix()).await
        }
        None => run(MemoryEventStore::new(), "").await,
    }
}
