//! The zero-copy path: echo moved socket → pipe → socket with splice(2),
//! never copied into user space.
//!
//! # How it fits the connection core
//! The core ([`crate::serve::contract`]) does not care where kept bytes live. Here
//! they live in [`Kept`], the epoll model's [`Store`]: a [`Pending`] copy on
//! the buffer path, or, once the connection is switched, a per-connection
//! pipe of which the core only knows the byte count. Reading is
//! `splice(socket → pipe)`, sending is `splice(pipe → socket)`, and the core
//! decides as before: order (the pipe is a FIFO, and a connection switches
//! only while nothing is kept, so no byte overtakes another), backpressure
//! (the room is what the pipe has left: at its capacity the connection
//! stops reading), half-close, the idle and stall clocks, and the end.
//!
//! The uring model uses the same [`Kept`], [`Switch`] and [`drive`] for a
//! connection it moves to a pipe, with a multishot poll on its ring for
//! the readiness hints (`model/uring/spliced.rs`).
//!
//! # When it pays
//! A splice moves page references, so its cost hardly depends on the size;
//! a copy through the read buffer grows with it. Small messages stay on
//! the buffer path (one `read`, one `write`, no pipe); `--zero-copy auto`
//! switches a connection once a single read brings at least [`SWITCH_AT`]
//! bytes, and the connection keeps its pipe from then on (a connection that
//! moved that much once is a bulk transfer). `--zero-copy on` splices from
//! the first byte, `off` never.
//!
//! # The pipe's size, and so what a connection keeps
//! A pipe starts at the kernel's default (16 pages, 64 KiB). A connection
//! whose pipe fills while its socket holds more grows it to [`BIG_PIPE`]
//! (1 MiB), so a 1 MiB message costs one splice in and one out instead of
//! 16 + 16, within the process's [`Growth`] budget (a quarter of the user's
//! soft pipe page limit). The pipe's capacity is the bound on what a
//! spliced connection keeps: 64 KiB, or 1 MiB once grown.
//!
//! # Refused
//! A seccomp filter or a kernel without splice makes [`ZeroCopy::resolve`]
//! turn the mode off, with one log line; a connection whose pipe cannot be
//! made (out of descriptors) stays on the buffer path; a pipe that may not
//! grow (the budget is spent, or EPERM: the user is at its pipe page limit)
//! stays as it is. None of them loses a byte.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::ValueEnum;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{MsgFlags, recv};
use tracing::{info, warn};

use crate::serve::contract::pending::Pending;
use crate::serve::contract::{Conn, End, Next, Store};

/// `--zero-copy`: whether large transfers are spliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ZeroCopy {
    /// Splice a connection once a read brings 16 KiB or more; small
    /// messages keep the buffer path.
    #[default]
    Auto,
    /// Splice every connection from its first byte.
    On,
    /// Never splice: read and write through the worker's buffer.
    Off,
}

/// The smallest read that switches a connection to the pipe under
/// `--zero-copy auto`.
///
/// The crossover, measured with `scripts/zero-copy-crossover.sh
/// target/release/netecho 3` (epoll, `--workers 1` pinned to CPU 0, netecho
/// bench on CPU 1, 8 connections, server CPU per request of `--zero-copy
/// on` over `off`, the two side by side; 2026-12-01 on the shared 2-core
/// builder, load average 11–14, so each figure moves by ±0.1 run to run):
/// 4 KiB 1.05, 8 KiB 0.90, 16 KiB 0.84–0.94, 32 KiB 0.78, 64 KiB 0.52–0.98,
/// 256 KiB 0.66, 1 MiB 0.58. Splice starts to pay between 4 and 8 KiB; a
/// read of 16 KiB, where it pays in every run, switches.
pub(crate) const SWITCH_AT: usize = 16 * 1024;

/// Flags of every splice: move pages where the kernel can, never block.
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

impl ZeroCopy {
    /// The mode as it applies on this kernel: `Off` when splice is refused
    /// (said once, in one log line), else as asked.
    pub(crate) fn resolve(self) -> ZeroCopy {
        if self == ZeroCopy::Off {
            return self;
        }
        match probe() {
            Ok(()) => self,
            Err(reason) => {
                let mode = self.to_possible_value().map(|v| v.get_name().to_owned());
                let mode = mode.unwrap_or_default();
                if self == ZeroCopy::On {
                    warn!(%reason, "splice unavailable; --zero-copy {mode} uses the buffer path");
                } else {
                    info!(%reason, "splice unavailable; --zero-copy {mode} uses the buffer path");
                }
                ZeroCopy::Off
            }
        }
    }
}

/// Tries splice once, pipe to pipe: a seccomp filter or a kernel without
/// it refuses here rather than on a client's bytes.
pub(crate) fn probe() -> Result<(), String> {
    let a = Pipe::new().map_err(|e| format!("pipe2: {e}"))?;
    let b = Pipe::new().map_err(|e| format!("pipe2: {e}"))?;
    nix::unistd::write(&a.w, b"z").map_err(|e| format!("write to a pipe: {e}"))?;
    match splice(&a.r, None, &b.w, None, 1, FLAGS) {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!("splice moved {n} bytes of 1")),
        Err(e) => Err(format!("splice refused ({e})")),
    }
}

/// A connection's pipe: the bytes between the splice in and the splice out.
#[derive(Debug)]
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Its capacity (F_GETPIPE_SZ): the most a connection keeps.
    cap: usize,
    /// Pages it holds of the process's [`Growth`] budget (0 until grown),
    /// given back when it closes.
    lent: usize,
    /// The budget it grows from (the process's; a test's own in tests).
    growth: &'static Growth,
    /// How many more times a full pipe may look whether the socket holds
    /// more (then grow); 0 once it grew or was refused.
    probes: u8,
}

impl Pipe {
    /// A non-blocking pipe. Its size is the kernel's default (16 pages); it
    /// grows only through [`Pipe::grow`], within the process's budget.
    fn new() -> io::Result<Pipe> {
        Pipe::with_growth(Growth::process())
    }

    fn with_growth(growth: &'static Growth) -> io::Result<Pipe> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let cap = fcntl(&r, FcntlArg::F_GETPIPE_SZ)?;
        Ok(Pipe {
            r,
            w,
            cap: usize::try_from(cap).unwrap_or(4096).max(1),
            lent: 0,
            growth,
            probes: GROW_PROBES,
        })
    }

    /// The pipe is full: if the socket `sock` holds more bytes still (a
    /// message larger than the pipe, or a stream), grows the pipe. Looks at
    /// most [`GROW_PROBES`] times per connection (one `recv(MSG_PEEK)` of a
    /// byte each), so a connection whose messages just fit pays nothing
    /// after its first few.
    fn grow_if_more(&mut self, sock: BorrowedFd<'_>) -> bool {
        if self.probes == 0 {
            return false;
        }
        self.probes -= 1;
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(sock.as_raw_fd(), &mut [0u8; 1], flags) {
            Ok(1) => {
                self.probes = 0;
                self.grow()
            }
            // Nothing more (EAGAIN), the FIN (0) or an error the next
            // splice will see: no reason to grow.
            _ => false,
        }
    }

    /// Grows the pipe to [`Growth::size`] (F_SETPIPE_SZ) if the budget has
    /// the pages. Any refusal (the budget is spent, or the kernel says
    /// EPERM because the user is at its pipe page limit) leaves the pipe as
    /// it is: the connection goes on at the default size, nothing lost.
    /// True when it grew.
    fn grow(&mut self) -> bool {
        let g = self.growth;
        if g.size <= self.cap {
            return false;
        }
        let pages = (g.size - self.cap).div_ceil(g.page);
        if !g.take(pages) {
            return false;
        }
        let size = libc::c_int::try_from(g.size).unwrap_or(libc::c_int::MAX);
        match fcntl(&self.w, FcntlArg::F_SETPIPE_SZ(size)) {
            Ok(got) => {
                let got = usize::try_from(got).unwrap_or(self.cap).max(self.cap);
                let used = (got - self.cap).div_ceil(g.page).min(pages);
                g.give(pages - used);
                self.lent = used;
                self.cap = got;
                true
            }
            Err(e) => {
                g.give(pages);
                tracing::debug!("pipe not grown ({e}); it stays at {} bytes", self.cap);
                false
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.growth.give(self.lent);
    }
}

/// The pipe pages a process may add by growing its connections' pipes, in
/// total. Pipe pages count against a per-user limit
/// (`/proc/sys/fs/pipe-user-pages-soft`, 16,384 pages by default): once a
/// user is over it, the kernel gives every new pipe of that user one or two
/// pages, and refuses F_SETPIPE_SZ to an unprivileged one (EPERM). So the
/// server grows pipes into at most a quarter of that limit ([`GROW_SHARE`]):
/// with the default, 16 MiB, seventeen connections at 1 MiB at once (a
/// grown pipe takes 240 pages more than its default 16); the others keep
/// the default pipe. The limit counts every pipe of the user, default ones
/// too, so an unprivileged server with many spliced connections reaches it
/// up to a quarter sooner than it would without growth (root is exempt).
#[derive(Debug)]
pub(crate) struct Growth {
    /// The size a pipe grows to: [`BIG_PIPE`], or less where
    /// `/proc/sys/fs/pipe-max-size` is lower.
    size: usize,
    /// The page size the kernel accounts pipes in.
    page: usize,
    /// Pages the process may lend to grown pipes, all of them together.
    limit: usize,
    /// Pages lent now.
    lent: AtomicUsize,
}

/// The size a connection's pipe grows to once it fills the default one: a
/// 1 MiB message then takes one splice in and one out instead of sixteen
/// of each (and the splice out hands TCP the whole of it at once). It is
/// also, with the default `pipe-max-size`, the most an unprivileged user
/// may ask for.
pub(crate) const BIG_PIPE: usize = 1 << 20;

/// The share of the per-user pipe page limit the server grows pipes into:
/// one quarter, so that a server with many bulk connections leaves three
/// quarters to its own default pipes and to the user's other programs.
pub(crate) const GROW_SHARE: usize = 4;

/// How many times a connection whose pipe filled looks whether its socket
/// held more (see [`Pipe::grow_if_more`]).
const GROW_PROBES: u8 = 4;

/// `pipe-user-pages-soft` where it reads 0 (no limit) or cannot be read:
/// the kernel's default.
const DEFAULT_USER_PAGES: usize = 16 * 1024;

impl Growth {
    /// The process's budget, read from /proc once.
    fn process() -> &'static Growth {
        static G: OnceLock<Growth> = OnceLock::new();
        G.get_or_init(|| {
            let soft = read_proc_usize("/proc/sys/fs/pipe-user-pages-soft")
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_USER_PAGES);
            let max = read_proc_usize("/proc/sys/fs/pipe-max-size").unwrap_or(BIG_PIPE);
            let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .and_then(|p| usize::try_from(p).ok())
                .filter(|&p| p > 0)
                .unwrap_or(4096);
            Growth::new(BIG_PIPE.min(max), page, soft / GROW_SHARE)
        })
    }

    /// A budget of `limit` pages for pipes grown to `size`.
    pub(crate) const fn new(size: usize, page: usize, limit: usize) -> Growth {
        Growth {
            size,
            page,
            limit,
            lent: AtomicUsize::new(0),
        }
    }

    /// Takes `pages` if the budget has them.
    fn take(&self, pages: usize) -> bool {
        self.lent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lent| {
                lent.checked_add(pages).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Gives `pages` back.
    fn give(&self, pages: usize) {
        if pages > 0 {
            self.lent.fetch_sub(pages, Ordering::Relaxed);
        }
    }

    /// Pages lent now, for tests.
    #[cfg(test)]
    fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }
}

/// A number in a /proc file, if it reads as one.
fn read_proc_usize(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pipe and how many bytes the core keeps in it.
#[derive(Debug)]
struct Spliced {
    pipe: Pipe,
    len: usize,
}

/// What a read hands the core on the epoll model: bytes in the worker's
/// buffer, or a count of bytes the kernel moved into the pipe.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'a> {
    /// Read into the worker's buffer (the buffer path).
    Bytes(&'a [u8]),
    /// Spliced into the connection's pipe.
    Spliced(usize),
}

/// Where the epoll model keeps a connection's echo: a copy, or a pipe.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The buffer path's copy of what the kernel would not take. Always
    /// empty once the pipe is in use (a connection switches only while
    /// nothing is kept, and spliced bytes never pass through it).
    pending: Pending,
    /// The pipe, once the connection was switched; boxed so a connection
    /// on the buffer path costs one pointer more.
    spliced: Option<Box<Spliced>>,
    /// When to move to the pipe (`--zero-copy`, as resolved).
    switch: Switch,
}

/// The one rule of `--zero-copy` for when a connection moves to its pipe,
/// shared by every model that splices (epoll's [`Kept`], the uring
/// model's poll-driven path): at once under `on`, after a read of at least
/// [`SWITCH_AT`] under `auto`, never under `off`; and only while nothing
/// is kept, so that no byte read later overtakes one read earlier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switch {
    mode: ZeroCopy,
    /// A read was large enough (or the mode is `on`): switch as soon as
    /// nothing is kept.
    want: bool,
}

impl Switch {
    /// A new connection's rule: under `on` it wants the pipe from the start.
    pub(crate) fn new(mode: ZeroCopy) -> Switch {
        Switch {
            mode,
            want: mode == ZeroCopy::On,
        }
    }

    /// A buffer-path read brought `n` bytes: under `auto`, a large one asks
    /// for the pipe.
    pub(crate) fn after_read(&mut self, n: usize) {
        if self.mode == ZeroCopy::Auto && n >= SWITCH_AT {
            self.want = true;
        }
    }

    /// True while the connection wants the pipe and has not moved yet: a
    /// model stops taking new reads into buffers until it can move.
    pub(crate) fn wanted(&self) -> bool {
        self.want
    }

    /// Takes the wish if it can be granted now (`nothing_kept`): true
    /// means make the pipe now. Granted once; a pipe that then cannot be
    /// made leaves the connection on the buffer path for good.
    pub(crate) fn take(&mut self, nothing_kept: bool) -> bool {
        let now = self.want && nothing_kept;
        if now {
            self.want = false;
        }
        now
    }
}

impl Kept {
    /// Nothing kept; under `--zero-copy on` the pipe is made at once.
    pub(crate) fn new(mode: ZeroCopy) -> Kept {
        let mut k = Kept {
            pending: Pending::new(),
            spliced: None,
            switch: Switch::new(mode),
        };
        k.switch();
        k
    }

    /// The buffer path's kept bytes (empty on the pipe).
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.pending.as_slice()
    }

    /// True once the connection's bytes go through the pipe.
    pub(crate) fn spliced(&self) -> bool {
        self.spliced.is_some()
    }

    /// A buffer-path read brought `n` bytes: under `auto`, a large one asks
    /// for the pipe. Returns true when the connection now splices.
    pub(crate) fn after_read(&mut self, n: usize) -> bool {
        self.switch.after_read(n);
        self.switch()
    }

    /// Moves to the pipe if wanted and nothing is kept (so nothing could be
    /// overtaken). A pipe that cannot be made leaves the connection on the
    /// buffer path for good. Returns true when the connection splices.
    pub(crate) fn switch(&mut self) -> bool {
        if self.spliced.is_none() && self.switch.take(Store::is_empty(&self.pending)) {
            match Pipe::new() {
                Ok(pipe) => self.spliced = Some(Box::new(Spliced { pipe, len: 0 })),
                Err(e) => tracing::debug!("no pipe for zero copy ({e}); buffer path"),
            }
        }
        self.spliced.is_some()
    }
}

/// A TLS connection's `Kept` is made with [`ZeroCopy::Off`]: it never
/// splices (the bytes on the wire are ciphertext), so its copy is all of it.
impl crate::serve::contract::Copied for Kept {
    fn piece(bytes: &[u8]) -> Piece<'_> {
        Piece::Bytes(bytes)
    }

    fn as_slice(&self) -> &[u8] {
        self.pending.as_slice()
    }
}

impl Store for Kept {
    type Piece<'a> = Piece<'a>;

    fn len(&self) -> usize {
        self.pending.len() + self.spliced.as_ref().map_or(0, |s| s.len)
    }

    fn room(&self) -> usize {
        match &self.spliced {
            Some(s) => s.pipe.cap.saturating_sub(s.len),
            None => self.pending.room(),
        }
    }

    fn piece_len(piece: &Piece<'_>) -> usize {
        match *piece {
            Piece::Bytes(b) => b.len(),
            Piece::Spliced(n) => n,
        }
    }

    fn keep(&mut self, piece: Piece<'_>, skip: usize) -> usize {
        match piece {
            Piece::Bytes(b) => Store::keep(&mut self.pending, b, skip),
            Piece::Spliced(n) => {
                // Spliced bytes are in the pipe already: count them.
                if let Some(s) = self.spliced.as_mut() {
                    s.len += n.saturating_sub(skip);
                }
                n
            }
        }
    }

    /// The copy is older than anything in the pipe, so it goes first.
    fn consume(&mut self, n: usize) {
        let from_copy = n.min(self.pending.len());
        self.pending.consume(from_copy);
        if let Some(s) = self.spliced.as_mut() {
            s.len = s.len.saturating_sub(n - from_copy);
        }
    }
}

/// A connection's readiness hints, as the epoll model keeps them.
pub(crate) struct Hints<'a> {
    /// Set by a readable edge; cleared here when the socket is empty.
    pub(crate) readable: &'a mut bool,
    /// Set by a writable edge; cleared here when the send buffer is full.
    pub(crate) writable: &'a mut bool,
}

/// What a spliced connection needs after a turn (the epoll model's step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nothing to do until its next event.
    Wait,
    /// Its budget is used with work left: serve it again next round.
    Again,
    /// Close it.
    Close(End),
}

/// One turn of a spliced connection: performs what its core asks, with
/// splice instead of read and write, until the socket would block, the
/// budget of `budget` reads is used, or the connection is to close.
///
/// Unlike the buffer path, a short splice in never clears `readable`: the
/// pipe may have run out of slots (one per page fragment) before the
/// socket ran out of bytes. An EAGAIN while the pipe holds bytes may be
/// either, so reading waits until a send makes room, and only an EAGAIN on
/// an empty pipe clears the hint.
pub(crate) fn drive(
    core: &mut Conn<Kept>,
    sock: BorrowedFd<'_>,
    h: Hints<'_>,
    now: Instant,
    bytes: &mut u64,
    budget: usize,
) -> Turn {
    let mut pipe_full = false;
    for _ in 0..budget {
        let send = match core.next() {
            Next::Close(end) => return Turn::Close(end),
            // Our FIN: the close that follows sends it after the last
            // byte (contract::Next::ShutWrite says why it is no reset).
            Next::ShutWrite => {
                core.on_shut(Ok(()));
                continue;
            }
            Next::Io { send, .. } => send,
        };
        if send && *h.writable {
            let Some(s) = core.store().spliced.as_deref() else {
                // Only a spliced connection comes here.
                core.fail(End::Error(Errno::EINVAL as i32));
                continue;
            };
            match splice(s.pipe.r.as_fd(), None, sock, None, s.len, FLAGS) {
                // Bytes in the pipe, none taken: on_sent(0) ends it.
                Ok(0) => core.on_sent(now, 0),
                Ok(n) => {
                    core.on_sent(now, n);
                    *bytes += n as u64;
                    pipe_full = false;
                }
                // The send buffer is full: wait for a writable edge.
                Err(Errno::EAGAIN) => *h.writable = false,
                // A signal: try again.
                Err(Errno::EINTR) => {}
                Err(e) => {
                    core.on_error(&e.into());
                }
            }
            if core.end().is_some() {
                continue;
            }
        }
        let Next::Io { send, read } = core.next() else {
            continue;
        };
        if read == 0 || !*h.readable || pipe_full {
            // Could still send what it keeps: no edge would wake it.
            return if send && *h.writable {
                Turn::Again
            } else {
                Turn::Wait
            };
        }
        let Some(s) = core.store().spliced.as_deref() else {
            core.fail(End::Error(Errno::EINVAL as i32));
            continue;
        };
        let was_empty = s.len == 0;
        match splice(sock, None, s.pipe.w.as_fd(), None, read, FLAGS) {
            // The client's FIN: what is kept goes out first, then ours.
            Ok(0) => core.on_fin(),
            Ok(n) => {
                core.on_read(now, Piece::Spliced(n), 0);
                if let Some(s) = core.store_mut().spliced.as_deref_mut()
                    && s.len >= s.pipe.cap
                {
                    s.pipe.grow_if_more(sock);
                }
            }
            // An empty pipe: the socket is empty; wait for the next edge.
            Err(Errno::EAGAIN) if was_empty => *h.readable = false,
            // The pipe may be out of slots: read after the next send.
            Err(Errno::EAGAIN) => pipe_full = true,
            // A signal: try again.
            Err(Errno::EINTR) => {}
            Err(e) => {
                core.on_error(&e.into());
            }
        }
    }
    Turn::Again
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn splice_works_here() {
        // Every machine that runs the tests has splice; the fallback is
        // tested with seccomp in tests/it/zerocopy.rs.
        assert_eq!(probe(), Ok(()));
        assert_eq!(ZeroCopy::On.resolve(), ZeroCopy::On);
        assert_eq!(ZeroCopy::Off.resolve(), ZeroCopy::Off);
    }

    #[test]
    fn auto_switches_after_a_large_read_and_only_with_nothing_kept() {
        let mut k = Kept::new(ZeroCopy::Auto);
        assert!(!k.spliced());
        assert!(!k.after_read(SWITCH_AT - 1));
        Store::keep(&mut k, Piece::Bytes(&[1, 2, 3]), 0);
        // Large read while 3 bytes are kept: not yet.
        assert!(!k.after_read(SWITCH_AT));
        assert_eq!(Store::len(&k), 3);
        Store::consume(&mut k, 3);
        assert!(k.switch());
        assert_eq!(Store::room(&k), k.spliced.as_ref().unwrap().pipe.cap);
        let mut off = Kept::new(ZeroCopy::Off);
        assert!(!off.after_read(1 << 20));
        assert!(Kept::new(ZeroCopy::On).spliced());
    }

    #[test]
    fn the_pipe_is_the_cap() {
        let mut k = Kept::new(ZeroCopy::On);
        let cap = Store::room(&k);
        Store::keep(&mut k, Piece::Spliced(cap), 0);
        assert_eq!(Store::room(&k), 0);
        Store::consume(&mut k, 100);
        assert_eq!(Store::room(&k), 100);
        assert_eq!(Store::len(&k), cap - 100);
    }

    /// A connection spliced from the start over a pipe that grows from
    /// `growth`.
    fn spliced_over(growth: &'static Growth) -> Kept {
        let mut kept = Kept::new(ZeroCopy::Off);
        kept.spliced = Some(Box::new(Spliced {
            pipe: Pipe::with_growth(growth).unwrap(),
            len: 0,
        }));
        kept
    }

    /// A stream of `len` bytes from a client through [`drive`] over
    /// `kept`, then the client's half-close: returns what was sent, the
    /// echo, the bytes counted, and the largest capacity the pipe had.
    fn echo_through(kept: Kept, len: u32) -> (Vec<u8>, Vec<u8>, u64, usize) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let writer = {
            let data = data.clone();
            let mut c = client.try_clone().unwrap();
            std::thread::spawn(move || {
                c.write_all(&data).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            client.read_to_end(&mut back).unwrap();
            back
        });
        let mut core = Conn::new(Instant::now(), kept);
        let (mut readable, mut writable) = (true, true);
        let (mut bytes, mut most) = (0, 0);
        let end = loop {
            let turn = drive(
                &mut core,
                server.as_fd(),
                Hints {
                    readable: &mut readable,
                    writable: &mut writable,
                },
                Instant::now(),
                &mut bytes,
                16,
            );
            most = most.max(core.store().spliced.as_ref().map_or(0, |s| s.pipe.cap));
            match turn {
                Turn::Close(end) => break end,
                // No poller here: look again shortly, as an edge would.
                Turn::Wait | Turn::Again => {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    readable = true;
                    writable = true;
                }
            }
        };
        assert_eq!(end, End::Fin);
        // Our FIN is the close that follows (contract::Next::ShutWrite), as
        // the models close at once: without it the reader waits for ever.
        drop(core);
        drop(server);
        writer.join().unwrap();
        (data, reader.join().unwrap(), bytes, most)
    }

    /// A stream larger than the pipe grows it to [`BIG_PIPE`] (the kernel
    /// lets this test's user, or root, have 1 MiB pipes), echoes every
    /// byte, and gives the pages back when the connection ends.
    #[test]
    fn a_pipe_that_fills_with_more_waiting_grows_and_gives_its_pages_back() {
        static G: Growth = Growth::new(BIG_PIPE, 4096, 1024);
        let (data, back, bytes, most) = echo_through(spliced_over(&G), 8_000_000);
        assert!(back == data, "the echo differs from what was sent");
        assert_eq!(bytes, data.len() as u64);
        assert_eq!(most, BIG_PIPE, "the pipe did not grow");
        assert_eq!(G.lent(), 0, "pages still lent after the connection ended");
    }

    /// With the budget spent the pipe keeps its default size and the echo
    /// is whole: the fallback costs speed, never bytes.
    #[test]
    fn a_spent_budget_leaves_the_pipe_as_it_is_and_loses_nothing() {
        static G: Growth = Growth::new(BIG_PIPE, 4096, 0);
        let (data, back, bytes, most) = echo_through(spliced_over(&G), 3_000_000);
        assert!(back == data, "the echo differs from what was sent");
        assert_eq!(bytes, data.len() as u64);
        assert!(most < BIG_PIPE, "the pipe grew to {most} with no budget");
        assert_eq!(G.lent(), 0);
    }

    /// The budget bounds the pages of all grown pipes together: the second
    /// pipe is refused while the first holds its pages, and granted once
    /// they are back.
    #[test]
    fn the_budget_is_shared_and_given_back() {
        static G: Growth = Growth::new(BIG_PIPE, 4096, 300);
        let mut a = Pipe::with_growth(&G).unwrap();
        let mut b = Pipe::with_growth(&G).unwrap();
        assert!(a.grow(), "the first pipe did not grow");
        assert_eq!(a.cap, BIG_PIPE);
        assert_eq!(G.lent(), (BIG_PIPE - 65536) / 4096);
        assert!(!b.grow(), "two pipes grew within one pipe's budget");
        assert_eq!(b.cap, 65536);
        drop(a);
        assert_eq!(G.lent(), 0);
        assert!(b.grow(), "the pages given back were not lent again");
        drop(b);
        assert_eq!(G.lent(), 0);
    }

    /// The process's budget is a quarter of the user's soft pipe page
    /// limit, and its pipes grow at most to `pipe-max-size`.
    #[test]
    fn the_process_budget_is_a_quarter_of_the_user_limit() {
        let g = Growth::process();
        let soft = read_proc_usize("/proc/sys/fs/pipe-user-pages-soft")
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_USER_PAGES);
        assert_eq!(g.limit, soft / GROW_SHARE);
        let max = read_proc_usize("/proc/sys/fs/pipe-max-size").unwrap_or(BIG_PIPE);
        assert_eq!(g.size, BIG_PIPE.min(max));
    }

    /// A real socket pair through [`drive`]: every byte comes back in
    /// order, then the FIN after the half-close.
    #[test]
    fn drive_echoes_a_stream_and_the_half_close() {
        let (data, back, bytes, _) = echo_through(Kept::new(ZeroCopy::On), 3_000_000);
        assert_eq!(back, data);
        assert_eq!(bytes, data.len() as u64);
    }
}
