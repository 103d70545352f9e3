//! What only the PostgreSQL backend has: appends inside the caller's transaction, the lock that
//! makes a concurrent guarded append wait and then fail, migrations, connections and schema
//! names.

use std::time::Duration;

use dcbstore::tokio_postgres::IsolationLevel;
use dcbstore::{
    AppendCondition, ConfigProblem, Error, EventStore, InvalidInput, PgEventStore, Query,
    QueryItem, ReadOptions,
};
use rstest::rstest;
use serde_json::json;

use crate::common::{self, event};

fn course(id: &str) -> Query {
    Query::from(QueryItem::tagged([format!("course:{id}")]))
}

#[tokio::test]
async fn append_in_commits_with_the_callers_transaction() {
    let store = common::store().await;
    let mut client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{}\".course_count (n int NOT NULL); INSERT INTO \"{}\".course_count VALUES (0)",
            store.schema(),
            store.schema()
        ))
        .await
        .unwrap();

    // Rolled back: neither the event nor the read model change.
    let tx = client.transaction().await.unwrap();
    store
        .append_in(
            &tx,
            [event("CourseDefined", &["course:c1"], json!({}))],
            None,
        )
        .await
        .unwrap();
    let inside = store
        .read_in(&*tx, &Query::all(), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(inside.len(), 1, "the transaction sees its own append");
    tx.rollback().await.unwrap();
    assert_eq!(common::row_count(&store).await, 0);

    // Committed: both change together.
    let tx = client.transaction().await.unwrap();
    store
        .append_in(
            &tx,
            [event("CourseDefined", &["course:c1"], json!({}))],
            Some(AppendCondition::new(course("c1"), None)),
        )
        .await
        .unwrap();
    tx.execute(
        &format!("UPDATE \"{}\".course_count SET n = n + 1", store.schema()),
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(common::row_count(&store).await, 1);
    let n: i32 = client
        .query_one(
            &format!("SELECT n FROM \"{}\".course_count", store.schema()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn append_in_refuses_repeatable_read() {
    let store = common::store().await;
    let mut client = store.pool().get().await.unwrap();
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let err = store
        .append_in(&tx, [event("A", &[], json!({}))], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedIsolation { ref isolation } if isolation == "repeatable read"),
        "{err}"
    );
    tx.rollback().await.unwrap();

    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await
        .unwrap();
    store
        .append_in(&tx, [event("A", &[], json!({}))], None)
        .await
        .expect("SERIALIZABLE is accepted");
    tx.commit().await.unwrap();
    assert_eq!(common::row_count(&store).await, 1);
}

/// The guard's lock in action: a guarded append on a boundary waits for an open transaction that
/// appended to the same boundary, then sees its event and fails; an append on another boundary
/// does not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guarded_append_waits_for_the_boundary_and_then_fails() {
    let store = common::store_with_pool(4).await;
    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    store
        .append_in(
            &tx,
            [event("Claimed", &["slot:1"], json!({}))],
            Some(AppendCondition::new(
                Query::from(QueryItem::tagged(["slot:1"])),
                None,
            )),
        )
        .await
        .unwrap();

    let contender = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    [event("Claimed", &["slot:1"], json!({"by": "contender"}))],
                    Some(AppendCondition::new(
                        Query::from(QueryItem::tagged(["slot:1"])),
                        None,
                    )),
                )
                .await
        })
    };
    let other_boundary = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(
            [event("Claimed", &["slot:2"], json!({}))],
            Some(AppendCondition::new(
                Query::from(QueryItem::tagged(["slot:2"])),
                None,
            )),
        ),
    )
    .await
    .expect("a disjoint boundary does not wait")
    .unwrap();
    assert_eq!(other_boundary.positions().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!contender.is_finished(), "the contender waits for the lock");

    tx.commit().await.unwrap();
    let err = contender.await.unwrap().unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
    let claims = store
        .read(
            &Query::from(QueryItem::tagged(["slot:1"])),
            ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let store = common::store().await;
    store
        .append([event("A", &[], json!({}))], None)
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(store.migrate(), store.migrate(), store.migrate());
    a.and(b).and(c).expect("migrations");
    assert_eq!(common::row_count(&store).await, 1, "migrate keeps the data");
}

#[tokio::test]
async fn connect_reports_unreachable_servers() {
    let err = dcbstore::PgEventStore::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err}");
    let err = dcbstore::PgEventStore::connect("not a url ::: at all")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver's error as the source"
    );
}

#[tokio::test]
async fn connect_and_default_schema() {
    let store = dcbstore::PgEventStore::connect(common::database_url())
        .await
        .unwrap();
    assert_eq!(store.schema(), dcbstore::pg::DEFAULT_SCHEMA);
    let renamed = common::reconfigured(&store, |b| b.schema(&common::test_schema()));
    renamed.migrate().await.unwrap();
    assert!(renamed.head().await.is_ok());
}

#[rstest]
#[case::empty("")]
#[case::upper_case("Events")]
#[case::quote("a\"b")]
#[case::injection("x; DROP TABLE events; --")]
#[case::reserved_prefix("pg_temp")]
#[case::too_long("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl")]
#[tokio::test]
async fn invalid_schema_names_are_rejected(#[case] name: &str) {
    let err = PgEventStore::builder()
        .schema(name)
        .from_pool(common::pool(1))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(InvalidInput::Config(ConfigProblem::SchemaName(ref n))) if n == name),
        "{err}"
    );
}

/// Cancel safety on a pool of one connection: an append dropped while it waits for a lock (the
/// caller's own timeout) neither holds up the next call on the pool nor commits later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_frees_the_pool_and_never_commits() {
    let store = common::store_with_pool(1).await;
    let holder = common::store_with_pool_in(2, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let holding = client.transaction().await.unwrap();
    holder
        .append_in(&holding, [event("Held", &["slot:1"], json!({}))], None)
        .await
        .unwrap();

    let abandoned = event("Claimed", &["slot:1"], json!({"abandoned": true}));
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        store.append(
            [abandoned.clone()],
            Some(AppendCondition::new(
                Query::from(QueryItem::tagged(["slot:1"])),
                None,
            )),
        ),
    )
    .await;
    assert!(waited.is_err(), "the append waits for the held lock");

    let next = tokio::time::timeout(
        Duration::from_secs(2),
        store.append([event("Other", &["slot:2"], json!({}))], None),
    )
    .await
    .expect("the pool's connection is free for the next call");
    next.unwrap();

    holding.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = common::all_events(&store).await;
    assert!(
        log.iter().all(|e| e.id != abandoned.id),
        "the abandoned append committed after all"
    );
    assert_eq!(log.len(), 2, "the held event and the next one");
}

/// A stream dropped half-way on a pool of one does not leave its connection draining rows for
/// the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_frees_the_pool() {
    use futures::StreamExt;

    let store = common::store_with_pool(1).await;
    let batch: Vec<_> = (0..1000)
        .map(|i| event("A", &[], json!({"i": i})))
        .collect();
    for _ in 0..5 {
        store
            .append(
                batch
                    .iter()
                    .map(|e| e.clone().with_id(uuid::Uuid::now_v7())),
                None,
            )
            .await
            .unwrap();
    }
    let mut stream = store.read_stream(&Query::all(), ReadOptions::default());
    for _ in 0..10 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        store.read(&Query::all(), ReadOptions::default().limit(1)),
    )
    .await
    .expect("the pool's connection is free for the next call")
    .unwrap();
    assert_eq!(read.len(), 1);
}

/// Every wait of an append is bounded: a boundary held by a transaction left open fails a guarded
/// append on it after the store's lock timeout, with a retryable error, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_for_a_held_boundary_no_longer_than_its_lock_timeout() {
    let store = common::store_with_pool(2).await;
    let store = common::reconfigured(&store, |b| b.lock_timeout(Duration::from_millis(200)));
    assert_eq!(store.lock_timeout(), Duration::from_millis(200));
    let holder = common::store_with_pool_in(1, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let idle = client.transaction().await.unwrap();
    holder
        .append_in(&idle, [event("Held", &["slot:1"], json!({}))], None)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let err = store
        .append(
            [event("Claimed", &["slot:1"], json!({}))],
            Some(AppendCondition::new(
                Query::from(QueryItem::tagged(["slot:1"])),
                None,
            )),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.sql_state(), Some("55P03"), "{err}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    idle.rollback().await.unwrap();
    assert_eq!(common::row_count(&store).await, 0);
}

/// `connect` bounds the wait for a free connection: with every connection of its pool checked
/// out, a call fails with a retryable pool timeout instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_store_waits_for_a_connection_no_longer_than_the_pool_timeout() {
    let store = dcbstore::PgEventStore::connect(common::database_url())
        .await
        .unwrap();
    let size = store.pool().status().max_size;
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(store.pool().get().await.unwrap());
    }
    let started = std::time::Instant::now();
    let err = store
        .read(&Query::all(), ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pool(_)) && err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < dcbstore::pg::DEFAULT_POOL_TIMEOUT + Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
}

/// A current schema costs `migrate()` one query and no lock: called while a transaction holds
/// the indexes (a reader in the middle of its work), it returns at once, where re-running the DDL
/// waited for the reader and made every later read and append queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_returns_at_once_when_the_schema_is_current() {
    let store = common::store_with_pool(2).await;
    store
        .append([event("A", &["t:1"], json!({"k": 1}))], None)
        .await
        .unwrap();
    let mut client = store.pool().get().await.unwrap();
    let reader = client.transaction().await.unwrap();
    let tagged = Query::from(QueryItem::tagged(["t:1"]));
    store
        .read_in(&*reader, &tagged, ReadOptions::default())
        .await
        .unwrap();

    tokio::time::timeout(Duration::from_secs(2), store.migrate())
        .await
        .expect("migrate waits for no one")
        .unwrap();
    reader.commit().await.unwrap();
}

/// A schema created before versions (no `schema_version`, no `tx_id` index, no `checkpoints`)
/// is brought up to date once.
#[tokio::test]
async fn migrate_upgrades_a_schema_that_predates_versions() {
    let store = common::store().await;
    let schema = store.schema().to_string();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE \"{schema}\".schema_version; DROP INDEX \"{schema}\".events_tx_id_position_idx; \
             DROP TABLE \"{schema}\".checkpoints"
        ))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (version, index, checkpoints): (i32, bool, bool) = {
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT max(version) FROM \"{schema}\".schema_version), \
                     to_regclass('\"{schema}\".events_tx_id_position_idx') IS NOT NULL, \
                     to_regclass('\"{schema}\".checkpoints') IS NOT NULL"
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((version, index, checkpoints), (3, true, true));
}

/// An append whose events bring more lock keys than one append may take locks buckets of keys
/// instead of the whole store: while it is uncommitted, a guard on one of its tags waits for it
/// (and then fails its condition), while unguarded appends and most guards elsewhere proceed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_append_holds_up_the_guards_on_its_keys_not_the_store() {
    let store = common::store_with_pool(2).await;
    let store = common::reconfigured(&store, |b| b.lock_timeout(Duration::from_millis(200)));
    let holder = common::store_with_pool_in(1, store.schema()).await;
    let mut client = holder.pool().get().await.unwrap();
    let open = client.transaction().await.unwrap();
    let tags: Vec<String> = (0..70).map(|i| format!("wide:{i}")).collect();
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    holder
        .append_in(&open, [event("Wide", &tag_refs, json!({}))], None)
        .await
        .unwrap();
    let guarded = |store: &dcbstore::PgEventStore, tag: &str| {
        let claim = event("Claimed", &[tag], json!({}));
        let query = Query::from(QueryItem::tagged([tag.to_string()]));
        let store = store.clone();
        async move {
            store
                .append([claim], Some(AppendCondition::new(query, None)))
                .await
        }
    };

    // Every one of its tags is covered, by its key or by its bucket.
    let impatient = common::reconfigured(&store, |b| b.lock_timeout(Duration::from_millis(20)));
    for tag in &tags {
        let err = guarded(&impatient, tag).await.unwrap_err();
        assert_eq!(err.sql_state(), Some("55P03"), "{tag}: {err}");
    }
    // Unguarded appends never wait for it; guards on other keys mostly do not.
    store
        .append([event("Elsewhere", &["other:x"], json!({}))], None)
        .await
        .unwrap();
    let mut free = 0;
    for i in 0..12 {
        match guarded(&store, &format!("free:{i}")).await {
            Ok(_) => free += 1,
            Err(e) => assert_eq!(e.sql_state(), Some("55P03"), "{e}"),
        }
    }
    assert!(
        free >= 8,
        "only {free} of 12 guards on other tags went ahead"
    );

    open.commit().await.unwrap();
    let err = guarded(&store, "wide:33").await.unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");
}

/// Behind a pooler in transaction mode a connection's prepared statements do not follow the
/// client: with preparation off, appends (alone and grouped, guarded or not) leave none on the
/// connection, and behave the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_without_prepared_statements_leave_none_on_the_connection() {
    for prepare in [true, false] {
        let store = common::store_with_pool(1).await;
        let store = common::reconfigured(&store, |b| b.prepared_statements(prepare));
        let claim = |tag: &str| {
            let store = store.clone();
            let query = Query::from(QueryItem::tagged([tag.to_string()]));
            let claimed = event("Claimed", &[tag], json!({}));
            async move {
                store
                    .append([claimed], Some(AppendCondition::new(query, None)))
                    .await
            }
        };
        let (a, b, c, d) = tokio::join!(
            claim("slot:a"),
            claim("slot:a"),
            store.append([event("Plain", &["p"], json!({}))], None),
            store.append([event("Plain", &["p"], json!({}))], None),
        );
        assert_eq!(
            u8::from(a.is_ok()) + u8::from(b.is_ok()),
            1,
            "one claim wins"
        );
        c.unwrap();
        d.unwrap();
        assert_eq!(common::row_count(&store).await, 3);
        let client = store.pool().get().await.unwrap();
        // A simple query: it prepares nothing itself.
        let rows = client
            .simple_query("SELECT count(*) FROM pg_prepared_statements")
            .await
            .unwrap();
        let kept: i64 = rows
            .iter()
            .find_map(|m| match m {
                dcbstore::tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(
            kept > 0,
            prepare,
            "{kept} prepared statements with prepare = {prepare}"
        );
    }
}

/// The builder sets the pool and the store in one place, and checks the schema name before it
/// opens anything.
#[tokio::test]
async fn the_builder_configures_pool_and_store() {
    let schema = common::test_schema();
    let store = dcbstore::PgEventStore::builder()
        .pool_size(3)
        .pool_timeout(Duration::from_millis(700))
        .schema(&schema)
        .max_batch_size(10)
        .lock_timeout(Duration::from_millis(300))
        .statement_timeout(Duration::from_secs(3))
        .max_group_size(4)
        .groups_in_flight(1)
        .prepared_statements(false)
        .connect(common::database_url())
        .await
        .unwrap();
    assert_eq!(store.pool().status().max_size, 3);
    assert_eq!(store.schema(), schema);
    assert_eq!(store.max_batch_size(), 10);
    assert_eq!(store.lock_timeout(), Duration::from_millis(300));
    assert_eq!(store.statement_timeout(), Duration::from_secs(3));
    assert_eq!((store.max_group_size(), store.groups_in_flight()), (4, 1));
    assert!(!store.prepared_statements());
    let store = common::emptied(store).await;
    store
        .append([event("Built", &["b"], json!({}))], None)
        .await
        .unwrap();
    assert_eq!(common::row_count(&store).await, 1);

    let err = dcbstore::PgEventStore::builder()
        .schema("Not A Schema")
        .connect(common::database_url())
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}
