//! A subscription to a store's feed: the subscription's reader ([`follow`]) over the store's
//! `feed`.

use tokio::sync::watch;

use crate::checkpoint::Checkpoint;
use crate::query::Query;
use crate::store::EventStore;
use crate::subscription::{FeedFn, SubscribeOptions, Subscription, follow};

/// A subscription to `store`'s feed of `query` (see [`follow`](crate::subscription::follow)).
pub(crate) fn follow_store<S: EventStore + Clone + 'static>(
    store: &S,
    query: &Query,
    wake: watch::Receiver<u64>,
    after: Option<Checkpoint>,
    options: SubscribeOptions,
) -> Subscription {
    let (store, query) = (store.clone(), query.clone());
    let feed: FeedFn = Box::new(move |after, limit| {
        let (store, query) = (store.clone(), query.clone());
        Box::pin(async move { store.feed(&query, after, limit).await })
    });
    follow(feed, wake, after, options)
}
