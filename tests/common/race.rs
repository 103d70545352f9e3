//! A decision's guard covers what its read could not see, raced: writers of unguarded events on
//! a shared tag leave gaps in commit order (on PostgreSQL an event appended in a transaction
//! held open while the next one commits), while deciders decide; replaying the log afterwards,
//! no decision missed an event of its boundary at or below the position it read. Run on both
//! backends by the conformance suite, and with reads on a replica by the PostgreSQL suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dcbstore::{
    DecideError, DecisionCache, Event, EventStore, Projection, Query, QueryItem, ReadOptions,
    RetryPolicy, decide_with,
};
use serde_json::json;

use super::{Backend, Store, store_on};

// ---------------------------------------------------------------------------------------------
// Races: writers of unguarded events on a shared tag, each leaving a gap in commit order again
// and again (an event appended in a transaction held open a moment while the next one commits,
// as when a read model is updated in the same commit), while deciders decide over a tag of their
// own plus the shared one. Every decision writes how many events of its boundary it saw and the
// last position it read; replaying the log afterwards, the boundary must hold exactly that many
// events at or below that position: nothing below it was missed. The tags move on to a new epoch
// every `EPOCH` rounds of the noise writers, so that boundaries (and reads) stay small however
// long the race runs.

const DECIDERS: usize = 4;
const NOISE_WRITERS: usize = 2;
const DECISIONS: usize = 2_000;
const EPOCH: usize = 40;
const RACE_LIMIT: Duration = Duration::from_secs(240);

fn shared(epoch: usize) -> String {
    format!("shared:{epoch}")
}

fn own(decider: usize, epoch: usize) -> String {
    format!("decider:{decider}:{epoch}")
}

fn boundary(decider: usize, epoch: usize) -> Query {
    Query::from_items([
        QueryItem::tagged([own(decider, epoch)]),
        QueryItem::tagged([shared(epoch)]),
    ])
}

fn decided(decider: usize, epoch: usize, seen: usize, last: Option<u64>) -> Event {
    Event::new(
        "Decided",
        json!({"decider": decider, "epoch": epoch, "seen": seen, "last": last.unwrap_or(0)}),
    )
    .with_tags([own(decider, epoch)])
}

/// The stores a race runs on: deciders read on `reader` and append on `writer` (the same store
/// but for decisions read on a replica), and on PostgreSQL the writer as itself, for the noise
/// writers' open transactions (`append_in`).
#[derive(Clone)]
pub struct Race {
    pub reader: Store,
    pub writer: Store,
    #[cfg(feature = "postgres")]
    pub postgres: Option<dcbstore::PgEventStore>,
    #[cfg(not(feature = "postgres"))]
    pub postgres: Option<std::convert::Infallible>,
}

impl Race {
    /// A race whose deciders read on `reader` and append on `writer` (PostgreSQL).
    #[cfg(feature = "postgres")]
    pub fn reading_on(reader: Store, writer: dcbstore::PgEventStore) -> Self {
        Self {
            reader,
            writer: Arc::new(writer.clone()),
            postgres: Some(writer),
        }
    }

    /// A race on one fresh store of `backend`.
    pub async fn on(backend: Backend) -> Self {
        match backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let store = super::store_with_pool(40).await;
                Self::reading_on(Arc::new(store.clone()), store)
            }
            Backend::Memory => {
                let store = store_on(backend).await;
                Self {
                    reader: store.clone(),
                    writer: store,
                    postgres: None,
                }
            }
        }
    }
}

/// How the deciders of a race decide.
#[derive(Debug, Clone, Copy)]
pub enum Decider {
    /// `read` on the reader, then `append` on the writer guarded by `read.append_condition()`.
    ReadThenAppend,
    /// `decide` with a projection of the boundary, on the writer.
    Decide,
    /// A `DecisionCache` of that projection per boundary, on the writer: after the first
    /// decision each reads only what its kept state did not see.
    Cached,
}

/// Until `stop`: appends an unguarded event on the shared tag, and while it is not committed yet
/// appends the next one on another connection (which commits first unless it has to wait for a
/// lock); then commits the first and pauses.
async fn noise(race: Race, writer: usize, rounds: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tag = shared(rounds.fetch_add(1, Ordering::Relaxed) / EPOCH);
        let mut noise = || {
            n += 1;
            Event::new("Noise", json!({"writer": writer, "n": n})).with_tags([tag.clone()])
        };
        let (first, second) = (noise(), noise());
        match &race.postgres {
            #[cfg(feature = "postgres")]
            Some(pg) => {
                let mut client = pg.pool().get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                pg.append_in(&tx, [first], None).await.unwrap();
                // On its own connection and not awaited before the commit: behind a decider
                // queued for the shared tag's lock, it waits for that commit.
                let next = tokio::spawn({
                    let pg = pg.clone();
                    async move { pg.append([second], None).await }
                });
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.commit().await.unwrap();
                next.await.unwrap().unwrap();
            }
            _ => {
                race.writer.append([first], None).await.unwrap();
                race.writer.append([second], None).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(10 + n % 16)).await;
    }
}

/// Makes decisions until `DECISIONS` have succeeded in all (or the time is up).
async fn decider(
    race: Race,
    id: usize,
    how: Decider,
    done: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
) {
    let started = Instant::now();
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let seen = |query| {
        Projection::new(query, (0usize, None), |s: &mut (usize, Option<u64>), e| {
            *s = (s.0 + 1, Some(e.position));
        })
    };
    let mut cache: Option<(usize, DecisionCache<_>)> = None;
    while done.load(Ordering::Relaxed) < DECISIONS && started.elapsed() < RACE_LIMIT {
        let epoch = rounds.load(Ordering::Relaxed) / EPOCH;
        let query = boundary(id, epoch);
        let succeeded = match how {
            Decider::ReadThenAppend => {
                let read = race
                    .reader
                    .read(&query, ReadOptions::default())
                    .await
                    .unwrap();
                let event = decided(id, epoch, read.len(), read.last_position());
                match race
                    .writer
                    .append([event], Some(read.append_condition().unwrap()))
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.is_append_condition_failed() => false,
                    Err(e) => panic!("decider {id}: {e}"),
                }
            }
            Decider::Decide => {
                let outcome = decide_with(&race.writer, &seen(query), once, |(n, last)| {
                    Ok::<_, String>(vec![decided(id, epoch, n, last)])
                })
                .await;
                succeeded(id, outcome)
            }
            Decider::Cached => {
                // A new boundary every epoch: its own cache.
                if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    cache = Some((epoch, DecisionCache::new(seen(query)).with_retry(once)));
                }
                let (_, cache) = cache.as_mut().expect("a cache of the epoch");
                let outcome = cache
                    .decide(&race.writer, |(n, last)| {
                        Ok::<_, String>(vec![decided(id, epoch, n, last)])
                    })
                    .await;
                succeeded(id, outcome)
            }
        };
        // The in-memory store answers without awaiting: let the noise writers run.
        tokio::task::yield_now().await;
        if succeeded {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::time::sleep(Duration::from_micros(200 * (id as u64 % 4 + 1))).await;
        }
    }
}

/// Whether decider `id`'s decision appended (`false`: it lost its one attempt to a conflict).
fn succeeded<T>(id: usize, outcome: Result<T, DecideError<String>>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(DecideError::TooManyConflicts { .. }) => false,
        Err(e) => panic!("decider {id}: {e}"),
    }
}

/// Runs the race and checks every decision against the log.
pub async fn run(race: Race, how: Decider) {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..NOISE_WRITERS)
        .map(|w| tokio::spawn(noise(race.clone(), w, rounds.clone(), stop.clone())))
        .collect();
    let deciders: Vec<_> = (0..DECIDERS)
        .map(|d| tokio::spawn(decider(race.clone(), d, how, done.clone(), rounds.clone())))
        .collect();
    for d in deciders {
        d.await.expect("decider task");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("noise writer task");
    }

    // The latest log (a store that reads on a replica would otherwise read there).
    let log = race
        .writer
        .read(&Query::all(), ReadOptions::default().latest())
        .await
        .expect("reading the whole log")
        .into_events();
    let decisions: Vec<_> = log.iter().filter(|e| e.event_type == "Decided").collect();
    assert!(
        decisions.len() >= DECISIONS,
        "only {} decisions in {RACE_LIMIT:?}",
        decisions.len()
    );
    let noise = log.iter().filter(|e| e.event_type == "Noise").count();
    eprintln!(
        "{how:?}: {} decisions and {noise} noise events in {:?}",
        decisions.len(),
        started.elapsed()
    );
    let mut blind = Vec::new();
    for d in &decisions {
        let field = |name: &str| d.payload[name].as_u64().unwrap();
        let query = boundary(field("decider") as usize, field("epoch") as usize);
        let (seen, last) = (field("seen") as usize, field("last"));
        let in_log = log
            .iter()
            .filter(|e| e.position <= last && query.matches(e))
            .count();
        if in_log != seen {
            blind.push((d.position, seen, in_log, last));
        }
    }
    assert!(
        blind.is_empty(),
        "{} of {} decisions missed events at or below the position they read \
         (position, seen, in the log, last read): {:?}",
        blind.len(),
        decisions.len(),
        &blind[..blind.len().min(10)]
    );
    assert!(noise > 0, "the noise writers wrote");
}
