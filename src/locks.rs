//! Advisory lock keys that make the append guard hold at READ COMMITTED.
//!
//! A guarded append takes *exclusive* transaction-level advisory locks on keys derived from its
//! condition query; every append takes *shared* keys derived from the events it writes. The
//! derivation guarantees that an event matching a condition shares at least one key with it, so
//! a writer of a matching event and the guarded append are serialized, while appends on disjoint
//! boundaries take disjoint keys and proceed in parallel.
//!
//! Condition keys, per query item (any one is enough, since a matching event has it):
//! - the item has tags: its smallest tag;
//! - else its payload predicates name a top-level scalar field the writer can enumerate: one such
//!   field of an "all of" predicate, or one per "any of" predicate;
//! - else its event types, one key each;
//! - a match-all query: the global key.
//!
//! Event keys: the type, each tag, each top-level scalar payload field, and the global key.
//!
//! Keys are deduplicated (exclusive wins), sorted (so lock order is global and cannot deadlock)
//! and bounded: above [`MAX_LOCK_KEYS`] the append takes the global key exclusively instead,
//! which every other append conflicts with through its shared global key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::event::Event;
use crate::jsonb::numeric_key;
use crate::query::{Query, QueryItem, is_scalar};

/// At most this many keys are locked by one append before it falls back to the global key.
pub(crate) const MAX_LOCK_KEYS: usize = 64;

/// The keys one append locks, sorted, each with its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockPlan {
    pub(crate) keys: Vec<i64>,
    pub(crate) exclusive: Vec<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    Global,
    Type(&'a str),
    Tag(&'a str),
    Field(&'a str, &'a Value),
}

impl LockPlan {
    /// The plan for writing `events` guarded by `condition`, in the key space `namespace`
    /// (the store's schema, so stores in different schemas do not contend).
    pub(crate) fn new(namespace: &str, events: &[Event], condition: Option<&Query>) -> Self {
        let mut modes: BTreeMap<i64, bool> = BTreeMap::new();
        let mut add = |key: Key<'_>, exclusive: bool| {
            let mode = modes.entry(hash_key(namespace, key)).or_insert(exclusive);
            *mode |= exclusive;
        };
        if let Some(query) = condition {
            condition_keys(query, |k| add(k, true));
        }
        for event in events {
            add(Key::Global, false);
            add(Key::Type(&event.event_type), false);
            for tag in &event.tags {
                add(Key::Tag(tag), false);
            }
            if let Value::Object(fields) = &event.payload {
                for (name, value) in fields.iter().filter(|(_, v)| is_scalar(v)) {
                    add(Key::Field(name, value), false);
                }
            }
        }
        if modes.len() > MAX_LOCK_KEYS {
            modes = BTreeMap::from([(hash_key(namespace, Key::Global), true)]);
        }
        Self {
            keys: modes.keys().copied().collect(),
            exclusive: modes.values().copied().collect(),
        }
    }
}

fn condition_keys<'q>(query: &'q Query, mut out: impl FnMut(Key<'q>)) {
    if query.is_all() {
        out(Key::Global);
        return;
    }
    for item in query.items() {
        if let Some(tag) = item.tag_list().iter().min() {
            out(Key::Tag(tag));
        } else if let Some(fields) = payload_keys(item) {
            fields.into_iter().for_each(&mut out);
        } else if let Some(types) = item.type_list() {
            types.iter().for_each(|t| out(Key::Type(t)));
        } else {
            out(Key::Global);
        }
    }
}

/// Keys of top-level scalar fields that every event matching `item` has, if there are any.
fn payload_keys(item: &QueryItem) -> Option<Vec<Key<'_>>> {
    if let Some(key) = item
        .all_of()
        .iter()
        .find_map(|p| top_level_field(p.path().keys(), p.value()))
    {
        return Some(vec![key]);
    }
    item.any_of()?
        .iter()
        .map(|p| top_level_field(p.path().keys(), p.value()))
        .collect()
}

/// A top-level scalar field the containment of `value` at `path` requires, if any.
fn top_level_field<'a>(path: &'a [String], value: &'a Value) -> Option<Key<'a>> {
    match (path, value) {
        ([name], v) if is_scalar(v) => Some(Key::Field(name, v)),
        ([], Value::Object(fields)) => fields
            .iter()
            .find(|(_, v)| is_scalar(v))
            .map(|(name, v)| Key::Field(name, v)),
        _ => None,
    }
}

/// FNV-1a (64 bit): stable across processes, platforms and Rust versions.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // 0xff never occurs in UTF-8, so it separates fields unambiguously.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        self
    }
}

fn hash_key(namespace: &str, key: Key<'_>) -> i64 {
    let mut h = Fnv::new();
    h.write(namespace.as_bytes());
    match key {
        Key::Global => h.write(b"*"),
        Key::Type(t) => h.write(b"type").write(t.as_bytes()),
        Key::Tag(t) => h.write(b"tag").write(t.as_bytes()),
        Key::Field(name, value) => h
            .write(b"field")
            .write(name.as_bytes())
            .write(canonical_scalar(value).as_bytes()),
    };
    // Reinterpreting the bits is the point: advisory lock keys are signed 64-bit.
    i64::from_ne_bytes(h.0.to_ne_bytes())
}

/// One spelling per value that JSONB considers equal (`1` and `1.0` are the same number).
fn canonical_scalar(v: &Value) -> String {
    match v {
        Value::Null => "z".to_string(),
        Value::Bool(b) => format!("b{b}"),
        Value::String(s) => format!("s{s}"),
        Value::Number(n) => format!("n{}", numeric_key(n)),
        Value::Array(_) | Value::Object(_) => unreachable!("only scalars are lock keys"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: Key<'_>) -> i64 {
        hash_key("s", k)
    }

    fn plan(events: &[Event], q: Option<&Query>) -> BTreeMap<i64, bool> {
        let p = LockPlan::new("s", events, q);
        p.keys.into_iter().zip(p.exclusive).collect()
    }

    #[test]
    fn numbers_that_jsonb_finds_equal_share_a_key() {
        assert_eq!(
            key(Key::Field("n", &json!(1))),
            key(Key::Field("n", &json!(1.0)))
        );
        assert_eq!(
            key(Key::Field("n", &json!(0))),
            key(Key::Field("n", &json!(-0.0)))
        );
        assert_ne!(
            key(Key::Field("n", &json!(1))),
            key(Key::Field("n", &json!("1")))
        );
    }

    #[test]
    fn keys_are_sorted_deduplicated_and_exclusive_wins() {
        let e = Event::new("T", json!({"a": 1})).with_tags(["x"]);
        let q = Query::from(QueryItem::tagged(["x"]));
        let p = LockPlan::new("s", std::slice::from_ref(&e), Some(&q));
        assert!(p.keys.windows(2).all(|w| w[0] < w[1]));
        let modes = plan(&[e], Some(&q));
        assert_eq!(modes.len(), 4, "global, type, tag, field");
        assert!(modes[&key(Key::Tag("x"))], "the condition key is exclusive");
        assert!(!modes[&key(Key::Type("T"))], "event keys are shared");
    }

    #[test]
    fn every_matching_event_shares_a_key_with_the_condition() {
        let event = Event::new("Lent", json!({"BookID": "b1", "ReaderID": "r1", "n": 2}))
            .with_tags(["book:b1", "reader:r1"]);
        let queries = [
            Query::from(QueryItem::types(["Lent"])),
            Query::from(QueryItem::tagged(["reader:r1", "book:b1"])),
            Query::from(
                QueryItem::types(["Lent"])
                    .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("zz"))]),
            ),
            Query::from(QueryItem::new().payload_all_of([("n", json!(2.0))])),
            Query::from(QueryItem::new().payload_contains(json!({"BookID": "b1"}))),
            Query::all(),
        ];
        let writer = plan(std::slice::from_ref(&event), None);
        for q in &queries {
            let guard = plan(&[Event::new("Other", json!({}))], Some(q));
            let shared = guard
                .iter()
                .filter(|(_, x)| **x)
                .any(|(k, _)| writer.contains_key(k));
            assert!(shared, "no common key for {q:?}");
        }
    }

    #[test]
    fn non_enumerable_payload_predicates_fall_back_to_types_then_global() {
        let nested = QueryItem::types(["A", "B"]).payload_all_of([(["x", "y"], json!(1))]);
        let keys = plan(&[], Some(&Query::from(nested)));
        assert_eq!(keys.len(), 2);
        assert!(keys.contains_key(&key(Key::Type("A"))));
        let untyped = QueryItem::new().payload_all_of([("arr", json!([1]))]);
        let keys = plan(&[], Some(&Query::from(untyped)));
        assert_eq!(keys.into_keys().collect::<Vec<_>>(), [key(Key::Global)]);
    }

    #[test]
    fn too_many_keys_escalate_to_the_exclusive_global_key() {
        let events: Vec<Event> = (0..MAX_LOCK_KEYS)
            .map(|i| Event::new("T", json!({})).with_tags([format!("t:{i}")]))
            .collect();
        let modes = plan(&events, None);
        assert_eq!(modes, BTreeMap::from([(key(Key::Global), true)]));
    }

    #[test]
    fn namespaces_do_not_share_keys() {
        assert_ne!(hash_key("a", Key::Global), hash_key("b", Key::Global));
    }
}
