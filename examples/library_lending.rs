//! Library lending with Dynamic Consistency Boundaries.
//!
//! Rules: a book copy is lent to one reader at a time; a reader holds at most 2 copies. The
//! decision "lend copy B to reader R" spans the copy and the reader. Here the boundary is found
//! through payload predicates (`BookID`, `ReaderID`), not tags: DCB does not need a stream per
//! entity.
//!
//! Run: `cargo run --example library_lending` (in memory), or with `DATABASE_URL` set
//! (PostgreSQL).

#[path = "shared/mod.rs"]
mod shared;

use std::collections::BTreeSet;
use std::sync::Arc;

use dcbstore::{
    AppendCondition, Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions,
    SequencedEvent,
};
use serde_json::json;
use tokio::sync::Barrier;

const MAX_COPIES_PER_READER: usize = 2;

/// The events the lending decision needs: the copy's existence, and every loan or return that
/// involves the copy or the reader.
fn lending_boundary(book: &str, reader: &str) -> Query {
    Query::from_items([
        QueryItem::types(["BookCopyAdded"]).payload_all_of([("BookID", json!(book))]),
        QueryItem::types(["BookCopyLentToReader", "BookCopyReturnedByReader"])
            .payload_any_of([("BookID", json!(book)), ("ReaderID", json!(reader))]),
    ])
}

#[derive(Debug, Default)]
struct Lending {
    copy_exists: bool,
    copy_lent_to: Option<String>,
    reader_holds: BTreeSet<String>,
}

impl Lending {
    fn fold(book: &str, reader: &str, events: &[SequencedEvent]) -> Self {
        let mut state = Self::default();
        for e in events {
            let (b, r) = (
                e.payload["BookID"].as_str().unwrap_or_default(),
                e.payload["ReaderID"].as_str().unwrap_or_default(),
            );
            match e.event_type.as_str() {
                "BookCopyAdded" => state.copy_exists = true,
                "BookCopyLentToReader" => {
                    if b == book {
                        state.copy_lent_to = Some(r.to_string());
                    }
                    if r == reader {
                        state.reader_holds.insert(b.to_string());
                    }
                }
                "BookCopyReturnedByReader" => {
                    if b == book {
                        state.copy_lent_to = None;
                    }
                    if r == reader {
                        state.reader_holds.remove(b);
                    }
                }
                _ => {}
            }
        }
        state
    }

    fn lend(&self, book: &str, reader: &str) -> Result<Event, String> {
        if !self.copy_exists {
            return Err(format!("there is no copy {book}"));
        }
        if let Some(holder) = &self.copy_lent_to {
            return Err(format!("{book} is lent to {holder}"));
        }
        if self.reader_holds.len() >= MAX_COPIES_PER_READER {
            return Err(format!("{reader} already holds {:?}", self.reader_holds));
        }
        Ok(Event::new(
            "BookCopyLentToReader",
            json!({"BookID": book, "ReaderID": reader}),
        ))
    }

    fn give_back(&self, book: &str, reader: &str) -> Result<Event, String> {
        if self.copy_lent_to.as_deref() != Some(reader) {
            return Err(format!("{reader} does not hold {book}"));
        }
        Ok(Event::new(
            "BookCopyReturnedByReader",
            json!({"BookID": book, "ReaderID": reader}),
        ))
    }
}

/// Reads the boundary, decides with `decide`, appends guarded by the same query; retries when a
/// concurrent append changed the boundary. `Ok(Err(reason))` when the rules say no.
async fn execute(
    store: &impl EventStore,
    book: &str,
    reader: &str,
    decide: fn(&Lending, &str, &str) -> Result<Event, String>,
) -> dcbstore::Result<Result<u64, String>> {
    let query = lending_boundary(book, reader);
    loop {
        let read = store.read(&query, ReadOptions::default()).await?;
        let state = Lending::fold(book, reader, read.events());
        let event = match decide(&state, book, reader) {
            Ok(event) => event,
            Err(reason) => return Ok(Err(reason)),
        };
        let condition = AppendCondition::new(query.clone(), read.last_position());
        match store.append([event], Some(condition)).await {
            Ok(written) => return Ok(Ok(written.last_position())),
            Err(e) if e.is_append_condition_failed() => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn show(
    store: &impl EventStore,
    verb: &str,
    book: &str,
    reader: &str,
    decide: fn(&Lending, &str, &str) -> Result<Event, String>,
) -> dcbstore::Result<()> {
    match execute(store, book, reader, decide).await? {
        Ok(position) => println!("  {verb} {book} / {reader}: done (position {position})"),
        Err(reason) => println!("  {verb} {book} / {reader}: rejected, {reason}"),
    }
    Ok(())
}

/// The demo. `suffix` makes the ids unique to this run (empty in memory).
async fn run(store: impl EventStore + Clone + 'static, suffix: &str) -> dcbstore::Result<()> {
    let b = |name: &str| format!("{name}{suffix}");
    let (dune, emma, odyssey, ulysses) = (b("dune"), b("emma"), b("odyssey"), b("ulysses"));
    let (ann, ben) = (b("ann"), b("ben"));

    let added: Vec<Event> = [&dune, &emma, &odyssey, &ulysses]
        .iter()
        .map(|book| Event::new("BookCopyAdded", json!({"BookID": book})))
        .collect();
    store.append(added, None).await?;
    println!("Copies: {dune}, {emma}, {odyssey}, {ulysses}\n");

    println!(
        "Lending (a copy goes to one reader at a time; at most {MAX_COPIES_PER_READER} copies per reader):"
    );
    show(&store, "lend", &dune, &ann, Lending::lend).await?;
    show(&store, "lend", &dune, &ben, Lending::lend).await?;
    show(&store, "lend", &emma, &ann, Lending::lend).await?;
    show(&store, "lend", &odyssey, &ann, Lending::lend).await?;
    show(&store, "return", &dune, &ben, Lending::give_back).await?;
    show(&store, "return", &dune, &ann, Lending::give_back).await?;
    show(&store, "lend", &dune, &ben, Lending::lend).await?;
    show(&store, "lend", &b("missing"), &ben, Lending::lend).await?;

    println!("\nA stale decision: the copy is lent to someone else between read and append:");
    let query = lending_boundary(&odyssey, &ben);
    let stale = store.read(&query, ReadOptions::default()).await?;
    let lend_to_ben = Lending::fold(&odyssey, &ben, stale.events())
        .lend(&odyssey, &ben)
        .expect("the stale read says the copy is free");
    let carl = b("carl");
    show(&store, "lend", &odyssey, &carl, Lending::lend).await?;
    let err = store
        .append(
            [lend_to_ben],
            Some(AppendCondition::new(query, stale.last_position())),
        )
        .await
        .expect_err("the boundary changed after the read");
    println!("  lend {odyssey} / {ben} on the stale read: {err}");
    assert!(err.is_append_condition_failed());

    println!("\nA race: 10 readers ask for {ulysses} at the same time:");
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (store, book, barrier) = (store.clone(), ulysses.clone(), barrier.clone());
            let reader = b(&format!("reader{i}"));
            tokio::spawn(async move {
                barrier.wait().await;
                let outcome = execute(&store, &book, &reader, Lending::lend).await;
                (reader, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (reader, outcome) = task.await.expect("task");
        if outcome?.is_ok() {
            winners.push(reader);
        }
    }
    let loans = store
        .read(
            &Query::from(
                QueryItem::types(["BookCopyLentToReader"])
                    .payload_all_of([("BookID", json!(ulysses))]),
            ),
            ReadOptions::default(),
        )
        .await?
        .len();
    println!("  lent to: {winners:?}; loans of {ulysses} in the log: {loans}");
    assert_eq!(loans, 1, "the guard lent the copy once");
    println!("\nThe guard held: the copy was lent to one reader.");
    Ok(())
}

#[tokio::main]
async fn main() -> dcbstore::Result<()> {
    println!("Library lending with Dynamic Consistency Boundaries");
    match shared::database_url() {
        Some(url) => {
            let store = shared::postgres(&url, "example_library").await?;
            run(store, &shared::run_suffix()).await
        }
        None => run(MemoryEventStore::new(), "").await,
    }
}
