//! Course subscriptions with Dynamic Consistency Boundaries.
//!
//! Rules: a course has a capacity (that can change); a student subscribes to a course at most
//! once and to at most 3 courses. The decision "subscribe student S to course C" reads one
//! dynamic stream spanning two entities, the course and the student: three projections composed
//! into one decision model, whose query also guards the append. Meanwhile a projection keeps a
//! read model of the seats left per course live, from a subscription to the log, and the demo
//! waits until that model includes its last append before it shows it (read-your-writes).
//!
//! Run: `cargo run --example course_subscriptions` (in memory), or with `DATABASE_URL` set
//! (PostgreSQL).

#[path = "shared/mod.rs"]
mod shared;

use std::sync::Arc;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use dcbstore::{
    AppendResult, Checkpoint, DecideError, DecisionModel, DomainEvent, Event, EventStore,
    FeedEvent, MemoryEventStore, Projection, Projector, ProjectorError, ProjectorRunner, Query,
    QueryItem, ReadOptions, decide,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

const MAX_COURSES_PER_STUDENT: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum CourseEvent {
    CourseDefined { course: String, capacity: u32 },
    CourseCapacityChanged { course: String, capacity: u32 },
    StudentSubscribedToCourse { course: String, student: String },
}

impl DomainEvent for CourseEvent {
    fn tags(&self) -> Vec<String> {
        match self {
            CourseEvent::CourseDefined { course, .. }
            | CourseEvent::CourseCapacityChanged { course, .. } => vec![format!("course:{course}")],
            CourseEvent::StudentSubscribedToCourse { course, student } => {
                vec![format!("course:{course}"), format!("student:{student}")]
            }
        }
    }
}

impl CourseEvent {
    fn stored(self) -> Event {
        self.to_event().expect("course events serialize")
    }
}

/// The course's capacity; `None` while it is not defined.
fn capacity(course: &str) -> Projection<Option<u32>> {
    Projection::new(
        QueryItem::typed(["CourseDefined", "CourseCapacityChanged"])
            .tags([format!("course:{course}")]),
        None,
        |capacity, e| {
            if let Ok(
                CourseEvent::CourseDefined { capacity: c, .. }
                | CourseEvent::CourseCapacityChanged { capacity: c, .. },
            ) = CourseEvent::from_stored(e)
            {
                *capacity = Some(c);
            }
        },
    )
}

/// How many students the course has.
fn subscriptions(course: &str) -> Projection<usize> {
    Projection::new(
        QueryItem::typed(["StudentSubscribedToCourse"]).tags([format!("course:{course}")]),
        0,
        |n, _| *n += 1,
    )
}

/// The courses of a student.
fn courses_of(student: &str) -> Projection<Vec<String>> {
    Projection::new(
        QueryItem::typed(["StudentSubscribedToCourse"]).tags([format!("student:{student}")]),
        Vec::new(),
        |courses, e| courses.push(e.payload["course"].as_str().unwrap_or_default().into()),
    )
}

fn subscription_model(
    course: &str,
    student: &str,
) -> impl DecisionModel<State = (Option<u32>, usize, Vec<String>)> {
    (capacity(course), subscriptions(course), courses_of(student))
}

/// The rules, as a pure function of the decision model's state.
fn subscribe_rules(
    (capacity, taken, courses): (Option<u32>, usize, Vec<String>),
    course: &str,
    student: &str,
) -> Result<Vec<Event>, String> {
    let capacity = capacity.ok_or(format!("course {course} does not exist"))?;
    if courses.iter().any(|c| c == course) {
        return Err(format!("{student} is already subscribed to {course}"));
    }
    if taken >= capacity as usize {
        return Err(format!("course {course} is full (capacity {capacity})"));
    }
    if courses.len() >= MAX_COURSES_PER_STUDENT {
        return Err(format!(
            "{student} already has {MAX_COURSES_PER_STUDENT} courses"
        ));
    }
    Ok(vec![
        CourseEvent::StudentSubscribedToCourse {
            course: course.into(),
            student: student.into(),
        }
        .stored(),
    ])
}

async fn subscribe(
    store: &impl EventStore,
    course: &str,
    student: &str,
) -> Result<AppendResult, DecideError<String>> {
    let model = subscription_model(course, student);
    let written = decide(store, &model, |state| {
        subscribe_rules(state, course, student)
    })
    .await?;
    Ok(written.expect("a subscription appends"))
}

async fn define_course(
    store: &impl EventStore,
    course: &str,
    capacity_: u32,
) -> Result<(), DecideError<String>> {
    decide(store, &capacity(course), |current| match current {
        Some(_) => Err(format!("course {course} exists already")),
        None => Ok(vec![
            CourseEvent::CourseDefined {
                course: course.into(),
                capacity: capacity_,
            }
            .stored(),
        ]),
    })
    .await?;
    Ok(())
}

async fn change_capacity(
    store: &impl EventStore,
    course: &str,
    new: u32,
) -> Result<(), DecideError<String>> {
    decide(store, &capacity(course), |current| match current {
        None => Err(format!("course {course} does not exist")),
        Some(_) => Ok(vec![
            CourseEvent::CourseCapacityChanged {
                course: course.into(),
                capacity: new,
            }
            .stored(),
        ]),
    })
    .await?;
    Ok(())
}

/// The read model: per course, its capacity and the seats taken, with the checkpoint of the
/// last event applied (kept together, so the model is exactly what the events up to it say).
#[derive(Default)]
struct SeatsLeft {
    courses: BTreeMap<String, (u32, u32)>,
    at: Option<Checkpoint>,
}

/// The projector that keeps a shared [`SeatsLeft`] live.
struct SeatsLeftProjector(Arc<Mutex<SeatsLeft>>);

impl Projector for SeatsLeftProjector {
    fn name(&self) -> &str {
        "seats_left"
    }

    fn query(&self) -> Query {
        Query::from(QueryItem::typed([
            "CourseDefined",
            "CourseCapacityChanged",
            "StudentSubscribedToCourse",
        ]))
    }

    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, ProjectorError> {
        Ok(self.0.lock().expect("not poisoned").at)
    }

    async fn apply(&mut self, batch: &[FeedEvent]) -> Result<(), ProjectorError> {
        let mut model = self.0.lock().expect("not poisoned");
        for e in batch {
            match CourseEvent::from_stored(&e.event)? {
                CourseEvent::CourseDefined { course, capacity }
                | CourseEvent::CourseCapacityChanged { course, capacity } => {
                    model.courses.entry(course).or_default().0 = capacity;
                }
                CourseEvent::StudentSubscribedToCourse { course, .. } => {
                    model.courses.entry(course).or_default().1 += 1;
                }
            }
            model.at = Some(e.checkpoint);
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), ProjectorError> {
        *self.0.lock().expect("not poisoned") = SeatsLeft::default();
        Ok(())
    }
}

/// Tries to subscribe `student` and says how it went.
async fn show(store: &impl EventStore, course: &str, student: &str) -> dcbstore::Result<()> {
    match subscribe(store, course, student).await {
        Ok(written) => println!(
            "  {student} -> {course}: subscribed (position {})",
            written.last_position()
        ),
        Err(DecideError::Rejected(rule)) => println!("  {student} -> {course}: rejected, {rule}"),
        Err(DecideError::Store(e)) => return Err(e),
        Err(e) => println!("  {student} -> {course}: {e}"),
    }
    Ok(())
}

/// The demo. `suffix` makes the ids (courses and students) unique to this run (empty in
/// memory), so that it runs any number of times against the same database.
async fn run(store: impl EventStore + Clone + 'static, suffix: &str) -> dcbstore::Result<()> {
    let c = |name: &str| format!("{name}{suffix}");
    let (math, art, music, chess, robotics) =
        (c("math"), c("art"), c("music"), c("chess"), c("robotics"));
    let (ada, bob, eve, yan, zoe) = (c("ada"), c("bob"), c("eve"), c("yan"), c("zoe"));
    let seats_left = Arc::new(Mutex::new(SeatsLeft::default()));
    let projection = ProjectorRunner::new(store.clone())
        .with(SeatsLeftProjector(seats_left.clone()))
        .start()?;

    println!("Courses:");
    for (course, seats) in [
        (&math, 2),
        (&art, 10),
        (&music, 10),
        (&chess, 10),
        (&robotics, 1),
    ] {
        define_course(&store, course, seats)
            .await
            .expect("a new course");
        println!("  defined {course}, capacity {seats}");
    }
    if let Err(e) = define_course(&store, &math, 5).await {
        println!("  defining {math} again: {e}");
    }

    println!("\nSubscriptions (at most {MAX_COURSES_PER_STUDENT} courses per student):");
    show(&store, &math, &ada).await?;
    show(&store, &math, &ada).await?;
    show(&store, &math, &bob).await?;
    show(&store, &math, &eve).await?;
    change_capacity(&store, &math, 3)
        .await
        .expect("math exists");
    println!("  capacity of {math} changed to 3");
    show(&store, &math, &eve).await?;
    for course in [&art, &music, &chess] {
        show(&store, course, &ada).await?;
    }

    println!("\nA stale decision: the boundary changes between read and append:");
    let model = subscription_model(&art, &yan);
    let read = store.read(&model.query(), ReadOptions::default()).await?;
    let decided = subscribe_rules(model.fold(read.events()), &art, &yan).expect("room for yan");
    println!(
        "  {yan}'s decision read {} events: there is room",
        read.len()
    );
    subscribe(&store, &art, &zoe)
        .await
        .expect("zoe gets a seat");
    println!("  meanwhile {zoe} subscribes to {art}");
    let condition = read.append_condition()?;
    let err = store
        .append(decided, Some(condition))
        .await
        .expect_err("the boundary changed after the read");
    println!("  {yan}'s append: {err}");
    assert!(err.is_append_condition_failed());

    println!("\nA race: 12 students try to take the only seat of {robotics} at once:");
    let barrier = Arc::new(Barrier::new(12));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, course, barrier) = (store.clone(), robotics.clone(), barrier.clone());
            let racer = c(&format!("racer{i}"));
            tokio::spawn(async move {
                barrier.wait().await;
                let outcome = subscribe(&store, &course, &racer).await;
                (racer, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut last = None;
    for task in tasks {
        let (racer, outcome) = task.await.expect("task");
        match outcome {
            Ok(written) => {
                winners.push(racer);
                last = Some(written);
            }
            Err(DecideError::Store(e)) => return Err(e),
            Err(_) => {}
        }
    }
    let seats = subscriptions(&robotics);
    let log = store.read(seats.query(), ReadOptions::default()).await?;
    let seats_taken = seats.fold(log.events());
    println!("  winners: {winners:?}; subscriptions in the log: {seats_taken}");
    assert_eq!(seats_taken, 1, "the guard kept the course within capacity");
    println!("\nThe guard held: the course never went over capacity.");

    // Read-your-writes: the model includes the winner's append, the demo's last, and so
    // everything appended before it.
    let last = last.expect("one racer won the seat");
    projection.wait_for(&last, Duration::from_secs(10)).await?;
    println!("\nThe read model, kept live by a projection while the demo appended:");
    for (course, (capacity, taken)) in &seats_left.lock().expect("not poisoned").courses {
        if course.ends_with(suffix) {
            println!(
                "  {course}: {} of {capacity} seats left",
                capacity.saturating_sub(*taken)
            );
        }
    }
    println!(
        "  (it includes the demo's last append, at {})",
        last.checkpoint()
    );
    assert_eq!(
        seats_left.lock().expect("not poisoned").courses[&robotics],
        (1, 1)
    );
    projection.shutdown().await
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
