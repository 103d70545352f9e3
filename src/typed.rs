//! Domain events as Rust types, converted to and from stored events through serde.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::event::{Event, SequencedEvent};

/// A domain event type: usually an enum with one variant per event type, serialized by serde in
/// its adjacently tagged form, `#[serde(tag = "type", content = "data")]`. The variant name is
/// the stored event type and the variant's fields are the payload; only the tags are declared by
/// hand, once.
///
/// Conversions need no match arm per event type, and a stored type the enum does not know is
/// reported as [`Error::UnknownEventType`], never dropped.
///
/// ```
/// use dcbstore::{DomainEvent, Event};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// enum CourseEvent {
///     CourseDefined { course: String, capacity: u32 },
///     StudentSubscribed { course: String, student: String },
/// }
///
/// impl DomainEvent for CourseEvent {
///     fn tags(&self) -> Vec<String> {
///         match self {
///             CourseEvent::CourseDefined { course, .. } => vec![format!("course:{course}")],
///             CourseEvent::StudentSubscribed { course, student } => {
///                 vec![format!("course:{course}"), format!("student:{student}")]
///             }
///         }
///     }
/// }
///
/// let defined = CourseEvent::CourseDefined { course: "c1".into(), capacity: 10 };
/// let stored: Event = defined.to_event()?;
/// assert_eq!(stored.event_type, "CourseDefined");
/// assert_eq!(stored.payload, serde_json::json!({"course": "c1", "capacity": 10}));
/// assert_eq!(stored.tags, ["course:c1"]);
/// assert_eq!(CourseEvent::from_event(&stored)?, defined);
///
/// let unknown = Event::new("CourseArchived", serde_json::json!({}));
/// assert!(matches!(
///     CourseEvent::from_event(&unknown),
///     Err(dcbstore::Error::UnknownEventType { .. })
/// ));
/// # Ok::<(), dcbstore::Error>(())
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The field of the serde representation that names the event type.
    const TYPE_FIELD: &'static str = "type";
    /// The field of the serde representation that holds the payload.
    const DATA_FIELD: &'static str = "data";

    /// The tags of this event: the consistency boundaries it belongs to.
    fn tags(&self) -> Vec<String>;

    /// The event as it is appended (with a fresh id).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when serde cannot serialize it in the adjacently tagged form.
    fn to_event(&self) -> Result<Event, Error> {
        let encoded = serde_json::to_value(self).map_err(|e| Error::Encode {
            message: e.to_string(),
            source: Some(e.into()),
        })?;
        let Value::Object(mut fields) = encoded else {
            return Err(Error::Encode {
                message: format!(
                    "expected an object with \"{}\" and \"{}\", got {encoded}",
                    Self::TYPE_FIELD,
                    Self::DATA_FIELD
                ),
                source: None,
            });
        };
        let Some(Value::String(event_type)) = fields.remove(Self::TYPE_FIELD) else {
            return Err(Error::Encode {
                message: format!(
                    "the serde representation has no string field \"{}\": use #[serde(tag = \"{}\", content = \"{}\")]",
                    Self::TYPE_FIELD,
                    Self::TYPE_FIELD,
                    Self::DATA_FIELD
                ),
                source: None,
            });
        };
        let payload = fields
            .remove(Self::DATA_FIELD)
            .unwrap_or_else(|| Value::Object(Map::new()));
        Ok(Event::new(event_type, payload).with_tags(self.tags()))
    }

    /// The domain event a stored event holds.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownEventType`] for a type this domain type does not know; [`Error::Decode`]
    /// when the payload does not fit the variant.
    fn from_event(event: &Event) -> Result<Self, Error> {
        decode(event, 0)
    }

    /// Like [`DomainEvent::from_event`], for a stored event (errors carry its position).
    ///
    /// # Errors
    ///
    /// As [`DomainEvent::from_event`].
    fn from_stored(event: &SequencedEvent) -> Result<Self, Error> {
        decode(&event.event, event.position)
    }
}

fn decode<T: DomainEvent>(event: &Event, position: u64) -> Result<T, Error> {
    let mut fields = Map::new();
    fields.insert(
        T::TYPE_FIELD.into(),
        Value::String(event.event_type.clone()),
    );
    let empty_unit_payload = event.payload.as_object().is_some_and(Map::is_empty);
    fields.insert(T::DATA_FIELD.into(), event.payload.clone());
    let decoded = serde_json::from_value::<T>(Value::Object(fields.clone()));
    match decoded {
        Ok(value) => Ok(value),
        // Unit variants are serialized without a payload.
        Err(_) if empty_unit_payload => {
            fields.remove(T::DATA_FIELD);
            serde_json::from_value(Value::Object(fields)).map_err(|e| error(event, position, e))
        }
        Err(e) => Err(error(event, position, e)),
    }
}

fn error(event: &Event, position: u64, e: serde_json::Error) -> Error {
    if e.to_string().starts_with("unknown variant") {
        Error::UnknownEventType {
            event_type: event.event_type.clone(),
            position,
        }
    } else {
        Error::Decode {
            position,
            message: format!("{}: {e}", event.event_type),
            source: Some(e.into()),
        }
    }
}
