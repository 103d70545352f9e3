//! The feed ([`EventStore::feed`]) on both backends: pages in feed order, checkpoints that resume
//! exactly where the consumer stopped, and the refusals.

use std::time::{Duration, Instant};

use dcbstore::{
    ArgumentProblem, Checkpoint, Error, EventStore, FeedPage, InvalidInput, Query, QueryItem,
};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, Store, argument_problem, backends, event, store_on};

/// The feed page from `after`, asked again until it holds `want` events: on PostgreSQL the feed
/// waits for every transaction of the cluster that began before an event to end (other tests
/// run beside this one), so a fresh event may take a moment to be delivered.
async fn page_of(
    store: &Store,
    query: &Query,
    after: Option<Checkpoint>,
    limit: usize,
    want: usize,
) -> FeedPage {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = store.feed(query, after, limit).await.unwrap();
        if page.events.len() >= want || Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[apply(backends)]
#[tokio::test]
async fn pages_follow_the_log_and_resume_from_their_checkpoints(backend: Backend) {
    let store = store_on(backend).await;
    for n in 0..5 {
        let tag = if n % 2 == 0 { "t:even" } else { "t:odd" };
        store
            .append([event("Counted", &[tag], json!({"n": n}))], None)
            .await
            .unwrap();
    }
    let even = Query::from(QueryItem::tagged(["t:even"]));

    let first = page_of(&store, &even, None, 2, 2).await;
    let ns: Vec<_> = first
        .events
        .iter()
        .map(|e| e.event.payload["n"].clone())
        .collect();
    assert_eq!(ns, [json!(0), json!(2)]);
    assert_eq!(
        first.next, first.events[1].checkpoint,
        "a full page ends at its last event"
    );
    // The checkpoint travels as text, e.g. stored beside a read model.
    let stored = first.next.to_string();
    let resumed: Checkpoint = stored.parse().unwrap();

    let second = page_of(&store, &even, Some(resumed), 2, 1).await;
    let ns: Vec<_> = second
        .events
        .iter()
        .map(|e| e.event.payload["n"].clone())
        .collect();
    assert_eq!(ns, [json!(4)]);
    let third = store.feed(&even, Some(second.next), 2).await.unwrap();
    assert!(third.events.is_empty());
    assert!(third.next >= second.next, "a checkpoint never moves back");

    store
        .append([event("Counted", &["t:even"], json!({"n": 5}))], None)
        .await
        .unwrap();
    let fourth = page_of(&store, &even, Some(third.next), 10, 1).await;
    assert_eq!(fourth.events.len(), 1);
    assert_eq!(fourth.events[0].event.payload["n"], json!(5));

    // The whole log, in one page: every event once, positions rising.
    let all = page_of(&store, &Query::all(), None, 100, 6).await;
    let positions: Vec<u64> = all.events.iter().map(|e| e.event.position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
    assert!(
        all.events
            .windows(2)
            .all(|w| w[0].checkpoint < w[1].checkpoint)
    );
}

#[apply(backends)]
#[tokio::test]
async fn bad_feed_requests_are_refused(backend: Backend) {
    let store = store_on(backend).await;
    let err = store.feed(&Query::all(), None, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput(InvalidInput::Argument(ArgumentProblem::ZeroFeedLimit))
        ),
        "{err}"
    );
    let foreign: Checkpoint = match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => "mem:3".parse().unwrap(),
        Backend::Memory => "pg:700:3".parse().unwrap(),
    };
    let err = store
        .feed(&Query::all(), Some(foreign), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            argument_problem(&err),
            Some(ArgumentProblem::ForeignCheckpoint { .. })
        ),
        "{err}"
    );
    let empty_item = Query::from(QueryItem::new());
    let err = store.feed(&empty_item, None, 10).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}
