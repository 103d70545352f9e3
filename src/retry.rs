//! [`RetryPolicy`]: how every retrying loop of the crate counts its attempts and waits.

use std::time::Duration;

/// How a failed attempt is tried again: up to `max_attempts` attempts in all, waiting a random
/// time (full jitter) up to `initial_backoff × 2^retry`, at most `max_backoff`.
///
/// One rule for every loop that retries: [`decide_with`](crate::decide_with) when its append
/// condition fails, a [`Subscription`](crate::Subscription) when a read fails in a way that can
/// pass, a [`ProjectorRunner`](crate::ProjectorRunner) when a projector fails a batch.
///
/// ```
/// use std::time::Duration;
/// let patient = dcbstore::RetryPolicy {
///     max_attempts: 50,
///     ..dcbstore::RetryPolicy::default()
/// };
/// assert_eq!(patient.max_backoff, Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Upper bound of the first wait.
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, waits up to 1 ms, 2 ms, 4 ms, … at most 250 ms: measured to keep many
    /// writers on one boundary from starving each other (see BENCHMARKS.md, `append-hot`).
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// Whether to try again after `failed` attempts have failed in a row (1 after the first),
    /// and the random wait before: `None` once `max_attempts` attempts (at least 1) are spent.
    ///
    /// ```
    /// let twice = dcbstore::RetryPolicy { max_attempts: 2, ..dcbstore::RetryPolicy::default() };
    /// assert!(twice.next_wait(1).is_some(), "the second attempt");
    /// assert!(twice.next_wait(2).is_none(), "two attempts in all");
    /// ```
    pub fn next_wait(&self, failed: u32) -> Option<Duration> {
        (failed < self.max_attempts.max(1)).then(|| self.backoff(failed))
    }

    /// The random wait before retry number `retry` (1 for the first retry).
    ///
    /// ```
    /// let wait = dcbstore::RetryPolicy::default().backoff(3);
    /// assert!(wait <= std::time::Duration::from_millis(8));
    /// ```
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        let cap = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if cap_ns == 0 {
            return Duration::ZERO;
        }
        // UUIDv4 bits come from the OS's random source.
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        Duration::from_nanos(random % cap_ns)
    }
}
