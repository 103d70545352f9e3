//! The limits every store checks before anything is sent or written, the same on both backends.
//! Input beyond them gets an [`InvalidInput`](crate::InvalidInput) error and writes nothing.
//!
//! Each is there because PostgreSQL (or reading back what it stored) fails past it, or because
//! rendering the SQL would exhaust the stack:
//!
//! | what | limit | why |
//! |---|---|---|
//! | events per append | [`crate::DEFAULT_MAX_BATCH_SIZE`] (configurable) | one statement, one lock pass |
//! | event type, tag | [`MAX_NAME_BYTES`] bytes | index entries are limited to about 2.7 kB |
//! | payload plus metadata of one event | [`MAX_EVENT_BYTES`] bytes of JSON | JSONB values end at 255 MB; the batch travels as one value |
//! | one batch | [`MAX_BATCH_BYTES`] bytes of JSON | as above |
//! | JSON nesting | [`MAX_JSON_DEPTH`] levels | the driver reads back at most 128 |
//! | a JSON number | magnitude at most [`MAX_JSON_NUMBER`] | PostgreSQL prints larger ones as integers of 309 digits, which do not read back |
//! | items plus payload predicates of one query | [`MAX_QUERY_CLAUSES`] | the rendered condition nests once per clause |
//! | read `limit` | at most `i64::MAX` | it travels as a `bigint` |
//! | `occurred_at` bounds | years [`MIN_YEAR`] to 9999 | PostgreSQL's `timestamptz` starts at 4713 BC |
//!
//! ```
//! use dcbstore::{Error, Event, EventProblem, EventStore, InvalidInput, MemoryEventStore};
//! use dcbstore::{ValueProblem, limits};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryEventStore::new();
//! let long = "t".repeat(limits::MAX_NAME_BYTES + 1);
//! let err = store.append([Event::new(long, serde_json::json!({}))], None).await.unwrap_err();
//! assert!(matches!(
//!     err,
//!     Error::InvalidInput(InvalidInput::Event {
//!         index: 0,
//!         problem: EventProblem::Value { field: "event type", problem: ValueProblem::TooLong { .. } },
//!     })
//! ));
//! # }
//! ```

/// The most events one append accepts unless told otherwise
/// ([`PgEventStoreBuilder::max_batch_size`](crate::PgEventStoreBuilder::max_batch_size),
/// [`MemoryEventStore::with_max_batch_size`](crate::MemoryEventStore::with_max_batch_size)).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1000;

/// The longest event type or tag, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 1024;

/// The most JSON one event may carry (payload and metadata together), in bytes as serialized.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The most JSON one append may carry (every payload and metadata), in bytes as serialized.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The deepest nesting of arrays and objects in a payload, metadata or predicate value (the
/// payload object itself is level 1).
pub const MAX_JSON_DEPTH: usize = 64;

/// The largest magnitude of a JSON number.
pub const MAX_JSON_NUMBER: f64 = 1e308;

/// The most items plus payload predicates one query may have.
pub const MAX_QUERY_CLAUSES: usize = 1000;

/// The earliest year an `occurred_at` bound may name (4713 BC).
pub const MIN_YEAR: i32 = -4712;
