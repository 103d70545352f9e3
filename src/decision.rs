//! Decision models: projections that fold the events of their query into a state, composed into
//! one read, and the command loop [`decide`] that reads, decides, appends with the derived
//! condition and retries on conflict.

use std::fmt;
use std::sync::Arc;

use tracing::Instrument;
use tracing::field::Empty;

use crate::error::Error;
use crate::event::{Event, SequencedEvent};
use crate::options::ReadOptions;
use crate::query::Query;
use crate::retry::RetryPolicy;
use crate::store::{AppendResult, EventStore};
use crate::telemetry;

/// The events of `query`, folded into a state of type `S`.
///
/// ```
/// use dcbstore::{Projection, Query, QueryItem};
///
/// // How many students a course has.
/// let subscriptions = Projection::new(
///     QueryItem::types(["StudentSubscribedToCourse"]).tags(["course:c1"]),
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
    /// let exists = Projection::new(QueryItem::types(["CourseDefined"]), false, |s, _| *s = true);
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
    /// let count = Projection::new(QueryItem::types(["A"]), 0, |n, _| *n += 1);
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
    /// let one = Projection::new(QueryItem::types(["A"]), (), |_, _| {});
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

/// Why [`decide`] did not append.
#[derive(Debug, thiserror::Error)]
pub enum DecideError<E> {
    /// The decision itself said no: the domain's error, untouched.
    #[error("the decision was rejected: {0}")]
    Rejected(E),
    /// The boundary kept changing between read and append for every attempt.
    #[error("gave up after {attempts} attempts: the consistency boundary kept changing")]
    TooManyConflicts {
        /// Attempts made.
        attempts: u32,
    },
    /// Reading or appending failed for another reason.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> DecideError<E> {
    /// The domain's rejection, if that is what happened.
    ///
    /// ```
    /// let e: dcbstore::DecideError<&str> = dcbstore::DecideError::Rejected("course is full");
    /// assert_eq!(e.rejection(), Some(&"course is full"));
    /// ```
    pub fn rejection(&self) -> Option<&E> {
        match self {
            DecideError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads the events of `model`'s query, folds them into its state, lets `decision` decide, and
/// appends the events it returns guarded by what the read saw
/// ([`ReadResult::append_condition`](crate::ReadResult::append_condition)): the append fails if
/// any event matching the model's query became visible after the read, whatever its position.
/// When the condition fails (another writer changed the boundary) it re-reads and decides again,
/// with the default [`RetryPolicy`].
///
/// Returns the append's result, or `None` when the decision returned no events.
///
/// # Errors
///
/// [`DecideError::Rejected`] with the decision's own error; [`DecideError::TooManyConflicts`]
/// when every attempt lost its race; [`DecideError::Store`] for any other store error.
///
/// ```
/// use dcbstore::{decide, DecideError, Event, MemoryEventStore, Projection, QueryItem};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DecideError<String>> {
/// let store = MemoryEventStore::new();
/// let claimed = Projection::new(QueryItem::tagged(["username:ada"]), false, |c, _| *c = true);
/// let claim = |taken: bool| {
///     if taken {
///         return Err("ada is taken".to_string());
///     }
///     Ok(vec![Event::new("UsernameClaimed", json!({"username": "ada"})).with_tags(["username:ada"])])
/// };
/// decide(&store, &claimed, claim).await?;
/// let again = decide(&store, &claimed, claim).await.unwrap_err();
/// assert_eq!(again.rejection().map(String::as_str), Some("ada is taken"));
/// # Ok(())
/// # }
/// ```
pub async fn decide<S, M, F, E>(
    store: &S,
    model: &M,
    decision: F,
) -> Result<Option<AppendResult>, DecideError<E>>
where
    S: EventStore,
    M: DecisionModel,
    F: FnMut(M::State) -> Result<Vec<Event>, E>,
{
    decide_with(store, model, RetryPolicy::default(), decision).await
}

/// [`decide`] with an explicit [`RetryPolicy`].
///
/// # Errors
///
/// As [`decide`].
///
/// ```
/// use dcbstore::{decide_with, DecideError, Event, MemoryEventStore, Projection, Query, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DecideError<std::convert::Infallible>> {
/// let store = MemoryEventStore::new();
/// let count = Projection::new(Query::all(), 0u64, |n, _| *n += 1);
/// let once = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
/// let written = decide_with(&store, &count, once, |n| {
///     Ok(vec![Event::new("Counted", serde_json::json!({"n": n}))])
/// })
/// .await?;
/// assert_eq!(written.unwrap().positions(), [1]);
/// # Ok(())
/// # }
/// ```
pub async fn decide_with<S, M, F, E>(
    store: &S,
    model: &M,
    policy: RetryPolicy,
    mut decision: F,
) -> Result<Option<AppendResult>, DecideError<E>>
where
    S: EventStore,
    M: DecisionModel,
    F: FnMut(M::State) -> Result<Vec<Event>, E>,
{
    let span = tracing::debug_span!(
        target: "dcbstore",
        "dcbstore.decide",
        attempts = Empty,
        conflicts = Empty,
        outcome = Empty
    );
    let mut attempts = 0;
    let outcome = decide_loop(store, model, policy, &mut decision, &mut attempts)
        .instrument(span.clone())
        .await;
    span.record("attempts", attempts);
    // Every attempt but a last one that appended, decided nothing or was rejected conflicted.
    let conflicted = matches!(outcome, Err(DecideError::TooManyConflicts { .. }));
    span.record("conflicts", attempts.saturating_sub(u32::from(!conflicted)));
    span.record(
        "outcome",
        match &outcome {
            Ok(Some(_)) => "appended",
            Ok(None) => "nothing_to_append",
            Err(DecideError::Rejected(_)) => "rejected",
            Err(DecideError::TooManyConflicts { .. }) => "too_many_conflicts",
            Err(_) => "error",
        },
    );
    outcome
}

/// The read-decide-append loop of [`decide_with`], counting its `attempts`.
async fn decide_loop<S, M, F, E>(
    store: &S,
    model: &M,
    policy: RetryPolicy,
    decision: &mut F,
    attempts_made: &mut u32,
) -> Result<Option<AppendResult>, DecideError<E>>
where
    S: EventStore,
    M: DecisionModel,
    F: FnMut(M::State) -> Result<Vec<Event>, E>,
{
    let query = model.query();
    let mut attempt = 0;
    loop {
        attempt += 1;
        *attempts_made = attempt;
        let read = store.read(&query, ReadOptions::default()).await?;
        let state = model.fold(read.events());
        let events = decision(state).map_err(DecideError::Rejected)?;
        if events.is_empty() {
            return Ok(None);
        }
        let condition = read.append_condition()?;
        match store.append(events, Some(condition)).await {
            Ok(appended) => return Ok(Some(appended)),
            Err(e) if e.is_append_condition_failed() => {
                telemetry::decision_conflicted();
                let Some(wait) = policy.next_wait(attempt) else {
                    return Err(DecideError::TooManyConflicts { attempts: attempt });
                };
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
