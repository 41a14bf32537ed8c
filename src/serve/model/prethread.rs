//! `prethread`: `--workers` threads started up front, each polling the
//! listeners, accepting and serving one client at a time. No thread is
//! created per connection, so a connection costs only its accept; at most
//! `--workers` clients are served at once, the rest wait in the backlog.

use std::net::TcpListener;

use crate::error::{Error, Result};
use crate::serve::echo::{self, BUF_SIZE};
use crate::serve::{Ctx, accept, supervise};

/// Starts the worker threads and serves until a signal stops the server.
pub(crate) fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let listeners: &'static [TcpListener] = listeners.leak();
    for i in 0..ctx.workers {
        std::thread::Builder::new()
            .name(format!("prethread-{i}"))
            .spawn(move || {
                let mut buf = vec![0u8; BUF_SIZE];
                while let accept::Next::Conn(conn, peer) = accept::next(listeners, ctx) {
                    echo::serve(conn, peer, ctx, &mut buf);
                }
            })
            .map_err(Error::io("starting a worker thread"))?;
    }
    supervise::until_stopped(listeners, ctx);
    Ok(())
}
