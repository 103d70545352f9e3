//! Bad input gets a typed error and writes nothing; hostile strings are stored and matched
//! literally.

use dcbstore::{
    AppendCondition, ArgumentProblem, BatchProblem, Error, Event, EventProblem, EventStore,
    InvalidInput, Query, QueryItem, QueryProblem, ReadOptions, ValueProblem, limits,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::{Value, json};

use crate::common::{Backend, StoreExt, backends, event, store_on, store_on_with_max_batch_size};

fn valid() -> Event {
    event("Valid", &["t:1"], json!({"k": "v"}))
}

/// An array nested `depth` levels deep (iteratively built and dropped: no recursion).
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]))
}

/// Event `index` of the batch has `problem`.
fn event_has(index: usize, problem: EventProblem) -> InvalidInput {
    InvalidInput::Event { index, problem }
}

/// The `field` of event `index` has `problem`.
fn value_of(index: usize, field: &'static str, problem: ValueProblem) -> InvalidInput {
    event_has(index, EventProblem::Value { field, problem })
}

/// Query item `item` (or the query, for `None`) has `problem`.
fn query_has(item: Option<usize>, problem: QueryProblem) -> InvalidInput {
    InvalidInput::Query { item, problem }
}

fn invalid(e: &Error) -> &InvalidInput {
    match e {
        Error::InvalidInput(i) => i,
        other => panic!("expected invalid input, got {other}"),
    }
}

#[apply(backends)]
#[case::empty_batch(vec![], InvalidInput::Batch(BatchProblem::Empty))]
#[case::empty_event_type(
    vec![valid(), Event::new("", json!({}))],
    event_has(1, EventProblem::EmptyType)
)]
#[case::empty_tag(vec![event("A", &[""], json!({}))], event_has(0, EventProblem::EmptyTag))]
#[case::payload_array(
    vec![Event::new("A", json!([1, 2]))],
    event_has(0, EventProblem::NotAnObject { field: "payload", found: "an array" })
)]
#[case::payload_string(
    vec![Event::new("A", json!("text"))],
    event_has(0, EventProblem::NotAnObject { field: "payload", found: "a string" })
)]
#[case::payload_null(
    vec![Event::new("A", Value::Null)],
    event_has(0, EventProblem::NotAnObject { field: "payload", found: "null" })
)]
#[case::metadata_not_object(
    vec![Event::new("A", json!({})).with_metadata(json!(3))],
    event_has(0, EventProblem::NotAnObject { field: "metadata", found: "a number" })
)]
#[case::nul_in_type(
    vec![Event::new("A\0", json!({}))],
    value_of(0, "event type", ValueProblem::NulCharacter)
)]
#[case::nul_in_tag(
    vec![event("A", &["t\0"], json!({}))],
    value_of(0, "tag", ValueProblem::NulCharacter)
)]
#[case::nul_in_payload_value(
    vec![Event::new("A", json!({"k": ["x\0y"]}))],
    value_of(0, "payload", ValueProblem::NulCharacter)
)]
#[case::nul_in_payload_key(
    vec![Event::new("A", json!({"k\0": 1}))],
    value_of(0, "payload", ValueProblem::NulInKey)
)]
#[case::nul_in_metadata(
    vec![Event::new("A", json!({})).with_metadata(json!({"m": "\0"}))],
    value_of(0, "metadata", ValueProblem::NulCharacter)
)]
#[case::type_too_long(
    vec![Event::new("T".repeat(limits::MAX_NAME_BYTES + 1), json!({}))],
    value_of(0, "event type", ValueProblem::TooLong { bytes: limits::MAX_NAME_BYTES + 1, max: limits::MAX_NAME_BYTES })
)]
#[case::tag_too_long(
    vec![valid(), event("A", &[&"t".repeat(3000)], json!({}))],
    value_of(1, "tag", ValueProblem::TooLong { bytes: 3000, max: limits::MAX_NAME_BYTES })
)]
#[case::payload_too_deep(
    vec![Event::new("A", json!({"k": nested(limits::MAX_JSON_DEPTH)}))],
    value_of(0, "payload", ValueProblem::TooDeep { max: limits::MAX_JSON_DEPTH })
)]
#[case::payload_hostile_depth(
    vec![Event::new("A", json!({"k": nested(1_000)}))],
    value_of(0, "payload", ValueProblem::TooDeep { max: limits::MAX_JSON_DEPTH })
)]
#[case::number_postgres_cannot_give_back(
    vec![Event::new("A", json!({"k": [1, f64::MAX]}))],
    value_of(0, "payload", ValueProblem::NumberOutOfRange { number: "1.7976931348623157e+308".into() })
)]
#[case::metadata_too_deep(
    vec![Event::new("A", json!({})).with_metadata(json!({"m": nested(80)}))],
    value_of(0, "metadata", ValueProblem::TooDeep { max: limits::MAX_JSON_DEPTH })
)]
#[case::event_too_large(
    vec![Event::new("A", json!({"k": "x".repeat(limits::MAX_EVENT_BYTES)}))],
    event_has(0, EventProblem::TooLarge { bytes: limits::MAX_EVENT_BYTES + 8, max: limits::MAX_EVENT_BYTES })
)]
#[case::repeated_id(
    { let e = valid(); vec![e.clone(), e] },
    event_has(1, EventProblem::DuplicateId { event_id: uuid::Uuid::nil() })
)]
#[tokio::test]
async fn bad_events_are_rejected_and_write_nothing(
    backend: Backend,
    #[case] events: Vec<Event>,
    #[case] expected: InvalidInput,
) {
    let store = store_on(backend).await;
    store.append([valid()], None).await.unwrap();
    let err = store.append(events.clone(), None).await.unwrap_err();
    let got = invalid(&err);
    match (got, &expected) {
        (
            InvalidInput::Event {
                index,
                problem: EventProblem::DuplicateId { event_id },
            },
            InvalidInput::Event { index: want, .. },
        ) => {
            assert_eq!(index, want);
            assert_eq!(*event_id, events[0].id);
        }
        _ => assert_eq!(got, &expected),
    }
    assert_eq!(store.event_count().await, 1, "nothing written");
}

#[apply(backends)]
#[tokio::test]
async fn oversized_batch_is_rejected(backend: Backend) {
    let store = store_on_with_max_batch_size(backend, 3).await;
    let events: Vec<Event> = (0..4).map(|_| valid()).collect();
    let err = store.append(events, None).await.unwrap_err();
    assert_eq!(
        invalid(&err),
        &InvalidInput::Batch(BatchProblem::TooLarge { len: 4, max: 3 })
    );
    assert_eq!(store.event_count().await, 0);
}

#[apply(backends)]
#[case::no_items(Query::from_items([]), query_has(None, QueryProblem::Empty))]
#[case::empty_item(
    Query::from_items([QueryItem::typed(["A"]), QueryItem::new()]),
    query_has(Some(1), QueryProblem::ConstrainsNothing)
)]
#[case::empty_type_list(
    Query::from(QueryItem::typed(Vec::<String>::new())),
    query_has(Some(0), QueryProblem::Contradictory { reason: "its list of event types is empty".into() })
)]
#[case::empty_type(
    Query::from(QueryItem::typed([""])),
    query_has(Some(0), QueryProblem::Contradictory { reason: "it asks for the empty event type".into() })
)]
#[case::empty_tag(
    Query::from(QueryItem::tagged([""])),
    query_has(Some(0), QueryProblem::Contradictory { reason: "it asks for the empty tag".into() })
)]
#[case::empty_any_of(
    Query::from(QueryItem::typed(["A"]).payload_any_of(Vec::<(&str, Value)>::new())),
    query_has(Some(0), QueryProblem::Contradictory { reason: "its list of \"any of\" payload predicates is empty".into() })
)]
#[case::conflicting_all_of(
    Query::from(QueryItem::new().payload_all_of([("n", json!(1)), ("n", json!(2))])),
    query_has(
        Some(0),
        QueryProblem::Contradictory { reason: "two \"all of\" payload predicates ask for different values at one path".into() },
    )
)]
#[case::scalar_at_root(
    Query::from(QueryItem::new().payload_contains(json!(5))),
    query_has(
        Some(0),
        QueryProblem::Contradictory { reason: "a payload is a JSON object and cannot contain a number at its root".into() },
    )
)]
#[case::nul_in_query_tag(
    Query::from(QueryItem::tagged(["a\0"])),
    query_has(Some(0), QueryProblem::Value { field: "tag", problem: ValueProblem::NulCharacter })
)]
#[case::nul_in_query_value(
    Query::from(QueryItem::new().payload_all_of([("k", json!("\0"))])),
    query_has(Some(0), QueryProblem::Value { field: "payload predicate value", problem: ValueProblem::NulCharacter })
)]
#[case::empty_time_range(
    Query::all().occurred_from(time::OffsetDateTime::UNIX_EPOCH).occurred_before(time::OffsetDateTime::UNIX_EPOCH),
    query_has(None, QueryProblem::EmptyTimeRange)
)]
#[tokio::test]
async fn bad_queries_are_rejected_by_reads_and_guarded_appends(
    backend: Backend,
    #[case] query: Query,
    #[case] expected: InvalidInput,
) {
    let store = store_on(backend).await;
    let err = store
        .read(&query, ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(invalid(&err), &expected);
    let err = store
        .append([valid()], Some(AppendCondition::new(query, None)))
        .await
        .unwrap_err();
    assert_eq!(invalid(&err), &expected);
    assert_eq!(store.event_count().await, 0, "nothing written");
}

#[tokio::test]
async fn equal_numbers_in_all_of_are_not_a_contradiction() {
    let query = Query::from(QueryItem::new().payload_all_of([("n", json!(1)), ("n", json!(1.0))]));
    assert_eq!(query.validate(), Ok(()));
}

#[apply(backends)]
#[tokio::test]
async fn out_of_range_positions_are_rejected(backend: Backend) {
    let store = store_on(backend).await;
    let err = store
        .append(
            [valid()],
            Some(AppendCondition::new(Query::all(), Some(u64::MAX))),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(&err),
        &InvalidInput::Argument(ArgumentProblem::PositionOutOfRange(u64::MAX))
    );
    let err = store
        .read(&Query::all(), ReadOptions::default().from_position(1 << 63))
        .await
        .unwrap_err();
    assert_eq!(
        invalid(&err),
        &InvalidInput::Argument(ArgumentProblem::PositionOutOfRange(1 << 63))
    );
    assert_eq!(store.event_count().await, 0);
}

const HOSTILE: &[&str] = &[
    "it's",
    "quote\"double",
    "back\\slash",
    "'; DROP TABLE events; --",
    "$1",
    "$$ dollar $$",
    "@> ?| ?&",
    "{\"json\": true}",
    "ünïcødé ✓ 日本語 🙂",
    "new\nline\ttab",
    "%_ like wildcards",
];

#[apply(backends)]
#[tokio::test]
async fn hostile_strings_are_stored_and_matched_literally(backend: Backend) {
    let store = store_on(backend).await;
    for (i, s) in HOSTILE.iter().enumerate() {
        let mut payload = serde_json::Map::new();
        payload.insert(s.to_string(), json!(s));
        payload.insert("i".into(), json!(i));
        store
            .append(
                [Event::new(*s, Value::Object(payload)).with_tags([*s])],
                Some(AppendCondition::new(
                    Query::from(QueryItem::typed([*s]).tags([*s])),
                    None,
                )),
            )
            .await
            .unwrap_or_else(|e| panic!("appending {s:?}: {e}"));
    }
    for (i, s) in HOSTILE.iter().enumerate() {
        for query in [
            Query::from(QueryItem::typed([*s])),
            Query::from(QueryItem::tagged([*s])),
            Query::from(QueryItem::new().payload_all_of([(*s, json!(s))])),
            Query::from(QueryItem::new().payload_any_of([
                dcbstore::PayloadPredicate::new([*s, "nested"], json!(1)),
                dcbstore::PayloadPredicate::new(*s, json!(s)),
            ])),
        ] {
            let read = store.read(&query, ReadOptions::default()).await.unwrap();
            assert_eq!(read.len(), 1, "{s:?} via {query:?}");
            let e = &read.events()[0];
            assert_eq!(e.payload["i"], json!(i));
            assert_eq!(e.event_type, *s);
            assert_eq!(e.tags, [*s]);
        }
    }
    assert_eq!(store.event_count().await, HOSTILE.len());
}

#[apply(backends)]
#[tokio::test]
async fn a_batch_over_its_json_budget_is_rejected(backend: Backend) {
    let store = store_on(backend).await;
    let big = "x".repeat(limits::MAX_EVENT_BYTES - 100);
    let events: Vec<Event> = (0..limits::MAX_BATCH_BYTES / limits::MAX_EVENT_BYTES + 1)
        .map(|_| Event::new("A", json!({"k": big})))
        .collect();
    let err = store.append(events, None).await.unwrap_err();
    assert!(
        matches!(invalid(&err), InvalidInput::Batch(BatchProblem::TooManyBytes { max, .. }) if *max == limits::MAX_BATCH_BYTES),
        "{err}"
    );
    assert_eq!(store.event_count().await, 0);
}

/// The largest query the limits allow runs on both backends (its SQL renders without exhausting
/// the stack of a runtime thread); one clause more is refused.
#[apply(backends)]
#[tokio::test]
async fn queries_up_to_the_clause_limit_run_and_larger_ones_are_refused(backend: Backend) {
    let store = store_on(backend).await;
    store.append([valid()], None).await.unwrap();
    let items = |n: usize| Query::from_items((0..n).map(|i| QueryItem::tagged([format!("t:{i}")])));
    let read = store
        .read(&items(limits::MAX_QUERY_CLAUSES), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let predicates =
        Query::from(QueryItem::typed(["Valid"]).payload_any_of(
            (0..limits::MAX_QUERY_CLAUSES - 1).map(|i| ("k", json!(format!("v{i}")))),
        ));
    store
        .append(
            [event("Valid", &[], json!({"k": "v7"}))],
            Some(AppendCondition::new(predicates, None)),
        )
        .await
        .unwrap();
    let err = store
        .read(
            &items(limits::MAX_QUERY_CLAUSES + 1),
            ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(&err),
        &query_has(
            None,
            QueryProblem::TooLarge {
                clauses: limits::MAX_QUERY_CLAUSES + 1,
                max: limits::MAX_QUERY_CLAUSES
            }
        )
    );
}

#[apply(backends)]
#[tokio::test]
async fn read_limits_and_times_postgres_cannot_hold_are_refused(backend: Backend) {
    let store = store_on(backend).await;
    let err = store
        .read(&Query::all(), ReadOptions::default().limit(u64::MAX))
        .await
        .unwrap_err();
    assert_eq!(
        invalid(&err),
        &InvalidInput::Argument(ArgumentProblem::LimitOutOfRange(u64::MAX))
    );
    let ancient = time::OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT);
    let err = store
        .read(&Query::all().occurred_from(ancient), ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        invalid(&err),
        &query_has(None, QueryProblem::TimeOutOfRange(ancient))
    );
}
