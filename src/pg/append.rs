//! One append, checked and compiled: run in a transaction of its own or in the caller's.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::FutureExt;
use futures::future::join_all;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Transaction};
use tracing::debug;
use uuid::Uuid;

use super::bound_statement_cache;
use super::config::Config;
use super::locks::LockPlan;
use super::sql::{self, Guard, SchemaName, Statement};
use crate::backend::POSTGRES_NAME;
use crate::checkpoint::Checkpoint;
use crate::condition::AppendCondition;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::results::AppendResult;
use crate::store::{check_append, replay_or_duplicate};
use crate::telemetry;

/// An append checked and compiled (its lock plan), ready to run in a transaction. Its two
/// statements are built the first time they are needed (a guarded insert, which always runs,
/// when it is compiled): in a group, the union of the appends' locks replaces each one's lock
/// statement, and one statement writes the unguarded appends.
pub(super) struct CompiledAppend {
    schema: SchemaName,
    events: Vec<Event>,
    /// The condition, checked: fits the backend (its `after` a bigint, its snapshot one of
    /// PostgreSQL's).
    condition: Option<AppendCondition>,
    /// The advisory locks it takes.
    locks: LockPlan,
    /// The statement that takes them, once built.
    lock: OnceLock<Statement>,
    /// Its insert (guarded when it has a condition), once built.
    insert: OnceLock<Statement>,
    /// `BEGIN` with the store's time bounds.
    begin: Arc<str>,
    /// `BEGIN` of a group-commit transaction: a shorter lock wait.
    group_begin: Arc<str>,
    /// Whether its statements are prepared on the connection (else sent with their types).
    prepare: bool,
    /// The store's statements by shape.
    statements: Arc<sql::Statements>,
}

impl CompiledAppend {
    /// `events` appended under `condition` to the store configured by `config`, checked
    /// ([`check_append`]) and compiled. A guarded insert is built here, in the caller's task,
    /// not in the group worker's, which would build the inserts of its whole group one after
    /// the other.
    pub(super) fn new(
        config: &Config,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
    ) -> Result<Self> {
        check_append(
            &events,
            condition.as_ref(),
            config.max_batch_size,
            POSTGRES_NAME,
        )?;
        let locks = LockPlan::new(
            config.schema.as_str(),
            &events,
            condition.as_ref().map(|c| &c.fail_if_events_match),
        );
        let compiled = Self {
            schema: config.schema.clone(),
            events,
            condition,
            locks,
            lock: OnceLock::new(),
            insert: OnceLock::new(),
            begin: config.begin.clone(),
            group_begin: config.group_begin.clone(),
            prepare: config.prepare,
            statements: config.statements.clone(),
        };
        if compiled.guarded() {
            compiled.insert();
        }
        Ok(compiled)
    }

    /// How many advisory locks it takes.
    pub(super) fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// Whether it has a condition.
    pub(super) fn guarded(&self) -> bool {
        self.condition.is_some()
    }

    /// The statement taking its advisory locks (see `locks.rs`), built on first use.
    pub(super) fn lock(&self) -> &Statement {
        self.lock
            .get_or_init(|| sql::lock_keys(&self.schema, &self.locks))
    }

    /// Its insert, guarded by its condition, built on first use.
    pub(super) fn insert(&self) -> &Statement {
        self.insert.get_or_init(|| {
            let guard = self.condition.as_ref().map(Guard::of);
            self.statements
                .insert_events(&self.schema, &self.events, guard)
        })
    }

    /// Runs the append on a pooled connection, in a READ COMMITTED transaction of its own
    /// ([`run_transaction`]).
    pub(super) async fn run_pooled(
        &self,
        client: &deadpool_postgres::Client,
    ) -> Result<AppendResult> {
        let mut outcomes = run_transaction(client, &[self]).await?;
        outcomes.pop().expect("one outcome per append")
    }

    /// Runs the append inside the caller's transaction: the lock statement and the guarded
    /// insert, pipelined, unprepared (the transaction's connection has no statement cache).
    pub(super) async fn run_in(&self, tx: &Transaction<'_>) -> Result<AppendResult> {
        let (lock, insert) = (self.lock(), self.insert());
        let (lock_params, params) = (lock.params(), insert.params());
        let (locked, inserted) = futures::join!(
            tx.query_typed(&lock.sql, &lock_params),
            tx.query_typed(&insert.sql, &params),
        );
        let rows = self.finish(locked, inserted)?;
        self.positions(rows)
    }

    /// The rows the insert returned, or the error of the first statement that failed.
    pub(super) fn finish(
        &self,
        locked: Result<Vec<Row>, tokio_postgres::Error>,
        inserted: Result<Vec<Row>, tokio_postgres::Error>,
    ) -> Result<Vec<Row>> {
        locked.map_err(Error::db("taking the append's advisory locks"))?;
        inserted.map_err(|e| self.insert_error(e))
    }

    /// What the insert's rows (columns [`sql::APPENDED`]) say: written, replayed, duplicate, or
    /// a failed condition.
    pub(super) fn positions(&self, rows: Vec<Row>) -> Result<AppendResult> {
        let [
            position,
            event_id,
            existed,
            event_type,
            tags,
            payload,
            metadata,
            tx,
        ] = sql::APPENDED;
        let mut written = Vec::with_capacity(self.events.len());
        let mut last = None;
        let mut stored = HashMap::new();
        for row in &rows {
            let at = row
                .try_get::<_, i64>(position)
                .map_err(|e| Error::undecodable(0, e))? as u64;
            let decode = |e| Error::undecodable(at, e);
            let tx: &str = row.try_get(tx).map_err(&decode)?;
            let tx = tx.parse().map_err(|_| Error::Decode {
                position: at,
                message: format!("unexpected transaction id {tx:?}"),
                source: None,
            })?;
            let checkpoint = Checkpoint::postgres(tx, at);
            let id: Uuid = row.try_get(event_id).map_err(&decode)?;
            if row.try_get::<_, bool>(existed).map_err(&decode)? {
                let event = Event {
                    id,
                    event_type: row.try_get(event_type).map_err(&decode)?,
                    tags: row.try_get(tags).map_err(&decode)?,
                    payload: row.try_get(payload).map_err(&decode)?,
                    metadata: row.try_get(metadata).map_err(&decode)?,
                };
                stored.insert(id, (checkpoint, event));
            } else {
                written.push(at);
                last = last.max(Some(checkpoint));
            }
        }
        if !stored.is_empty() {
            return replay_or_duplicate(&self.events, |id| {
                stored
                    .get(id)
                    .map(|(checkpoint, event)| (*checkpoint, event))
            });
        }
        let Some(last) = last else {
            let after = self.condition.as_ref().and_then(|c| c.after);
            debug!(?after, "append condition failed");
            return Err(Error::AppendConditionFailed { after });
        };
        // Positions are drawn in batch order; RETURNING does not promise that order.
        written.sort_unstable();
        Ok(AppendResult::new(written, last))
    }

    pub(super) fn insert_error(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error()
            && *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_event_id_key")
        {
            let event_id = db
                .detail()
                .and_then(|d| d.split("=(").nth(1))
                .and_then(|d| d.split(')').next())
                .and_then(|id| id.parse().ok())
                .or_else(|| self.events.first().map(|e| e.id))
                .unwrap_or_default();
            return Error::DuplicateEventId { event_id };
        }
        Error::db("appending events")(e)
    }
}

/// [`sql::unguarded_group`] in the appends' schema, and its one parameter: the events of
/// `appends`, each with the index of its append.
fn unguarded_group(appends: &[(usize, &CompiledAppend)]) -> (String, Value) {
    let sql = sql::unguarded_group(&appends[0].1.schema);
    let events = appends
        .iter()
        .flat_map(|(i, append)| {
            append.events.iter().map(move |e| {
                let mut row = sql::row(e);
                row["append"] = json!(i);
                row
            })
        })
        .collect();
    (sql, Value::Array(events))
}

/// Runs `appends` in one READ COMMITTED transaction on a pooled connection: `BEGIN` with the
/// store's time bounds, the union of their advisory locks (taken in key order), their inserts,
/// `COMMIT`, all pipelined in one round trip.
///
/// The statements run one after the other, so each guarded insert's snapshot is taken after
/// every lock is held: it sees every conflicting append that committed before, and every later
/// one waits for this transaction to end; it also sees the appends before it. The unguarded
/// appends of a group (when there are several) go first, in one statement: they check nothing,
/// and running them first is one of the orders in which these concurrent appends could have
/// arrived. When a guard finds a conflict its insert writes nothing and the others go on. When a
/// statement fails, PostgreSQL turns the pipelined `COMMIT` into a rollback and the whole
/// transaction is `Err`. Every statement is prepared once per connection (parsed and analysed
/// once) and, because each has one good plan whatever its values (see `sql::guard`), the
/// transaction runs their cached generic plans (`plan_cache_mode = force_generic_plan`, set by
/// `BEGIN`) and skips the planner.
///
/// `Ok` holds each append's own outcome: written, replayed, or its condition failed.
pub(super) async fn run_transaction(
    client: &deadpool_postgres::Client,
    appends: &[&CompiledAppend],
) -> Result<Vec<Result<AppendResult>>> {
    bound_statement_cache(client);
    let union;
    let lock = match appends {
        [one] => one.lock(),
        _ => {
            union = sql::lock_keys(
                &appends[0].schema,
                &LockPlan::union(appends.iter().map(|a| &a.locks)),
            );
            &union
        }
    };
    let unguarded: Vec<(usize, &CompiledAppend)> = appends
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, a)| !a.guarded())
        .collect();
    let merged = (unguarded.len() > 1).then(|| unguarded_group(&unguarded));
    let alone = |append: &CompiledAppend| merged.is_none() || append.guarded();
    // The lock statement, the merged unguarded appends, then each other append's insert.
    let merged_types = [Type::JSONB];
    let mut steps: Vec<(&str, &[Type], Vec<&(dyn ToSql + Sync)>)> =
        vec![(&lock.sql, lock.types(), lock.values())];
    if let Some((sql, events)) = &merged {
        steps.push((sql, &merged_types, vec![events as &(dyn ToSql + Sync)]));
    }
    for append in appends.iter().filter(|a| alone(a)) {
        let insert = append.insert();
        steps.push((&insert.sql, insert.types(), insert.values()));
    }
    // Named statements, prepared once per connection; or each sent with its parameters' types.
    let prepared = if appends[0].prepare {
        let mut prepared = Vec::with_capacity(steps.len());
        for (sql, types, _) in &steps {
            let statement = client.prepare_typed_cached(sql, types).await;
            prepared.push(statement.map_err(Error::db("preparing the append"))?);
        }
        Some(prepared)
    } else {
        None
    };
    let typed: Vec<Vec<(&(dyn ToSql + Sync), Type)>> = steps
        .iter()
        .map(|(_, types, values)| values.iter().copied().zip(types.iter().cloned()).collect())
        .collect();
    let mut queries = steps
        .iter()
        .enumerate()
        .map(|(i, (sql, _, values))| match &prepared {
            Some(prepared) => client.query(&prepared[i], values).boxed(),
            None => client.query_typed(sql, &typed[i]).boxed(),
        });
    let lock_query = queries.next().expect("the lock statement");
    let begin: &str = match appends {
        [one] => &one.begin,
        _ => &appends[0].group_begin,
    };
    let started = Instant::now();
    let (begun, locked, answers, committed) = futures::join!(
        client.batch_execute(begin),
        async {
            let locked = lock_query.await;
            telemetry::locks_held_after(started.elapsed());
            locked
        },
        join_all(queries),
        client.batch_execute(sql::admin::COMMIT),
    );
    begun.map_err(Error::db("starting the append's transaction"))?;
    locked.map_err(Error::db("taking the append's advisory locks"))?;
    let mut answers = answers.into_iter();
    let mut rows: Vec<Vec<Row>> = appends.iter().map(|_| Vec::new()).collect();
    if merged.is_some() {
        let answer = answers.next().expect("an answer per statement");
        let decode = |e| Error::undecodable(0, e);
        for row in answer.map_err(|e| unguarded[0].1.insert_error(e))? {
            let append: i32 = row.try_get("append").map_err(&decode)?;
            rows[append as usize].push(row);
        }
    }
    for (append, rows) in appends.iter().zip(rows.iter_mut()) {
        if alone(append) {
            let answer = answers.next().expect("an answer per statement");
            *rows = answer.map_err(|e| append.insert_error(e))?;
        }
    }
    committed.map_err(Error::db("committing the append"))?;
    Ok(appends
        .iter()
        .zip(rows)
        .map(|(append, rows)| append.positions(rows))
        .collect())
}
