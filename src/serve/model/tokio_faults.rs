//! A faulted plain-TCP connection in the `tokio` model, served as a task of
//! the worker's runtime like any other connection, not on a thread of its
//! own: the connection core ([`Conn`]) keeps the bytes, the order and the
//! deadlines, the fault shaper ([`Shaper`]) decides what of the kept echo
//! may go now, when the next may, and how the connection ends, and the
//! task waits between them on tokio's readiness and one tokio timer at the
//! earliest of their times. The decisions are the ones every other model
//! applies ([`faulted`], the blocking loop); only the waiting is tokio's.
//!
//! Latency is held from the bytes' arrival, the kernel's receive time
//! ([`faulted::recv_at`]). A faulted TLS connection still goes to a thread
//! of its own ([`faulted::spawn`]).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use netecho_core::fault::EndAfter;
use netecho_core::fault::tcp::{ReadGate, Shaper, Verdict};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant as TokioInstant, sleep_until, timeout};

use crate::serve::admission::Permit;
use crate::serve::blocking::faulted::{self, Faulted, LINGER_AFTER_CLOSE};
use crate::serve::contract::pending::Pending;
use crate::serve::contract::{BUF_SIZE, Conn, Copied, End, Next};
use crate::serve::ctx::Ctx;
use crate::serve::service::faults;

/// How far ahead the timer is set when neither the core nor a fault has a
/// time: never, in practice.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// Echoes on `stream` with the faults of `f` until the core or a fault
/// ends it. The `--max-conns` slot (`permit`) is given back before the
/// client can see the end (our FIN or reset), as in every model.
/// Steps a faulted connection takes before it lets the worker's other
/// connections run, as the plain paths do after their read budget.
const STEPS_PER_YIELD: u32 = 16;

pub(super) async fn serve(stream: &TcpStream, f: Faulted, ctx: &Ctx, permit: &mut Permit) -> End {
    faulted::stamp_arrivals(stream);
    let fd = stream.as_raw_fd();
    let timeouts = ctx.timeouts();
    let start = Instant::now();
    let mut core = Conn::new(start, Pending::new());
    let mut shaper = Shaper::new(start, f.effects, f.seed);
    let mut buf = vec![0u8; BUF_SIZE];
    // When the socket was last found empty: nothing read later arrived
    // before it.
    let mut empty_at = start;
    // try_read and try_write take no part in tokio's co-operative budget:
    // without a yield every few steps, a client that keeps sending would
    // keep this task running and starve the worker's other connections.
    let mut steps: u32 = 0;
    loop {
        steps = steps.wrapping_add(1);
        if steps.is_multiple_of(STEPS_PER_YIELD) {
            tokio::task::yield_now().await;
        }
        faults::count(ctx.stats, f.peer, &shaper.applied());
        let now = Instant::now();
        let read = match core.next() {
            Next::Close(end) => return end,
            Next::ShutWrite => {
                // The slot comes back before the client can see our FIN.
                permit.release();
                core.on_shut(SockRef::from(stream).shutdown(Shutdown::Write));
                continue;
            }
            Next::Io { read, .. } => read,
        };
        let mut wake = core.deadline(&timeouts).map(|(at, _)| at);
        let mut soonest = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        let (mut readable, mut writable) = (false, false);
        match shaper.verdict(now, core.store().len()) {
            Verdict::End(EndAfter::Reset) => {
                faults::count(ctx.stats, f.peer, &shaper.applied());
                permit.release();
                // The echo reaches the client before the reset throws away
                // what is unsent.
                let until = Instant::now() + faulted::RESET_AWAITS_ACK;
                while !faulted::all_acked(stream.as_fd()) && Instant::now() < until {
                    tokio::time::sleep(faulted::RESET_ACK_POLL).await;
                }
                // SO_LINGER 0: the close sends RST, not FIN.
                let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
                return End::Reset;
            }
            Verdict::End(EndAfter::Close) => {
                faults::count(ctx.stats, f.peer, &shaper.applied());
                permit.release();
                let r = SockRef::from(stream).shutdown(Shutdown::Write);
                drain(stream, &mut buf).await;
                return match r {
                    Ok(()) => End::Fin,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => End::Fin,
                    Err(e) => End::from_io(&e),
                };
            }
            // Neither read nor write: the core's deadline ends it.
            Verdict::End(EndAfter::Stall) | Verdict::Idle => {}
            Verdict::Wait(at) => soonest(at),
            Verdict::Send(n) => match stream.try_write(&core.store().as_slice()[..n]) {
                Ok(w) => {
                    let now = Instant::now();
                    core.on_sent(now, w);
                    shaper.on_sent(now, w);
                    ctx.stats.bytes.add(w as u64);
                    continue;
                }
                // The send buffer is full: wait until it drains (or the
                // core's stall deadline).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable = true,
                Err(e) => {
                    core.on_error(&e);
                    continue;
                }
            },
        }
        if read > 0 {
            match shaper.read_gate(now) {
                ReadGate::Open => {
                    let want = read.min(buf.len());
                    let got = stream.try_io(Interest::READABLE, || {
                        faulted::recv_at(fd, &mut buf[..want], empty_at).map_err(io::Error::from)
                    });
                    match got {
                        // The client's FIN: what is kept still goes out.
                        Ok((0, _)) => {
                            core.on_fin();
                            continue;
                        }
                        Ok((n, arrived)) => {
                            for at in shaper.on_read(arrived, &mut buf[..n]) {
                                tracing::debug!(peer = %f.peer, byte = at, "corrupted");
                            }
                            core.on_read(Instant::now(), Pending::piece(&buf[..n]), 0);
                            continue;
                        }
                        // Nothing to read yet.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            empty_at = now;
                            readable = true;
                        }
                        Err(e) => {
                            core.on_error(&e);
                            continue;
                        }
                    }
                }
                ReadGate::At(at) => soonest(at),
                ReadGate::Shut => {}
            }
        }
        let until = TokioInstant::from_std(wake.unwrap_or(now + FAR));
        tokio::select! {
            r = stream.readable(), if readable => {
                if let Err(e) = r {
                    core.on_error(&e);
                }
            }
            r = stream.writable(), if writable => {
                if let Err(e) = r {
                    core.on_error(&e);
                }
            }
            () = sleep_until(until) => {
                core.on_timer(Instant::now(), &timeouts);
            }
        }
    }
}

/// Reads and drops what the client still sends after our FIN, until its
/// own FIN, an error, or [`LINGER_AFTER_CLOSE`], so that our close finds an
/// empty receive queue (a close with unread bytes would be a reset).
async fn drain(stream: &TcpStream, buf: &mut [u8]) {
    let _ = timeout(LINGER_AFTER_CLOSE, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}
