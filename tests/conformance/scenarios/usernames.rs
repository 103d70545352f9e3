//! Unique username: claimed at registration, released when the account closes, moved by a change.

use dcbstore::{Event, Projection, QueryItem, decide};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use super::given;
use crate::common::{Backend, Store, backends, store_on};

fn username_tag(name: &str) -> String {
    format!("username:{name}")
}

fn registered(name: &str) -> Event {
    Event::new("AccountRegistered", json!({"username": name})).with_tags([username_tag(name)])
}

fn closed(name: &str) -> Event {
    Event::new("AccountClosed", json!({"username": name})).with_tags([username_tag(name)])
}

fn changed(old: &str, new: &str) -> Event {
    Event::new("UsernameChanged", json!({"old": old, "new": new}))
        .with_tags([username_tag(old), username_tag(new)])
}

fn username_claimed(name: &str) -> Projection<bool> {
    let owned = name.to_string();
    Projection::new(
        QueryItem::tagged([username_tag(name)]),
        false,
        move |claimed, e| {
            *claimed = match e.event_type.as_str() {
                "AccountRegistered" => true,
                "AccountClosed" => false,
                "UsernameChanged" => e.payload["new"] == json!(owned),
                _ => *claimed,
            }
        },
    )
}

async fn register(store: &Store, name: &str) -> Result<(), String> {
    decide(store, &username_claimed(name), |claimed| {
        if claimed {
            Err(format!("username {name} is claimed"))
        } else {
            Ok(vec![registered(name)])
        }
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[case::free(vec![], Ok(()))]
#[case::claimed(vec![registered("ada")], Err("username ada is claimed"))]
#[case::released_on_closure(vec![registered("ada"), closed("ada")], Ok(()))]
#[case::released_by_change(vec![registered("ada"), changed("ada", "lovelace")], Ok(()))]
#[case::claimed_by_change(vec![registered("bob"), changed("bob", "ada")], Err("username ada is claimed"))]
#[tokio::test]
async fn unique_username(
    backend: Backend,
    #[case] history: Vec<Event>,
    #[case] expected: Result<(), &str>,
) {
    let store = store_on(backend).await;
    given(&store, history).await;
    let outcome = register(&store, "ada").await;
    assert_eq!(outcome, expected.map_err(String::from));
}
