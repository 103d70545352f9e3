//! The stores the speedrun drives (its targets) and what one client does on each: register an
//! entity, decide, append after its previous append.

use std::time::Instant;

use dcbstore::{
    AppendCondition, Event, EventStore, MemoryEventStore, PgEventStore, Query, QueryItem,
};
use dcbstore::{ReadOptions, SequencedEvent};
use serde_json::{Value, json};
use umadb_client::AsyncUmaDbClient;
use umadb_dcb::{DcbAppendCondition, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem};

use crate::BoxError;

pub(crate) const COURSES: usize = 10;
pub(crate) const STUDENTS: usize = 10;
pub(crate) const CAPACITY: u64 = 10;

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
pub(crate) enum Target {
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
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::UmaDb(_, label) => label,
            Target::DcbStore(_, label) => label,
            Target::Floor(_) => "floor",
            Target::Memory(_) => "memory",
        }
    }
}

/// A client of one target: one task's connection to it.
pub(crate) enum Client {
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
    pub(crate) async fn open(target: &Target) -> Result<Self, BoxError> {
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
    pub(crate) async fn register(
        &self,
        event_type: &str,
        tag: &str,
        payload: Value,
    ) -> Result<(), BoxError> {
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
    pub(crate) async fn decide(&self, course: &str, student: &str) -> Result<Instant, BoxError> {
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
    pub(crate) async fn append_after(
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
