//! What the store asks of a streaming replica and of its primary to route reads: write-ahead
//! log positions as numbers (bytes since `0/0`), and whether a replica shows a position yet.

use super::SchemaName;

/// The primary's WAL flush position: every transaction that has committed (synchronously) ends
/// at or below it. On a standby the function fails: the server is not a primary.
pub(crate) const PRIMARY_FLUSHED: &str =
    "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint";

/// Whether the server is a standby, and how far it has replayed the primary's WAL (0 on a
/// primary).
pub(crate) const STANDBY_REPLAYED: &str = "SELECT pg_is_in_recovery(), \
     (COALESCE(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::bigint";

/// Whether the standby has replayed the primary's WAL up to the position `$1` (bytes since
/// `0/0`, as [`PRIMARY_FLUSHED`] gives it).
pub(crate) const REPLAYED_PAST: &str = "SELECT COALESCE(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) \
     - '0/0'::pg_lsn >= $1::int8";

/// Whether the event at position `$1` is visible: on a replica, whether it has replayed the
/// commit of the append that wrote it.
pub(crate) fn shows_position(schema: &SchemaName) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {}.events WHERE position = $1)",
        schema.quoted()
    )
}
