//! Every statement the store runs, in one place: the filter AST compiled with sea-query
//! (`filter`), the reads and the feed (`read`), the CTE-guarded conditional `INSERT` and the
//! advisory locks (`append`, with `unguarded_group.sql`), and administration: transactions'
//! `BEGIN`, migrations, checkpoints and notifications (`admin`), and what routes reads to
//! replicas (`replica`). Reads and appends are rendered once per shape (`shape`). Every value
//! travels as a bound parameter; the only name spliced into SQL is the schema, a validated
//! [`SchemaName`].

use sea_query::{PostgresQueryBuilder, Value as SqlValue};
use sea_query_postgres::{PostgresBinder, PostgresValue, PostgresValues};
use tokio_postgres::types::{ToSql, Type};

use crate::error::{ConfigProblem, InvalidInput};

pub(crate) mod admin;
mod append;
mod filter;
mod read;
pub(crate) mod replica;
mod shape;

pub(crate) use append::{Guard, lock_keys, row, unguarded_group};
pub(crate) use read::{select_feed, select_unseen};
pub(crate) use shape::{ReadKind, Statements};

/// The columns of the events table, in the order reads select them.
pub(crate) const COLUMNS: [&str; 7] = [
    "position",
    "event_id",
    "event_type",
    "tags",
    "payload",
    "metadata",
    "occurred_at",
];

/// The columns an append's statement returns, per event, in this order: both insert forms
/// ([`insert_events`] and the unguarded group's, `unguarded_group.sql`) return them and the
/// append reads them by these names. For an inserted event `existed` is false and the stored
/// content is `NULL`; for an event stored already (a replay, a conflict or a duplicate) it is
/// the stored content. `tx` is the writing transaction's id as text (an `xid8`), which places
/// the event in feed order.
pub(crate) const APPENDED: [&str; 8] = [
    "position",
    "event_id",
    "existed",
    "event_type",
    "tags",
    "payload",
    "metadata",
    "tx",
];

/// The columns an append writes; the others have defaults.
pub(super) const WRITTEN: [&str; 5] = ["event_id", "event_type", "tags", "payload", "metadata"];

/// A validated schema name: 1 to 63 characters of `a-z`, `0-9`, `_`, not starting with a digit
/// nor with `pg_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaName(String);

impl SchemaName {
    pub(crate) fn new(name: &str) -> Result<Self, InvalidInput> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && !name.starts_with("pg_")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(name.to_string()))
        } else {
            Err(ConfigProblem::SchemaName(name.to_string()).into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier (safe: it only holds `[a-z0-9_]`).
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    pub(super) fn events(&self) -> (String, &'static str) {
        (self.0.clone(), "events")
    }
}

/// SQL text with its bound values and their PostgreSQL types: sent with the statement
/// (`query_typed`, one round trip without a prepare) or used to prepare it once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    values: PostgresValues,
    types: Vec<Type>,
}

impl Statement {
    pub(super) fn build(binder: &impl PostgresBinder) -> Self {
        let (sql, values) = binder.build_postgres(PostgresQueryBuilder);
        let types = values
            .as_types()
            .into_iter()
            .zip(&values.0)
            .map(|(ty, v)| match v.0 {
                // sea-query types these as JSON and NUMERIC; the store binds them as JSONB
                // (for `@>`) and as the bigint the driver encodes.
                SqlValue::Json(_) => Type::JSONB,
                SqlValue::BigUnsigned(_) => Type::INT8,
                _ => ty,
            })
            .collect();
        Self { sql, values, types }
    }

    /// A statement of SQL rendered before (`shape`), with its `values` and their `types`.
    fn rendered(sql: String, values: Vec<SqlValue>, types: Vec<Type>) -> Self {
        let values = PostgresValues(values.into_iter().map(PostgresValue).collect());
        Self { sql, values, types }
    }

    /// The values it binds, in order.
    fn bound(&self) -> Vec<SqlValue> {
        self.values.0.iter().map(|v| v.0.clone()).collect()
    }

    /// The parameters' types, for preparing the statement.
    pub(crate) fn types(&self) -> &[Type] {
        &self.types
    }

    /// The parameters, for a prepared statement.
    pub(crate) fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.as_params()
    }

    /// The parameters with their types, for `query_typed`.
    pub(crate) fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.values
            .as_params()
            .into_iter()
            .zip(self.types.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests;
