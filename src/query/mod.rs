//! The filter AST: a [`Query`] is the OR of [`QueryItem`]s (types, tags, payload predicates),
//! optionally restricted to an `occurred_at` range.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{InvalidInput, QueryProblem};
use crate::event::{Event, SequencedEvent};
use crate::jsonb::{jsonb_contains, scalar_eq};
use crate::limits::MAX_QUERY_CLAUSES;
use crate::validate;

mod payload;

pub use payload::{PayloadPath, PayloadPredicate};

/// A filter over the event log: the OR of its [`QueryItem`]s, or every event
/// ([`Query::all`]), optionally restricted to an `occurred_at` range.
///
/// A query is the dynamic stream of one decision: it may span several entities.
///
/// ```
/// use dcbstore::{Query, QueryItem};
/// use serde_json::json;
///
/// let query = Query::from_items([
///     QueryItem::typed(["BookCopyLentToReader", "BookCopyReturnedByReader"])
///         .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r1"))]),
///     QueryItem::typed(["CourseDefined"]).tags(["course:c1"]),
/// ]);
/// assert_eq!(query.items().len(), 2);
/// assert!(query.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    items: Vec<QueryItem>,
    all: bool,
    occurred_from: Option<OffsetDateTime>,
    occurred_before: Option<OffsetDateTime>,
}

impl Query {
    /// The query that matches every event.
    ///
    /// ```
    /// assert!(dcbstore::Query::all().is_all());
    /// ```
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// The OR of `items`.
    ///
    /// ```
    /// use dcbstore::{Query, QueryItem};
    /// let q = Query::from_items([QueryItem::typed(["A"]), QueryItem::tagged(["t:1"])]);
    /// assert_eq!(q.items().len(), 2);
    /// ```
    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Self {
            items: items.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The union of `queries`: every event one of them matches (and possibly more: when the
    /// queries restrict `occurred_at` differently, the union does not restrict it).
    ///
    /// ```
    /// use dcbstore::{Query, QueryItem};
    /// let q = Query::union([
    ///     Query::from(QueryItem::tagged(["course:c1"])),
    ///     Query::from(QueryItem::tagged(["student:s1"])),
    ///     Query::from(QueryItem::tagged(["course:c1"])),
    /// ]);
    /// assert_eq!(q.items().len(), 2);
    /// assert!(Query::union([Query::all(), q]).is_all());
    /// ```
    pub fn union(queries: impl IntoIterator<Item = Query>) -> Self {
        let queries: Vec<Query> = queries.into_iter().collect();
        let range = queries.first().map(Query::occurred_range);
        let same_range = queries.iter().all(|q| Some(q.occurred_range()) == range);
        let mut union = if queries.iter().any(Query::is_all) {
            Query::all()
        } else {
            let mut items: Vec<QueryItem> = Vec::new();
            for item in queries.into_iter().flat_map(|q| q.items) {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            Query::from_items(items)
        };
        if let (true, Some((from, before))) = (same_range, range) {
            union.occurred_from = from;
            union.occurred_before = before;
        }
        union
    }

    /// Adds one more item to the OR.
    ///
    /// ```
    /// use dcbstore::{Query, QueryItem};
    /// let q = Query::from(QueryItem::typed(["A"])).or(QueryItem::typed(["B"]));
    /// assert_eq!(q.items().len(), 2);
    /// ```
    pub fn or(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// Keeps only events that occurred at or after `from`.
    ///
    /// ```
    /// let q = dcbstore::Query::all().occurred_from(time::OffsetDateTime::UNIX_EPOCH);
    /// assert!(q.validate().is_ok());
    /// ```
    pub fn occurred_from(mut self, from: OffsetDateTime) -> Self {
        self.occurred_from = Some(from);
        self
    }

    /// Keeps only events that occurred strictly before `before`.
    ///
    /// ```
    /// let t = time::OffsetDateTime::UNIX_EPOCH;
    /// let empty = dcbstore::Query::all().occurred_from(t).occurred_before(t);
    /// assert!(empty.validate().is_err());
    /// ```
    pub fn occurred_before(mut self, before: OffsetDateTime) -> Self {
        self.occurred_before = Some(before);
        self
    }

    /// `true` for [`Query::all`].
    ///
    /// ```
    /// assert!(!dcbstore::Query::from(dcbstore::QueryItem::typed(["A"])).is_all());
    /// ```
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// The items of the OR (empty for [`Query::all`]).
    ///
    /// ```
    /// assert!(dcbstore::Query::all().items().is_empty());
    /// ```
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// The `occurred_at` range: inclusive start, exclusive end.
    ///
    /// ```
    /// assert_eq!(dcbstore::Query::all().occurred_range(), (None, None));
    /// ```
    pub fn occurred_range(&self) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        (self.occurred_from, self.occurred_before)
    }

    /// `true` when `event` matches: the same answer PostgreSQL's compiled filter gives.
    ///
    /// ```
    /// use dcbstore::{Event, Query, QueryItem, SequencedEvent};
    /// use serde_json::json;
    ///
    /// let query = Query::from(QueryItem::typed(["Lent"]).payload_all_of([("BookID", json!("b1"))]));
    /// let event = SequencedEvent {
    ///     position: 1,
    ///     occurred_at: time::OffsetDateTime::now_utc(),
    ///     event: Event::new("Lent", json!({"BookID": "b1", "ReaderID": "r1"})),
    /// };
    /// assert!(query.matches(&event));
    /// ```
    pub fn matches(&self, event: &SequencedEvent) -> bool {
        let in_range = self
            .occurred_from
            .is_none_or(|from| event.occurred_at >= from)
            && self
                .occurred_before
                .is_none_or(|before| event.occurred_at < before);
        in_range && (self.all || self.items.iter().any(|item| item.matches(&event.event)))
    }

    /// Checks that the query can be compiled: at least one item (or [`Query::all`]), no empty or
    /// contradictory item, no NUL characters, a non-empty time range. Stores call this before
    /// reading or appending.
    ///
    /// # Errors
    ///
    /// The [`InvalidInput`] case that describes the first problem found.
    ///
    /// ```
    /// use dcbstore::{InvalidInput, Query, QueryItem, QueryProblem};
    /// assert_eq!(
    ///     Query::from_items([]).validate(),
    ///     Err(InvalidInput::Query { item: None, problem: QueryProblem::Empty })
    /// );
    /// assert_eq!(
    ///     Query::from_items([QueryItem::new()]).validate(),
    ///     Err(InvalidInput::Query { item: Some(0), problem: QueryProblem::ConstrainsNothing })
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if !self.all && self.items.is_empty() {
            return Err(InvalidInput::query(QueryProblem::Empty));
        }
        let clauses: usize = self
            .items
            .iter()
            .map(|i| 1 + i.all_of.len() + i.any_of.as_ref().map_or(0, Vec::len))
            .sum();
        if clauses > MAX_QUERY_CLAUSES {
            return Err(InvalidInput::query(QueryProblem::TooLarge {
                clauses,
                max: MAX_QUERY_CLAUSES,
            }));
        }
        for bound in [self.occurred_from, self.occurred_before]
            .into_iter()
            .flatten()
        {
            validate::time(bound)?;
        }
        for (index, item) in self.items.iter().enumerate() {
            item.validate(index)?;
        }
        if let (Some(from), Some(before)) = (self.occurred_from, self.occurred_before)
            && from >= before
        {
            return Err(InvalidInput::query(QueryProblem::EmptyTimeRange));
        }
        Ok(())
    }
}

impl From<QueryItem> for Query {
    fn from(item: QueryItem) -> Self {
        Self::from_items([item])
    }
}

/// One alternative of a [`Query`]: the AND of its constraints.
///
/// An event matches when its type is one of `types` (if given), it carries every one of `tags`
/// (if any), its payload satisfies every "all of" [`PayloadPredicate`] and at least one "any of"
/// predicate (if any).
///
/// ```
/// use dcbstore::QueryItem;
/// use serde_json::json;
///
/// let item = QueryItem::typed(["StudentSubscribedToCourse"])
///     .tags(["course:c1"])
///     .payload_all_of([(["student", "country"], json!("NL"))])
///     .payload_any_of([("level", json!(1)), ("level", json!(2))]);
/// assert_eq!(item.tag_list(), ["course:c1"]);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryItem {
    types: Option<Vec<String>>,
    tags: Vec<String>,
    all_of: Vec<PayloadPredicate>,
    any_of: Option<Vec<PayloadPredicate>>,
}

impl QueryItem {
    /// An item with no constraint yet; add some with the builder methods. (On its own it is
    /// rejected as empty: use [`Query::all`] to match everything.)
    ///
    /// ```
    /// let item = dcbstore::QueryItem::new().tags(["user:ada"]);
    /// assert_eq!(item.tag_list(), ["user:ada"]);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// An item matching events of any of `types`.
    ///
    /// ```
    /// let item = dcbstore::QueryItem::typed(["A", "B"]);
    /// assert_eq!(item.type_list(), Some(&["A".to_string(), "B".to_string()][..]));
    /// ```
    pub fn typed<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new().types(types)
    }

    /// An item matching events that carry all of `tags`.
    ///
    /// ```
    /// let item = dcbstore::QueryItem::tagged(["course:c1"]);
    /// assert!(item.type_list().is_none());
    /// ```
    pub fn tagged<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new().tags(tags)
    }

    /// Adds event types to the item's "type is one of" list.
    ///
    /// ```
    /// let item = dcbstore::QueryItem::tagged(["t:1"]).types(["A"]);
    /// assert_eq!(item.type_list().unwrap().len(), 1);
    /// ```
    pub fn types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = self.types.get_or_insert_with(Vec::new);
        for t in types {
            let t = t.into();
            if !list.contains(&t) {
                list.push(t);
            }
        }
        self
    }

    /// Adds tags the event must all carry.
    ///
    /// ```
    /// let item = dcbstore::QueryItem::typed(["A"]).tags(["a:1", "b:2"]);
    /// assert_eq!(item.tag_list().len(), 2);
    /// ```
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for t in tags {
            let t = t.into();
            if !self.tags.contains(&t) {
                self.tags.push(t);
            }
        }
        self
    }

    /// Adds payload predicates that must all hold.
    ///
    /// ```
    /// use serde_json::json;
    /// let item = dcbstore::QueryItem::typed(["A"]).payload_all_of([("BookID", json!("b1"))]);
    /// assert_eq!(item.all_of().len(), 1);
    /// ```
    pub fn payload_all_of<I, P>(mut self, predicates: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PayloadPredicate>,
    {
        self.all_of.extend(predicates.into_iter().map(Into::into));
        self
    }

    /// Adds payload predicates of which at least one must hold.
    ///
    /// ```
    /// use serde_json::json;
    /// let item = dcbstore::QueryItem::typed(["A"])
    ///     .payload_any_of([("BookID", json!("b1")), ("ReaderID", json!("r1"))]);
    /// assert_eq!(item.any_of().unwrap().len(), 2);
    /// ```
    pub fn payload_any_of<I, P>(mut self, predicates: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PayloadPredicate>,
    {
        self.any_of
            .get_or_insert_with(Vec::new)
            .extend(predicates.into_iter().map(Into::into));
        self
    }

    /// Requires the payload to contain `object` (JSONB `@>` at the root).
    ///
    /// ```
    /// use serde_json::json;
    /// let item = dcbstore::QueryItem::typed(["A"]).payload_contains(json!({"course": {"id": "c1"}}));
    /// assert_eq!(item.all_of()[0].containment(), json!({"course": {"id": "c1"}}));
    /// ```
    pub fn payload_contains(self, object: Value) -> Self {
        self.payload_all_of([PayloadPredicate::new(PayloadPath::root(), object)])
    }

    /// The "type is one of" list, `None` when any type matches.
    ///
    /// ```
    /// assert!(dcbstore::QueryItem::tagged(["x:1"]).type_list().is_none());
    /// ```
    pub fn type_list(&self) -> Option<&[String]> {
        self.types.as_deref()
    }

    /// The tags every matching event carries.
    ///
    /// ```
    /// assert!(dcbstore::QueryItem::typed(["A"]).tag_list().is_empty());
    /// ```
    pub fn tag_list(&self) -> &[String] {
        &self.tags
    }

    /// The payload predicates that must all hold.
    ///
    /// ```
    /// assert!(dcbstore::QueryItem::typed(["A"]).all_of().is_empty());
    /// ```
    pub fn all_of(&self) -> &[PayloadPredicate] {
        &self.all_of
    }

    /// The payload predicates of which one must hold, `None` when not constrained.
    ///
    /// ```
    /// assert!(dcbstore::QueryItem::typed(["A"]).any_of().is_none());
    /// ```
    pub fn any_of(&self) -> Option<&[PayloadPredicate]> {
        self.any_of.as_deref()
    }

    /// `true` when `event` satisfies every constraint of the item.
    ///
    /// ```
    /// use dcbstore::{Event, QueryItem};
    /// use serde_json::json;
    ///
    /// let item = QueryItem::typed(["Subscribed"]).tags(["course:c1"]);
    /// let event = Event::new("Subscribed", json!({})).with_tags(["course:c1", "student:s1"]);
    /// assert!(item.matches(&event));
    /// assert!(!item.matches(&Event::new("Subscribed", json!({}))));
    /// ```
    pub fn matches(&self, event: &Event) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type))
            && self.tags.iter().all(|t| event.has_tag(t))
            && self
                .all_of
                .iter()
                .all(|p| jsonb_contains(&event.payload, &p.containment()))
            && self.any_of.as_ref().is_none_or(|any| {
                any.iter()
                    .any(|p| jsonb_contains(&event.payload, &p.containment()))
            })
    }

    fn validate(&self, item: usize) -> Result<(), InvalidInput> {
        let contradiction = |reason: &str| {
            let reason = reason.to_string();
            InvalidInput::item(item, QueryProblem::Contradictory { reason })
        };
        let value =
            |field| move |problem| InvalidInput::item(item, QueryProblem::Value { field, problem });
        if self.types.is_none()
            && self.tags.is_empty()
            && self.all_of.is_empty()
            && self.any_of.is_none()
        {
            return Err(InvalidInput::item(item, QueryProblem::ConstrainsNothing));
        }
        if let Some(types) = &self.types {
            if types.is_empty() {
                return Err(contradiction("its list of event types is empty"));
            }
            for t in types {
                if t.is_empty() {
                    return Err(contradiction("it asks for the empty event type"));
                }
                validate::no_nul(t).map_err(value("event type"))?;
            }
        }
        for t in &self.tags {
            if t.is_empty() {
                return Err(contradiction("it asks for the empty tag"));
            }
            validate::no_nul(t).map_err(value("tag"))?;
        }
        if self.any_of.as_ref().is_some_and(Vec::is_empty) {
            return Err(contradiction(
                "its list of \"any of\" payload predicates is empty",
            ));
        }
        for p in self.all_of.iter().chain(self.any_of.iter().flatten()) {
            p.validate(item)?;
        }
        let mut merged = Value::Object(Map::new());
        for p in &self.all_of {
            if !merge_containment(&mut merged, &p.containment()) {
                return Err(contradiction(
                    "two \"all of\" payload predicates ask for different values at one path",
                ));
            }
        }
        Ok(())
    }
}

/// Merges `add` into `acc` as the AND of two containment requirements; `false` when no JSON
/// value can satisfy both.
fn merge_containment(acc: &mut Value, add: &Value) -> bool {
    match (acc, add) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => {
                        if !merge_containment(existing, v) {
                            return false;
                        }
                    }
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
            true
        }
        (Value::Array(a), Value::Array(b)) => {
            a.extend(b.iter().cloned());
            true
        }
        (a, b) if is_scalar(a) && is_scalar(b) => scalar_eq(a, b),
        _ => false,
    }
}

pub(crate) fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}
