//! [`DecisionCache`]: a decision model with its folded state kept between decisions, so that the
//! next decision on the same boundary reads only what that state did not see.

use super::DecisionModel;
use super::command::{Boundary, DecideError, Fresh, decide_from};
use crate::condition::AppendCondition;
use crate::error::Error;
use crate::event::Event;
use crate::options::Consistency;
use crate::results::AppendResult;
use crate::retry::RetryPolicy;
use crate::store::EventStore;

/// A decision model with its folded state kept between decisions (opt-in): the first decision
/// reads the model's whole boundary; each later one reads only the events that state could not
/// see ([`EventStore::read_unseen`]: what was written since, found through the writing
/// transactions, whatever the size of the boundary) and folds them in. A decision over a
/// 10,000-event boundary then costs about what a 10-event one does.
///
/// It stays exact. Its appends are guarded like [`decide`](crate::decide)'s, by a condition
/// that fails for any event of the boundary the kept state has not folded. When an event turns
/// up below one already folded (commits are not in position order), or the state was read on a
/// replica (whose snapshot returns again what it read of transactions still running
/// elsewhere), folding it in would change the order of the fold: the decision reads the whole
/// boundary again instead. Keep one cache per boundary (e.g. per course, in a map), used by
/// one task at a time (`decide` takes `&mut self`).
///
/// ```
/// use dcbstore::{DecisionCache, Event, MemoryEventStore, Projection, QueryItem};
/// use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dcbstore::DecideError<String>> {
/// let store = MemoryEventStore::new();
/// let seats = Projection::new(QueryItem::tagged(["course:c1"]), 0u32, |n, _| *n += 1);
/// let mut course = DecisionCache::new(seats);
/// for student in ["ada", "grace", "alan"] {
///     course
///         .decide(&store, |taken| {
///             if taken >= 2 {
///                 return Err(format!("no seat left for {student}"));
///             }
///             Ok(vec![Event::new("Subscribed", json!({"student": student})).with_tags(["course:c1"])])
///         })
///         .await
///         .or_else(|e| e.rejection().map(|_| None).ok_or(e))?;
/// }
/// assert_eq!(course.state(), Some(&2));
/// # Ok(())
/// # }
/// ```
pub struct DecisionCache<M: DecisionModel> {
    model: M,
    kept: Option<(M::State, AppendCondition)>,
    policy: RetryPolicy,
}

impl<M: DecisionModel> std::fmt::Debug for DecisionCache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("kept", &self.kept.as_ref().map(|(_, condition)| condition))
            .finish_non_exhaustive()
    }
}

impl<M> DecisionCache<M>
where
    M: DecisionModel,
    M::State: Clone + Send + Sync,
{
    /// A cache of `model`'s state, empty: its first decision reads the whole boundary. Conflicts
    /// are retried with the default [`RetryPolicy`].
    ///
    /// ```
    /// use dcbstore::{DecisionCache, Projection, Query};
    /// let cache = DecisionCache::new(Projection::new(Query::all(), 0u64, |n, _| *n += 1));
    /// assert!(cache.state().is_none());
    /// ```
    pub fn new(model: M) -> Self {
        Self {
            model,
            kept: None,
            policy: RetryPolicy::default(),
        }
    }

    /// The same cache retrying conflicts with `policy`.
    ///
    /// ```
    /// use dcbstore::{DecisionCache, Projection, Query, RetryPolicy};
    /// let once = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    /// let cache = DecisionCache::new(Projection::new(Query::all(), 0u64, |n, _| *n += 1))
    ///     .with_retry(once);
    /// ```
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The state as of the last decision (what it was decided from, without the events that
    /// decision appended), if there was one.
    ///
    /// ```
    /// # fn run(cache: dcbstore::DecisionCache<dcbstore::Projection<u64>>) {
    /// if let Some(count) = cache.state() {
    ///     println!("{count} events when last decided");
    /// }
    /// # }
    /// ```
    pub fn state(&self) -> Option<&M::State> {
        self.kept.as_ref().map(|(state, _)| state)
    }

    /// Drops the kept state: the next decision reads the whole boundary.
    ///
    /// ```
    /// # fn run(mut cache: dcbstore::DecisionCache<dcbstore::Projection<u64>>) {
    /// cache.forget();
    /// assert!(cache.state().is_none());
    /// # }
    /// ```
    pub fn forget(&mut self) {
        self.kept = None;
    }

    /// Like [`decide_with`](crate::decide_with) with the cache's policy: folds what the kept
    /// state did not see (or, the first time, the whole boundary), lets `decision` decide from
    /// it, and appends what it returns guarded by everything folded; on conflict, folds what
    /// changed and decides again. The state is kept whatever the outcome: the events the
    /// decision appended are folded in at the next decision, like anyone else's.
    ///
    /// # Errors
    ///
    /// As [`decide`](crate::decide). A store error drops the kept state.
    ///
    /// ```
    /// use dcbstore::{DecisionCache, Event, MemoryEventStore, Projection, Query};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dcbstore::DecideError<std::convert::Infallible>> {
    /// let store = MemoryEventStore::new();
    /// let mut counter = DecisionCache::new(Projection::new(Query::all(), 0u64, |n, _| *n += 1));
    /// for _ in 0..3 {
    ///     counter
    ///         .decide(&store, |n| Ok(vec![Event::new("Counted", serde_json::json!({"n": n}))]))
    ///         .await?;
    /// }
    /// assert_eq!(counter.state(), Some(&2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn decide<S, F, E>(
        &mut self,
        store: &S,
        mut decision: F,
    ) -> Result<Option<AppendResult>, DecideError<E>>
    where
        S: EventStore,
        F: FnMut(M::State) -> Result<Vec<Event>, E>,
    {
        let mut kept = Kept(self.kept.take());
        let outcome = decide_from(store, &self.model, self.policy, &mut decision, &mut kept).await;
        self.kept = kept.0;
        outcome
    }
}

/// The kept state of a [`DecisionCache`] while it decides.
struct Kept<T>(Option<(T, AppendCondition)>);

impl<M> Boundary<M> for Kept<M::State>
where
    M: DecisionModel,
    M::State: Clone + Send + Sync,
{
    async fn state<S: EventStore>(
        &mut self,
        store: &S,
        model: &M,
        consistency: Consistency,
    ) -> Result<(M::State, AppendCondition), Error> {
        let continued = match self.0.take() {
            Some((mut state, condition)) => {
                let unseen = store.read_unseen(&condition, consistency).await?;
                unseen.continues().then(|| {
                    for event in unseen.events() {
                        model.apply(&mut state, event);
                    }
                    (state, unseen.append_condition().clone())
                })
            }
            None => None,
        };
        let (state, condition) = match continued {
            Some(continued) => continued,
            None => Fresh.state(store, model, consistency).await?,
        };
        self.0 = Some((state.clone(), condition.clone()));
        Ok((state, condition))
    }
}
