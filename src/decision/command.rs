//! The command loop: [`decide`] reads a model's boundary, runs the caller's decision, appends
//! with the condition derived from the read, and retries on conflict.

use tracing::Instrument;
use tracing::field::Empty;

use std::future::Future;

use super::DecisionModel;
use crate::condition::AppendCondition;
use crate::error::Error;
use crate::event::Event;
use crate::options::{Consistency, ReadOptions};
use crate::results::AppendResult;
use crate::retry::RetryPolicy;
use crate::store::EventStore;
use crate::telemetry;

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
/// with the default [`RetryPolicy`]. The first read is [`Consistency::Eventual`](crate::Consistency::Eventual)
/// (on a store with replicas it may come from a replica), the re-reads
/// [`Consistency::Latest`](crate::Consistency::Latest): a lagging replica is not read again and
/// again.
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
    decide_from(store, model, policy, &mut decision, &mut Fresh).await
}

/// The read-decide-append loop over `boundary` (where each attempt's state comes from), in its
/// `dcbstore.decide` span: [`decide_with`], and [`DecisionCache::decide`](super::DecisionCache::decide).
pub(super) async fn decide_from<S, M, F, E, B>(
    store: &S,
    model: &M,
    policy: RetryPolicy,
    decision: &mut F,
    boundary: &mut B,
) -> Result<Option<AppendResult>, DecideError<E>>
where
    S: EventStore,
    M: DecisionModel,
    F: FnMut(M::State) -> Result<Vec<Event>, E>,
    B: Boundary<M>,
{
    let span = tracing::debug_span!(
        target: "dcbstore",
        "dcbstore.decide",
        attempts = Empty,
        conflicts = Empty,
        outcome = Empty
    );
    let mut attempts = 0;
    let outcome = decide_loop(store, model, policy, decision, boundary, &mut attempts)
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

/// Where an attempt's state comes from: a read of the whole boundary ([`Fresh`]), or a state
/// kept from earlier decisions and what it did not see (`DecisionCache`).
pub(super) trait Boundary<M: DecisionModel>: Send {
    /// The state to decide from, and the condition that guards a decision made from it, read
    /// at `consistency`.
    fn state<'a, S: EventStore>(
        &'a mut self,
        store: &'a S,
        model: &'a M,
        consistency: Consistency,
    ) -> impl Future<Output = Result<(M::State, AppendCondition), Error>> + Send + 'a;
}

/// Every attempt reads the whole boundary.
pub(super) struct Fresh;

impl<M: DecisionModel> Boundary<M> for Fresh {
    async fn state<S: EventStore>(
        &mut self,
        store: &S,
        model: &M,
        consistency: Consistency,
    ) -> Result<(M::State, AppendCondition), Error> {
        let options = ReadOptions {
            consistency,
            ..ReadOptions::default()
        };
        let read = store.read(&model.query(), options).await?;
        Ok((model.fold(read.events()), read.append_condition()?))
    }
}

/// The read-decide-append loop of [`decide_from`], counting its `attempts`.
async fn decide_loop<S, M, F, E, B>(
    store: &S,
    model: &M,
    policy: RetryPolicy,
    decision: &mut F,
    boundary: &mut B,
    attempts_made: &mut u32,
) -> Result<Option<AppendResult>, DecideError<E>>
where
    S: EventStore,
    M: DecisionModel,
    F: FnMut(M::State) -> Result<Vec<Event>, E>,
    B: Boundary<M>,
{
    let mut attempt = 0;
    // The first read may come from a replica that lags; after a conflict the boundary is known
    // to have changed, so the next read includes every commit made before it (on a store with
    // replicas, the primary's or a replica's that has replayed that far).
    let mut consistency = Consistency::Eventual;
    loop {
        attempt += 1;
        *attempts_made = attempt;
        let (state, condition) = boundary.state(store, model, consistency).await?;
        let events = decision(state).map_err(DecideError::Rejected)?;
        if events.is_empty() {
            return Ok(None);
        }
        match store.append(events, Some(condition)).await {
            Ok(appended) => return Ok(Some(appended)),
            Err(e) if e.is_append_condition_failed() => {
                telemetry::decision_conflicted();
                let Some(wait) = policy.next_wait(attempt) else {
                    return Err(DecideError::TooManyConflicts { attempts: attempt });
                };
                tokio::time::sleep(wait).await;
                consistency = Consistency::Latest;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
