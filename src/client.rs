//! `netecho client HOST:PORT` (or `HOST PORT`): stdin to the server, the
//! echo to stdout, every byte checked.
//!
//! Unlike the textbook stop-and-wait client (read a line, write it, read the
//! echo), it reads stdin and the socket at the same time, on two threads, so
//! it neither loses the tail of a batch input nor sleeps on stdin while the
//! server has gone away. Each chunk of stdin is queued ([`verify`]) before
//! it is written, and each byte of the echo is compared with the byte sent
//! at that offset before it goes to stdout: stdout only ever shows bytes
//! that came back as they were sent. The first difference stops the run
//! (`mismatch at byte N`); a server that holds more than [`verify::WINDOW`]
//! bytes makes the client wait before sending more, and one that keeps
//! outstanding bytes for `--timeout` ends the run. On stdin EOF the client
//! half-closes (`shutdown(SHUT_WR)`) and keeps reading until the server's
//! FIN; it then checks that every byte sent came back. A server that never
//! closes gets [`DEFAULT_LINGER`] (`--linger`) after the input ended and
//! every byte came back; the client then closes with a warning, so a
//! script never hangs on it. In a terminal the
//! same design gives the classic feel: the terminal hands over a line at a
//! time and its echo is printed at once. With `--tls` the same contract runs
//! over rustls ([`tls`]); with `--no-verify` it is a plain pipe to any
//! server.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net;
use crate::net::tls::Connector;
use crate::sys::stop;

mod linger;
mod opt;
mod tls;
mod verify;

use linger::{Linger, quiet};
pub(crate) use opt::ClientOpt;
use opt::{BUF_SIZE, POLL_SLICE};
use verify::{Outstanding, WINDOW, fault_error};

/// Runs the client; `Ok` means every byte sent came back unchanged.
pub(crate) fn run(opt: ClientOpt) -> Result<()> {
    let target = opt.target.target()?;
    let shown = target.to_string();
    let connector = Connector::from_opt(&opt.tls, &shown, false)?;
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let addrs = net::resolve_target(&target, opt.target.family())?;
    let stream = net::connect_any(&shown, &addrs, opt.connect_timeout)?;
    // Our writes are whatever stdin gave us; no reason to hold them back.
    let _ = stream.set_nodelay(true);
    if let Some(connector) = connector {
        return tls::run(&opt, &shown, stream, &connector);
    }
    let writer = stream
        .try_clone()
        .map_err(Error::io("duplicating the socket"))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            out: Outstanding::default(),
            stdin_done: false,
            stdin_error: None,
            finished: false,
            since: Instant::now(),
            linger: Linger::new(opt.linger),
            writing: false,
        }),
        room: Condvar::new(),
        sent: AtomicU64::new(0),
        verify: !opt.no_verify,
    });
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || pump_stdin(writer, &shared))
            .map_err(Error::io("starting the stdin thread"))?;
    }
    let result = copy_echo(stream, &shared, opt.timeout);
    // Whatever ended the run, the stdin thread must not wait for room.
    shared.lock().finished = true;
    shared.room.notify_all();
    result
}

/// What the two threads share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when echoes free room in the window, or the run ends.
    room: Condvar,
    /// Bytes written to the socket.
    sent: AtomicU64,
    /// Compare the echo (not `--no-verify`).
    verify: bool,
}

struct State {
    /// Bytes queued for sending whose echo has not come back.
    out: Outstanding,
    /// stdin reached its end and everything was written.
    stdin_done: bool,
    /// Reading stdin failed: the run cannot be complete.
    stdin_error: Option<io::Error>,
    /// The reading side has decided: the stdin thread stops.
    finished: bool,
    /// Since when the oldest outstanding byte has had no echo: the last
    /// echo, or the moment bytes were queued into an empty window.
    since: Instant,
    /// How long a server that owes nothing has left to close.
    linger: Linger,
    /// The stdin thread is inside a write whose bytes `sent` may not
    /// count yet, though the server may have echoed them already.
    writing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means the other thread panicked, which it cannot
        // (no unwrap in it); the state is still consistent byte counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes written, once the write in progress (if any) has
    /// returned and been counted: what the reader reports when the server
    /// reset or closed. Without the wait, a write the server already
    /// echoed could be missing from the count ("4096 of the 4096 bytes
    /// sent" when 10,000 were). A write to a closed or reset socket
    /// returns at once; [`SETTLE`] bounds the wait for one that does not.
    fn sent_settled(&self) -> u64 {
        let st = self.lock();
        let _st = self
            .room
            .wait_timeout_while(st, SETTLE, |st| st.writing)
            .map(|(st, _)| st)
            .unwrap_or_else(|p| p.into_inner().0);
        self.sent.load(Ordering::SeqCst)
    }

    /// The stdin thread's write returned and is counted.
    fn wrote(&self) {
        self.lock().writing = false;
        self.room.notify_all();
    }
}

/// Longest wait for a write in progress to return before the count of
/// bytes sent is reported ([`Shared::sent_settled`]).
const SETTLE: Duration = Duration::from_secs(1);

/// Copies stdin to the socket, queueing each chunk for the check first
/// (so an echo is never seen before its bytes are queued) and waiting while
/// the window is full; on EOF marks the input done and half-closes so the
/// server sees our FIN after the last byte.
fn pump_stdin(mut sock: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Ctrl-C: no more input; the reader reports the interruption.
            Err(e) if e.kind() == io::ErrorKind::Interrupted && stop::requested() => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.lock().stdin_error = Some(e);
                let _ = sock.shutdown(Shutdown::Write);
                return;
            }
        };
        if shared.verify {
            let mut st = shared.lock();
            while !st.finished && st.out.len() > 0 && st.out.len() + n > WINDOW {
                st = shared.room.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.finished {
                return;
            }
            if st.out.len() == 0 {
                st.since = Instant::now();
            }
            st.out.push(&buf[..n]);
            st.writing = true;
        } else {
            shared.lock().writing = true;
        }
        // A failed write means the server is gone; the reading side
        // reports it with the counts.
        let mut off = 0;
        while off < n {
            match sock.write(&buf[off..n]) {
                Ok(0) => break,
                Ok(w) => {
                    off += w;
                    shared.sent.fetch_add(w as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        shared.wrote();
        if off < n {
            return;
        }
    }
    {
        let mut st = shared.lock();
        st.stdin_done = true;
        st.linger.input_ended(Instant::now());
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// Copies the checked echo to stdout until the server's FIN, then judges
/// the run.
fn copy_echo(mut sock: TcpStream, shared: &Shared, timeout: Duration) -> Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut out = io::stdout().lock();
    // Bytes received in all (--no-verify's count).
    let mut received: u64 = 0;
    let _ = sock.set_read_timeout(Some(timeout.min(POLL_SLICE)));
    let echoed = |received: u64| {
        if shared.verify {
            shared.lock().out.echoed()
        } else {
            received
        }
    };
    loop {
        // Checked before every read, not only when reads go quiet: a server
        // that keeps echoing must not make Ctrl-C wait.
        if stop::requested() {
            return Err(Error::Interrupted {
                received: echoed(received),
                sent: shared.sent.load(Ordering::SeqCst),
            });
        }
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                let st = shared.lock();
                let sent = shared.sent.load(Ordering::SeqCst);
                match quiet(shared.verify, &st.out, st.since, &st.linger, timeout, sent) {
                    Some(end) => return end,
                    None => continue,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                // The writer's write in progress is counted first; should
                // it not return in time, every byte echoed was sent.
                let received = echoed(received);
                return Err(Error::Reset {
                    received,
                    sent: shared.sent_settled().max(received),
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    what: "reading from the server",
                    source,
                });
            }
        };
        received += n as u64;
        let (good, fault) = {
            let mut st = shared.lock();
            st.linger.byte_came(Instant::now());
            if shared.verify {
                let checked = st.out.check(&buf[..n]);
                st.since = Instant::now();
                drop(st);
                shared.room.notify_all();
                checked
            } else {
                (n, None)
            }
        };
        match out.write_all(&buf[..good]).and_then(|()| out.flush()) {
            Ok(()) => {}
            // Whoever reads our output has had enough (`| head`): not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(source) => {
                return Err(Error::Io {
                    what: "writing to stdout",
                    source,
                });
            }
        }
        if let Some(fault) = fault {
            return Err(fault_error(fault));
        }
    }
    let sent = shared.sent_settled();
    let mut st = shared.lock();
    if let Some(source) = st.stdin_error.take() {
        return Err(Error::Io {
            what: "reading stdin",
            source,
        });
    }
    if !shared.verify {
        return Ok(());
    }
    if st.out.len() > 0 {
        Err(Error::Premature {
            received: st.out.echoed(),
            sent,
        })
    } else if !st.stdin_done {
        Err(Error::ClosedBeforeEnd { sent })
    } else {
        Ok(())
    }
}
