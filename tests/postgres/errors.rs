//! What each failure says, provoked on a real server: whether retrying the same call can succeed
//! (`is_retryable`), its SQLSTATE, and a message that carries what the server or the driver
//! said.

use std::time::Duration;

use dcbstore::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use dcbstore::tokio_postgres::{self, NoTls};
use dcbstore::{
    AppendCondition, BatchProblem, Error, Event, EventStore, InvalidInput, PgEventStore, Query,
    QueryItem, ReadOptions,
};
use serde_json::json;

use crate::common::{self, event};

fn slot() -> Query {
    Query::from(QueryItem::tagged(["slot:1"]))
}

/// Each case: the error, whether it is retryable, its SQLSTATE, words its message must hold.
fn check(err: &Error, retryable: bool, state: Option<&str>, says: &[&str]) {
    assert_eq!(err.is_retryable(), retryable, "is_retryable of {err}");
    assert_eq!(err.sql_state(), state, "sql_state of {err}");
    let message = err.to_string();
    for words in says {
        assert!(
            message.contains(words),
            "{message:?} does not say {words:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_statement_timeouts_are_retryable_and_say_so() {
    let store = common::store_with_pool(4).await;
    // A transaction holding the slot's lock: an append_in on it, not committed.
    let mut holder = store.pool().get().await.unwrap();
    let holding = holder.transaction().await.unwrap();
    store
        .append_in(&holding, [event("Held", &["slot:1"], json!({}))], None)
        .await
        .unwrap();

    // The same guarded append, in a transaction with one timeout or the other set.
    let mut client = store.pool().get().await.unwrap();
    for (setting, state, says) in [
        ("lock_timeout", "55P03", "lock timeout"),
        ("statement_timeout", "57014", "statement timeout"),
    ] {
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&format!("SET LOCAL {setting} = '50ms'"))
            .await
            .unwrap();
        let err = store
            .append_in(
                &tx,
                [event("Claimed", &["slot:1"], json!({}))],
                Some(AppendCondition::new(slot(), None)),
            )
            .await
            .unwrap_err();
        check(
            &err,
            true,
            Some(state),
            &[says, &format!("SQLSTATE {state}")],
        );
    }
    holding.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connection_is_retryable_and_the_pool_replaces_it() {
    let store = common::store_with_pool(1).await;
    let client = store.pool().get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (admin, connection) = tokio_postgres::connect(common::database_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let err = store
        .read_in(&**client, &slot(), ReadOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err.sql_state(), None | Some("57P01")), "{err}");
    drop(client);

    // The same call again: the pool has replaced the dead connection.
    let read = store.read(&slot(), ReadOptions::default()).await.unwrap();
    assert!(read.is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_says_why() {
    let err = PgEventStore::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err}");
    check(&err, true, None, &["error connecting to server", "refused"]);
}

#[tokio::test]
async fn a_missing_database_is_not_retryable_and_says_so() {
    let url = format!(
        "{}_missing_database",
        common::database_url().trim_end_matches('/')
    );
    let err = PgEventStore::connect(&url).await.unwrap_err();
    check(&err, false, Some("3D000"), &["does not exist", "3D000"]);
}

#[tokio::test]
async fn a_pool_that_times_out_is_retryable() {
    let config: tokio_postgres::Config = common::database_url().parse().unwrap();
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(1)
        .timeouts(Timeouts {
            wait: Some(Duration::from_millis(50)),
            ..Timeouts::default()
        })
        .runtime(dcbstore::deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap();
    let store = PgEventStore::builder().from_pool(pool).unwrap();
    let _busy = store.pool().get().await.unwrap();
    let err = store
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap_err();
    check(&err, true, None, &["pool", "imeout"]);
}

#[tokio::test]
async fn failures_of_the_call_itself_are_not_retryable() {
    let store = common::store().await;
    let claim = event("Claimed", &["slot:1"], json!({}));
    store
        .append([claim.clone()], Some(AppendCondition::new(slot(), None)))
        .await
        .unwrap();

    let conflict = store
        .append(
            [event("Claimed", &["slot:1"], json!({}))],
            Some(AppendCondition::new(slot(), None)),
        )
        .await
        .unwrap_err();
    assert!(conflict.is_append_condition_failed());
    check(&conflict, false, None, &["append condition failed"]);

    let duplicate = store
        .append([claim, event("Other", &[], json!({}))], None)
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, Error::DuplicateEventId { .. }),
        "{duplicate}"
    );
    check(&duplicate, false, None, &["already stored"]);

    let invalid = store.append(Vec::<Event>::new(), None).await.unwrap_err();
    assert!(matches!(
        invalid,
        Error::InvalidInput(InvalidInput::Batch(BatchProblem::Empty))
    ));
    check(&invalid, false, None, &["at least one event"]);

    let unmigrated = common::reconfigured(&store, |b| b.schema("dcb_never_migrated"));
    let missing = unmigrated
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap_err();
    check(&missing, false, Some("42P01"), &["does not exist", "42P01"]);
}
