//! The conformance suite: every semantic case runs against both backends, PostgreSQL and
//! in memory, and must give the same answer.

#[path = "../common/mod.rs"]
mod common;

mod append;
mod condition;
mod dyn_store;
mod feed;
mod input;
mod query;
mod subscribe;

/// The backends every case runs on.
pub const BACKENDS: [common::Backend; 2] = [common::Backend::Postgres, common::Backend::Memory];
