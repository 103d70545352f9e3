//! What the store reports while it works: `tracing` spans and `metrics` counters and
//! histograms. Both are facades: nothing is recorded until the application installs a
//! subscriber (e.g. `tracing-subscriber`) or a recorder (e.g. `metrics-exporter-prometheus`).
//!
//! **Spans** (at `DEBUG`, target `dcbstore`), with the fields an operator filters by:
//!
//! | span | fields |
//! |---|---|
//! | `dcbstore.read` | `backend`, `items` (query items, 0 for all), `rows`, `outcome` |
//! | `dcbstore.append` | `backend`, `events`, `guarded`, `outcome` (`written`, `replay`, `condition_failed`, `invalid_input` or `error`) |
//! | `dcbstore.decide` | `attempts`, `conflicts`, `outcome` |
//! | `dcbstore.migrate` | `schema`, `applied` (false when the schema was current) |
//!
//! **Metrics**, each labelled with `backend` (`postgres` or `memory`) but the replicas':
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `dcbstore_appends_total` | counter | appends, by `outcome` as in the span |
//! | `dcbstore_events_appended_total` | counter | events written (replays not counted) |
//! | `dcbstore_append_seconds` | histogram | an append from call to outcome, group wait included |
//! | `dcbstore_reads_total` | counter | reads collected with `read` |
//! | `dcbstore_read_seconds` | histogram | a `read` from call to its last row |
//! | `dcbstore_decide_conflicts_total` | counter | decisions that found their boundary changed and decided again |
//! | `dcbstore_pool_wait_seconds` | histogram | PostgreSQL: waiting for a pooled connection |
//! | `dcbstore_lock_wait_seconds` | histogram | PostgreSQL: an append transaction from `BEGIN` until its locks are held |
//! | `dcbstore_group_size` | histogram | PostgreSQL: appends per group-commit transaction |
//! | `dcbstore_replica_usable` | gauge | PostgreSQL with replicas: 1 while the replica (label `replica`) serves reads, 0 while it is skipped |
//! | `dcbstore_replica_lag_seconds` | gauge | PostgreSQL with replicas: the replica's lag at its last check (label `replica`) |
//! | `dcbstore_replica_fallbacks_total` | counter | PostgreSQL with replicas: reads that went to the primary instead, by `reason` (`no_usable_replica`, `not_replayed`: a replica did not show what the read must include within the lag bound, `failed`: the read failed on the replica and ran again) |
//!
//! `examples/observability.rs` prints them.

use std::future::Future;
#[cfg(feature = "postgres")]
use std::time::Duration;
use std::time::Instant;

#[cfg(feature = "postgres")]
use crate::backend::POSTGRES_LABEL;

use tracing::Instrument;
use tracing::field::Empty;

use crate::error::{Error, Result};
use crate::results::{AppendResult, ReadResult};

/// How an append ended, as spans and metrics name it.
fn append_outcome(outcome: &Result<AppendResult>) -> &'static str {
    match outcome {
        Ok(written) if written.is_replay() => "replay",
        Ok(_) => "written",
        Err(Error::AppendConditionFailed { .. }) => "condition_failed",
        Err(Error::InvalidInput(_)) => "invalid_input",
        Err(_) => "error",
    }
}

/// `append` (of `events` events, `guarded` or not) with its span, timing and counters.
pub(crate) fn instrument_append(
    backend: &'static str,
    events: usize,
    guarded: bool,
    append: impl Future<Output = Result<AppendResult>> + Send,
) -> impl Future<Output = Result<AppendResult>> + Send {
    let span = tracing::debug_span!(
        target: "dcbstore",
        "dcbstore.append",
        backend,
        events,
        guarded,
        outcome = Empty
    );
    let recorded = span.clone();
    async move {
        let started = Instant::now();
        let outcome = append.await;
        let name = append_outcome(&outcome);
        recorded.record("outcome", name);
        metrics::counter!("dcbstore_appends_total", "backend" => backend, "outcome" => name)
            .increment(1);
        metrics::histogram!("dcbstore_append_seconds", "backend" => backend)
            .record(started.elapsed());
        if let Ok(written) = &outcome
            && !written.is_replay()
        {
            metrics::counter!("dcbstore_events_appended_total", "backend" => backend)
                .increment(written.positions().len() as u64);
        }
        outcome
    }
    .instrument(span)
}

/// `read` (of a query of `items` items) with its span, timing and counter.
pub(crate) fn instrument_read(
    backend: &'static str,
    items: usize,
    read: impl Future<Output = Result<ReadResult>> + Send,
) -> impl Future<Output = Result<ReadResult>> + Send {
    let span = tracing::debug_span!(
        target: "dcbstore",
        "dcbstore.read",
        backend,
        items,
        rows = Empty,
        outcome = Empty
    );
    let recorded = span.clone();
    async move {
        let started = Instant::now();
        let outcome = read.await;
        match &outcome {
            Ok(read) => {
                recorded.record("rows", read.len());
                recorded.record("outcome", "read");
            }
            Err(Error::InvalidInput(_)) => drop(recorded.record("outcome", "invalid_input")),
            Err(_) => drop(recorded.record("outcome", "error")),
        }
        metrics::counter!("dcbstore_reads_total", "backend" => backend).increment(1);
        metrics::histogram!("dcbstore_read_seconds", "backend" => backend)
            .record(started.elapsed());
        outcome
    }
    .instrument(span)
}

/// A wait for a pooled connection.
#[cfg(feature = "postgres")]
pub(crate) fn pool_waited(waited: Duration) {
    metrics::histogram!("dcbstore_pool_wait_seconds", "backend" => POSTGRES_LABEL).record(waited);
}

/// An append transaction's wait from `BEGIN` until its locks were held.
#[cfg(feature = "postgres")]
pub(crate) fn locks_held_after(waited: Duration) {
    metrics::histogram!("dcbstore_lock_wait_seconds", "backend" => POSTGRES_LABEL).record(waited);
}

/// A group-commit transaction of `size` appends.
#[cfg(feature = "postgres")]
pub(crate) fn group_ran(size: usize) {
    metrics::histogram!("dcbstore_group_size", "backend" => POSTGRES_LABEL).record(size as f64);
}

/// A decision that found its boundary changed and decides again.
pub(crate) fn decision_conflicted() {
    metrics::counter!("dcbstore_decide_conflicts_total").increment(1);
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use serde_json::json;

    use crate::{AppendCondition, Event, EventStore, MemoryEventStore, Query, ReadOptions};

    #[tokio::test(flavor = "current_thread")]
    async fn appends_and_reads_are_counted_by_outcome() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);

        let store = MemoryEventStore::new();
        let event = Event::new("A", json!({}));
        store.append([event.clone()], None).await.unwrap();
        store.append([event], None).await.unwrap();
        let stale = AppendCondition::new(Query::all(), None);
        let failed = store
            .append([Event::new("B", json!({}))], Some(stale))
            .await;
        assert!(failed.unwrap_err().is_append_condition_failed());
        store
            .read(&Query::all(), ReadOptions::default())
            .await
            .unwrap();

        let mut counters = std::collections::BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                counters.insert(format!("{} {}", key.key().name(), labels.join(",")), n);
            }
        }
        let expect = |name: &str| counters.get(name).copied();
        assert_eq!(
            expect("dcbstore_appends_total backend=memory,outcome=written"),
            Some(1)
        );
        assert_eq!(
            expect("dcbstore_appends_total backend=memory,outcome=replay"),
            Some(1)
        );
        assert_eq!(
            expect("dcbstore_appends_total backend=memory,outcome=condition_failed"),
            Some(1)
        );
        assert_eq!(
            expect("dcbstore_events_appended_total backend=memory"),
            Some(1)
        );
        assert_eq!(expect("dcbstore_reads_total backend=memory"), Some(1));
    }
}
