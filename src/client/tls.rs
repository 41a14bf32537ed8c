//! `netecho client --tls`: the same contract as the plain client (stdin to
//! the server, the echo to stdout, every byte checked and back) over one
//! rustls connection.
//!
//! A TLS connection is one state machine for both directions, so it cannot
//! be split over two threads as the plain socket is. One thread owns the
//! connection and the socket in a mio loop; a second thread only reads
//! stdin and hands chunks over a small channel (so a fast stdin cannot
//! outrun the server) and wakes the loop. A chunk is taken only once the
//! previous one's records are all on the socket, so at most one chunk sits
//! in rustls, and none while [`WINDOW`] bytes await their echo. At the
//! end of stdin the loop sends close_notify, then
//! half-closes (`shutdown(SHUT_WR)`) and reads on until the server's
//! close_notify or FIN, exactly as the plain client does.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;

use super::linger::{Linger, quiet};
use super::opt::{BUF_SIZE, ClientOpt, POLL_SLICE};
use super::verify::{Outstanding, WINDOW, fault_error};
use crate::error::{Error, Result};
use crate::net::tls::{Connector, describe};
use crate::sys::stop;

/// The socket's token in the loop.
const SOCKET: Token = Token(0);
/// The stdin thread's token: a chunk (or the end) is waiting.
const STDIN: Token = Token(1);
/// Chunks of stdin queued for the loop: enough to keep the socket busy
/// while the next one is read, few enough to bound memory.
const QUEUED_CHUNKS: usize = 2;

/// What the stdin thread hands over.
enum Input {
    Data(Vec<u8>),
    /// stdin is at its end: everything has been handed over.
    End,
    /// Reading stdin failed: the run is incomplete.
    Failed(io::Error),
}

/// Runs the TLS client on a connected socket; `Ok` means every byte sent
/// came back unchanged.
pub(crate) fn run(
    opt: &ClientOpt,
    shown: &str,
    mut stream: std::net::TcpStream,
    connector: &Connector,
) -> Result<()> {
    let (mut conn, took) = connector.handshake(&mut stream, opt.connect_timeout)?;
    // No limit on rustls' record buffer: the loop itself holds at most one
    // stdin chunk in it, and a limit would make it take chunks in pieces.
    conn.set_buffer_limit(None);
    tracing::debug!(
        "TLS with {}: {} in {:.3} ms",
        shown,
        describe(&conn),
        took.as_secs_f64() * 1e3
    );
    stream
        .set_nonblocking(true)
        .map_err(Error::io("making the socket non-blocking"))?;
    let mut sock = TcpStream::from_std(stream);
    let poll = Poll::new().map_err(Error::io("creating an epoll instance"))?;
    poll.registry()
        .register(&mut sock, SOCKET, Interest::READABLE | Interest::WRITABLE)
        .map_err(Error::io("registering the socket with epoll"))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), STDIN).map_err(Error::io("creating the stdin waker"))?,
    );
    let (tx, rx) = mpsc::sync_channel(QUEUED_CHUNKS);
    // The loop keeps a handle too: were the stdin thread's the last, its
    // exit right after the final wake would close the eventfd, and epoll
    // would drop that wake-up before the loop saw it.
    let keep_waker = Arc::clone(&waker);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || pump_stdin(&tx, &waker))
        .map_err(Error::io("starting the stdin thread"))?;
    Pump {
        poll,
        sock,
        conn,
        input: rx,
        sent: 0,
        received: 0,
        out: Outstanding::default(),
        verify: !opt.no_verify,
        timeout: opt.timeout,
        since: Instant::now(),
        linger: Linger::new(opt.linger),
        input_done: false,
        input_ok: false,
        stdin_error: None,
        closing: false,
        write_closed: false,
        reset: false,
        buf: vec![0; BUF_SIZE],
        _waker: keep_waker,
    }
    .run()
}

/// Reads stdin to its end in chunks, handing each to the loop.
fn pump_stdin(tx: &SyncSender<Input>, waker: &Waker) {
    let mut stdin = io::stdin().lock();
    loop {
        let mut buf = vec![0u8; BUF_SIZE];
        let item = match stdin.read(&mut buf) {
            Ok(0) => Input::End,
            Ok(n) => {
                buf.truncate(n);
                Input::Data(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::Failed(e),
        };
        let last = !matches!(item, Input::Data(_));
        // A closed channel means the loop has finished (the server went
        // away): nothing more to hand over.
        if tx.send(item).is_err() {
            return;
        }
        let _ = waker.wake();
        if last {
            return;
        }
    }
}

/// The loop's state: one TLS connection, both directions.
struct Pump {
    poll: Poll,
    sock: TcpStream,
    conn: ClientConnection,
    input: Receiver<Input>,
    /// Plaintext bytes handed to rustls (all of them reach the socket
    /// before close_notify).
    sent: u64,
    /// Plaintext bytes received (all of them; with verification, those
    /// checked are `out.echoed()`).
    received: u64,
    /// Plaintext handed to rustls whose echo has not come back.
    out: Outstanding,
    /// Compare the echo (not `--no-verify`).
    verify: bool,
    /// `--timeout`: longest wait for an echo of outstanding bytes.
    timeout: Duration,
    /// Since when the oldest outstanding byte has had no echo.
    since: Instant,
    /// How long a server that owes nothing has left to close.
    linger: Linger,
    /// No more input will come.
    input_done: bool,
    /// stdin ended normally (not with a read error).
    input_ok: bool,
    /// Reading stdin failed: the run's error.
    stdin_error: Option<io::Error>,
    /// close_notify is queued; the half-close follows once it is written.
    closing: bool,
    /// `shutdown(SHUT_WR)` is done.
    write_closed: bool,
    /// A write met the server's reset. The kernel reports a reset once, so
    /// the read that follows finds only the end: this says which end it was.
    reset: bool,
    buf: Vec<u8>,
    /// Held for the eventfd's sake (see `run`), never used.
    _waker: Arc<Waker>,
}

/// What one pass over the socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing more for now (WouldBlock).
    Idle,
    /// The server's close_notify or FIN: the echo is over.
    End,
    /// stdout's reader went away.
    StdoutClosed,
}

impl Pump {
    fn run(mut self) -> Result<()> {
        let mut events = Events::with_capacity(8);
        loop {
            // Alternate flushing and taking input until the socket is full
            // or stdin has nothing waiting.
            let blocked = loop {
                let blocked = self.flush()?;
                if blocked || !self.take_input() {
                    break blocked;
                }
            };
            match self.read()? {
                Seen::Idle => {}
                Seen::End => return self.verdict(),
                // Whoever reads our output has had enough (`| head`).
                Seen::StdoutClosed => return Ok(()),
            }
            // Reading may have queued records of our own (alerts, key
            // updates): write them before sleeping.
            if !blocked && self.conn.wants_write() {
                continue;
            }
            match self
                .poll
                .poll(&mut events, Some(self.timeout.min(POLL_SLICE)))
            {
                Ok(()) => {
                    if stop::requested() {
                        return Err(Error::Interrupted {
                            received: self.echoed(),
                            sent: self.sent,
                        });
                    }
                    let (out, since, linger) = (&self.out, self.since, &self.linger);
                    if let Some(end) =
                        quiet(self.verify, out, since, linger, self.timeout, self.sent)
                    {
                        return end;
                    }
                }
                // A signal: look again (Ctrl-C is seen on the next pass).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if stop::requested() {
                        return Err(Error::Interrupted {
                            received: self.echoed(),
                            sent: self.sent,
                        });
                    }
                }
                Err(source) => {
                    return Err(Error::Io {
                        what: "waiting for the socket",
                        source,
                    });
                }
            }
        }
    }

    /// Hands the next stdin chunk to rustls if the last one's records are
    /// all on the socket; at the end of stdin queues close_notify. True if
    /// it took something from the stdin thread.
    fn take_input(&mut self) -> bool {
        if self.input_done || self.conn.wants_write() {
            return false;
        }
        // The window is full: the next echo makes room.
        if self.verify && self.out.len() > 0 && self.out.len() + BUF_SIZE > WINDOW {
            return false;
        }
        match self.input.try_recv() {
            Ok(Input::Data(chunk)) => {
                // The buffer limit is off (see `run`), so rustls takes the
                // whole chunk; it is written out before the next is taken.
                match self.conn.writer().write_all(&chunk) {
                    Ok(()) => {
                        if self.verify {
                            if self.out.len() == 0 {
                                self.since = Instant::now();
                            }
                            self.out.push(&chunk);
                        }
                        self.sent += chunk.len() as u64;
                    }
                    // Only a closed connection refuses plaintext; reading
                    // then reports how the run ended.
                    Err(_) => self.end_input(false),
                }
            }
            Ok(Input::End) => self.end_input(true),
            Ok(Input::Failed(e)) => {
                self.stdin_error = Some(e);
                self.end_input(false);
            }
            Err(TryRecvError::Disconnected) => self.end_input(false),
            Err(TryRecvError::Empty) => return false,
        }
        true
    }

    fn end_input(&mut self, ok: bool) {
        self.input_done = true;
        self.input_ok = ok;
        if ok {
            self.linger.input_ended(Instant::now());
        }
        self.conn.send_close_notify();
        self.closing = true;
    }

    /// Writes queued records until the socket is full (then `true`); after
    /// close_notify has gone out, half-closes.
    fn flush(&mut self) -> Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                // The send buffer is full: a writable event resumes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The server is gone; reading tells how (reset, or FIN).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    self.reset |= e.kind() == io::ErrorKind::ConnectionReset;
                    return Ok(true);
                }
                Err(source) => {
                    return Err(Error::Io {
                        what: "writing to the server",
                        source,
                    });
                }
            }
        }
        if self.closing && !self.write_closed {
            self.write_closed = true;
            let _ = self.sock.shutdown(Shutdown::Write);
        }
        Ok(false)
    }

    /// Reads what the socket has, decrypts it and copies the plaintext to
    /// stdout.
    fn read(&mut self) -> Result<Seen> {
        loop {
            let eof = match self.conn.read_tls(&mut self.sock) {
                Ok(0) => true,
                Ok(_) => false,
                // Drained: the next readable event brings more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Seen::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::Reset {
                        received: self.echoed(),
                        sent: self.sent,
                    });
                }
                Err(source) => {
                    return Err(Error::Io {
                        what: "reading from the server",
                        source,
                    });
                }
            };
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the server why (the alert rustls queued), then stop.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(Error::TlsClient(format!(
                    "TLS error from {} after {} of {} bytes: {e}",
                    self.sock
                        .peer_addr()
                        .map_or_else(|_| "the server".to_string(), |a| a.to_string()),
                    self.echoed(),
                    self.sent
                )));
            }
            let seen = self.drain_plaintext()?;
            if self.reset && (eof || seen == Seen::End) {
                // The end a write already found reset.
                return Err(Error::Reset {
                    received: self.echoed(),
                    sent: self.sent,
                });
            }
            match seen {
                Seen::Idle => {}
                done => return Ok(done),
            }
            if eof {
                // A FIN without close_notify: the end all the same (the
                // byte count still says whether anything is missing).
                return Ok(Seen::End);
            }
        }
    }

    /// Copies the decrypted echo to stdout.
    fn drain_plaintext(&mut self) -> Result<Seen> {
        let mut out = io::stdout().lock();
        loop {
            let n = match self.conn.reader().read(&mut self.buf) {
                // close_notify: the server has sent everything.
                Ok(0) => return Ok(Seen::End),
                Ok(n) => n,
                // No more plaintext until more records come.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Seen::Idle),
                // The TCP stream ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Seen::End),
                Err(source) => {
                    return Err(Error::Io {
                        what: "reading from the server",
                        source,
                    });
                }
            };
            self.received += n as u64;
            self.linger.byte_came(Instant::now());
            let (good, fault) = if self.verify {
                self.since = Instant::now();
                self.out.check(&self.buf[..n])
            } else {
                (n, None)
            };
            match out.write_all(&self.buf[..good]).and_then(|()| out.flush()) {
                Ok(()) => {}
                // Whoever reads our output has had enough (`| head`).
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Seen::StdoutClosed),
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
    }

    /// Bytes of echo received intact (all received with `--no-verify`).
    fn echoed(&self) -> u64 {
        if self.verify {
            self.out.echoed()
        } else {
            self.received
        }
    }

    /// The plain client's judgement: every byte sent came back, no more
    /// (with `--no-verify`: stdin was read to its end).
    fn verdict(&mut self) -> Result<()> {
        let done = self.input_done && self.input_ok;
        if let Some(source) = self.stdin_error.take() {
            return Err(Error::Io {
                what: "reading stdin",
                source,
            });
        }
        if !self.verify {
            return Ok(());
        }
        if self.out.len() > 0 {
            Err(Error::Premature {
                received: self.out.echoed(),
                sent: self.sent,
            })
        } else if !done {
            Err(Error::ClosedBeforeEnd { sent: self.sent })
        } else {
            Ok(())
        }
    }
}
