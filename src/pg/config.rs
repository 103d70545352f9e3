//! A store's configuration: its schema, limits and time bounds, and the statements that open
//! its transactions.

use std::sync::Arc;
use std::time::Duration;

use super::sql::SchemaName;

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) schema: SchemaName,
    pub(super) max_batch_size: usize,
    pub(super) lock_timeout: Duration,
    pub(super) statement_timeout: Duration,
    /// Whether appends use named prepared statements (off behind transaction-mode poolers).
    pub(super) prepare: bool,
    /// What starts an append's transaction: `BEGIN` and its time bounds, one simple query. It
    /// also makes the transaction run cached generic plans: every statement of an append has
    /// one good plan whatever its values (see `sql::guard`), so planning them for their values
    /// would only cost time. And it plans them with sequential scans disabled: a generic plan
    /// is cached once per connection and kept until the table is analyzed, so a plan made
    /// while a new table was small (where a scan is cheapest) would scan the grown table at
    /// every append, for as long as autovacuum does not analyze it (measured: the id look-up
    /// 0.06 ms on its index, 41 ms scanning 200k rows). Every statement of an append has an
    /// index for each table it reads, so this only keeps the planner from the scan.
    pub(super) begin: Arc<str>,
    /// The same for a group-commit transaction: its lock wait is cut to [`GROUP_LOCK_WAIT`], so
    /// that appends grouped with one whose boundary is held elsewhere are not held up with it.
    pub(super) group_begin: Arc<str>,
    /// What starts the read-only transaction of a prepared read (`read` with no `from` and no
    /// `limit`): like [`Config::begin`], it runs the statement's cached generic plan, made with
    /// sequential scans off. Every query has an index for each item (tags, payload, types; the
    /// primary key for `Query::all`), so that plan is good whatever the values and however the
    /// table grows; a read with `from` or `limit` is planned for its values instead (a range or
    /// a limit changes which index is best). Its statement timeout is the store's.
    pub(super) read_begin: Arc<str>,
}

/// The longest a group-commit transaction waits for its locks (at most the store's lock
/// timeout). Past it the group's appends run again alone, each waiting up to the lock timeout:
/// an append grouped with another whose boundary is held waits this long more, not the lock
/// timeout.
const GROUP_LOCK_WAIT: Duration = Duration::from_millis(100);

impl Config {
    pub(super) fn new(
        schema: SchemaName,
        max_batch_size: usize,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> Self {
        Self {
            schema,
            max_batch_size,
            lock_timeout,
            statement_timeout,
            prepare: true,
            begin: Arc::from(""),
            group_begin: Arc::from(""),
            read_begin: Arc::from(""),
        }
        .timed(lock_timeout, statement_timeout)
    }

    /// The same configuration with other time bounds.
    pub(super) fn timed(&self, lock_timeout: Duration, statement_timeout: Duration) -> Self {
        let begin = |lock_timeout: Duration| -> Arc<str> {
            format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {}; \
                 SET LOCAL statement_timeout = {}; \
                 SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off",
                lock_timeout.as_millis().max(1),
                statement_timeout.as_millis().max(1)
            )
            .into()
        };
        let read_begin = format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; SET LOCAL statement_timeout = {}; \
             SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off",
            statement_timeout.as_millis().max(1)
        );
        Self {
            lock_timeout,
            statement_timeout,
            begin: begin(lock_timeout),
            group_begin: begin(lock_timeout.min(GROUP_LOCK_WAIT)),
            read_begin: read_begin.into(),
            ..self.clone()
        }
    }
}
