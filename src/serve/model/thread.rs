//! `thread`: one acceptor thread, and a new thread per client. Any number of
//! clients (up to `--max-conns`) are served at once; each costs a thread
//! spawn, a small stack and one echo buffer.

use std::net::TcpListener;

use tracing::warn;

use crate::error::{Error, Result};
use crate::serve::admission::Permit;
use crate::serve::blocking::accept;
use crate::serve::blocking::echo;
use crate::serve::contract::BUF_SIZE;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;

/// Stack of a connection thread: the echo loop needs little, and a small
/// stack keeps thousands of threads cheap in address space.
const CONN_STACK: usize = 128 * 1024;

/// Accepts on a dedicated thread and serves each client on its own thread
/// until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let listeners: &'static [TcpListener] = listeners.leak();
    std::thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            while let accept::Next::Conn(conn, peer, tls) = accept::next(listeners, ctx) {
                let permit = Permit::admitted(ctx, &peer);
                let spawned = std::thread::Builder::new()
                    .name("conn".into())
                    .stack_size(CONN_STACK)
                    .spawn(move || {
                        let mut buf = vec![0u8; BUF_SIZE];
                        echo::serve(conn, peer, permit, tls, ctx, &mut buf);
                    });
                if let Err(e) = spawned {
                    // The closure (the connection and its permit in it)
                    // was dropped: the client sees a close, the slot is back.
                    warn!(%peer, "cannot start a thread for a client: {e}");
                }
            }
        })
        .map_err(Error::io("starting the acceptor thread"))?;
    supervise::until_stopped(listeners, ctx);
    Ok(())
}
