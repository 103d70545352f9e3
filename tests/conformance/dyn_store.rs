//! The object-safe form: a store chosen at run time behind `Arc<dyn DynEventStore>` or
//! `Box<dyn DynEventStore>` behaves as the store itself, and generic code takes it.

use std::sync::Arc;

use dcbstore::{
    AppendCondition, DynEventStore, EventStore, Projection, Query, QueryItem, ReadOptions, decide,
};
use futures::TryStreamExt;
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, backends, event, store_on};

/// Claims `name` unless it is taken; generic over the store, as library code would be.
async fn claim(store: &impl EventStore, name: &str) -> dcbstore::Result<bool> {
    let query = Query::from(QueryItem::tagged([format!("username:{name}")]));
    let read = store.read(&query, ReadOptions::default()).await?;
    if !read.is_empty() {
        return Ok(false);
    }
    let claimed = event("Claimed", &[&format!("username:{name}")], json!({}));
    match store
        .append([claimed], Some(read.append_condition()?))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_append_condition_failed() => Ok(false),
        Err(e) => Err(e),
    }
}

#[apply(backends)]
#[tokio::test]
async fn a_trait_object_is_an_event_store(backend: Backend) {
    // The backend behind a trait object, as an application would pick it from configuration
    // (every conformance case holds its store so: `common::Store`).
    let store: Arc<dyn DynEventStore> = store_on(backend).await;
    assert!(claim(&store, "ada").await.unwrap());
    assert!(!claim(&store, "ada").await.unwrap());
    let stale = AppendCondition::new(Query::from(QueryItem::tagged(["username:ada"])), None);
    let err = store
        .append(
            [event("Claimed", &["username:ada"], json!({}))],
            Some(stale),
        )
        .await
        .unwrap_err();
    assert!(err.is_append_condition_failed(), "{err}");

    let boxed: Box<dyn DynEventStore> = Box::new(store.clone());
    assert!(claim(&boxed, "grace").await.unwrap());
    let all: Vec<_> = boxed
        .read_stream(&Query::all(), ReadOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(boxed.head().await.unwrap(), Some(all[1].position));

    // The command loop takes it as it is.
    let claimed = Projection::new(QueryItem::tagged(["username:alan"]), false, |c, _| {
        *c = true
    });
    let decided = decide(&store, &claimed, |taken| {
        Ok::<_, std::convert::Infallible>(if taken {
            vec![]
        } else {
            vec![event("Claimed", &["username:alan"], json!({}))]
        })
    })
    .await;
    assert!(decided.unwrap().is_some(), "alan was free");
}
