//! Administration: the statements that open the store's transactions, migrate its schema, keep
//! projector checkpoints and carry wake-ups (`LISTEN/NOTIFY`). Values travel as bound
//! parameters; what is spliced in is the validated schema name, a channel name the store
//! derived, and numbers.

use std::time::Duration;

use super::SchemaName;

/// `BEGIN` of an append's transaction: READ COMMITTED, its lock and statement timeouts, and
/// cached generic plans made with sequential scans off (see `Config::begin`). One simple query.
pub(crate) fn begin_append(lock_timeout: Duration, statement_timeout: Duration) -> String {
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {}; \
         SET LOCAL statement_timeout = {}; \
         SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off",
        millis(lock_timeout),
        millis(statement_timeout)
    )
}

/// `BEGIN` of a prepared read's read-only transaction (see `Config::read_begin`).
pub(crate) fn begin_read(statement_timeout: Duration) -> String {
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; SET LOCAL statement_timeout = {}; \
         SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off",
        millis(statement_timeout)
    )
}

/// A duration as PostgreSQL's milliseconds, at least 1 (0 would mean "no limit").
fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Whether a connection of this database listens on the channel whose key is (`$1`, `$2`):
/// holds the shared advisory lock [`listen`] takes. It reads `pg_lock_status()`, the function
/// behind the `pg_locks` view, directly: 0.07 ms above a `SELECT 1` where the view took 0.2 ms
/// (pgbench, one client, this machine).
macro_rules! listened {
    () => {
        "EXISTS (SELECT 1 FROM pg_lock_status() l \
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 \
         AND l.classid::int8 = $1 AND l.objid::int8 = $2 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    };
}

/// The isolation level of the caller's transaction and, when a subscriber listens on the
/// channel `$3` (whose key is `$1`, `$2`), a notification sent when the transaction commits:
/// the first statement of `append_in`. With no listener it sends none, so that the commit does
/// not queue behind other notifying commits.
pub(crate) const ISOLATION_AND_NOTIFY: &str = concat!(
    "SELECT current_setting('transaction_isolation'), (SELECT pg_notify($3, '') WHERE ",
    listened!(),
    ")"
);

/// The schema's DDL, run in the store's schema (`initdb/02_events.sql`).
pub(crate) const EVENTS_DDL: &str = include_str!("../../../initdb/02_events.sql");

/// A migration's own lock wait, so that its DDL waits at most that long for each table lock.
pub(crate) fn set_lock_timeout(timeout: Duration) -> String {
    format!("SET LOCAL lock_timeout = {}", millis(timeout))
}

/// Serializes concurrent migrations (`$1`: the key): their `IF NOT EXISTS` checks race
/// otherwise.
pub(crate) const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

/// Creates the schema and runs the rest of the transaction in it.
pub(crate) fn create_schema(schema: &SchemaName) -> String {
    let schema = schema.quoted();
    format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};")
}

/// Whether the relation named `$1` exists.
pub(crate) const RELATION_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";

/// The schema's `schema_version` table, qualified: the argument of [`RELATION_EXISTS`].
pub(crate) fn schema_version_table(schema: &SchemaName) -> String {
    format!("{}.schema_version", schema.quoted())
}

/// The version recorded in the schema's `schema_version` table.
pub(crate) fn schema_version(schema: &SchemaName) -> String {
    format!("SELECT max(version) FROM {}", schema_version_table(schema))
}

/// The checkpoint stored under the name `$1`.
pub(crate) fn load_checkpoint(schema: &SchemaName) -> String {
    format!(
        "SELECT checkpoint FROM {}.checkpoints WHERE name = $1",
        schema.quoted()
    )
}

/// Stores the checkpoint `$2` under the name `$1`, replacing what was there.
pub(crate) fn save_checkpoint(schema: &SchemaName) -> String {
    format!(
        "INSERT INTO {}.checkpoints (name, checkpoint) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = now()",
        schema.quoted()
    )
}

/// Deletes the checkpoint stored under the name `$1`.
pub(crate) fn delete_checkpoint(schema: &SchemaName) -> String {
    format!(
        "DELETE FROM {}.checkpoints WHERE name = $1",
        schema.quoted()
    )
}

/// Whether a connection of this database listens on the channel whose key is (`$1`, `$2`):
/// holds the shared advisory lock [`listen`] takes.
pub(crate) const LISTENED: &str = concat!("SELECT ", listened!());

/// Wakes the listeners of the channel `$1`. A notification needs no durability: its commit
/// does not wait for a WAL flush.
pub(crate) const NOTIFY: &str =
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')";

/// Listens on `channel` and takes the shared advisory lock (`class`, `key`) that tells
/// notifiers someone listens, for as long as the connection lives.
pub(crate) fn listen(channel: &str, class: i32, key: i32) -> String {
    let quoted = channel.replace('"', "\"\"");
    format!("LISTEN \"{quoted}\"; SELECT pg_advisory_lock_shared({class}, {key})")
}

/// Ends a transaction the store opened with [`begin_append`] or [`begin_read`].
pub(crate) const COMMIT: &str = "COMMIT";

/// The namespace of the keys appends publish in `schema` (16 bits of its name's hash): stores
/// in other schemas do not wait for each other.
pub(crate) fn drawn_namespace(schema: &SchemaName) -> i64 {
    crate::pg::locks::global_key(schema.as_str()) & 0x7FFF
}

/// The advisory key an append publishes (see `lock_keys`): `namespace` (a placeholder) in the
/// top 16 bits, and the last position drawn from the events' sequence before it (0 before the
/// first) in the low 48 (capped, so that a position past 2^48 - 1 can never change the
/// namespace: a reader then waits for it as for any position below its own).
pub(crate) fn drawn_key(schema: &SchemaName, namespace: &str) -> String {
    format!(
        "(({namespace}::int8 << 48) | least(coalesce(pg_sequence_last_value({seq}), 0), {MAX_DRAWN}))",
        seq = sequence(schema)
    )
}

/// The largest position a published key holds.
const MAX_DRAWN: i64 = (1 << 48) - 1;

/// The settled head's one statement (see `settled.rs`), `$1` the store's namespace, `$2` and
/// `$3` the lock keys of the query it settles and their modes (exclusive or not: the plan of a
/// guard on the query, `LockPlan`). First the last position drawn (`drawn`, a materialized CTE,
/// read before anything else: what follows depends on it); then whether any append writing an
/// event that matches the query is in flight (`free`): every such append holds one of the keys
/// in a mode that conflicts with the guard's, from before it draws a position, so when the
/// guard's locks can all be taken at once (tried without waiting, and let go when the
/// statement ends) none is, and nothing below `drawn` remains to wait for; then the last
/// position stored at or below it, in the statement's snapshot; and last, only when some lock
/// was held by another, the keys published by the appends still in flight that may draw a
/// position at or below it (they published a smaller one) and that hold one of the query's
/// keys: the appends to wait for. Reading `pg_locks` collects every lock of the server, under
/// all its lock partitions (0.2 ms under 32 writers, against 0.05 ms for the statement without
/// it), so it runs only then. Advisory locks on bigint keys are in `pg_locks` with the key's
/// high half as `classid`, its low half as `objid`, `objsubid` 1.
pub(crate) fn settled_state(schema: &SchemaName) -> String {
    format!(
        "WITH drawn AS MATERIALIZED (SELECT coalesce(pg_sequence_last_value({seq}), 0) AS v), \
         free AS MATERIALIZED ( \
           SELECT coalesce(bool_and(CASE WHEN u.x THEN pg_try_advisory_xact_lock(u.k) \
                                    ELSE pg_try_advisory_xact_lock_shared(u.k) END), TRUE) AS free \
           FROM drawn d, unnest($2::int8[], $3::bool[]) AS u(k, x) WHERE d.v >= 0), \
         held AS MATERIALIZED ( \
           SELECT l.pid, l.mode, (l.classid::int8 << 32) | l.objid::int8 AS k \
           FROM pg_lock_status() l \
           WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
         SELECT d.v, \
           (SELECT max(\"position\") FROM {schema}.\"events\" WHERE \"position\" <= d.v), \
           CASE WHEN f.free THEN '{{}}'::int8[] ELSE \
           ARRAY(SELECT DISTINCT p.k FROM held p \
                 WHERE p.mode = 'ShareLock' AND (p.k >> 48) = $1 \
                   AND (p.k & {MAX_DRAWN}) < d.v \
                   AND EXISTS (SELECT 1 FROM held q WHERE q.pid = p.pid AND q.k = ANY($2))) END \
         FROM drawn d, free f",
        seq = sequence(schema),
        schema = schema.quoted()
    )
}

/// Waits for the appends that published the keys `$1` (an `int8[]`): takes each exclusively and
/// lets it go at once, one after the other (the subquery yields its rows one at a time), so that
/// it never holds a key while it waits for another: an append queued on a key it held could
/// otherwise close a cycle of waits through the keys that append holds.
pub(crate) const AWAIT_PUBLISHED: &str = "SELECT pg_advisory_unlock(k) \
     FROM (SELECT k, pg_advisory_lock(k) FROM unnest($1::int8[]) k OFFSET 0) AS held";

/// The events' position sequence, as a `regclass` constant (the schema name is validated; the
/// identity column's sequence is named after it, `events_position_seq`).
fn sequence(schema: &SchemaName) -> String {
    format!("'{}.\"events_position_seq\"'::regclass", schema.quoted())
}
