//! What a store keeps of its configuration once built.

use std::sync::Arc;
use std::time::Duration;

use crate::pg::sql::{SchemaName, Statements, admin};

/// What a store keeps of its configuration: what its calls read, and the statements that open
/// its transactions, formatted once.
#[derive(Debug)]
pub(in crate::pg) struct Config {
    pub(in crate::pg) schema: SchemaName,
    pub(in crate::pg) max_batch_size: usize,
    pub(in crate::pg) lock_timeout: Duration,
    pub(in crate::pg) statement_timeout: Duration,
    /// Whether appends use named prepared statements (off behind transaction-mode poolers).
    pub(in crate::pg) prepare: bool,
    /// What starts an append's transaction: `BEGIN` and its time bounds, one simple query. It
    /// also makes the transaction run cached generic plans: every statement of an append has
    /// one good plan whatever its values (see `sql::guard`), so planning them for their values
    /// would only cost time. And it plans them with sequential scans disabled: a generic plan
    /// is cached once per connection and kept until the table is analyzed, so a plan made
    /// while a new table was small (where a scan is cheapest) would scan the grown table at
    /// every append, for as long as autovacuum does not analyze it (measured: the id look-up
    /// 0.06 ms on its index, 41 ms scanning 200k rows). Every statement of an append has an
    /// index for each table it reads, so this only keeps the planner from the scan.
    pub(in crate::pg) begin: Arc<str>,
    /// The same for a group-commit transaction: its lock wait is cut to [`GROUP_LOCK_WAIT`], so
    /// that appends grouped with one whose boundary is held elsewhere are not held up with it.
    pub(in crate::pg) group_begin: Arc<str>,
    /// What starts the read-only transaction of a prepared read (`read` with no `from` and no
    /// `limit`): like [`Config::begin`], it runs the statement's cached generic plan, made with
    /// sequential scans off. Every query has an index for each item (tags, payload, types; the
    /// primary key for `Query::all`), so that plan is good whatever the values and however the
    /// table grows; a read with `from` or `limit` is planned for its values instead (a range or
    /// a limit changes which index is best), except a settled read's first page, whose limit
    /// stays outside its plan (`sql::select_first_page`). Its statement timeout is the store's.
    pub(in crate::pg) read_begin: Arc<str>,
    /// The SQL of its reads and appends, rendered once per shape.
    pub(in crate::pg) statements: Arc<Statements>,
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
        prepare: bool,
    ) -> Self {
        let begin = |lock_timeout| Arc::from(admin::begin_append(lock_timeout, statement_timeout));
        Self {
            schema,
            max_batch_size,
            lock_timeout,
            statement_timeout,
            prepare,
            begin: begin(lock_timeout),
            group_begin: begin(lock_timeout.min(GROUP_LOCK_WAIT)),
            read_begin: Arc::from(admin::begin_read(statement_timeout)),
            statements: Arc::default(),
        }
    }
}
