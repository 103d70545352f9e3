//! [`DatabaseError`]: what the database, the connection to it or the pool reported, without
//! the driver's or the pool's types.

use std::fmt;
use std::sync::Arc;

/// What the database reported, or how the connection to it (or the pool) failed: the store's
/// [`Error::Database`](crate::Error::Database) and [`Error::Pool`](crate::Error::Pool). It keeps
/// what callers decide on — the SQLSTATE, the server's message, whether retrying can succeed —
/// and the driver's error as its [`source`](std::error::Error::source), whose type is not part
/// of this crate's API.
///
/// ```
/// use dcbstore::Error;
///
/// /// What to tell an operator about a failed migration.
/// fn explain(err: &Error) -> String {
///     match err {
///         Error::Database(e) if e.sql_state() == Some("42501") => {
///             format!("no privilege to create the schema: {}", e.message())
///         }
///         e if e.is_retryable() => format!("try again later: {e}"),
///         e => e.to_string(),
///     }
/// }
/// let failed = Error::AppendConditionFailed { after: Some(3) };
/// assert!(explain(&failed).starts_with("append condition failed"));
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseError {
    context: &'static str,
    sql_state: Option<Box<str>>,
    /// The server's message, or the driver's error with its cause.
    message: String,
    /// The server's severity and detail, when the server reported the error.
    severity: Option<Box<str>>,
    detail: Option<Box<str>>,
    retryable: bool,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pool_timeout: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl DatabaseError {
    /// What the store was doing, e.g. `"appending events"`.
    ///
    /// ```no_run
    /// # fn run(e: dcbstore::DatabaseError) {
    /// eprintln!("failed while {}", e.context());
    /// # }
    /// ```
    pub fn context(&self) -> &str {
        self.context
    }

    /// The SQLSTATE code, when the server reported the error (also while the pool was opening a
    /// connection), e.g. `"55P03"` for a lock timeout.
    ///
    /// ```no_run
    /// # fn run(e: dcbstore::DatabaseError) {
    /// let lock_timeout = e.sql_state() == Some("55P03");
    /// # }
    /// ```
    pub fn sql_state(&self) -> Option<&str> {
        self.sql_state.as_deref()
    }

    /// The server's message (without severity, SQLSTATE or detail), or the driver's error and
    /// its cause when the server said nothing (a refused or closed connection, a pool timeout).
    ///
    /// ```no_run
    /// # fn run(e: dcbstore::DatabaseError) {
    /// eprintln!("{}", e.message());
    /// # }
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The server's detail, when it gave one.
    ///
    /// ```no_run
    /// # fn run(e: dcbstore::DatabaseError) {
    /// if let Some(detail) = e.detail() { eprintln!("{detail}"); }
    /// # }
    /// ```
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Whether trying the same call again can succeed: the failure was about the moment (the
    /// connection, a lock, a conflict with another transaction, a busy pool), not the call.
    /// [`Error::is_retryable`](crate::Error::is_retryable) lists the cases.
    ///
    /// ```no_run
    /// # fn run(e: dcbstore::DatabaseError) {
    /// if e.is_retryable() { /* back off and call again */ }
    /// # }
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether no connection came from the pool in time.
    #[cfg(feature = "postgres")]
    pub(crate) fn is_pool_timeout(&self) -> bool {
        self.pool_timeout
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.severity, &self.sql_state) {
            (Some(severity), Some(code)) => {
                write!(f, "{severity}: {} (SQLSTATE {code})", self.message)?;
                match &self.detail {
                    Some(detail) => write!(f, "; {detail}"),
                    None => Ok(()),
                }
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use deadpool_postgres::PoolError;
    use tokio_postgres::error::SqlState;

    use super::DatabaseError;

    impl DatabaseError {
        /// The driver's error `e`, met while doing `context`.
        pub(crate) fn from_driver(context: &'static str, e: tokio_postgres::Error) -> Self {
            let retryable = transient(&e);
            let (sql_state, message, severity, detail) = match e.as_db_error() {
                Some(db) => (
                    Some(db.code().code().into()),
                    db.message().to_string(),
                    Some(db.severity().into()),
                    db.detail().map(Into::into),
                ),
                None => (
                    e.code().map(|c| c.code().into()),
                    with_cause(&e),
                    None,
                    None,
                ),
            };
            Self {
                context,
                sql_state,
                message,
                severity,
                detail,
                retryable,
                pool_timeout: false,
                source: Some(Arc::new(e)),
            }
        }

        /// The pool's error `e`.
        pub(crate) fn from_pool(e: PoolError) -> Self {
            const CONTEXT: &str = "taking a connection from the pool";
            match e {
                PoolError::Backend(e) => {
                    let mut opening = Self::from_driver(CONTEXT, e);
                    opening.message = format!("opening a connection failed: {}", opening.message);
                    opening
                }
                other => Self {
                    context: CONTEXT,
                    sql_state: None,
                    message: other.to_string(),
                    severity: None,
                    detail: None,
                    retryable: matches!(other, PoolError::Timeout(_)),
                    pool_timeout: matches!(other, PoolError::Timeout(_)),
                    source: Some(Arc::new(other)),
                },
            }
        }
    }

    /// The driver's error and its cause, when it has one.
    fn with_cause(e: &tokio_postgres::Error) -> String {
        match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    }

    /// Whether a driver error is about the moment (the connection, a lock, a conflict with
    /// another transaction) rather than the statement.
    fn transient(e: &tokio_postgres::Error) -> bool {
        match e.code() {
            Some(code) => {
                code.code().starts_with("08")
                    || [
                        SqlState::T_R_SERIALIZATION_FAILURE,
                        SqlState::T_R_DEADLOCK_DETECTED,
                        SqlState::LOCK_NOT_AVAILABLE,
                        SqlState::QUERY_CANCELED,
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                        SqlState::TOO_MANY_CONNECTIONS,
                    ]
                    .contains(code)
            }
            // No SQLSTATE: the connection closed, or the socket failed (refused, reset).
            None => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
            }
        }
    }
}
