//! `tokio`: PLACEHOLDER while the real model is written; serves with `thread`.

use std::net::TcpListener;

use super::Ctx;
use crate::error::Result;

/// Serves until a signal stops the server.
pub fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    super::thread::run(listeners, ctx)
}
