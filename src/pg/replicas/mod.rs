//! Reads on streaming replicas ([`PgEventStoreBuilder::replica`](super::PgEventStoreBuilder::replica)):
//! which server serves a read, the replicas' health ([`health`]), and the bounded wait a read
//! that needs more than [`Consistency::Eventual`] makes on a replica.
//!
//! Writes and everything in the caller's transaction stay on the primary. Reads go to a usable
//! replica (reachable, a standby, lagging by at most the store's bound), in turn; with none,
//! to the primary. A read that fails on a replica (it went down, or a recovery conflict
//! cancelled the statement) runs again on the primary: a replica costs availability nothing.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::error::{Error, Result};
use crate::options::Consistency;
use crate::pg::connection::Lent;
use crate::pg::sql::replica::{REPLAYED_PAST, STANDBY_REPLAYED};
use health::Samples;

mod health;

/// Where a kind of read goes when the store has replicas
/// ([`PgEventStoreBuilder::reads_on`](super::PgEventStoreBuilder::reads_on),
/// [`PgEventStoreBuilder::consumers_on`](super::PgEventStoreBuilder::consumers_on)).
///
/// ```
/// use dcbstore::pg::ReadOn;
/// let builder = dcbstore::PgEventStore::builder()
///     .replica("postgres://app@replica-1.internal/app")
///     .consumers_on(ReadOn::Primary);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOn {
    /// A usable replica, in turn; the primary when none is usable.
    #[default]
    Replicas,
    /// Always the primary.
    Primary,
}

/// How a store with replicas serves a read that must include every commit made before it
/// ([`Consistency::Latest`], e.g. [`decide`](crate::decide) after a conflict)
/// ([`PgEventStoreBuilder::latest_reads`](super::PgEventStoreBuilder::latest_reads)).
///
/// ```
/// use dcbstore::pg::LatestReads;
/// let builder = dcbstore::PgEventStore::builder()
///     .replica("postgres://app@replica-1.internal/app")
///     .latest_reads(LatestReads::AwaitReplay);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatestReads {
    /// Read on the primary.
    #[default]
    OnPrimary,
    /// Ask the primary how far it has flushed its WAL (a statement that reads no table), wait
    /// until a replica has replayed that far (at most the store's lag bound), and read there;
    /// past the bound, read on the primary.
    AwaitReplay,
}

/// How a replica of the store stands ([`PgEventStore::replicas`](super::PgEventStore::replicas)),
/// as its last check or call found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaState {
    /// Not checked yet: reads go elsewhere until it is.
    Starting,
    /// Serves reads.
    Usable,
    /// Lags past the store's bound: skipped until it catches up.
    Lagging,
    /// Did not answer, or failed a call: skipped until a check finds it answering. The text
    /// says why.
    Down(String),
    /// Answers but is not a standby (promoted, or a primary named as a replica): skipped, since
    /// its log may have diverged from the primary's.
    NotStandby,
}

impl std::fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaState::Starting => f.write_str("starting"),
            ReplicaState::Usable => f.write_str("usable"),
            ReplicaState::Lagging => f.write_str("lagging"),
            ReplicaState::Down(why) => write!(f, "down ({why})"),
            ReplicaState::NotStandby => f.write_str("not a standby"),
        }
    }
}

/// One replica's name, state and lag ([`PgEventStore::replicas`](super::PgEventStore::replicas)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its `host:port` (or `replica N` for a pool given to
    /// [`PgEventStoreBuilder::replica_pool`](super::PgEventStoreBuilder::replica_pool)).
    pub name: String,
    /// Whether it serves reads, and if not why.
    pub state: ReplicaState,
    /// How far behind the primary its last check found it (`None` before a check answered).
    pub lag: Option<Duration>,
}

/// Which reads a call makes, for the policy.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reading {
    /// `read` and `read_stream`, a decision's read included.
    Reads,
    /// The feed, and the subscriptions and projectors that follow it.
    Consumers,
}

/// The server a read runs on.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) pool: Pool,
    /// Whether it is a replica.
    pub(super) replica: bool,
}

/// A store's replicas, their health, and its reading policy.
pub(super) struct Replicas {
    primary: Pool,
    members: Vec<Replica>,
    policy: Policy,
    /// The statement that tells whether a position is visible (`sql::replica::shows_position`).
    shows_position: String,
    samples: Mutex<Samples>,
    turn: AtomicUsize,
    monitor: OnceLock<()>,
}

/// One replica: its pool and health.
pub(super) struct Replica {
    name: String,
    pool: Pool,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    state: ReplicaState,
    lag: Option<Duration>,
}

/// What [`Replicas::new`] needs besides the pools.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) reads: ReadOn,
    pub(super) consumers: ReadOn,
    pub(super) latest: LatestReads,
    pub(super) max_lag: Duration,
    pub(super) check_interval: Duration,
}

impl Replicas {
    pub(super) fn new(
        primary: Pool,
        members: Vec<(String, Pool)>,
        policy: Policy,
        shows_position: String,
    ) -> Self {
        Self {
            primary,
            members: members
                .into_iter()
                .map(|(name, pool)| Replica {
                    name,
                    pool,
                    health: Mutex::new(Health {
                        state: ReplicaState::Starting,
                        lag: None,
                    }),
                })
                .collect(),
            shows_position,
            // Twice the bound: a replica behind every sample kept lags past the bound.
            samples: Mutex::new(Samples::new(policy.max_lag * 2)),
            policy,
            turn: AtomicUsize::new(0),
            monitor: OnceLock::new(),
        }
    }

    /// Whether the store has replicas at all.
    pub(super) fn any(&self) -> bool {
        !self.members.is_empty()
    }

    /// The replicas' states.
    pub(super) fn statuses(&self) -> Vec<ReplicaStatus> {
        self.members
            .iter()
            .map(|r| {
                let health = r.health.lock().expect("a replica's health");
                ReplicaStatus {
                    name: r.name.clone(),
                    state: health.state.clone(),
                    lag: health.lag,
                }
            })
            .collect()
    }

    /// Checks the replicas once now, and keeps checking them at the interval for as long as
    /// the store lives (from the first call on, once).
    pub(super) async fn start(self: &Arc<Self>) {
        if self.any() && self.monitor.get().is_none() {
            self.check().await;
            self.keep_checking();
        }
    }

    fn keep_checking(self: &Arc<Self>) {
        if !self.any() {
            return;
        }
        self.monitor.get_or_init(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(health::monitor(
                    Arc::downgrade(self),
                    self.policy.check_interval,
                ));
            }
        });
    }

    fn samples(&self) -> MutexGuard<'_, Samples> {
        self.samples.lock().expect("the primary's samples")
    }

    /// Runs `read` on the server the policy and `consistency` choose; a read that fails on a
    /// replica runs again on the primary.
    pub(super) async fn run<T, F, Fut>(
        self: &Arc<Self>,
        reading: Reading,
        consistency: Consistency,
        read: F,
    ) -> Result<T>
    where
        F: Fn(Source) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let primary = || Source {
            pool: self.primary.clone(),
            replica: false,
        };
        let Some(replica) = self.choose(reading, consistency).await else {
            return read(primary()).await;
        };
        let on_replica = read(Source {
            pool: replica.pool.clone(),
            replica: true,
        })
        .await;
        match on_replica {
            Err(e) if is_server_failure(&e) => {
                replica.failed(&e);
                read(primary()).await
            }
            outcome => outcome,
        }
    }

    /// A usable replica for this read, once it shows what `consistency` asks for; `None` for
    /// the primary.
    async fn choose(
        self: &Arc<Self>,
        reading: Reading,
        consistency: Consistency,
    ) -> Option<&Replica> {
        let on = match reading {
            Reading::Reads => self.policy.reads,
            Reading::Consumers => self.policy.consumers,
        };
        if !self.any() || on == ReadOn::Primary {
            return None;
        }
        self.keep_checking();
        if consistency == Consistency::Latest && self.policy.latest == LatestReads::OnPrimary {
            return None;
        }
        let Some(replica) = self.usable() else {
            fell_back("no_usable_replica");
            return None;
        };
        let shown = match consistency {
            Consistency::Eventual => return Some(replica),
            // Without the primary's position nothing tells how far the replica must be: the
            // read goes to the primary (and fails there if the primary is unreachable).
            Consistency::Latest => match health::primary_flushed(&self.primary).await {
                Ok(flushed) => {
                    let flushed = i64::try_from(flushed).unwrap_or(i64::MAX);
                    self.await_shown(replica, REPLAYED_PAST, flushed).await
                }
                Err(_) => return None,
            },
            Consistency::Includes(checkpoint) => {
                let position = i64::try_from(checkpoint.position()).unwrap_or(i64::MAX);
                self.await_shown(replica, &self.shows_position, position)
                    .await
            }
        };
        match shown {
            Ok(true) => Some(replica),
            Ok(false) => {
                fell_back("not_replayed");
                None
            }
            Err(e) => {
                fell_back("failed");
                replica.set(ReplicaState::Down(e.to_string()), None);
                None
            }
        }
    }

    /// The next usable replica in turn.
    fn usable(&self) -> Option<&Replica> {
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..self.members.len())
            .map(|i| &self.members[(start + i) % self.members.len()])
            .find(|r| r.health.lock().expect("a replica's health").state == ReplicaState::Usable)
    }

    /// Whether `replica` shows what a read must include within the lag bound: whether
    /// `statement` (one boolean, of the parameter `value`) turns true there, asked again after
    /// growing pauses.
    async fn await_shown(&self, replica: &Replica, statement: &str, value: i64) -> Result<bool> {
        let deadline = Instant::now() + self.policy.max_lag;
        let client = Lent::take(&replica.pool).await?;
        let mut pause = Duration::from_millis(1);
        let shown = loop {
            let row = client
                .query_one(statement, &[&value])
                .await
                .map_err(Error::db("waiting for the replica to replay"))?;
            if row.get::<_, bool>(0) {
                break true;
            }
            if !wait_until(deadline, &mut pause).await {
                break false;
            }
        };
        client.release();
        Ok(shown)
    }

    /// The primary's flushed WAL position.
    pub(super) async fn primary_flushed(&self) -> Result<u64> {
        health::primary_flushed(&self.primary).await
    }
}

/// How far the standby `client` is connected to has replayed the primary's WAL. The statement
/// travels in one message (typed, nothing to prepare), sent when the future is first polled: a
/// statement polled after it on the same connection runs after it.
pub(super) async fn replayed(client: &deadpool_postgres::Client) -> Result<u64> {
    let rows = client
        .query_typed(STANDBY_REPLAYED, &[])
        .await
        .map_err(Error::db("reading the replica's replayed WAL position"))?;
    // One row always; none would read as nothing replayed, which only costs a wait.
    Ok(rows.first().map_or(0, |row| row.get::<_, i64>(1) as u64))
}

/// Sleeps `pause` (doubling it, up to 20 ms) unless that passes `deadline`; `false` when it
/// would.
async fn wait_until(deadline: Instant, pause: &mut Duration) -> bool {
    if Instant::now() + *pause > deadline {
        return false;
    }
    tokio::time::sleep(*pause).await;
    *pause = (*pause * 2).min(Duration::from_millis(20));
    true
}

impl Replica {
    /// A read on the replica failed with `e` (a database or pool error): it runs again on the
    /// primary. Without a SQLSTATE the connection failed, not the statement: the replica is
    /// down until a check answers.
    fn failed(&self, e: &Error) {
        fell_back("failed");
        let unreachable = match e {
            Error::Database(db) => db.sql_state().is_none(),
            _ => true,
        };
        if unreachable {
            self.set(ReplicaState::Down(e.to_string()), None);
        } else {
            tracing::debug!(replica = self.name, error = %e, "a read on a replica failed");
        }
    }
}

/// A read that went to the primary instead of a replica, and why.
fn fell_back(reason: &'static str) {
    metrics::counter!("dcbstore_replica_fallbacks_total", "reason" => reason).increment(1);
}

/// Whether a read's error came from the server or the way to it (rather than from its input):
/// the same read can succeed on another server.
fn is_server_failure(e: &Error) -> bool {
    matches!(e, Error::Database(_) | Error::Pool(_))
}
