//! Opt-in token: a sign-up is confirmed with the token that was sent, once.

use dcbstore::{Event, Projection, QueryItem, decide};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use super::given;
use crate::common::{Backend, Store, backends, store_on};

fn initiated(email: &str, token: &str) -> Event {
    Event::new("SignUpInitiated", json!({"email": email, "token": token}))
        .with_tags([format!("email:{email}"), format!("otp:{token}")])
}

async fn confirm(store: &Store, email: &str, token: &str) -> Result<(), String> {
    #[derive(Clone, Default)]
    struct Pending {
        email: Option<String>,
        confirmed: bool,
    }
    let pending = Projection::new(
        QueryItem::typed(["SignUpInitiated", "SignUpConfirmed"]).tags([format!("otp:{token}")]),
        Pending::default(),
        |p, e| match e.event_type.as_str() {
            "SignUpInitiated" => p.email = e.payload["email"].as_str().map(String::from),
            _ => p.confirmed = true,
        },
    );
    decide(store, &pending, |p| {
        if p.email.as_deref() != Some(email) {
            return Err("no pending sign-up for this email and token".to_string());
        }
        if p.confirmed {
            return Err("the sign-up is confirmed already".to_string());
        }
        Ok(vec![
            Event::new("SignUpConfirmed", json!({"email": email, "token": token}))
                .with_tags([format!("email:{email}"), format!("otp:{token}")]),
        ])
    })
    .await
    .map(|_| ())
    .map_err(|e| e.rejection().cloned().expect("a rejection"))
}

#[apply(backends)]
#[tokio::test]
async fn opt_in_token(backend: Backend) {
    let store = store_on(backend).await;
    let no_pending = Err("no pending sign-up for this email and token".to_string());
    assert_eq!(confirm(&store, "a@x.org", "111").await, no_pending);
    given(&store, [initiated("a@x.org", "111")]).await;
    assert_eq!(confirm(&store, "a@x.org", "222").await, no_pending);
    assert_eq!(confirm(&store, "b@x.org", "111").await, no_pending);
    assert_eq!(confirm(&store, "a@x.org", "111").await, Ok(()));
    assert_eq!(
        confirm(&store, "a@x.org", "111").await,
        Err("the sign-up is confirmed already".to_string())
    );
}
