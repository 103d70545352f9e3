//! Invoice numbers: gapless, the next one decided from the last invoice only (read backwards,
//! limit 1), guarded by the whole invoice boundary.

use std::sync::Arc;

use dcbstore::{AppendCondition, Event, EventStore, Query, QueryItem, ReadOptions};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use super::given;
use crate::common::{Backend, Store, backends, store_on};

async fn create_invoice(store: &Store) -> u64 {
    let invoices = Query::from(QueryItem::typed(["InvoiceCreated"]));
    loop {
        let last = store
            .read(&invoices, ReadOptions::default().backwards().limit(1))
            .await
            .unwrap();
        let next = last
            .events()
            .first()
            .map_or(1, |e| e.payload["number"].as_u64().unwrap() + 1);
        let invoice = Event::new("InvoiceCreated", json!({"number": next}));
        match store
            .append(
                [invoice],
                Some(AppendCondition::new(invoices.clone(), last.last_position())),
            )
            .await
        {
            Ok(_) => return next,
            Err(e) if e.is_append_condition_failed() => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_numbers_are_gapless(backend: Backend) {
    let store = store_on(backend).await;
    assert_eq!(create_invoice(&store).await, 1);
    assert_eq!(create_invoice(&store).await, 2);
    given(&store, [Event::new("SomethingElse", json!({}))]).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { create_invoice(&store).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (3..=14).collect::<Vec<u64>>());
}
