//! An event-sourced aggregate on a DCB store: a classic stream per aggregate, saved with the
//! version it was loaded at.

use dcbstore::{ClassicStream, Event, ExpectedVersion};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, Store, backends, store_on};

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
