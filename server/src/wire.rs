//! The protocol's messages to dcbstore's types and back.
//!
//! - A query item matches an event of one of its types (any type when it lists none) carrying
//!   all its tags; an item with neither matches every event, and so does a query with no items.
//! - An event's `data` is opaque bytes and comes back byte for byte. When the data is a JSON
//!   object it is the event's payload, so that the library's payload predicates and locks see
//!   it; otherwise the payload is `{}`. The bytes are kept under [`WIRE`] in the event's
//!   metadata, with the protocol's metadata entries, unless the payload gives them back
//!   exactly: a JSON object written as `serde_json` writes it (compact, keys in byte order, its
//!   numbers integers), as clients that serialize a map or a struct with sorted fields do. Such
//!   data is stored once, as the payload, and an event with no metadata entries either has no
//!   metadata at all.
//! - An event with no [`WIRE`] data (appended through the library, or whose payload gives its
//!   bytes back) is sent with its payload as compact JSON for `data`; an event appended through
//!   the library has its metadata's top-level fields as entries (strings as they are, other
//!   values as JSON).
//! - An empty `uuid` gets a random one; a uuid is the event's idempotency key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dcbstore::{Event, Query, QueryItem, SequencedEvent};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::proto;

/// The metadata field holding what the protocol sent that dcbstore's event does not model: the
/// data's bytes (`data`, a string when they are UTF-8, else `data_base64`) and the metadata
/// entries in order (`metadata`, pairs).
pub const WIRE: &str = "dcbstore.wire";

/// A request's query as the store's.
pub(crate) fn query(query: Option<proto::Query>) -> Query {
    let items = query.map(|q| q.items).unwrap_or_default();
    if items.is_empty()
        || items
            .iter()
            .any(|i| i.types.is_empty() && i.tags.is_empty())
    {
        return Query::all();
    }
    Query::from_items(items.into_iter().map(|item| {
        let mut q = QueryItem::new();
        if !item.types.is_empty() {
            q = q.types(item.types);
        }
        if !item.tags.is_empty() {
            q = q.tags(item.tags);
        }
        q
    }))
}

/// Why an event of a request cannot be stored.
#[derive(Debug, thiserror::Error)]
#[error("event {index}: uuid {uuid:?} is not a UUID")]
pub(crate) struct BadUuid {
    index: usize,
    uuid: String,
}

/// A protocol event as the store's.
pub(crate) fn event(index: usize, event: proto::Event) -> Result<Event, BadUuid> {
    let id = if event.uuid.is_empty() {
        Uuid::new_v4()
    } else {
        Uuid::parse_str(&event.uuid).map_err(|_| BadUuid {
            index,
            uuid: event.uuid.clone(),
        })?
    };
    let (payload, gives_back) = match serde_json::from_slice::<Value>(&event.data) {
        Ok(Value::Object(object)) => {
            let payload = Value::Object(object);
            let gives_back = gives_back(&payload, &event.data);
            (payload, gives_back)
        }
        _ => (json!({}), false),
    };
    let mut wire = Map::new();
    if !gives_back {
        match String::from_utf8(event.data) {
            Ok(text) => wire.insert("data".into(), Value::String(text)),
            Err(bytes) => wire.insert(
                "data_base64".into(),
                Value::String(BASE64.encode(bytes.into_bytes())),
            ),
        };
    }
    if !event.metadata.is_empty() {
        let entries = event.metadata.into_iter().map(|m| json!([m.key, m.value]));
        wire.insert("metadata".into(), Value::Array(entries.collect()));
    }
    let stored = Event::new(event.event_type, payload)
        .with_id(id)
        .with_tags(event.tags);
    Ok(if wire.is_empty() {
        stored
    } else {
        stored.with_metadata(json!({ WIRE: wire }))
    })
}

/// Whether `payload`, stored and read back from either backend, writes `data` again exactly:
/// `data` is what `serde_json` writes of it, and every number in it is an integer. (A float
/// could come back otherwise: PostgreSQL keeps `1e+19` as `10000000000000000000`, which reads
/// back as an integer, and has no `-0.0`.) `serde_json` writes an object's keys in byte order,
/// which is also the order in which it reads back whatever order PostgreSQL kept them in.
fn gives_back(payload: &Value, data: &[u8]) -> bool {
    fn integers_only(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_i64() || n.is_u64(),
            Value::Array(items) => items.iter().all(integers_only),
            Value::Object(fields) => fields.values().all(integers_only),
            _ => true,
        }
    }
    integers_only(payload) && serde_json::to_vec(payload).is_ok_and(|written| written == data)
}

/// A stored event as the protocol's.
pub(crate) fn sequenced(event: SequencedEvent) -> proto::SequencedEvent {
    let position = event.position;
    let event = event.event;
    let wire = event.metadata.as_ref().and_then(|m| m.get(WIRE));
    let (data, metadata) = match wire {
        Some(wire) => (wire_data(wire, &event.payload), wire_entries(wire)),
        None => (
            serde_json::to_vec(&event.payload).unwrap_or_default(),
            library_entries(event.metadata.as_ref()),
        ),
    };
    proto::SequencedEvent {
        position,
        event: Some(proto::Event {
            event_type: event.event_type,
            tags: event.tags,
            data,
            uuid: event.id.to_string(),
            metadata,
        }),
        tracking_info: None,
    }
}

fn wire_data(wire: &Value, payload: &Value) -> Vec<u8> {
    if let Some(text) = wire.get("data").and_then(Value::as_str) {
        return text.as_bytes().to_vec();
    }
    if let Some(encoded) = wire.get("data_base64").and_then(Value::as_str)
        && let Ok(bytes) = BASE64.decode(encoded)
    {
        return bytes;
    }
    serde_json::to_vec(payload).unwrap_or_default()
}

fn wire_entries(wire: &Value) -> Vec<proto::MetadataEntry> {
    let pairs = wire.get("metadata").and_then(Value::as_array);
    pairs
        .into_iter()
        .flatten()
        .filter_map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(key), Value::String(value)]) => Some(proto::MetadataEntry {
                key: key.clone(),
                value: value.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn library_entries(metadata: Option<&Value>) -> Vec<proto::MetadataEntry> {
    let Some(Value::Object(fields)) = metadata else {
        return Vec::new();
    };
    fields
        .iter()
        .map(|(key, value)| proto::MetadataEntry {
            key: key.clone(),
            value: match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_event(data: &[u8]) -> proto::Event {
        proto::Event {
            event_type: "Registered".into(),
            tags: vec!["student:1".into()],
            data: data.to_vec(),
            uuid: Uuid::new_v4().to_string(),
            metadata: vec![
                proto::MetadataEntry {
                    key: "b".into(),
                    value: "2".into(),
                },
                proto::MetadataEntry {
                    key: "a".into(),
                    value: "1".into(),
                },
            ],
        }
    }

    fn round_trip(data: &[u8]) -> (Event, proto::Event) {
        let sent = proto_event(data);
        let stored = event(0, sent.clone()).expect("a valid event");
        let sequenced = SequencedEvent {
            position: 7,
            event: stored.clone(),
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let back = super::sequenced(sequenced).event.expect("an event");
        assert_eq!(back, sent, "byte for byte");
        (stored, back)
    }

    #[test]
    fn a_json_object_is_the_payload_and_its_bytes_come_back() {
        let (stored, _) = round_trip(br#"{ "name" : "Ada",  "n": 1.50 }"#);
        assert_eq!(stored.payload, json!({"name": "Ada", "n": 1.5}));
    }

    #[test]
    fn data_the_payload_gives_back_is_stored_once() {
        let data = r#"{"aa":1,"b":{"ccc":[1,-2,18446744073709551615],"d":"é\n\"x\""},"e":null}"#;
        let stored = event(0, proto_event(data.as_bytes())).expect("a valid event");
        let wire = stored.metadata.as_ref().and_then(|m| m.get(WIRE));
        assert!(wire.is_some_and(|w| w.get("data").is_none()), "{wire:?}");
        round_trip(data.as_bytes());
        let mut bare = proto_event(data.as_bytes());
        bare.metadata.clear();
        let stored = event(0, bare.clone()).expect("a valid event");
        assert_eq!(stored.metadata, None, "no metadata entries, no metadata");
        let sequenced = SequencedEvent {
            position: 1,
            event: stored,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(super::sequenced(sequenced).event, Some(bare));
    }

    #[test]
    fn data_the_payload_would_not_give_back_is_kept() {
        // Spaces, keys out of byte order, escapes written another way, floats as serde_json
        // writes them (`1e+19` reads back from PostgreSQL as an integer; it has no `-0.0`), a
        // repeated key.
        for data in [
            r#"{"a": 1}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":1e+19}"#,
            r#"{"a":1.5}"#,
            r#"{"a":-0.0}"#,
            r#"{"a":-0}"#,
            r#"{"a":1,"a":2}"#,
        ] {
            let stored = event(0, proto_event(data.as_bytes())).expect("a valid event");
            let wire = stored.metadata.as_ref().and_then(|m| m.get(WIRE));
            assert_eq!(
                wire.and_then(|w| w.get("data")).and_then(Value::as_str),
                Some(data),
                "{data}"
            );
            round_trip(data.as_bytes());
        }
    }

    /// What [`gives_back`] relies on: `serde_json` reads objects into a map that keeps its keys
    /// in byte order (its `preserve_order` feature off), whatever order they came in.
    #[test]
    fn json_objects_read_back_with_their_keys_in_byte_order() {
        let read: Value = serde_json::from_str(r#"{"b":1,"aa":2,"a":3}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"a":3,"aa":2,"b":1}"#
        );
    }

    #[test]
    fn other_data_comes_back_and_the_payload_is_empty() {
        for data in [&b"not json"[..], b"[1,2]", b"", &[0xff, 0x00, 0x80]] {
            let (stored, _) = round_trip(data);
            assert_eq!(stored.payload, json!({}));
        }
    }

    #[test]
    fn a_query_item_without_types_and_tags_matches_everything() {
        let item = |types: &[&str], tags: &[&str]| proto::QueryItem {
            types: types.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        };
        assert!(query(None).is_all());
        assert!(query(Some(proto::Query { items: vec![] })).is_all());
        let q = query(Some(proto::Query {
            items: vec![item(&["A"], &[]), item(&[], &[])],
        }));
        assert!(q.is_all());
        let q = query(Some(proto::Query {
            items: vec![item(&["A", "B"], &["t:1"]), item(&[], &["t:2"])],
        }));
        assert_eq!(q.items().len(), 2);
        assert_eq!(
            q.items()[0].type_list(),
            Some(&["A".to_string(), "B".to_string()][..])
        );
        assert_eq!(q.items()[1].tag_list(), ["t:2".to_string()]);
    }

    #[test]
    fn library_events_are_sent_as_json_with_their_metadata_fields() {
        let stored = SequencedEvent {
            position: 3,
            event: Event::new("A", json!({"x": 1})).with_metadata(json!({"by": "ada", "n": 2})),
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let sent = sequenced(stored).event.expect("an event");
        assert_eq!(sent.data, br#"{"x":1}"#);
        let entries: Vec<(String, String)> = sent
            .metadata
            .into_iter()
            .map(|m| (m.key, m.value))
            .collect();
        assert_eq!(
            entries,
            [("by".into(), "ada".into()), ("n".into(), "2".into())]
        );
    }
}
