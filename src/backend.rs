//! The two backends' names: in messages (e.g. a snapshot of one given to the other) and as the
//! `backend` label of metrics.

/// The in-memory backend's name in messages.
pub(crate) const MEMORY_NAME: &str = "in-memory";
/// The PostgreSQL backend's name in messages.
pub(crate) const POSTGRES_NAME: &str = "PostgreSQL";

/// The in-memory backend's `backend` label in metrics.
pub(crate) const MEMORY_LABEL: &str = "memory";
/// The PostgreSQL backend's `backend` label in metrics.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_LABEL: &str = "postgres";
