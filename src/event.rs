//! Events as they are appended ([`Event`]) and as they are stored ([`SequencedEvent`]).

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{BatchProblem, EventProblem, InvalidInput};
use crate::jsonb::jsonb_eq;
use crate::limits::{MAX_BATCH_BYTES, MAX_EVENT_BYTES};
use crate::validate;

/// An event to append: a type, a JSON object payload, tags, optional metadata and an id.
///
/// The id defaults to a fresh UUIDv7 and is unique in the store: it is the idempotency key of the
/// event.
///
/// ```
/// use dcbstore::Event;
/// use serde_json::json;
///
/// let event = Event::new("StudentSubscribedToCourse", json!({"student": "s1", "course": "c1"}))
///     .with_tags(["student:s1", "course:c1"])
///     .with_metadata(json!({"causation": "http-42"}));
/// assert_eq!(event.event_type, "StudentSubscribedToCourse");
/// assert_eq!(event.tags, ["student:s1", "course:c1"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id of the event (its idempotency key).
    pub id: Uuid,
    /// The event's type, e.g. `"CourseDefined"`. Must not be empty.
    pub event_type: String,
    /// The event's data. Must be a JSON object.
    pub payload: Value,
    /// Tags such as `"course:c1"` that place the event in consistency boundaries.
    pub tags: Vec<String>,
    /// Optional metadata (a JSON object), not used for matching.
    pub metadata: Option<Value>,
}

impl Event {
    /// A new event with a fresh UUIDv7 id, no tags and no metadata.
    ///
    /// ```
    /// let e = dcbstore::Event::new("UsernameClaimed", serde_json::json!({"username": "ada"}));
    /// assert!(e.tags.is_empty() && e.metadata.is_none());
    /// ```
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            payload,
            tags: Vec::new(),
            metadata: None,
        }
    }

    /// Adds tags (kept in the given order; duplicates are harmless).
    ///
    /// ```
    /// let e = dcbstore::Event::new("X", serde_json::json!({})).with_tags(["a:1"]).with_tags(["b:2"]);
    /// assert_eq!(e.tags, ["a:1", "b:2"]);
    /// ```
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets the metadata (must be a JSON object).
    ///
    /// ```
    /// let e = dcbstore::Event::new("X", serde_json::json!({})).with_metadata(serde_json::json!({"by": "me"}));
    /// assert!(e.metadata.is_some());
    /// ```
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the id, e.g. a deterministic one derived from a command, for idempotent retries.
    ///
    /// ```
    /// let id = uuid::Uuid::nil();
    /// assert_eq!(dcbstore::Event::new("X", serde_json::json!({})).with_id(id).id, id);
    /// ```
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// `true` when the event carries `tag`.
    ///
    /// ```
    /// let e = dcbstore::Event::new("X", serde_json::json!({})).with_tags(["course:c1"]);
    /// assert!(e.has_tag("course:c1") && !e.has_tag("course:c2"));
    /// ```
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// `true` when `other` is the same event as stored: the same type, the same set of tags, and
    /// payload and metadata equal as JSONB (objects by key, arrays in order, numbers by value).
    pub(crate) fn same_content(&self, other: &Event) -> bool {
        fn tags(e: &Event) -> Vec<&str> {
            let mut tags: Vec<&str> = e.tags.iter().map(String::as_str).collect();
            tags.sort_unstable();
            tags.dedup();
            tags
        }
        self.event_type == other.event_type
            && tags(self) == tags(other)
            && jsonb_eq(&self.payload, &other.payload)
            && match (&self.metadata, &other.metadata) {
                (None, None) => true,
                (Some(a), Some(b)) => jsonb_eq(a, b),
                _ => false,
            }
    }

    /// Checks the event as an append would; `index` is its place in the batch.
    pub(crate) fn validate(&self, index: usize) -> Result<(), InvalidInput> {
        let value = |field| {
            move |problem| InvalidInput::event(index, EventProblem::Value { field, problem })
        };
        if self.event_type.is_empty() {
            return Err(InvalidInput::event(index, EventProblem::EmptyType));
        }
        validate::name(&self.event_type).map_err(value("event type"))?;
        for tag in &self.tags {
            if tag.is_empty() {
                return Err(InvalidInput::event(index, EventProblem::EmptyTag));
            }
            validate::name(tag).map_err(value("tag"))?;
        }
        validate::object(&self.payload, index, "payload")?;
        validate::json(&self.payload).map_err(value("payload"))?;
        if let Some(metadata) = &self.metadata {
            validate::object(metadata, index, "metadata")?;
            validate::json(metadata).map_err(value("metadata"))?;
        }
        Ok(())
    }

    /// The bytes of JSON the event carries (payload and metadata, serialized).
    fn json_bytes(&self) -> usize {
        validate::json_bytes(&self.payload) + self.metadata.as_ref().map_or(0, validate::json_bytes)
    }
}

/// An [`Event`] as stored: with its `position` in the log and the time it was appended.
///
/// Positions are unique and increasing in append order, start at 1 and may have gaps.
///
/// ```
/// # use dcbstore::{Event, SequencedEvent};
/// # let stored = SequencedEvent { position: 3, occurred_at: time::OffsetDateTime::UNIX_EPOCH,
/// #     event: Event::new("CourseDefined", serde_json::json!({"capacity": 5})) };
/// // `SequencedEvent` dereferences to its `Event`.
/// assert_eq!(stored.event_type, "CourseDefined");
/// assert_eq!(stored.payload["capacity"], 5);
/// assert_eq!(stored.position, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedEvent {
    /// Position in the log.
    pub position: u64,
    /// When the appending transaction started (server time).
    pub occurred_at: OffsetDateTime,
    /// The event itself.
    pub event: Event,
}

impl std::ops::Deref for SequencedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// Validates a whole batch for an append with at most `max` events.
pub(crate) fn validate_batch(events: &[Event], max: usize) -> Result<(), InvalidInput> {
    if events.is_empty() {
        return Err(BatchProblem::Empty.into());
    }
    if events.len() > max {
        return Err(BatchProblem::TooLarge {
            len: events.len(),
            max,
        }
        .into());
    }
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let mut batch_bytes = 0;
    for (index, event) in events.iter().enumerate() {
        event.validate(index)?;
        let bytes = event.json_bytes();
        if bytes > MAX_EVENT_BYTES {
            let max = MAX_EVENT_BYTES;
            return Err(InvalidInput::event(
                index,
                EventProblem::TooLarge { bytes, max },
            ));
        }
        batch_bytes += bytes;
        if batch_bytes > MAX_BATCH_BYTES {
            return Err(BatchProblem::TooManyBytes {
                bytes: batch_bytes,
                max: MAX_BATCH_BYTES,
            }
            .into());
        }
        if !seen.insert(event.id) {
            let event_id = event.id;
            return Err(InvalidInput::event(
                index,
                EventProblem::DuplicateId { event_id },
            ));
        }
    }
    Ok(())
}
