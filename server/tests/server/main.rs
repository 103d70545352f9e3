//! The server, driven through the protocol by a client generated from its proto, on both
//! backends (PostgreSQL when `DATABASE_URL` is set). One binary, a module per area.

mod common;
mod prefix;
mod rpc;
mod subscribe;
