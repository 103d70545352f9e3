//! Live subscriptions: the feed, caught up and then followed, as a pulled [`Stream`].
//!
//! A subscription is the feed read page by page. Once a page comes back short (the consumer has
//! caught up), it waits for a wake-up before reading again: an append through the same store,
//! a notification from another process (PostgreSQL `LISTEN/NOTIFY`), or at the latest the poll
//! interval. Wake-ups carry nothing: events always come from the feed, so a lost or duplicated
//! wake-up costs latency at most, never an event.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::feed::{FeedEvent, FeedPage};
use crate::results::AppendResult;
use crate::retry::RetryPolicy;

/// How a [`Subscription`] reads and waits.
///
/// ```
/// use std::time::Duration;
/// use dcbstore::SubscribeOptions;
///
/// let options = SubscribeOptions::default().page_size(100).poll_interval(Duration::from_secs(1));
/// assert_eq!(options.page_size, 100);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Events read per query, and so the most a subscription holds in memory. A stream that is
    /// not pulled reads nothing more: that is its back-pressure.
    pub page_size: usize,
    /// The longest a caught-up subscription waits before it looks at the feed again when no
    /// wake-up comes (e.g. for events written by other programs, or while the notification
    /// connection is down).
    pub poll_interval: Duration,
    /// How long failures that can pass (a lost connection, a restarting server) are retried
    /// before the subscription gives up: `max_attempts` failures in a row end it with the last
    /// error. Each failure is logged (`tracing` warning), and so is the recovery.
    pub retry: RetryPolicy,
}

/// The default page size of a subscription.
pub const DEFAULT_SUBSCRIBE_PAGE_SIZE: usize = 512;

/// The default longest wait of a caught-up subscription without a wake-up.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

impl Default for SubscribeOptions {
    /// Pages of [`DEFAULT_SUBSCRIBE_PAGE_SIZE`], a poll every [`DEFAULT_POLL_INTERVAL`] at the
    /// latest, and failures retried for about two minutes (30 attempts, waits up to 100 ms,
    /// 200 ms, … at most 5 s): long enough for a server restart or a failover.
    fn default() -> Self {
        Self {
            page_size: DEFAULT_SUBSCRIBE_PAGE_SIZE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry: RetryPolicy {
                max_attempts: 30,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            },
        }
    }
}

impl SubscribeOptions {
    /// The same options reading `size` events per query (at least 1).
    ///
    /// ```
    /// assert_eq!(dcbstore::SubscribeOptions::default().page_size(0).page_size, 1);
    /// ```
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size.max(1);
        self
    }

    /// The same options polling at least every `interval` when no wake-up comes.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = dcbstore::SubscribeOptions::default().poll_interval(Duration::from_millis(50));
    /// assert_eq!(options.poll_interval, Duration::from_millis(50));
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The same options retrying passing failures by `policy`.
    ///
    /// ```
    /// use dcbstore::{RetryPolicy, SubscribeOptions};
    /// let options = SubscribeOptions::default().retry(RetryPolicy { max_attempts: 3, ..RetryPolicy::default() });
    /// assert_eq!(options.retry.max_attempts, 3);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
}

/// The events of a query as they are committed, from a [`Checkpoint`] on: what
/// [`EventStore::subscribe`](crate::EventStore::subscribe) returns.
///
/// A [`Stream`] of [`FeedEvent`]s in feed order: it catches up page by page, then follows new
/// events. It reads only when pulled, at most one page ahead. Failures that can pass (a dropped
/// connection, a server restart) are retried by [`SubscribeOptions::retry`] and logged; the
/// subscription resumes after the last event it delivered, so nothing is lost or delivered
/// twice. A failure that cannot pass (e.g. invalid input), or one that outlasts the retries,
/// is the last item. Dropping the stream stops it.
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, SubscribeOptions};
/// use futures::TryStreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append([Event::new("Ticked", serde_json::json!({"n": 1}))], None).await?;
/// let mut live = store.subscribe(&Query::all(), None, SubscribeOptions::default());
/// let first = live.try_next().await?.expect("the event appended before");
/// assert_eq!(first.event.payload["n"], 1);
/// store.append([Event::new("Ticked", serde_json::json!({"n": 2}))], None).await?;
/// let second = live.try_next().await?.expect("the event appended since");
/// assert_eq!(second.event.payload["n"], 2);
/// # Ok(())
/// # }
/// ```
#[must_use = "a subscription reads nothing until it is polled"]
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<FeedEvent>> + Send>>,
    caught_up: Arc<AtomicBool>,
    delivered: watch::Receiver<Option<Checkpoint>>,
}

impl Subscription {
    /// `true` when the subscription has delivered everything the store could deliver at its
    /// last read (it is following, not catching up).
    ///
    /// It says nothing about appends made since that read: it can be `true` while an event
    /// appended a moment ago is still on its way. To know whether a given append has been
    /// delivered, use [`has_delivered`](Self::has_delivered).
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, SubscribeOptions};
    /// use futures::TryStreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let mut live = store.subscribe(&Query::all(), None, SubscribeOptions::default());
    /// assert!(!live.is_caught_up(), "nothing read yet");
    /// live.try_next().await?;
    /// assert!(live.is_caught_up());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// How far the subscription has delivered, in feed order: every event of its query before
    /// this checkpoint (and the one it marks) has been yielded by the stream, and no other.
    /// It also moves past events the query does not match, as the subscription reads on, so it
    /// says how far the subscriber has seen the log, not only its query. `None` while a
    /// subscription from the start has delivered nothing.
    ///
    /// A subscription resumed from a checkpoint starts there.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, SubscribeOptions};
    /// use futures::TryStreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let written = store.append([Event::new("A", serde_json::json!({}))], None).await?;
    /// let mut live = store.subscribe(&Query::all(), None, SubscribeOptions::default());
    /// assert_eq!(live.delivered(), None);
    /// live.try_next().await?;
    /// assert_eq!(live.delivered(), Some(written.checkpoint()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn delivered(&self) -> Option<Checkpoint> {
        *self.delivered.borrow()
    }

    /// `true` once the subscription has delivered every event of `append` its query matches
    /// (and everything before it in feed order): a subscriber that has just appended can tell
    /// whether its own events have come round. An append the query does not match counts as
    /// delivered once the subscription has read past it, which happens while the stream is
    /// polled even though it yields nothing: [`until_delivered`](Self::until_delivered) pulls
    /// until then. Always `false` for an append to a store of the other backend.
    ///
    /// ```
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, SubscribeOptions};
    /// use futures::TryStreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let orders = Query::from(QueryItem::typed(["OrderPlaced"]));
    /// let mut live = store.subscribe(&orders, None, SubscribeOptions::default());
    /// let placed = store.append([Event::new("OrderPlaced", serde_json::json!({}))], None).await?;
    /// assert!(!live.has_delivered(&placed));
    /// live.try_next().await?.expect("the order placed");
    /// assert!(live.has_delivered(&placed));
    /// # Ok(())
    /// # }
    /// ```
    pub fn has_delivered(&self, append: &AppendResult) -> bool {
        self.delivered()
            .is_some_and(|at| at.covers(&append.checkpoint()))
    }

    /// The subscription's next events up to `append`: a stream that yields what the
    /// subscription delivers and ends once it [has delivered](Self::has_delivered) `append`,
    /// also when its query matches none of the append's events (it then ends without yielding
    /// them). The subscription goes on afterwards from where this left it. Bound the wait with
    /// a timeout: on PostgreSQL an append is delivered once every transaction that began before
    /// it has ended (see [`EventStore::feed`](crate::EventStore::feed)). For an append to a
    /// store of the other backend it never ends.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, SubscribeOptions};
    /// use futures::TryStreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dcbstore::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let orders = Query::from(QueryItem::typed(["OrderPlaced"]));
    /// let mut live = store.subscribe(&orders, None, SubscribeOptions::default());
    /// store.append([Event::new("OrderPlaced", serde_json::json!({"id": 1}))], None).await?;
    /// let other = store.append([Event::new("Ticked", serde_json::json!({}))], None).await?;
    /// let events = live.until_delivered(&other).try_collect::<Vec<_>>();
    /// let events = tokio::time::timeout(Duration::from_secs(5), events).await.expect("in time")?;
    /// assert_eq!(events.len(), 1, "the order; the tick is not of the query");
    /// assert!(live.has_delivered(&other));
    /// # Ok(())
    /// # }
    /// ```
    pub fn until_delivered(
        &mut self,
        append: &AppendResult,
    ) -> impl Stream<Item = Result<FeedEvent>> + Send + '_ {
        let target = append.checkpoint();
        let changes = self.delivered.clone();
        futures::stream::unfold((self, changes), move |(live, mut changes)| async move {
            loop {
                if live.delivered().is_some_and(|at| at.covers(&target)) {
                    return None;
                }
                // The next event, or the frontier moving past events it does not yield.
                let next = {
                    let mut moved = std::pin::pin!(changes.changed());
                    std::future::poll_fn(|cx| match live.inner.as_mut().poll_next(cx) {
                        Poll::Ready(item) => Poll::Ready(Some(item)),
                        Poll::Pending => moved.as_mut().poll(cx).map(|_| None),
                    })
                    .await
                };
                match next {
                    Some(Some(item)) => return Some((item, (live, changes))),
                    Some(None) => return None, // the subscription ended
                    None => {}
                }
            }
        })
    }

    /// Changes of [`delivered`](Self::delivered), for a consumer that waits on them.
    pub(crate) fn delivered_changes(&self) -> watch::Receiver<Option<Checkpoint>> {
        self.delivered.clone()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<FeedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// How soon a subscription looks again while committed events are held back by older
/// transactions still running.
const HELD_BACK_POLL: Duration = Duration::from_millis(10);

/// Reads one page of a backend's feed: after a checkpoint, at most so many events.
pub(crate) type FeedFn =
    Box<dyn Fn(Option<Checkpoint>, usize) -> BoxFuture<'static, Result<FeedPage>> + Send>;

/// A subscription over `feed`, woken by `wake` (a counter bumped on every change that may
/// have made events deliverable) and by the poll interval.
pub(crate) fn follow(
    feed: FeedFn,
    wake: watch::Receiver<u64>,
    after: Option<Checkpoint>,
    options: SubscribeOptions,
) -> Subscription {
    let caught_up = Arc::new(AtomicBool::new(false));
    let (delivered_sender, delivered) = watch::channel(after);
    let state = Follower {
        feed,
        caught_up_flag: caught_up.clone(),
        delivered: delivered_sender,
        wake,
        next: after,
        buffer: VecDeque::new(),
        caught_up: false,
        held_back: false,
        done: false,
        options,
    };
    Subscription {
        inner: Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next_event().await?;
            Some((item, state))
        })),
        caught_up,
        delivered,
    }
}

struct Follower {
    feed: FeedFn,
    /// [`Subscription::is_caught_up`]: the last page was short and all of it is delivered.
    caught_up_flag: Arc<AtomicBool>,
    /// [`Subscription::delivered`]: the checkpoint of the last event yielded, or the page's
    /// `next` once all of it is yielded.
    delivered: watch::Sender<Option<Checkpoint>>,
    wake: watch::Receiver<u64>,
    /// Where the next page starts.
    next: Option<Checkpoint>,
    buffer: VecDeque<FeedEvent>,
    /// The last page was short: wait for a wake-up before reading again.
    caught_up: bool,
    /// The last page said committed events wait for older transactions: look again soon.
    held_back: bool,
    /// A failure ended the subscription.
    done: bool,
    options: SubscribeOptions,
}

impl Follower {
    /// The next event, or the failure that ends the subscription, or `None` after it.
    async fn next_event(&mut self) -> Option<Result<FeedEvent>> {
        let mut failures = 0u32;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                let drained = self.caught_up && self.buffer.is_empty();
                self.caught_up_flag.store(drained, Ordering::Relaxed);
                // The page's `next` covers what the page read past, once all of it is yielded.
                let at = match self.buffer.is_empty() {
                    true => self.next,
                    false => Some(event.checkpoint),
                };
                self.advance(at);
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.caught_up {
                self.wait().await;
            }
            // Changes from here on wake the next wait: none falls between the read and it.
            self.wake.borrow_and_update();
            match (self.feed)(self.next, self.options.page_size).await {
                Ok(page) => {
                    if failures > 0 {
                        tracing::info!(failures, "subscription resumed");
                    }
                    self.caught_up = page.events.len() < self.options.page_size;
                    self.held_back = page.held_back;
                    let drained = self.caught_up && page.events.is_empty();
                    self.caught_up_flag.store(drained, Ordering::Relaxed);
                    self.next = Some(page.next);
                    if page.events.is_empty() {
                        self.advance(self.next);
                    }
                    self.buffer.extend(page.events);
                }
                Err(error) => {
                    let retry = error.is_retryable();
                    match retry
                        .then(|| self.options.retry.next_wait(failures + 1))
                        .flatten()
                    {
                        Some(wait) => {
                            failures += 1;
                            tracing::warn!(%error, failures, ?wait,
                                "subscription failed to read; retrying");
                            tokio::time::sleep(wait).await;
                            // Read at once after the pause: the failure may have hidden a wake-up.
                            self.caught_up = false;
                        }
                        None => {
                            tracing::warn!(%error, failures, "subscription ended by a failure");
                            self.done = true;
                            return Some(Err(error));
                        }
                    }
                }
            }
        }
    }

    /// Moves [`Subscription::delivered`] to `at` (it never moves back), waking those who wait
    /// on it only when it moved.
    fn advance(&self, at: Option<Checkpoint>) {
        self.delivered.send_if_modified(|delivered| {
            let moved = at > *delivered;
            if moved {
                *delivered = at;
            }
            moved
        });
    }

    /// Until a wake-up, or the poll interval at most ([`HELD_BACK_POLL`] while events are
    /// held back: the transactions holding them may be of other programs, which wake nobody).
    async fn wait(&mut self) {
        let interval = if self.held_back {
            self.options.poll_interval.min(HELD_BACK_POLL)
        } else {
            self.options.poll_interval
        };
        match tokio::time::timeout(interval, self.wake.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            // Nothing will wake it any more (the store is gone): poll.
            Ok(Err(_)) => tokio::time::sleep(interval).await,
        }
    }
}
