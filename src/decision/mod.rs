//! Decision models: projections that fold the events of their query into a state, composed into
//! one read ([`Projection`], [`DecisionModel`]), and in [`command`] the loop [`decide`] that reads,
//! decides, appends with the derived condition and retries on conflict.

mod cache;
mod command;

pub use cache::DecisionCache;
pub use command::{DecideError, decide, decide_with};

use std::fmt;
use std::sync::Arc;

use crate::event::SequencedEvent;
use crate::query::Query;

/// The events of `query`, folded into a state of type `S`.
///
/// ```
/// use dcbstore::{Projection, Query, QueryItem};
///
/// // How many students a course has.
/// let subscriptions = Projection::new(
///     QueryItem::typed(["StudentSubscribedToCourse"]).tags(["course:c1"]),
///     0u32,
///     |count, _event| *count += 1,
/// );
/// assert_eq!(subscriptions.query().items().len(), 1);
/// ```
pub struct Projection<S> {
    query: Query,
    initial: S,
    apply: Apply<S>,
}

/// How a projection folds one event into its state.
type Apply<S> = Arc<dyn Fn(&mut S, &SequencedEvent) + Send + Sync>;

impl<S: Clone> Projection<S> {
    /// A projection of the events matching `query`, starting from `initial`, folding each event
    /// with `apply`.
    ///
    /// ```
    /// use dcbstore::{Projection, QueryItem};
    /// let exists = Projection::new(QueryItem::typed(["CourseDefined"]), false, |s, _| *s = true);
    /// assert!(!exists.initial());
    /// ```
    pub fn new(
        query: impl Into<Query>,
        initial: S,
        apply: impl Fn(&mut S, &SequencedEvent) + Send + Sync + 'static,
    ) -> Self {
        Self {
            query: query.into(),
            initial,
            apply: Arc::new(apply),
        }
    }

    /// The query whose events this projection folds.
    ///
    /// ```
    /// use dcbstore::{Projection, Query};
    /// let all = Projection::new(Query::all(), 0, |n, _| *n += 1);
    /// assert!(all.query().is_all());
    /// ```
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The state before any event.
    ///
    /// ```
    /// use dcbstore::{Projection, Query};
    /// assert_eq!(*Projection::new(Query::all(), 7, |_, _| {}).initial(), 7);
    /// ```
    pub fn initial(&self) -> &S {
        &self.initial
    }

    /// Folds the events that match this projection's query (the others are skipped).
    ///
    /// ```
    /// use dcbstore::{Event, Projection, QueryItem, SequencedEvent};
    /// let count = Projection::new(QueryItem::typed(["A"]), 0, |n, _| *n += 1);
    /// let at = |position, t: &str| SequencedEvent {
    ///     position,
    ///     occurred_at: time::OffsetDateTime::UNIX_EPOCH,
    ///     event: Event::new(t, serde_json::json!({})),
    /// };
    /// assert_eq!(count.fold(&[at(1, "A"), at(2, "B"), at(3, "A")]), 2);
    /// ```
    pub fn fold<'a>(&self, events: impl IntoIterator<Item = &'a SequencedEvent>) -> S {
        let mut state = self.initial.clone();
        for event in events {
            self.apply_matching(&mut state, event);
        }
        state
    }

    fn apply_matching(&self, state: &mut S, event: &SequencedEvent) {
        if self.query.matches(event) {
            (self.apply)(state, event);
        }
    }
}

impl<S: Clone> Clone for Projection<S> {
    fn clone(&self) -> Self {
        Self {
            query: self.query.clone(),
            initial: self.initial.clone(),
            apply: Arc::clone(&self.apply),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Projection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection")
            .field("query", &self.query)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

/// What a decision reads: one projection, or a tuple of them (up to six) whose states come as a
/// tuple. The events of all their queries are read at once, and each event is folded only into
/// the projections whose query it matches.
///
/// ```
/// use dcbstore::{DecisionModel, Projection, QueryItem};
///
/// let course_full = Projection::new(QueryItem::tagged(["course:c1"]), 0u32, |n, _| *n += 1);
/// let student_courses = Projection::new(QueryItem::tagged(["student:s1"]), 0u32, |n, _| *n += 1);
/// let model = (course_full, student_courses);
/// assert_eq!(model.query().items().len(), 2);
/// assert_eq!(model.initial_state(), (0, 0));
/// ```
pub trait DecisionModel: Send + Sync {
    /// The state a decision is made from.
    type State: Send;

    /// The queries of the projections.
    fn queries(&self) -> Vec<&Query>;

    /// The state before any event.
    fn initial_state(&self) -> Self::State;

    /// Folds one event into every projection whose query it matches.
    fn apply(&self, state: &mut Self::State, event: &SequencedEvent);

    /// The combined query: the union of the projections' queries. It is both what the decision
    /// reads and what its append condition guards.
    ///
    /// ```
    /// use dcbstore::{DecisionModel, Projection, QueryItem};
    /// let one = Projection::new(QueryItem::typed(["A"]), (), |_, _| {});
    /// assert_eq!(one.query().items().len(), 1);
    /// ```
    fn query(&self) -> Query {
        Query::union(self.queries().into_iter().cloned())
    }

    /// Folds `events` into a fresh state.
    ///
    /// ```
    /// use dcbstore::{DecisionModel, Projection, Query};
    /// let count = Projection::new(Query::all(), 0, |n, _| *n += 1);
    /// assert_eq!(DecisionModel::fold(&count, &[]), 0);
    /// ```
    fn fold<'a>(&self, events: impl IntoIterator<Item = &'a SequencedEvent>) -> Self::State
    where
        Self: Sized,
    {
        let mut state = self.initial_state();
        for event in events {
            self.apply(&mut state, event);
        }
        state
    }
}

impl<S: Clone + Send + Sync> DecisionModel for Projection<S> {
    type State = S;

    fn queries(&self) -> Vec<&Query> {
        vec![&self.query]
    }

    fn initial_state(&self) -> S {
        self.initial.clone()
    }

    fn apply(&self, state: &mut S, event: &SequencedEvent) {
        self.apply_matching(state, event);
    }
}

macro_rules! tuple_model {
    ($($p:ident $i:tt),+) => {
        impl<$($p: DecisionModel),+> DecisionModel for ($($p,)+) {
            type State = ($($p::State,)+);

            fn queries(&self) -> Vec<&Query> {
                let mut queries = Vec::new();
                $(queries.extend(self.$i.queries());)+
                queries
            }

            fn initial_state(&self) -> Self::State {
                ($(self.$i.initial_state(),)+)
            }

            fn apply(&self, state: &mut Self::State, event: &SequencedEvent) {
                $(self.$i.apply(&mut state.$i, event);)+
            }
        }
    };
}

tuple_model!(A 0);
tuple_model!(A 0, B 1);
tuple_model!(A 0, B 1, C 2);
tuple_model!(A 0, B 1, C 2, D 3);
tuple_model!(A 0, B 1, C 2, D 3, E 4);
tuple_model!(A 0, B 1, C 2, D 3, E 4, F 5);
