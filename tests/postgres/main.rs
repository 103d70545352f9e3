//! The PostgreSQL suite: what only PostgreSQL has — its schema and migrations, transactions of
//! the caller, deterministic interleavings of open transactions, faults on the connection,
//! group commit, `LISTEN/NOTIFY`, TLS — each module on a fresh schema per test.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod faults;
mod feed;
mod group_commit;
mod jsonb_differential;
mod plans;
mod projections;
mod replica;
mod settled;
mod store;
mod subscriptions;
#[cfg(feature = "rustls")]
mod tls;
mod visibility;
