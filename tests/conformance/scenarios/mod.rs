//! The DCB specification's examples as executable given/when/then scenarios, written with
//! decision models, typed events and the command loop, on both backends.

mod aggregate;
mod command_loop;
mod courses;
mod idempotency;
mod invoices;
mod opt_in;
mod usernames;

use dcbstore::{Event, EventStore, SequencedEvent};

use crate::common::{Store, StoreExt};

/// Appends the "given" events.
async fn given(store: &Store, events: impl IntoIterator<Item = Event>) {
    let events: Vec<Event> = events.into_iter().collect();
    if !events.is_empty() {
        store.append(events, None).await.expect("given events");
    }
}

/// The events appended since `before` events were in the log.
async fn appended_since(store: &Store, before: usize) -> Vec<SequencedEvent> {
    store.all_events().await.split_off(before)
}
