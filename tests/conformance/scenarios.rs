//! The DCB specification's examples as executable given/when/then scenarios, written with
//! decision models, typed events and the command loop, on both backends.

use std::sync::Arc;

use dcbstore::{
    AppendCondition, ClassicStream, DecideError, DomainEvent, Error, Event, EventStore,
    ExpectedVersion, Projection, Query, QueryItem, ReadOptions, SequencedEvent, decide,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{Backend, Store, StoreExt, backends, store_on};

/// Appends the "given" events.
async fn given(store: &Store, events: impl IntoIterator<Item = Event>) {
    let events: Vec<Event> = events.into_iter().collect();
    if !events.is_empty() {
        store.append(events, None).await.expect("given events");
    }
}

/// The events appended since `before` events were in the log.
async fn appended_since(store: &Store, before: usize) -> Vec<SequencedEvent> {
    store.all_events().await.split_off(before)
}

// ---------------------------------------------------------------------------------------------
// Course subscriptions: a course's capacity (that can change), a student's course limit, no
// double subscription.

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

// ---------------------------------------------------------------------------------------------
// Unique username: claimed at registration, released when the account closes, moved by a change.

fn username_tag(name: &str) -> String {
    format!("username:{name}")
}

fn registered(name: &str) -> Event {
    Event::new("AccountRegistered", json!({"username": name})).with_tags([username_tag(name)])
}

fn closed(name: &str) -> Event {
    Event::new("AccountClosed", json!({"username": name})).with_tags([username_tag(name)])
}

fn changed(old: &str, new: &str) -> Event {
    Event::new("UsernameChanged", json!({"old": old, "new": new}))
        .with_tags([username_tag(old), username_tag(new)])
}

fn username_claimed(name: &str) -> Projection<bool> {
    let owned = name.to_string();
    Projection::new(
        QueryItem::tagged([username_tag(name)]),
        false,
        move |claimed, e| {
            *claimed = match e.event_type.as_str() {
                "AccountRegistered" => true,
                "AccountClosed" => false,
                "UsernameChanged" => e.payload["new"] == json!(owned),
                _ => *claimed,
            }
        },
    )
}

async fn register(store: &Store, name: &str) -> Result<(), String> {
    decide(store, &username_claimed(name), |claimed| {
        if claimed {
            Err(format!("username {name} is claimed"))
        } else {
            Ok(vec![registered(name)])
        }
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[case::free(vec![], Ok(()))]
#[case::claimed(vec![registered("ada")], Err("username ada is claimed"))]
#[case::released_on_closure(vec![registered("ada"), closed("ada")], Ok(()))]
#[case::released_by_change(vec![registered("ada"), changed("ada", "lovelace")], Ok(()))]
#[case::claimed_by_change(vec![registered("bob"), changed("bob", "ada")], Err("username ada is claimed"))]
#[tokio::test]
async fn unique_username(
    backend: Backend,
    #[case] history: Vec<Event>,
    #[case] expected: Result<(), &str>,
) {
    let store = store_on(backend).await;
    given(&store, history).await;
    let outcome = register(&store, "ada").await;
    assert_eq!(outcome, expected.map_err(String::from));
}

// ---------------------------------------------------------------------------------------------
// Invoice numbers: gapless, the next one decided from the last invoice only (read backwards,
// limit 1), guarded by the whole invoice boundary.

async fn create_invoice(store: &Store) -> u64 {
    let invoices = Query::from(QueryItem::typed(["InvoiceCreated"]));
    loop {
        let last = store
            .read(&invoices, ReadOptions::default().backwards().limit(1))
            .await
            .unwrap();
        let next = last
            .events()
            .first()
            .map_or(1, |e| e.payload["number"].as_u64().unwrap() + 1);
        let invoice = Event::new("InvoiceCreated", json!({"number": next}));
        match store
            .append(
                [invoice],
                Some(AppendCondition::new(invoices.clone(), last.last_position())),
            )
            .await
        {
            Ok(_) => return next,
            Err(e) if e.is_append_condition_failed() => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_numbers_are_gapless(backend: Backend) {
    let store = store_on(backend).await;
    assert_eq!(create_invoice(&store).await, 1);
    assert_eq!(create_invoice(&store).await, 2);
    given(&store, [Event::new("SomethingElse", json!({}))]).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { create_invoice(&store).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (3..=14).collect::<Vec<u64>>());
}

// ---------------------------------------------------------------------------------------------
// Opt-in token: a sign-up is confirmed with the token that was sent, once.

fn initiated(email: &str, token: &str) -> Event {
    Event::new("SignUpInitiated", json!({"email": email, "token": token}))
        .with_tags([format!("email:{email}"), format!("otp:{token}")])
}

async fn confirm(store: &Store, email: &str, token: &str) -> Result<(), String> {
    #[derive(Clone, Default)]
    struct Pending {
        email: Option<String>,
        confirmed: bool,
    }
    let pending = Projection::new(
        QueryItem::typed(["SignUpInitiated", "SignUpConfirmed"]).tags([format!("otp:{token}")]),
        Pending::default(),
        |p, e| match e.event_type.as_str() {
            "SignUpInitiated" => p.email = e.payload["email"].as_str().map(String::from),
            _ => p.confirmed = true,
        },
    );
    decide(store, &pending, |p| {
        if p.email.as_deref() != Some(email) {
            return Err("no pending sign-up for this email and token".to_string());
        }
        if p.confirmed {
            return Err("the sign-up is confirmed already".to_string());
        }
        Ok(vec![
            Event::new("SignUpConfirmed", json!({"email": email, "token": token}))
                .with_tags([format!("email:{email}"), format!("otp:{token}")]),
        ])
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[tokio::test]
async fn opt_in_token(backend: Backend) {
    let store = store_on(backend).await;
    let no_pending = Err("no pending sign-up for this email and token".to_string());
    assert_eq!(confirm(&store, "a@x.org", "111").await, no_pending);
    given(&store, [initiated("a@x.org", "111")]).await;
    assert_eq!(confirm(&store, "a@x.org", "222").await, no_pending);
    assert_eq!(confirm(&store, "b@x.org", "111").await, no_pending);
    assert_eq!(confirm(&store, "a@x.org", "111").await, Ok(()));
    assert_eq!(
        confirm(&store, "a@x.org", "111").await,
        Err("the sign-up is confirmed already".to_string())
    );
}

// ---------------------------------------------------------------------------------------------
// Prevent record duplication: a client's idempotency token makes a re-submitted command a no-op
// with an error, and re-sending the very same events (same ids) is a replay.

async fn place_order(store: &Store, order: &str, token: &str) -> Result<(), String> {
    let used = Projection::new(
        QueryItem::tagged([format!("idempotency:{token}")]),
        false,
        |used, _| *used = true,
    );
    decide(store, &used, |used| {
        if used {
            return Err("re-submission".to_string());
        }
        Ok(vec![
            Event::new("OrderPlaced", json!({"order": order, "token": token}))
                .with_tags([format!("idempotency:{token}"), format!("order:{order}")]),
        ])
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[tokio::test]
async fn idempotency_token(backend: Backend) {
    let store = store_on(backend).await;
    assert_eq!(place_order(&store, "o1", "t1").await, Ok(()));
    assert_eq!(
        place_order(&store, "o2", "t1").await,
        Err("re-submission".into())
    );
    assert_eq!(place_order(&store, "o2", "t2").await, Ok(()));
    assert_eq!(store.event_count().await, 2);
}

#[apply(backends)]
#[tokio::test]
async fn resending_the_same_events_is_a_replay(backend: Backend) {
    let store = store_on(backend).await;
    let boundary = Query::from(QueryItem::tagged(["order:o1"]));
    let batch = vec![
        Event::new("OrderPlaced", json!({})).with_tags(["order:o1"]),
        Event::new("OrderPaid", json!({})).with_tags(["order:o1"]),
    ];
    let condition = AppendCondition::new(boundary, None);
    let first = store
        .append(batch.clone(), Some(condition.clone()))
        .await
        .unwrap();
    // The outcome was lost (say, a timeout): the same events are sent again, with the same
    // condition, which these very events would now fail.
    let again = store.append(batch.clone(), Some(condition)).await.unwrap();
    assert!(again.is_replay() && !first.is_replay());
    assert_eq!(again.positions(), first.positions());
    let unguarded = store.append(batch.clone(), None).await.unwrap();
    assert!(unguarded.is_replay());
    assert_eq!(store.event_count().await, 2);
    // Part of a batch stored already is a duplicate, not a replay; nothing is written.
    let mixed = vec![batch[0].clone(), Event::new("OrderShipped", json!({}))];
    let err = store.append(mixed, None).await.unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { event_id } if event_id == batch[0].id),
        "{err}"
    );
    assert_eq!(store.event_count().await, 2);
}

// ---------------------------------------------------------------------------------------------
// An event-sourced aggregate on a DCB store: a classic stream per aggregate, saved with the
// version it was loaded at.

#[derive(Debug, Default)]
struct Course {
    capacity: u32,
    students: Vec<String>,
    /// What the last load saw, or, after a save, the position this instance wrote last.
    expected: Option<ExpectedVersion>,
    pending: Vec<Event>,
}

impl Course {
    async fn load(store: &Store, id: &str) -> Course {
        let (events, version) = ClassicStream::new(id).read(store).await.unwrap();
        let mut course = Course {
            expected: Some(version.into()),
            ..Course::default()
        };
        for e in &events {
            course.apply(e);
        }
        course
    }

    fn apply(&mut self, e: &Event) {
        match e.event_type.as_str() {
            "CourseCreated" => self.capacity = e.payload["capacity"].as_u64().unwrap() as u32,
            "StudentEnrolled" => self
                .students
                .push(e.payload["student"].as_str().unwrap().into()),
            _ => {}
        }
    }

    fn record(&mut self, e: Event) {
        self.apply(&e);
        self.pending.push(e);
    }

    fn create(&mut self, capacity: u32) {
        self.record(Event::new("CourseCreated", json!({"capacity": capacity})));
    }

    fn enroll(&mut self, student: &str) -> Result<(), String> {
        if self.students.len() as u32 >= self.capacity {
            return Err("full".into());
        }
        self.record(Event::new("StudentEnrolled", json!({"student": student})));
        Ok(())
    }

    async fn save(&mut self, store: &Store, id: &str) -> dcbstore::Result<()> {
        let expected = self.expected.take().unwrap_or(ExpectedVersion::NoStream);
        let pending = std::mem::take(&mut self.pending);
        let written = ClassicStream::new(id)
            .append(store, pending, expected)
            .await?;
        self.expected = Some(ExpectedVersion::LastPosition(written.last_position()));
        Ok(())
    }
}

#[apply(backends)]
#[tokio::test]
async fn event_sourced_aggregate(backend: Backend) {
    let store = store_on(backend).await;
    let mut course = Course::load(&store, "course-1").await;
    course.create(2);
    course.save(&store, "course-1").await.unwrap();

    // Two users load the same version and both enroll someone: the second save loses.
    let mut first = Course::load(&store, "course-1").await;
    let mut second = Course::load(&store, "course-1").await;
    first.enroll("ada").unwrap();
    second.enroll("bob").unwrap();
    first.save(&store, "course-1").await.unwrap();
    let err = second.save(&store, "course-1").await.unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");

    // Reloaded, the second user sees ada and can enroll bob; the course is then full.
    let mut reloaded = Course::load(&store, "course-1").await;
    assert_eq!(reloaded.students, ["ada"]);
    reloaded.enroll("bob").unwrap();
    reloaded.save(&store, "course-1").await.unwrap();
    assert_eq!(reloaded.enroll("eve"), Err("full".into()));

    // Creating the same aggregate again fails: the stream exists.
    let mut duplicate = Course::default();
    duplicate.create(9);
    assert!(duplicate.save(&store, "course-1").await.is_err());
    // Other streams are other boundaries.
    let mut other = Course::default();
    other.create(1);
    other.save(&store, "course-2").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The command loop itself: bounded retries, fresh state on every attempt, no append when the
// decision returns no events.

#[tokio::test]
async fn decide_retries_with_fresh_state_and_gives_up_after_the_policy() {
    use futures::FutureExt;

    let store = dcbstore::MemoryEventStore::new();
    let seen_in_boundary = Projection::new(QueryItem::tagged(["hot"]), 0u32, |n, _| *n += 1);
    let policy = dcbstore::RetryPolicy {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(2),
    };
    let mut attempts = 0;
    let outcome = dcbstore::decide_with(&store, &seen_in_boundary, policy, |seen| {
        attempts += 1;
        // Each attempt sees what interfered with the previous one.
        assert_eq!(seen, attempts - 1);
        // Someone else appends to the boundary between this read and this append.
        store
            .append([Event::new("Other", json!({})).with_tags(["hot"])], None)
            .now_or_never()
            .expect("the in-memory store answers at once")
            .expect("the interfering append");
        Ok::<_, std::convert::Infallible>(vec![Event::new("Mine", json!({})).with_tags(["hot"])])
    })
    .await;
    assert!(
        matches!(outcome, Err(DecideError::TooManyConflicts { attempts: 3 })),
        "{outcome:?}"
    );
    assert_eq!(attempts, 3);
    assert_eq!(store.len(), 3, "only the interfering events were written");
}

#[apply(backends)]
#[tokio::test]
async fn decide_appends_nothing_when_the_decision_returns_no_events(backend: Backend) {
    let store = store_on(backend).await;
    let anything = Projection::new(Query::all(), (), |_, _| {});
    let outcome = decide(&store, &anything, |()| Ok::<_, String>(vec![])).await;
    assert!(matches!(outcome, Ok(None)), "{outcome:?}");
    assert_eq!(store.event_count().await, 0);
}

#[test]
fn retry_waits_stay_within_the_policy() {
    let policy = dcbstore::RetryPolicy::default();
    for retry in 1..40 {
        let cap = (policy.initial_backoff * (1u32 << (retry - 1).min(20))).min(policy.max_backoff);
        assert!(policy.backoff(retry) <= cap, "retry {retry}");
    }
}
