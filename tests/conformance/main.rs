//! The conformance suite: every case that runs on both backends, PostgreSQL and in memory, must
//! give the same answer on each; with the `postgres` feature off (`cargo test
//! --no-default-features --test conformance`) the memory cases run with no database.

#[path = "../common/mod.rs"]
mod common;

mod append;
mod cache;
mod condition;
mod dyn_store;
mod feed;
mod input;
mod projections;
mod query;
mod races;
mod scenarios;
mod subscribe;
mod visibility;
