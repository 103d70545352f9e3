#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod checkpoint;
mod condition;
mod decision;
mod dyn_store;
mod error;
mod event;
mod feed;
mod fnv;
mod input;
mod jsonb;
pub mod limits;
mod memory;
mod options;
#[cfg(feature = "postgres")]
pub mod pg;
mod projector;
mod query;
mod results;
mod retry;
mod snapshot;
mod store;
mod streams;
mod subscription;
mod telemetry;
mod typed;
mod validate;

pub use checkpoint::Checkpoint;
pub use condition::AppendCondition;
pub use decision::{DecideError, DecisionCache, DecisionModel, Projection, decide, decide_with};
pub use dyn_store::DynEventStore;
pub use error::{
    ArgumentProblem, BatchProblem, ConfigProblem, DatabaseError, Error, EventProblem, InvalidInput,
    ParseProblem, QueryProblem, Result, ValueProblem,
};
pub use event::{Event, SequencedEvent};
pub use feed::{FeedEvent, FeedPage};
/// The memory store's `jsonb @>`: public only so that the PostgreSQL suite can check it against
/// the server's on random pairs (`tests/postgres/jsonb_differential.rs`); not part of the API.
#[doc(hidden)]
pub use jsonb::jsonb_contains;
pub use limits::DEFAULT_MAX_BATCH_SIZE;
pub use memory::MemoryEventStore;
pub use options::{Consistency, ReadOptions};
#[cfg(feature = "postgres")]
pub use pg::{PgEventStore, PgEventStoreBuilder};
pub use projector::{
    Projector, ProjectorError, ProjectorHandle, ProjectorRunner, ProjectorStatus, rebuild,
};
pub use query::{PayloadPath, PayloadPredicate, Query, QueryItem};
pub use results::{AppendResult, ReadResult, Unseen};
pub use retry::RetryPolicy;
pub use snapshot::ReadSnapshot;
pub use store::{EventStore, EventStream};
pub use streams::{ClassicStream, ExpectedVersion, StreamVersion};
pub use subscription::{
    DEFAULT_POLL_INTERVAL, DEFAULT_SUBSCRIBE_PAGE_SIZE, SubscribeOptions, Subscription,
};
pub use typed::DomainEvent;

/// The PostgreSQL driver and pool this crate is built on, re-exported so that callers use the
/// same versions (e.g. for [`PgEventStore::append_in`]).
#[cfg(feature = "postgres")]
pub use deadpool_postgres;
/// The TLS library of [`PgEventStoreBuilder::connect_with_rustls`] (feature `rustls`).
#[cfg(feature = "rustls")]
pub use rustls;
#[cfg(feature = "postgres")]
pub use tokio_postgres;
