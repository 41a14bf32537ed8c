//! `iterative`: one client at a time, the others wait in the listen backlog.
//! The simplest server there is, and the baseline every other model beats on
//! concurrency. One worker thread accepts and serves; the main thread only
//! waits for signals, so a drain can end a connection that never finishes.

use std::net::TcpListener;

use crate::error::{Error, Result};
use crate::serve::admission::Permit;
use crate::serve::blocking::accept;
use crate::serve::blocking::echo;
use crate::serve::contract::BUF_SIZE;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::supervise;

/// Serves clients one after another until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let listeners: &'static [TcpListener] = listeners.leak();
    std::thread::Builder::new()
        .name("iterative".into())
        .spawn(move || {
            let mut buf = vec![0u8; BUF_SIZE];
            let admit = |peer: &std::net::SocketAddr| ctx.admit_alone(peer);
            while let accept::Next::Conn(conn, peer, tls) =
                accept::next_unless(listeners, ctx, &|| false, &admit)
            {
                echo::serve(conn, peer, Permit::admitted(ctx, &peer), tls, ctx, &mut buf);
            }
        })
        .map_err(Error::io("starting the server thread"))?;
    supervise::until_stopped(listeners, ctx);
    Ok(())
}
