//! The replicas' health. At every check the monitor samples the primary's flushed WAL position,
//! then each replica's replayed one; a replica's lag is how long ago the primary first flushed
//! what the replica has not replayed yet. Nothing is waited on without a bound: a check that
//! does not answer within its bound marks the replica down.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::{Replica, ReplicaState, Replicas};
use crate::error::{Error, Result};
use crate::pg::connection::Lent;
use crate::pg::sql::replica::{PRIMARY_FLUSHED, STANDBY_REPLAYED};

/// The primary's flushed WAL positions, each with the time it was first seen, oldest first and
/// increasing. Samples older than `keep` are dropped, except the newest of them: a replica
/// behind the oldest sample kept is missing what the primary had flushed at least that long ago.
#[derive(Debug)]
pub(super) struct Samples {
    seen: VecDeque<(Instant, u64)>,
    keep: Duration,
}

impl Samples {
    pub(super) fn new(keep: Duration) -> Self {
        Self {
            seen: VecDeque::new(),
            keep,
        }
    }

    /// The primary had flushed up to `flushed` at `at`.
    pub(super) fn record(&mut self, at: Instant, flushed: u64) {
        if self.seen.back().is_none_or(|&(_, last)| flushed > last) {
            self.seen.push_back((at, flushed));
        }
        while self.seen.len() > 1 && at.duration_since(self.seen[1].0) >= self.keep {
            self.seen.pop_front();
        }
    }

    /// The lag at `at` of a replica that has replayed up to `replayed`: how long ago the
    /// primary first flushed a position past it (zero when it has replayed every sample).
    pub(super) fn lag(&self, at: Instant, replayed: u64) -> Duration {
        self.seen
            .iter()
            .find(|&&(_, flushed)| flushed > replayed)
            .map_or(Duration::ZERO, |&(first, _)| {
                at.saturating_duration_since(first)
            })
    }
}

/// What a replica answered to a check.
enum Answer {
    /// A standby that has replayed up to this WAL position.
    Replayed(u64),
    /// A server that is not in recovery: promoted, or a primary named as a replica.
    NotStandby,
    /// No answer within the bound, or an error.
    Failed(String),
}

impl Replicas {
    /// One check: the primary's flushed position, then every replica's replayed one (all at
    /// once), each bounded by [`Replicas::check_bound`]. A replica's new state is logged when
    /// it changes, and its lag is published as a metric.
    pub(super) async fn check(&self) {
        let bound = self.check_bound();
        match tokio::time::timeout(bound, primary_flushed(&self.primary)).await {
            Ok(Ok(flushed)) => self.samples().record(Instant::now(), flushed),
            // Without a sample the replicas' lag is judged against the last ones: reads can
            // still go to replicas while the primary is unreachable.
            Ok(Err(e)) => tracing::debug!(error = %e, "checking the primary's WAL position"),
            Err(_) => tracing::debug!(?bound, "the primary's WAL position: no answer"),
        }
        let answers = futures::future::join_all(
            self.members
                .iter()
                .map(|replica| async move { (replica, ask(&replica.pool, bound).await) }),
        )
        .await;
        for (replica, answer) in answers {
            let at = Instant::now();
            let (state, lag) = match answer {
                Answer::Replayed(replayed) => {
                    let lag = self.samples().lag(at, replayed);
                    let state = if lag <= self.policy.max_lag {
                        ReplicaState::Usable
                    } else {
                        ReplicaState::Lagging
                    };
                    (state, Some(lag))
                }
                Answer::NotStandby => (ReplicaState::NotStandby, None),
                Answer::Failed(error) => (ReplicaState::Down(error), None),
            };
            replica.set(state, lag);
        }
    }

    /// How long one check waits for a server: the check interval, at least 1 s.
    fn check_bound(&self) -> Duration {
        self.policy.check_interval.max(Duration::from_secs(1))
    }
}

/// The primary's flushed WAL position.
pub(super) async fn primary_flushed(primary: &Pool) -> Result<u64> {
    let client = Lent::take(primary).await?;
    let row = client
        .query_one(PRIMARY_FLUSHED, &[])
        .await
        .map_err(Error::db("reading the primary's WAL position"))?;
    client.release();
    let flushed: i64 = row.get(0);
    Ok(flushed as u64)
}

/// What a replica answers within `bound`.
async fn ask(pool: &Pool, bound: Duration) -> Answer {
    let asked = async {
        let client = Lent::take(pool).await?;
        let row = client
            .query_one(STANDBY_REPLAYED, &[])
            .await
            .map_err(Error::db("reading the replica's replayed WAL position"))?;
        client.release();
        let (standby, replayed): (bool, i64) = (row.get(0), row.get(1));
        Ok::<_, Error>(if standby {
            Answer::Replayed(replayed as u64)
        } else {
            Answer::NotStandby
        })
    };
    match tokio::time::timeout(bound, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Answer::Failed(e.to_string()),
        Err(_) => Answer::Failed(format!("no answer within {bound:?}")),
    }
}

/// Checks `replicas` at every interval for as long as the store lives.
pub(super) async fn monitor(replicas: Weak<Replicas>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        replicas.check().await;
    }
}

impl Replica {
    /// Records the outcome of a check or of a call: logs a change of state, publishes the lag.
    pub(super) fn set(&self, state: ReplicaState, lag: Option<Duration>) {
        let name = self.name.as_str();
        if let Some(lag) = lag {
            metrics::gauge!("dcbstore_replica_lag_seconds", "replica" => name.to_string())
                .set(lag.as_secs_f64());
        }
        metrics::gauge!("dcbstore_replica_usable", "replica" => name.to_string())
            .set(f64::from(u8::from(state == ReplicaState::Usable)));
        let mut health = self.health.lock().expect("a replica's health");
        if health.state != state {
            match &state {
                ReplicaState::Usable => tracing::info!(replica = name, ?lag, "replica usable"),
                other => tracing::warn!(replica = name, ?lag, state = %other, "replica skipped"),
            }
        }
        health.state = state;
        health.lag = lag;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_lags_since_the_primary_first_flushed_what_it_misses() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut samples = Samples::new(Duration::from_secs(10));
        samples.record(at(0), 100);
        samples.record(at(100), 100);
        samples.record(at(200), 300);
        samples.record(at(300), 400);
        assert_eq!(
            samples.lag(at(300), 400),
            Duration::ZERO,
            "replayed everything"
        );
        assert_eq!(samples.lag(at(300), 350), Duration::from_millis(0));
        assert_eq!(samples.lag(at(300), 300), Duration::from_millis(0));
        assert_eq!(samples.lag(at(350), 299), Duration::from_millis(150));
        assert_eq!(
            samples.lag(at(350), 99),
            Duration::from_millis(350),
            "since 100 at 0"
        );
    }

    #[test]
    fn a_replica_behind_every_sample_kept_lags_at_least_the_window() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let mut samples = Samples::new(Duration::from_secs(2));
        samples.record(at(0), 100);
        // Nothing written for a while, then a write: the sample at 0 is older than the window
        // but the newest such, so it stays.
        samples.record(at(10), 200);
        assert_eq!(
            samples.lag(at(10), 100),
            Duration::ZERO,
            "caught up with 100"
        );
        assert_eq!(samples.lag(at(10), 50), Duration::from_secs(10));
        samples.record(at(11), 300);
        samples.record(at(13), 400);
        // 0 and 10 went; 11 is the newest older than the window.
        assert_eq!(samples.seen.front().map(|s| s.1), Some(300));
        assert_eq!(samples.lag(at(13), 250), Duration::from_secs(2));
    }
}
