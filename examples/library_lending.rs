//! Library lending with Dynamic Consistency Boundaries.
//!
//! Rules: a book copy is lent to one reader at a time; a reader holds at most 2 copies. The
//! decision "lend copy B to reader R" spans the copy and the reader: three projections composed
//! into one decision model. Here the boundary is found through payload predicates (`BookID`,
//! `ReaderID`), not tags: DCB does not need a stream per entity.
//!
//! Run: `cargo run --example library_lending` (in memory), or with `DATABASE_URL` set
//! (PostgreSQL).

#[path = "shared/mod.rs"]
mod shared;

use std::collections::BTreeSet;
use std::sync::Arc;

use dcbstore::{
    DecideError, DecisionModel, Event, EventStore, MemoryEventStore, Projection, Query, QueryItem,
    ReadOptions, decide,
};
use serde_json::json;
use tokio::sync::Barrier;

const MAX_COPIES_PER_READER: usize = 2;

/// Whether the copy exists.
fn copy_exists(book: &str) -> Projection<bool> {
    Projection::new(
        QueryItem::typed(["BookCopyAdded"]).payload_all_of([("BookID", json!(book))]),
        false,
        |exists, _| *exists = true,
    )
}

/// Who holds the copy.
fn holder_of(book: &str) -> Projection<Option<String>> {
    Projection::new(
        QueryItem::typed(["BookCopyLentToReader", "BookCopyReturnedByReader"])
            .payload_all_of([("BookID", json!(book))]),
        None,
        |holder, e| {
            *holder = match e.event_type.as_str() {
                "BookCopyLentToReader" => e.payload["ReaderID"].as_str().map(String::from),
                _ => None,
            }
        },
    )
}

/// The copies a reader holds.
fn loans_of(reader: &str) -> Projection<BTreeSet<String>> {
    Projection::new(
        QueryItem::typed(["BookCopyLentToReader", "BookCopyReturnedByReader"])
            .payload_all_of([("ReaderID", json!(reader))]),
        BTreeSet::new(),
        |loans, e| {
            let book = e.payload["BookID"].as_str().unwrap_or_default().to_string();
            if e.event_type == "BookCopyLentToReader" {
                loans.insert(book);
            } else {
                loans.remove(&book);
            }
        },
    )
}

/// The state of one lending decision: the copy and the reader, read at once.
type Lending = (bool, Option<String>, BTreeSet<String>);

fn lending_model(book: &str, reader: &str) -> impl DecisionModel<State = Lending> {
    (copy_exists(book), holder_of(book), loans_of(reader))
}

fn lend((exists, holder, loans): Lending, book: &str, reader: &str) -> Result<Vec<Event>, String> {
    if !exists {
        return Err(format!("there is no copy {book}"));
    }
    if let Some(holder) = holder {
        return Err(format!("{book} is lent to {holder}"));
    }
    if loans.len() >= MAX_COPIES_PER_READER {
        return Err(format!("{reader} already holds {loans:?}"));
    }
    Ok(vec![Event::new(
        "BookCopyLentToReader",
        json!({"BookID": book, "ReaderID": reader}),
    )])
}

fn give_back((_, holder, _): Lending, book: &str, reader: &str) -> Result<Vec<Event>, String> {
    if holder.as_deref() != Some(reader) {
        return Err(format!("{reader} does not hold {book}"));
    }
    Ok(vec![Event::new(
        "BookCopyReturnedByReader",
        json!({"BookID": book, "ReaderID": reader}),
    )])
}

type Rule = fn(Lending, &str, &str) -> Result<Vec<Event>, String>;

/// Reads the boundary, applies `rule`, appends guarded by the same query, retries on conflict.
async fn execute(
    store: &impl EventStore,
    book: &str,
    reader: &str,
    rule: Rule,
) -> Result<u64, DecideError<String>> {
    let written = decide(store, &lending_model(book, reader), |state| {
        rule(state, book, reader)
    })
    .await?;
    Ok(written.expect("lending appends").last_position())
}

async fn show(
    store: &impl EventStore,
    verb: &str,
    book: &str,
    reader: &str,
    rule: Rule,
) -> dcbstore::Result<()> {
    match execute(store, book, reader, rule).await {
        Ok(position) => println!("  {verb} {book} / {reader}: done (position {position})"),
        Err(DecideError::Rejected(reason)) => {
            println!("  {verb} {book} / {reader}: rejected, {reason}")
        }
        Err(DecideError::Store(e)) => return Err(e),
        Err(e) => println!("  {verb} {book} / {reader}: {e}"),
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
    show(&store, "lend", &dune, &ann, lend).await?;
    show(&store, "lend", &dune, &ben, lend).await?;
    show(&store, "lend", &emma, &ann, lend).await?;
    show(&store, "lend", &odyssey, &ann, lend).await?;
    show(&store, "return", &dune, &ben, give_back).await?;
    show(&store, "return", &dune, &ann, give_back).await?;
    show(&store, "lend", &dune, &ben, lend).await?;
    show(&store, "lend", &b("missing"), &ben, lend).await?;

    println!("\nA stale decision: the copy is lent to someone else between read and append:");
    let model = lending_model(&odyssey, &ben);
    let stale = store.read(&model.query(), ReadOptions::default()).await?;
    let lend_to_ben = lend(model.fold(stale.events()), &odyssey, &ben)
        .expect("the stale read says the copy is free");
    let carl = b("carl");
    show(&store, "lend", &odyssey, &carl, lend).await?;
    let condition = stale.append_condition()?;
    let err = store
        .append(lend_to_ben, Some(condition))
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
                let outcome = execute(&store, &book, &reader, lend).await;
                (reader, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (reader, outcome) = task.await.expect("task");
        match outcome {
            Ok(_) => winners.push(reader),
            Err(DecideError::Store(e)) => return Err(e),
            Err(_) => {}
        }
    }
    let loans = store
        .read(
            &Query::from(
                QueryItem::typed(["BookCopyLentToReader"])
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
