//! Subscriptions ([`EventStore::subscribe`]) on both backends: catch up, follow, resume from a
//! checkpoint, and refuse bad input as their first and last item.

use std::time::Duration;

use dcbstore::{
    ArgumentProblem, Checkpoint, Error, EventStore, FeedEvent, InvalidInput, Query, QueryItem,
    SubscribeOptions, Subscription,
};
use futures::StreamExt;
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::common::{Backend, backends, event, store_on};

/// The next `want` events of `live`; panics on a failure or after 20 s (on PostgreSQL, other
/// tests' transactions may hold the feed back for a moment).
async fn next_events(live: &mut Subscription, want: usize) -> Vec<FeedEvent> {
    let mut events = Vec::new();
    while events.len() < want {
        let item = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("the events within 20 s");
        events.push(item.expect("the subscription goes on").expect("no failure"));
    }
    events
}

fn ns(events: &[FeedEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| e.event.payload["n"].clone())
        .collect()
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_follows_and_resumes_after_its_checkpoint(
    backend: Backend,
    #[values(1, 100)] page_size: usize,
) {
    let store = store_on(backend).await;
    for n in 0..3 {
        let tag = if n == 1 { "t:other" } else { "t:mine" };
        store
            .append([event("Counted", &[tag], json!({"n": n}))], None)
            .await
            .unwrap();
    }
    let mine = Query::from(QueryItem::tagged(["t:mine"]));
    let options = SubscribeOptions::default().page_size(page_size);
    let mut live = store.subscribe(&mine, None, options.clone());
    let caught_up = next_events(&mut live, 2).await;
    assert_eq!(
        ns(&caught_up),
        [json!(0), json!(2)],
        "only the query's events"
    );

    let writer = store.clone();
    tokio::spawn(async move {
        for n in 3..6 {
            writer
                .append([event("Counted", &["t:mine"], json!({"n": n}))], None)
                .await
                .unwrap();
        }
    });
    let followed = next_events(&mut live, 3).await;
    assert_eq!(
        ns(&followed),
        [json!(3), json!(4), json!(5)],
        "then what is appended, in order"
    );
    drop(live);

    // Resumed from a stored checkpoint: exactly what came after it.
    let stored = followed[0].checkpoint.to_string();
    let resumed: Checkpoint = stored.parse().unwrap();
    let mut again = store.subscribe(&mine, Some(resumed), options);
    assert_eq!(ns(&next_events(&mut again, 2).await), [json!(4), json!(5)]);
    let nothing_more = tokio::time::timeout(Duration::from_millis(200), again.next()).await;
    assert!(nothing_more.is_err(), "nothing twice: {nothing_more:?}");
}

#[apply(backends)]
#[tokio::test]
async fn bad_input_is_the_first_and_last_item(backend: Backend) {
    let store = store_on(backend).await;
    let foreign: Checkpoint = match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => "mem:1",
        Backend::Memory => "pg:1:1",
    }
    .parse()
    .unwrap();
    let mut live = store.subscribe(&Query::all(), Some(foreign), SubscribeOptions::default());
    let first = live.next().await.expect("an item");
    assert!(
        matches!(
            first,
            Err(Error::InvalidInput(InvalidInput::Argument(
                ArgumentProblem::ForeignCheckpoint { .. }
            )))
        ),
        "{first:?}"
    );
    assert!(
        live.next().await.is_none(),
        "a failure that cannot pass ends the stream"
    );

    let mut empty_item = store.subscribe(
        &Query::from(QueryItem::tagged(Vec::<String>::new())),
        None,
        SubscribeOptions::default(),
    );
    let first = empty_item.next().await.expect("an item");
    assert!(first.is_err_and(|e| e.is_invalid_input()));
}

/// A subscriber can tell when it has delivered a given append: 200 times, append (every third
/// one an event its query does not match), then pull `until_delivered`. A matching append has
/// been yielded by then, exactly once and in order; a non-matching one is passed over while
/// the stream is polled, although it yields nothing.
#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_can_tell_it_has_delivered_an_append(backend: Backend) {
    let store = store_on(backend).await;
    let mine = Query::from(QueryItem::tagged(["t:mine"]));
    let mut live = store.subscribe(&mine, None, SubscribeOptions::default());
    assert_eq!(live.delivered(), None);
    let mut delivered = Vec::new();
    for n in 0..200u64 {
        let tag = if n % 3 == 2 { "t:other" } else { "t:mine" };
        let written = store
            .append([event("Counted", &[tag], json!({"n": n}))], None)
            .await
            .unwrap();
        let until = live.until_delivered(&written).collect::<Vec<_>>();
        let Ok(items) = tokio::time::timeout(Duration::from_secs(20), until).await else {
            panic!(
                "append {n} not delivered in 20 s: at {:?}",
                live.delivered()
            );
        };
        delivered.extend(items.into_iter().map(|item| item.expect("no failure")));
        assert!(live.has_delivered(&written));
        let expected: Vec<u64> = (0..=n).filter(|n| n % 3 != 2).collect();
        let got: Vec<u64> = ns(&delivered).iter().map(|n| n.as_u64().unwrap()).collect();
        assert_eq!(got, expected, "after append {n}");
        assert!(live.delivered() >= Some(written.checkpoint()));
    }
}
