//! [`DynEventStore`]: the object-safe form of [`EventStore`], for choosing a backend at run time.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::checkpoint::Checkpoint;
use crate::condition::AppendCondition;
use crate::error::Result;
use crate::event::Event;
use crate::feed::FeedPage;
use crate::options::{Consistency, ReadOptions};
use crate::query::Query;
use crate::results::{AppendResult, ReadResult, Unseen};
use crate::store::{EventStore, EventStream};
use crate::subscription::{SubscribeOptions, Subscription};

/// [`EventStore`] in a form that can be a trait object: `Box<dyn DynEventStore>` or
/// `Arc<dyn DynEventStore>`, e.g. to pick the backend from configuration at start-up.
///
/// Every [`EventStore`] is a `DynEventStore`, and both boxes are [`EventStore`]s again, so code
/// written against `impl EventStore` (such as [`decide`](crate::decide)) takes them as they
/// are. The price is one allocation per call for the boxed future.
///
/// ```
/// use std::sync::Arc;
/// use dcbstore::{DynEventStore, Event, EventStore, MemoryEventStore, Query, ReadOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// // e.g. PgEventStore when DATABASE_URL is set.
/// let store: Arc<dyn DynEventStore> = Arc::new(MemoryEventStore::new());
/// store.append([Event::new("Started", serde_json::json!({}))], None).await?;
/// let read = store.read(&Query::all(), ReadOptions::default()).await?;
/// assert_eq!(read.len(), 1);
/// # Ok(())
/// # }
/// ```
pub trait DynEventStore: Send + Sync {
    /// [`EventStore::read_stream`].
    fn dyn_read_stream(&self, query: &Query, options: ReadOptions) -> EventStream;

    /// [`EventStore::read`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::read`].
    fn dyn_read<'a>(
        &'a self,
        query: &'a Query,
        options: ReadOptions,
    ) -> BoxFuture<'a, Result<ReadResult>>;

    /// [`EventStore::read_unseen`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::read_unseen`].
    fn dyn_read_unseen<'a>(
        &'a self,
        condition: &'a AppendCondition,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Unseen>>;

    /// [`EventStore::append`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::append`].
    fn dyn_append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
    ) -> BoxFuture<'_, Result<AppendResult>>;

    /// [`EventStore::head`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::head`].
    fn dyn_head(&self) -> BoxFuture<'_, Result<Option<u64>>>;

    /// [`EventStore::feed`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::feed`].
    fn dyn_feed<'a>(
        &'a self,
        query: &'a Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> BoxFuture<'a, Result<FeedPage>>;

    /// [`EventStore::subscribe`].
    fn dyn_subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription;
}

impl<S: EventStore> DynEventStore for S {
    fn dyn_read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
        self.read_stream(query, options)
    }

    fn dyn_read<'a>(
        &'a self,
        query: &'a Query,
        options: ReadOptions,
    ) -> BoxFuture<'a, Result<ReadResult>> {
        self.read(query, options).boxed()
    }

    fn dyn_read_unseen<'a>(
        &'a self,
        condition: &'a AppendCondition,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Unseen>> {
        self.read_unseen(condition, consistency).boxed()
    }

    fn dyn_append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        self.append(events, condition).boxed()
    }

    fn dyn_head(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        self.head().boxed()
    }

    fn dyn_feed<'a>(
        &'a self,
        query: &'a Query,
        after: Option<Checkpoint>,
        limit: usize,
    ) -> BoxFuture<'a, Result<FeedPage>> {
        self.feed(query, after, limit).boxed()
    }

    fn dyn_subscribe(
        &self,
        query: &Query,
        after: Option<Checkpoint>,
        options: SubscribeOptions,
    ) -> Subscription {
        self.subscribe(query, after, options)
    }
}

/// Implements [`EventStore`] for a pointer to a [`DynEventStore`] by delegating to it.
macro_rules! event_store_for_pointer {
    ($pointer:ident) => {
        impl<'s> EventStore for $pointer<dyn DynEventStore + 's> {
            fn read_stream(&self, query: &Query, options: ReadOptions) -> EventStream {
                (**self).dyn_read_stream(query, options)
            }

            fn read(
                &self,
                query: &Query,
                options: ReadOptions,
            ) -> impl Future<Output = Result<ReadResult>> + Send {
                // The trait's future does not borrow the query.
                let query = query.clone();
                async move { (**self).dyn_read(&query, options).await }
            }

            fn read_unseen(
                &self,
                condition: &AppendCondition,
                consistency: Consistency,
            ) -> impl Future<Output = Result<Unseen>> + Send {
                let condition = condition.clone();
                async move { (**self).dyn_read_unseen(&condition, consistency).await }
            }

            fn append(
                &self,
                events: impl IntoIterator<Item = Event>,
                condition: Option<AppendCondition>,
            ) -> impl Future<Output = Result<AppendResult>> + Send {
                (**self).dyn_append(events.into_iter().collect(), condition)
            }

            fn head(&self) -> impl Future<Output = Result<Option<u64>>> + Send {
                (**self).dyn_head()
            }

            fn feed(
                &self,
                query: &Query,
                after: Option<Checkpoint>,
                limit: usize,
            ) -> impl Future<Output = Result<FeedPage>> + Send {
                let query = query.clone();
                async move { (**self).dyn_feed(&query, after, limit).await }
            }

            fn subscribe(
                &self,
                query: &Query,
                after: Option<Checkpoint>,
                options: SubscribeOptions,
            ) -> Subscription {
                (**self).dyn_subscribe(query, after, options)
            }
        }
    };
}

event_store_for_pointer!(Box);
event_store_for_pointer!(Arc);
