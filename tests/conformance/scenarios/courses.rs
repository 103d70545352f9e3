//! Course subscriptions: a course's capacity (that can change), a student's course limit, no
//! double subscription.

use dcbstore::{DecideError, DomainEvent, Error, Event, Projection, QueryItem, decide};
use rstest::rstest;
use rstest_reuse::apply;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{appended_since, given};
use crate::common::{Backend, Store, StoreExt, backends, store_on};

const MAX_COURSES_PER_STUDENT: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn stored(e: CourseEvent) -> Event {
    e.to_event().expect("encodes")
}

fn defined(course: &str, capacity: u32) -> Event {
    stored(CourseEvent::CourseDefined {
        course: course.into(),
        capacity,
    })
}

fn subscribed(course: &str, student: &str) -> Event {
    stored(CourseEvent::StudentSubscribedToCourse {
        course: course.into(),
        student: student.into(),
    })
}

/// The course's capacity (`None`: no such course), folded from its typed events.
fn course_capacity(course: &str) -> Projection<Option<u32>> {
    Projection::new(
        QueryItem::typed(["CourseDefined", "CourseCapacityChanged"])
            .tags([format!("course:{course}")]),
        None,
        |capacity, e| match CourseEvent::from_stored(e).expect("a course event") {
            CourseEvent::CourseDefined { capacity: c, .. }
            | CourseEvent::CourseCapacityChanged { capacity: c, .. } => *capacity = Some(c),
            CourseEvent::StudentSubscribedToCourse { .. } => {}
        },
    )
}

fn course_subscriptions(course: &str) -> Projection<usize> {
    Projection::new(
        QueryItem::typed(["StudentSubscribedToCourse"]).tags([format!("course:{course}")]),
        0,
        |n, _| *n += 1,
    )
}

fn student_subscriptions(student: &str) -> Projection<Vec<String>> {
    Projection::new(
        QueryItem::typed(["StudentSubscribedToCourse"]).tags([format!("student:{student}")]),
        Vec::new(),
        |courses, e| courses.push(e.payload["course"].as_str().unwrap_or_default().into()),
    )
}

async fn subscribe(store: &Store, course: &str, student: &str) -> Result<(), String> {
    let model = (
        course_capacity(course),
        course_subscriptions(course),
        student_subscriptions(student),
    );
    let outcome = decide(store, &model, |(capacity, taken, courses)| {
        let capacity = capacity.ok_or(format!("course {course} does not exist"))?;
        if courses.iter().any(|c| c == course) {
            return Err(format!(
                "student {student} is already subscribed to {course}"
            ));
        }
        if taken >= capacity as usize {
            return Err(format!("course {course} is full"));
        }
        if courses.len() >= MAX_COURSES_PER_STUDENT {
            return Err(format!(
                "student {student} already has {MAX_COURSES_PER_STUDENT} courses"
            ));
        }
        Ok(vec![subscribed(course, student)])
    })
    .await;
    match outcome {
        Ok(_) => Ok(()),
        Err(DecideError::Rejected(reason)) => Err(reason),
        Err(e) => panic!("unexpected: {e}"),
    }
}

async fn change_capacity(store: &Store, course: &str, capacity: u32) -> Result<(), String> {
    let outcome = decide(store, &course_capacity(course), |current| match current {
        None => Err(format!("course {course} does not exist")),
        Some(c) if c == capacity => Err(format!("course {course} already has capacity {capacity}")),
        Some(_) => Ok(vec![stored(CourseEvent::CourseCapacityChanged {
            course: course.into(),
            capacity,
        })]),
    })
    .await;
    outcome
        .map(|_| ())
        .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[case::course_must_exist(vec![], "s1", Err("course c1 does not exist"))]
#[case::subscribes(vec![defined("c1", 10)], "s1", Ok(()))]
#[case::already_subscribed(
    vec![defined("c1", 10), subscribed("c1", "s1")],
    "s1",
    Err("student s1 is already subscribed to c1")
)]
#[case::course_full(
    vec![defined("c1", 2), subscribed("c1", "s1"), subscribed("c1", "s2")],
    "s3",
    Err("course c1 is full")
)]
#[case::capacity_raised(
    vec![
        defined("c1", 2),
        subscribed("c1", "s1"),
        subscribed("c1", "s2"),
        stored(CourseEvent::CourseCapacityChanged { course: "c1".into(), capacity: 3 }),
    ],
    "s3",
    Ok(())
)]
#[case::student_limit(
    (1..=5).flat_map(|i| [defined(&format!("x{i}"), 9), subscribed(&format!("x{i}"), "s1")])
        .chain([defined("c1", 10)])
        .collect(),
    "s1",
    Err("student s1 already has 5 courses")
)]
#[tokio::test]
async fn course_subscription(
    backend: Backend,
    #[case] history: Vec<Event>,
    #[case] student: &str,
    #[case] expected: Result<(), &str>,
) {
    let store = store_on(backend).await;
    given(&store, history).await;
    let before = store.all_events().await.len();
    let outcome = subscribe(&store, "c1", student).await;
    assert_eq!(outcome, expected.map_err(String::from));
    let new = appended_since(&store, before).await;
    if outcome.is_ok() {
        assert_eq!(new.len(), 1);
        assert_eq!(
            CourseEvent::from_stored(&new[0]).unwrap(),
            CourseEvent::StudentSubscribedToCourse {
                course: "c1".into(),
                student: student.into()
            }
        );
    } else {
        assert!(new.is_empty(), "a rejected decision appends nothing");
    }
}

#[apply(backends)]
#[tokio::test]
async fn course_capacity_changes(backend: Backend) {
    let store = store_on(backend).await;
    assert_eq!(
        change_capacity(&store, "c1", 5).await,
        Err("course c1 does not exist".into())
    );
    given(&store, [defined("c1", 5)]).await;
    assert_eq!(
        change_capacity(&store, "c1", 5).await,
        Err("course c1 already has capacity 5".into())
    );
    assert_eq!(change_capacity(&store, "c1", 8).await, Ok(()));
    let (capacity,) =
        dcbstore::DecisionModel::fold(&(course_capacity("c1"),), &store.all_events().await);
    assert_eq!(capacity, Some(8));
}

/// Many students race for the last seats through the command loop: the loop's retries make
/// every seat go, and never one too many.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn course_seats_race(backend: Backend) {
    let store = store_on(backend).await;
    given(&store, [defined("c1", 4)]).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { subscribe(&store, "c1", &format!("s{i}")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(reason) => assert_eq!(reason, "course c1 is full"),
        }
    }
    let seats = course_subscriptions("c1").fold(&store.all_events().await);
    assert_eq!((won, seats), (4, 4));
}

#[test]
fn unknown_event_types_are_reported() {
    let archived = Event::new("CourseArchived", json!({"course": "c1"}));
    let err = CourseEvent::from_event(&archived).unwrap_err();
    assert!(
        matches!(err, Error::UnknownEventType { ref event_type, .. } if event_type == "CourseArchived"),
        "{err}"
    );
    let malformed = Event::new("CourseDefined", json!({"course": "c1"}));
    let err = CourseEvent::from_event(&malformed).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    let cause = std::error::Error::source(&err).expect("serde's error as the source");
    assert!(cause.to_string().contains("missing field"), "{cause}");
}
