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
//! Keys are deduplicated (exclusive wins) and sorted, so lock order is global and cannot
//! deadlock.
//!
//! # Bounded: buckets instead of a global lock
//!
//! PostgreSQL keeps every lock in one shared table sized for `max_locks_per_transaction` (64 by
//! default) per connection, so one append must not take hundreds of keys. Each key therefore also
//! belongs to one of [`BUCKETS`] buckets, and a guarded append takes, besides its exclusive
//! condition key, its bucket *shared*. A writer whose events bring more than [`MAX_EVENT_KEYS`]
//! keys locks whole buckets *exclusively* in place of their keys, the fullest buckets first,
//! until its plan fits: a guard on any of its keys then conflicts with it through the bucket.
//! Guards on other buckets, unguarded appends and reads are not held up. An event with 70 tags
//! locks about four buckets of 64; a batch of hundreds of entities locks all of them (and so
//! holds up every *guarded* append for as long as it takes to commit, never an unguarded one).
//!
//! A condition of more than [`MAX_CONDITION_KEYS`] keys takes the global key exclusively instead
//! (every writer holds it shared). So one append takes at most
//! `2 × MAX_CONDITION_KEYS + MAX_EVENT_KEYS + 1` locks.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::event::Event;
use crate::fnv;
use crate::jsonb::numeric_key;
use crate::query::{Query, QueryItem, is_scalar};

/// The buckets that oversized writers lock in place of keys.
pub(crate) const BUCKETS: u64 = 64;

/// At most this many keys (or buckets) are locked for the events of one append.
pub(crate) const MAX_EVENT_KEYS: usize = 64;

/// At most this many condition keys are locked before the condition takes the global key.
pub(crate) const MAX_CONDITION_KEYS: usize = 32;

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
    Bucket(u64),
}

/// Lock keys with their modes; taking a key in both modes takes it exclusively.
#[derive(Default)]
struct Modes(BTreeMap<i64, bool>);

impl Modes {
    fn add(&mut self, key: i64, exclusive: bool) {
        *self.0.entry(key).or_insert(exclusive) |= exclusive;
    }
}

impl LockPlan {
    /// The plan for writing `events` guarded by `condition`, in the key space `namespace`
    /// (the store's schema, so stores in different schemas do not contend).
    pub(crate) fn new(namespace: &str, events: &[Event], condition: Option<&Query>) -> Self {
        let key = |k: Key<'_>| hash_key(namespace, k);
        let bucket = |k: i64| key(Key::Bucket(u64::from_ne_bytes(k.to_ne_bytes()) % BUCKETS));
        let mut modes = Modes::default();
        if let Some(query) = condition {
            let mut keys = Vec::new();
            condition_keys(query, |k| keys.push(key(k)));
            keys.sort_unstable();
            keys.dedup();
            if keys.len() > MAX_CONDITION_KEYS {
                keys = vec![key(Key::Global)];
            }
            let global = key(Key::Global);
            for k in keys {
                modes.add(k, true);
                // Every writer holds the global key shared: no bucket needed to meet them.
                if k != global {
                    modes.add(bucket(k), false);
                }
            }
        }
        if !events.is_empty() {
            modes.add(key(Key::Global), false);
        }
        // The events' keys that the condition does not already hold exclusively.
        let mut shared: Vec<i64> = Vec::new();
        for event in events {
            shared.push(key(Key::Type(&event.event_type)));
            shared.extend(event.tags.iter().map(|t| key(Key::Tag(t))));
            if let Value::Object(fields) = &event.payload {
                let scalars = fields.iter().filter(|(_, v)| is_scalar(v));
                shared.extend(scalars.map(|(name, v)| key(Key::Field(name, v))));
            }
        }
        shared.sort_unstable();
        shared.dedup();
        shared.retain(|k| modes.0.get(k) != Some(&true));
        for k in fit_in_buckets(shared, bucket) {
            match k {
                Fitted::Key(k) => modes.add(k, false),
                Fitted::Bucket(b) => modes.add(b, true),
            }
        }
        Self {
            keys: modes.0.keys().copied().collect(),
            exclusive: modes.0.values().copied().collect(),
        }
    }
}

impl LockPlan {
    /// The locks of several appends taken at once: every key, exclusive where any takes it so.
    pub(crate) fn union<'a>(plans: impl Iterator<Item = &'a LockPlan>) -> LockPlan {
        let mut modes: BTreeMap<i64, bool> = BTreeMap::new();
        for plan in plans {
            for (key, exclusive) in plan.keys.iter().zip(&plan.exclusive) {
                *modes.entry(*key).or_insert(*exclusive) |= *exclusive;
            }
        }
        LockPlan {
            keys: modes.keys().copied().collect(),
            exclusive: modes.values().copied().collect(),
        }
    }

    /// How many keys the plan locks.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A writer's lock: one key shared, or a whole bucket exclusively.
#[derive(Debug, PartialEq, Eq)]
enum Fitted {
    Key(i64),
    Bucket(i64),
}

/// At most [`MAX_EVENT_KEYS`] locks that cover `keys`: the keys themselves if they fit, else the
/// fullest buckets in place of their keys until they do. Each bucket replaces all its keys, so
/// taking every bucket gives at most [`BUCKETS`] locks, and the loop always ends within budget.
fn fit_in_buckets(keys: Vec<i64>, bucket: impl Fn(i64) -> i64) -> Vec<Fitted> {
    if keys.len() <= MAX_EVENT_KEYS {
        return keys.into_iter().map(Fitted::Key).collect();
    }
    let mut by_bucket: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for k in keys {
        by_bucket.entry(bucket(k)).or_default().push(k);
    }
    let mut fullest: Vec<(i64, Vec<i64>)> = by_bucket.into_iter().collect();
    // Fullest first; ties in bucket order, so that the plan is the same every time.
    fullest.sort_by(|(a, x), (b, y)| y.len().cmp(&x.len()).then(a.cmp(b)));
    let mut count: usize = fullest.iter().map(|(_, ks)| ks.len()).sum();
    let mut locks = Vec::new();
    for (b, ks) in fullest {
        if count > MAX_EVENT_KEYS {
            count = count + 1 - ks.len();
            locks.push(Fitted::Bucket(b));
        } else {
            locks.extend(ks.into_iter().map(Fitted::Key));
        }
    }
    locks
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

/// A hash ([`fnv`]) built field by field: 0xff, which never occurs in UTF-8, follows each field,
/// so that fields cannot run into one another.
struct Fields(u64);

impl Fields {
    fn write(&mut self, bytes: &[u8]) -> &mut Self {
        self.0 = fnv::extend(fnv::extend(self.0, bytes), &[0xff]);
        self
    }
}

/// The global key of `namespace`. Its bits also name the namespace of the positions the
/// appends of `namespace` publish (`sql::admin::drawn_namespace`, see `settled.rs`).
pub(crate) fn global_key(namespace: &str) -> i64 {
    hash_key(namespace, Key::Global)
}

fn hash_key(namespace: &str, key: Key<'_>) -> i64 {
    let mut h = Fields(fnv::hash(&[]));
    h.write(namespace.as_bytes());
    match key {
        Key::Global => h.write(b"*"),
        Key::Type(t) => h.write(b"type").write(t.as_bytes()),
        Key::Tag(t) => h.write(b"tag").write(t.as_bytes()),
        Key::Field(name, value) => h
            .write(b"field")
            .write(name.as_bytes())
            .write(canonical_scalar(value).as_bytes()),
        Key::Bucket(b) => h.write(b"bucket").write(&b.to_le_bytes()),
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
        assert_eq!(modes.len(), 5, "global, type, tag, field, the tag's bucket");
        assert!(modes[&key(Key::Tag("x"))], "the condition key is exclusive");
        assert!(!modes[&key(Key::Type("T"))], "event keys are shared");
    }

    /// Whether two appends' plans make them wait for each other.
    fn conflict(a: &BTreeMap<i64, bool>, b: &BTreeMap<i64, bool>) -> bool {
        a.iter().any(|(k, x)| b.get(k).is_some_and(|y| *x || *y))
    }

    fn tagged_events(n: usize, prefix: &str) -> Vec<Event> {
        (0..n)
            .map(|i| Event::new("T", json!({"i": i})).with_tags([format!("{prefix}:{i}")]))
            .collect()
    }

    #[test]
    fn every_matching_event_conflicts_with_the_condition_alone_or_in_a_large_batch() {
        let event = Event::new("Lent", json!({"BookID": "b1", "ReaderID": "r1", "n": 2}))
            .with_tags(["book:b1", "reader:r1"]);
        let queries = [
            Query::from(QueryItem::typed(["Lent"])),
            Query::from(QueryItem::tagged(["reader:r1", "book:b1"])),
            Query::from(
                QueryItem::typed(["Lent"])
                    .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("zz"))]),
            ),
            Query::from(QueryItem::new().payload_all_of([("n", json!(2.0))])),
            Query::from(QueryItem::new().payload_contains(json!({"BookID": "b1"}))),
            Query::all(),
        ];
        let mut batch = tagged_events(300, "other");
        batch.push(event.clone());
        let writers = [plan(std::slice::from_ref(&event), None), plan(&batch, None)];
        for q in &queries {
            let guard = plan(&[Event::new("Other", json!({}))], Some(q));
            for writer in &writers {
                assert!(conflict(&guard, writer), "no conflict for {q:?}");
            }
        }
    }

    #[test]
    fn guards_on_disjoint_boundaries_do_not_wait_for_each_other() {
        let guards: Vec<_> = (0..200)
            .map(|i| {
                let tag = format!("course:{i}");
                let e = Event::new("Subscribed", json!({})).with_tags([tag.clone()]);
                plan(&[e], Some(&Query::from(QueryItem::tagged([tag]))))
            })
            .collect();
        for (i, a) in guards.iter().enumerate() {
            for b in &guards[i + 1..] {
                assert!(!conflict(a, b));
            }
        }
    }

    #[test]
    fn an_event_with_many_tags_locks_a_few_buckets_not_the_store() {
        let tags: Vec<String> = (0..70).map(|i| format!("t:{i}")).collect();
        let event = Event::new("T", json!({})).with_tags(tags);
        let modes = plan(&[event], None);
        let exclusive = modes.values().filter(|x| **x).count();
        assert!(modes.len() <= MAX_EVENT_KEYS + 1, "{} locks", modes.len());
        assert!((1..=8).contains(&exclusive), "{exclusive} buckets");
        assert!(!modes[&key(Key::Global)], "the global key stays shared");
        // Guards on most other tags proceed beside it.
        let free = (0..100)
            .filter(|i| {
                let q = Query::from(QueryItem::tagged([format!("elsewhere:{i}")]));
                !conflict(&plan(&[], Some(&q)), &modes)
            })
            .count();
        assert!(free >= 80, "only {free} of 100 other guards are free");
    }

    #[test]
    fn a_large_batch_stays_within_the_lock_budget() {
        let modes = plan(&tagged_events(1_000, "t"), None);
        assert!(modes.len() <= BUCKETS as usize + 1, "{} locks", modes.len());
        // No unguarded writer waits for it.
        assert!(!conflict(&modes, &plan(&tagged_events(3, "u"), None)));
    }

    #[test]
    fn a_condition_with_too_many_keys_takes_the_global_key() {
        let items = (0..=MAX_CONDITION_KEYS).map(|i| QueryItem::tagged([format!("t:{i}")]));
        let modes = plan(&[], Some(&Query::from_items(items)));
        assert_eq!(modes, BTreeMap::from([(key(Key::Global), true)]));
    }

    #[test]
    fn non_enumerable_payload_predicates_fall_back_to_types_then_global() {
        let nested = QueryItem::typed(["A", "B"]).payload_all_of([(["x", "y"], json!(1))]);
        let keys = plan(&[], Some(&Query::from(nested)));
        let exclusive: Vec<i64> = keys.iter().filter(|(_, x)| **x).map(|(k, _)| *k).collect();
        assert_eq!(exclusive.len(), 2);
        assert!(keys[&key(Key::Type("A"))] && keys[&key(Key::Type("B"))]);
        let untyped = QueryItem::new().payload_all_of([("arr", json!([1]))]);
        let keys = plan(&[], Some(&Query::from(untyped)));
        assert_eq!(keys.into_keys().collect::<Vec<_>>(), [key(Key::Global)]);
    }

    #[test]
    fn keys_are_the_same_in_every_version() {
        // Processes of different versions lock the same boundaries with the same keys.
        assert_eq!(hash_key("dcbstore", Key::Global), 3884351485095310779);
        assert_eq!(hash_key("s1", Key::Tag("course:c1")), -2194255340120207547);
    }

    #[test]
    fn namespaces_do_not_share_keys() {
        assert_ne!(hash_key("a", Key::Global), hash_key("b", Key::Global));
    }
}
