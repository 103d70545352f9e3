//! A decision's guard covers what its read could not see, raced: writers of unguarded events on
//! a shared tag leave gaps in commit order (on PostgreSQL an event appended in a transaction
//! held open while the next one commits), while deciders decide; replaying the log afterwards,
//! no decision missed an event of its boundary at or below the position it read (the race is
//! `common::race`). The deterministic interleavings are in the PostgreSQL suite
//! (`tests/postgres/visibility.rs`).

use rstest::rstest;
use rstest_reuse::apply;

use crate::common::race::{self, Decider, Race};
use crate::common::{Backend, backends};

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deciders_never_miss_an_event_of_their_boundary(backend: Backend) {
    race::run(Race::on(backend).await, Decider::ReadThenAppend).await;
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_decide_calls_never_miss_an_event_of_their_boundary(backend: Backend) {
    race::run(Race::on(backend).await, Decider::Decide).await;
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_cached_decisions_never_miss_an_event_of_their_boundary(backend: Backend) {
    race::run(Race::on(backend).await, Decider::Cached).await;
}
