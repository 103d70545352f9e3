//! Wake-ups for subscriptions: appends of this store wake its subscriptions at once, and other
//! processes through `LISTEN/NOTIFY`.
//!
//! A notification carries nothing: it only says "look at the feed again". The store sends it
//! *after* an append's transaction has ended, from a connection of its own pool, in a statement
//! of its own (`SELECT pg_notify(...)`), coalescing the appends that end while one is in
//! flight. Sending it inside the append's transaction would be simpler, but PostgreSQL (up to
//! 16 at least) serialises the commits of every transaction that notified, WAL flush included,
//! and that would cost appends their throughput. The price is that a process that dies between
//! its commit and its notification, or a writer that is not this store, wakes nobody: the
//! subscriptions' poll interval bounds that wait. [`PgEventStore::append_in`] notifies inside
//! the caller's transaction instead (it has no "after").
//!
//! A notification is sent only when a subscriber somewhere can be woken by it: every listening
//! connection holds a shared session-level advisory lock on its channel's key (in the
//! two-integer key space, which appends never use), and the notifier looks for such a lock in
//! `pg_locks`, at most every [`LISTENERS_RECHECK`]. With no subscriber in any other process
//! (many small writers, say) appends send none at all, and until the next look they do not even
//! wake the notifier (which used to cost each append a task wake-up and a pooled connection
//! taken for nothing). A subscriber that starts listening is notified within that interval;
//! until then, its poll interval bounds its wait.
//! `append_in` looks for the lock in the statement that notifies, at every call.
//!
//! [`PgEventStore::append_in`]: super::PgEventStore::append_in

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Socket};

use super::sql::admin;
use crate::fnv;
use crate::retry::RetryPolicy;
use crate::subscription::DEFAULT_POLL_INTERVAL;

/// Opens a connection for `LISTEN`: the client, and the notifications its connection receives
/// (the channel closes when the connection ends).
pub(super) type Connect = Arc<
    dyn Fn() -> BoxFuture<
            'static,
            Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error>,
        > + Send
        + Sync,
>;

/// A [`Connect`] to `server` through `tls`.
pub(super) fn connect_with<T>(server: tokio_postgres::Config, tls: T) -> Connect
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    Arc::new(move || {
        let (server, tls) = (server.clone(), tls.clone());
        Box::pin(async move {
            let (client, mut connection) = server.connect(tls).await?;
            let (sender, notifications) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => {
                            if sender.send(()).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "the notification connection failed");
                            break;
                        }
                    }
                }
            });
            Ok((client, notifications))
        })
    })
}

/// The notification channel of a schema: `dcbstore_<schema>`, or a hash of it when that would
/// pass PostgreSQL's 63 bytes.
pub(super) fn channel(schema: &str) -> String {
    let plain = format!("dcbstore_{schema}");
    if plain.len() <= 63 {
        return plain;
    }
    format!("dcbstore_{:016x}", fnv::hash(schema.as_bytes()))
}

/// The class of the advisory lock a listening connection holds on its channel ("dcbs"): with
/// [`listening_key`], a key of the two-integer space, apart from the appends' 64-bit keys.
const LISTENING_CLASS: i32 = 0x6463_6273;

/// The advisory lock a listener of `channel` holds, as `pg_locks` shows it (`classid`, `objid`).
pub(super) fn listened_key(channel: &str) -> (i64, i64) {
    (
        i64::from(LISTENING_CLASS),
        i64::from(listening_key(channel)),
    )
}

/// The second half of the advisory lock key of `channel`'s listeners: a hash stable across
/// processes, kept non-negative so that it reads back the same from `pg_locks`.
fn listening_key(channel: &str) -> i32 {
    (fnv::hash(channel.as_bytes()) & 0x7fff_ffff) as i32
}

/// How long the notifier trusts what it last found out about listeners.
const LISTENERS_RECHECK: Duration = Duration::from_millis(250);

/// The wake-ups of one store (shared by its clones).
pub(super) struct Changes {
    channel: String,
    /// Bumped after each append of this store and each notification: subscriptions wait on it.
    wake: Arc<watch::Sender<u64>>,
    /// How to open the `LISTEN` connection; `None` when the store was built from a pool.
    connect: Option<Connect>,
    /// Whether appends send notifications.
    notify: bool,
    /// Appends that ended since the last notification was sent.
    pending: Arc<Notify>,
    /// Until when nobody listens, as the notifier last found out.
    unheard: Arc<Unheard>,
    notifier: Mutex<Option<AbortHandle>>,
    listener: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("channel", &self.channel)
            .field("listens", &self.connect.is_some())
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        for task in [&self.notifier, &self.listener] {
            if let Some(task) = task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }
}

impl Changes {
    pub(super) fn new(channel: String, connect: Option<Connect>, notify: bool) -> Self {
        Self {
            channel,
            wake: Arc::new(watch::Sender::new(0)),
            connect,
            notify,
            pending: Arc::new(Notify::new()),
            unheard: Arc::new(Unheard::new()),
            notifier: Mutex::new(None),
            listener: Mutex::new(None),
        }
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// An append of this store has ended (committed or not): wake this process's subscriptions
    /// and, through the notifier, everybody else's.
    pub(super) fn appended(&self, pool: &Pool) {
        self.woke();
        if !self.notify || self.unheard.now() {
            return;
        }
        let mut notifier = self.notifier.lock().unwrap_or_else(|e| e.into_inner());
        if notifier.as_ref().is_none_or(AbortHandle::is_finished) {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let task = notify(
                pool.clone(),
                self.channel.clone(),
                self.pending.clone(),
                self.unheard.clone(),
            );
            *notifier = Some(runtime.spawn(task).abort_handle());
        }
        self.pending.notify_one();
    }

    /// Something may have changed (e.g. an `append_in` whose transaction this store does not
    /// see end): wake this process's subscriptions, which look again at the latest after their
    /// poll interval.
    pub(super) fn woke(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What a new subscription waits on; starts the listener if it is not running.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        let Some(connect) = &self.connect else {
            return self.wake.subscribe();
        };
        let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        // With no subscription left, a running listener is about to end (it ends when the last
        // one goes): start a new one rather than count on it.
        let ending = self.wake.receiver_count() == 0;
        let receiver = self.wake.subscribe();
        if (ending || listener.as_ref().is_none_or(AbortHandle::is_finished))
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            if let Some(old) = listener.take() {
                old.abort();
            }
            let task = listen(connect.clone(), self.channel.clone(), self.wake.clone());
            *listener = Some(runtime.spawn(task).abort_handle());
        }
        receiver
    }
}

/// Until when the notifier last found nobody listening: appends that end before then have no
/// one to wake, in this process or another, and leave the notifier asleep.
struct Unheard {
    epoch: Instant,
    /// Nanoseconds after `epoch`; 0 while someone listens or nobody has looked yet.
    until: AtomicU64,
}

impl Unheard {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether nobody listens, as last found out less than [`LISTENERS_RECHECK`] ago.
    fn now(&self) -> bool {
        self.nanos() < self.until.load(Ordering::Relaxed)
    }

    /// What the notifier just found out: whether someone listens.
    fn found(&self, listened: bool) {
        let until = if listened {
            0
        } else {
            self.nanos()
                .saturating_add(u64::try_from(LISTENERS_RECHECK.as_nanos()).unwrap_or(u64::MAX))
        };
        self.until.store(until, Ordering::Relaxed);
    }
}

/// The least time between two notifications of one store. A notification costs the server
/// more than its statement (PostgreSQL serialises notifying commits): with 32 writers appending
/// as fast as they can, one every 5 ms cost appends 10–15% of their throughput, one every 10 ms
/// about 4% (BENCHMARKS.md, "Consumers"). This adds at most as much to the latency of
/// subscribers in other processes.
const NOTIFY_PAUSE: Duration = Duration::from_millis(10);

/// Sends one notification per burst of appends, for as long as the store lives, when a
/// subscriber listens (see the module's documentation).
async fn notify(pool: Pool, channel: String, pending: Arc<Notify>, unheard: Arc<Unheard>) {
    let key = listened_key(&channel);
    // Whether someone listened, and when that was found out.
    let mut listened: Option<(bool, Instant)> = None;
    loop {
        pending.notified().await;
        if unheard.now() {
            // Woken by an append that ended as nobody was found listening.
            continue;
        }
        let client = match pool.get().await {
            Ok(client) => client,
            Err(error) => {
                // Subscriptions elsewhere see the events at their next poll.
                tracing::debug!(%error, channel, "could not send a notification");
                continue;
            }
        };
        if listened.is_none_or(|(_, at)| at.elapsed() >= LISTENERS_RECHECK) {
            // When it cannot be found out, notify: a wake-up too many costs little.
            let found = client.query_one(admin::LISTENED, &[&key.0, &key.1]).await;
            let found = found.map(|row| row.get::<_, bool>(0)).unwrap_or(true);
            listened = Some((found, Instant::now()));
            unheard.found(found);
        }
        if listened.is_some_and(|(found, _)| !found) {
            continue;
        }
        let sent = client.execute(admin::NOTIFY, &[&channel]).await;
        drop(client);
        if let Err(error) = sent {
            tracing::debug!(%error, channel, "could not send a notification");
        }
        // Appends that end meanwhile share the next notification: at most one per pause.
        tokio::time::sleep(NOTIFY_PAUSE).await;
    }
}

/// Listens on `channel` and bumps `wake` for every notification, reconnecting when the
/// connection is lost, until the last subscription is gone.
async fn listen(connect: Connect, channel: String, wake: Arc<watch::Sender<u64>>) {
    let retry = RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(100),
        max_backoff: DEFAULT_POLL_INTERVAL * 10,
    };
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut failures = 0u32;
    let listening = async {
        loop {
            let opened = async {
                let (client, notifications) =
                    tokio::time::timeout(crate::pg::DEFAULT_POOL_TIMEOUT, connect())
                        .await
                        .map_err(|_| "timed out opening the connection".to_string())?
                        .map_err(|e| e.to_string())?;
                // The lock tells notifiers that someone listens; it lives as long as the
                // connection.
                let listen = admin::listen(&channel, LISTENING_CLASS, listening_key(&channel));
                client
                    .batch_execute(&listen)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((client, notifications))
            };
            match opened.await {
                Ok((_client, mut notifications)) => {
                    if failures > 0 {
                        tracing::info!(channel, failures, "listening for appends again");
                    }
                    failures = 0;
                    // What was notified while nobody listened: look again.
                    bump();
                    while notifications.recv().await.is_some() {
                        bump();
                    }
                    tracing::warn!(
                        channel,
                        "the notification connection was lost; reconnecting"
                    );
                    bump();
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = retry.next_wait(failures).unwrap_or(retry.max_backoff);
                    tracing::warn!(%error, channel, failures, ?wait,
                        "could not listen for appends; subscriptions poll meanwhile");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    };
    futures::future::select(pin!(wake.closed()), pin!(listening)).await;
}

#[cfg(test)]
mod tests {
    use super::{Unheard, channel};

    #[test]
    fn appends_leave_the_notifier_asleep_only_while_nobody_was_found_listening() {
        let unheard = Unheard::new();
        // Nobody has looked yet: the first append wakes the notifier, which looks.
        assert!(!unheard.now());
        unheard.found(false);
        assert!(unheard.now());
        unheard.found(true);
        assert!(!unheard.now());
    }

    #[test]
    fn channels_fit_in_an_identifier() {
        assert_eq!(channel("events"), "dcbstore_events");
        let long = channel(&"s".repeat(63));
        assert_eq!(long.len(), "dcbstore_".len() + 16);
        assert_ne!(long, channel(&"t".repeat(63)));
        // Processes of different versions wake each other on the same channel.
        assert_eq!(long, "dcbstore_64515d96d7bbe874");
    }
}
