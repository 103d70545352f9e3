//! A pooled connection lent to one call: back to the pool only when the call ran to its end.

use std::ops::Deref;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::NoTls;
use tracing::debug;

use crate::error::{Error, Result};
use crate::telemetry;

/// A connection taken from the pool for one call (a read, a stream, an append).
///
/// [`Lent::release`] hands it back when the call has consumed every response. If it is dropped
/// instead (the caller dropped the call's future, e.g. on its own timeout, or the call stopped
/// in the middle of a response), requests may still be in flight on it: it is closed rather
/// than returned, so the next user of the pool never waits behind them, and the query running
/// on the server is cancelled, so that an abandoned append stops waiting for its locks and rolls
/// back instead of committing later.
pub(crate) struct Lent {
    object: Option<Object>,
}

impl Lent {
    /// Takes a connection from `pool`.
    pub(crate) async fn take(pool: &Pool) -> Result<Self> {
        let started = std::time::Instant::now();
        let object = pool.get().await;
        telemetry::pool_waited(started.elapsed());
        Ok(Self {
            object: Some(object.map_err(Error::pool)?),
        })
    }

    /// Hands the connection back to the pool: the call consumed every response.
    pub(crate) fn release(mut self) {
        drop(self.object.take());
    }
}

impl Deref for Lent {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object
            .as_ref()
            .expect("a lent connection until released")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        let cancel = object.cancel_token();
        // Detached from the pool and dropped: the connection closes.
        drop(Object::take(object));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = cancel.cancel_query(NoTls).await {
                        debug!(error = %e, "could not cancel the query of an abandoned call");
                    }
                });
            }
            Err(_) => debug!("no runtime to cancel the query of an abandoned call"),
        }
        debug!("a call was dropped before it finished: its connection was closed");
    }
}
