//! `uring`: a completion loop on io_uring per worker thread.
//!
//! # Design
//! `--workers` threads each own one ring and serve the connections they
//! accept, with no lock and no state shared beyond [`super::stats::Stats`].
//! - **Accept**: one multishot accept per listener per ring; every accepted
//!   descriptor gets TCP_NODELAY and passes `--max-conns` before it is served.
//! - **Receive**: one multishot receive per connection, with the buffer
//!   chosen by the kernel from this worker's provided-buffer ring when bytes
//!   arrive. An idle connection therefore holds no read buffer at all: ten
//!   thousand idle clients cost ten thousand small structs, not ten thousand
//!   buffers.
//! - **Echo**: each received buffer is sent back as it is; a short send is
//!   resubmitted from where it stopped; the buffer returns to the ring once its
//!   last byte is sent. Bytes are never copied.
//! - **Backpressure**: a connection holding more than about
//!   [`echo::BUF_SIZE`] of unsent echo has its receive cancelled. From then
//!   on it receives one buffer per request, and only while it holds fewer
//!   than that (a multishot receive can post a burst of buffers before a
//!   cancel lands; single receives cannot). Whatever clients send, a worker
//!   never holds more than `NETECHO_URING_BUFS × NETECHO_URING_BUF_SIZE`
//!   bytes of echo.
//! - **Buffer exhaustion**: a receive that finds the ring empty ends with
//!   ENOBUFS; the connection waits, and is re-armed as soon as any buffer
//!   comes back, so no connection stalls while others make progress.
//! - **Time**: the loop waits for completions at most [`TICK`], so it notices
//!   the stop flag, accept pauses, `--idle-timeout` (no byte either way) and
//!   `--stall-timeout` (echo held but not moving) without a timer per
//!   connection.
//! - **Limit**: the first burst of a connection, before its first pause,
//!   can take up to the whole ring. A client that then stops reading pins
//!   those buffers until its echo moves or `--stall-timeout` closes it, and
//!   the worker's other connections wait for buffers meanwhile (ENOBUFS,
//!   re-armed when any buffer comes back).
//! - **Stop**: after a signal the accepts are cancelled and never re-armed,
//!   connections are served until they end, and the worker leaves its loop
//!   when it has none left. Leaving, for any reason, cancels whatever is still
//!   in flight, waits for the kernel to let go of every buffer, then closes
//!   every descriptor.
//!
//! # Tuning and testing knobs
//! Read once at start, from the environment:
//! - `NETECHO_URING_BUFS`: provided buffers per worker ring, a power of two
//!   from 1 to 32768 (default [`DEFAULT_BUFS`]);
//! - `NETECHO_URING_BUF_SIZE`: bytes per buffer, 1 to 1 MiB (default
//!   [`DEFAULT_BUF_SIZE`]).
//!
//! Tests shrink both to force buffer exhaustion with a handful of clients.
//!
//! # Kernel requirements
//! Linux 6.0 or later (multishot receive), io_uring allowed by
//! `kernel.io_uring_disabled` and any seccomp filter; [`probe`] checks all of
//! it by doing the real thing once on a socket pair.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::sys::socket::{Shutdown, shutdown};
use socket2::SockRef;
use tracing::{debug, error, info, warn};

use super::accept::{self, AcceptError};
use super::echo::{self, End};
use super::{Ctx, supervise};
use crate::error::{Error, Result};

/// Environment variable: provided buffers per worker ring.
pub const BUFS_ENV: &str = "NETECHO_URING_BUFS";
/// Environment variable: bytes per provided buffer.
pub const BUF_SIZE_ENV: &str = "NETECHO_URING_BUF_SIZE";
/// Buffers per worker ring: with [`DEFAULT_BUF_SIZE`], 4 MiB per worker.
/// The ring is recycled in order, so all of it is touched under load: a
/// bigger ring would cost resident memory that idle connections get charged.
pub const DEFAULT_BUFS: u16 = 64;
/// Bytes per buffer: a 64 KiB message arrives in one completion and goes
/// back in one send. Measured with `cargo bench --bench models` (64 KiB × 8
/// connections, server CPU per request against C epoll in the same run):
/// 16 KiB buffers cost 1.60–1.80×, 64 KiB buffers 1.04–1.16×, with no change
/// for 64 B messages.
pub const DEFAULT_BUF_SIZE: u32 = 64 * 1024;
/// The kernel's limit on entries in a provided-buffer ring.
const MAX_BUFS: u32 = 32768;
/// Larger buffers would only make one connection pin more memory.
const MAX_BUF_SIZE: u32 = 1 << 20;
/// Unsent echo a connection may hold before its receive is paused: the same
/// bound the blocking models keep with their single buffer.
const HELD_BYTES: usize = echo::BUF_SIZE;

/// Submission queue entries per ring; a burst beyond it waits in a backlog.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries per submission entry: multishot requests post
/// many completions each, and an overflow costs the kernel extra work.
const CQ_FACTOR: u32 = 4;
/// The longest a worker sleeps in the kernel: how late it may notice the stop
/// flag, an idle connection or the end of an accept pause.
const TICK: Duration = Duration::from_millis(250);
/// Accept pause after an error that is neither a resource shortage nor a
/// known transient: short, but never a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long a leaving worker waits for the kernel to finish cancelled
/// requests before it gives up and leaks the buffer memory instead.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Pause after the kernel refused to enter (EAGAIN: no memory for now).
const ENTER_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Buffer group id of a worker's provided-buffer ring (one ring per io_uring).
const BGID: u16 = 0;

/// Probe: entries of the throw-away ring.
const PROBE_ENTRIES: u32 = 8;
/// Probe: buffers and their size in the throw-away buffer ring.
const PROBE_BUFS: u16 = 2;
const PROBE_BUF_SIZE: u32 = 64;
/// Probe: how long to wait for each expected completion.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// user_data layout: operation kind in the top byte, the connection slot's
/// generation in the next 24 bits, the slot (or listener) index below.
const KIND_SHIFT: u32 = 56;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u32 = 0x00FF_FFFF;
const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_CANCEL: u64 = 4;

/// What a completion is about, decoded from its user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The multishot accept on listener `.0`.
    Accept(usize),
    /// The multishot receive of connection slot `.0`, generation `.1`.
    Recv(usize, u32),
    /// The send of connection slot `.0`, generation `.1`.
    Send(usize, u32),
    /// An AsyncCancel: its own result changes nothing.
    Cancel,
}

impl Op {
    fn encode(self) -> u64 {
        let pack = |kind: u64, idx: usize, generation: u32| {
            (kind << KIND_SHIFT)
                | (u64::from(generation & GEN_MASK) << GEN_SHIFT)
                | (idx as u64 & u64::from(u32::MAX))
        };
        match self {
            Op::Accept(i) => pack(KIND_ACCEPT, i, 0),
            Op::Recv(i, g) => pack(KIND_RECV, i, g),
            Op::Send(i, g) => pack(KIND_SEND, i, g),
            Op::Cancel => pack(KIND_CANCEL, 0, 0),
        }
    }

    fn decode(data: u64) -> Option<Op> {
        let idx = (data & u64::from(u32::MAX)) as usize;
        let generation = ((data >> GEN_SHIFT) as u32) & GEN_MASK;
        match data >> KIND_SHIFT {
            KIND_ACCEPT => Some(Op::Accept(idx)),
            KIND_RECV => Some(Op::Recv(idx, generation)),
            KIND_SEND => Some(Op::Send(idx, generation)),
            KIND_CANCEL => Some(Op::Cancel),
            _ => None,
        }
    }
}

/// The sizes of a worker's provided-buffer ring, from the environment.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// Buffers in the ring, a power of two.
    bufs: u16,
    /// Bytes per buffer.
    buf_size: u32,
}

impl Tuning {
    /// Reads [`BUFS_ENV`] and [`BUF_SIZE_ENV`]; a bad value is an error, not
    /// a silent default, so a test never runs with sizes it did not ask for.
    fn from_env() -> Result<Tuning, String> {
        let bufs = env_u32(BUFS_ENV)?.unwrap_or(u32::from(DEFAULT_BUFS));
        if !bufs.is_power_of_two() || bufs > MAX_BUFS {
            return Err(format!(
                "{BUFS_ENV}={bufs}: must be a power of two from 1 to {MAX_BUFS}"
            ));
        }
        let buf_size = env_u32(BUF_SIZE_ENV)?.unwrap_or(DEFAULT_BUF_SIZE);
        if buf_size == 0 || buf_size > MAX_BUF_SIZE {
            return Err(format!(
                "{BUF_SIZE_ENV}={buf_size}: must be from 1 to {MAX_BUF_SIZE}"
            ));
        }
        let bufs = u16::try_from(bufs).map_err(|_| format!("{BUFS_ENV}={bufs}: too large"))?;
        Ok(Tuning { bufs, buf_size })
    }

    /// Buffers one connection may hold before its receive is paused, on top
    /// of the [`HELD_BYTES`] limit on the bytes in them: never more than half
    /// the ring, so that one client that stops reading cannot take every
    /// buffer by itself, and at least two, so that a message that arrived in
    /// two pieces is not a reason to pause.
    fn held_cap(self) -> usize {
        let by_bytes = HELD_BYTES.div_ceil(self.buf_size as usize);
        let by_ring = (usize::from(self.bufs) / 2).max(1);
        by_bytes.max(2).min(by_ring)
    }
}

/// Parses one optional numeric environment variable.
fn env_u32(name: &str) -> Result<Option<u32>, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{name}: {e}")),
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={s:?}: {e}")),
    }
}

/// Checks that io_uring can serve here: the ring can be created (not
/// disabled by sysctl or seccomp), the kernel knows every operation the
/// model uses, and a multishot receive on a provided-buffer ring really
/// works (Linux 6.0+). `Err` carries a one-line reason for the log.
pub fn probe() -> Result<(), String> {
    let mut ring = IoUring::new(PROBE_ENTRIES).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => {
            format!("io_uring_setup refused ({e}): kernel.io_uring_disabled or a seccomp filter")
        }
        Some(libc::ENOSYS) => format!("io_uring_setup unavailable ({e})"),
        _ => format!("io_uring_setup failed: {e}"),
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks timed waits (IORING_FEAT_EXT_ARG, Linux 5.11+)".into());
    }
    let mut ops = Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel::CODE, "async cancel"),
    ];
    if let Some((_, name)) = needed.iter().find(|(code, _)| !ops.is_supported(*code)) {
        return Err(format!("io_uring lacks the {name} operation"));
    }
    let mut pool = Pool::new(
        &ring,
        Tuning {
            bufs: PROBE_BUFS,
            buf_size: PROBE_BUF_SIZE,
        },
    )
    .map_err(|e| format!("io_uring provided-buffer ring refused (Linux 5.19+): {e}"))?;
    let outcome = probe_recv_multi(&mut ring, &mut pool);
    // The ring goes first: the kernel lets go of the buffer ring with it.
    drop(ring);
    match outcome {
        ProbeEnd::Clean(r) => {
            drop(pool);
            r
        }
        ProbeEnd::InFlight(r) => {
            // The receive may still own a buffer: its memory must outlive it.
            std::mem::forget(pool);
            r
        }
    }
}

/// How the multishot-receive probe ended.
enum ProbeEnd {
    /// Nothing is in flight any more.
    Clean(Result<(), String>),
    /// The receive never completed for good: its buffers must be leaked.
    InFlight(Result<(), String>),
}

/// Arms a multishot receive on one end of a socket pair, writes a byte into
/// the other end, expects it back with the MORE flag, then closes the other
/// end and expects the final end-of-file completion.
fn probe_recv_multi(ring: &mut IoUring, pool: &mut Pool) -> ProbeEnd {
    let (ours, mut theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return ProbeEnd::Clean(Err(format!("socketpair for the probe: {e}"))),
    };
    let recv = opcode::RecvMulti::new(Fd(ours.as_raw_fd()), BGID)
        .build()
        .user_data(Op::Recv(0, 0).encode());
    // SAFETY: the receive writes only into the pool's buffers, and the pool
    // outlives the request: the caller leaks it unless the final completion
    // was seen (`ProbeEnd::Clean`).
    if unsafe { ring.submission().push(&recv) }.is_err() {
        return ProbeEnd::Clean(Err("probe ring is full".into()));
    }
    if let Err(e) = ring.submit() {
        return ProbeEnd::Clean(Err(format!("io_uring_enter failed: {e}")));
    }
    if let Err(e) = theirs.write_all(b"?") {
        return ProbeEnd::InFlight(Err(format!("probe write: {e}")));
    }
    let first = match probe_next(ring) {
        Some(c) => c,
        None => return ProbeEnd::InFlight(Err("no completion for a multishot receive".into())),
    };
    if let Some(bid) = cqueue::buffer_select(first.flags()) {
        pool.take();
        pool.put(bid);
    }
    if !cqueue::more(first.flags()) {
        let why = match first.result() {
            r if r < 0 => format!("{}", io::Error::from_raw_os_error(-r)),
            r => format!("result {r} without the MORE flag"),
        };
        return ProbeEnd::Clean(Err(format!(
            "multishot receive unsupported (Linux 6.0+): {why}"
        )));
    }
    drop(theirs);
    match probe_next(ring) {
        Some(last) if !cqueue::more(last.flags()) => {
            if let Some(bid) = cqueue::buffer_select(last.flags()) {
                pool.take();
                pool.put(bid);
            }
            ProbeEnd::Clean(Ok(()))
        }
        _ => ProbeEnd::InFlight(Err("multishot receive did not end at EOF".into())),
    }
}

/// The probe's next completion, waiting at most [`PROBE_WAIT`].
fn probe_next(ring: &mut IoUring) -> Option<cqueue::Entry> {
    let deadline = Instant::now() + PROBE_WAIT;
    loop {
        if let Some(c) = ring.completion().next() {
            return Some(c);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let ts = Timespec::from(deadline - now);
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(_) => return None,
        }
    }
}

/// Serves until a signal stops the server: `--workers` threads, each with
/// its own ring, buffers and connections.
pub fn run(listeners: Vec<TcpListener>, ctx: &'static Ctx) -> Result<()> {
    let unusable = |what: &'static str, kind: io::ErrorKind| {
        move |reason: String| Error::Io {
            what,
            source: io::Error::new(kind, reason),
        }
    };
    probe().map_err(unusable(
        "io_uring is not usable",
        io::ErrorKind::Unsupported,
    ))?;
    let tuning =
        Tuning::from_env().map_err(unusable("io_uring tuning", io::ErrorKind::InvalidInput))?;
    let workers = ctx.workers.max(1);
    info!(
        workers,
        bufs = tuning.bufs,
        buf_size = tuning.buf_size,
        "io_uring workers starting"
    );
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    for n in 0..workers {
        let socks = listeners
            .iter()
            .map(TcpListener::try_clone)
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::io("duplicating a listener for an io_uring worker"))?;
        let ready = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("uring-{n}"))
            .spawn(move || worker_main(socks, ctx, tuning, ready))
            .map_err(Error::io("starting an io_uring worker"))?;
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(Error::Io {
                    what: "setting up an io_uring worker",
                    source,
                });
            }
            Err(_) => {
                return Err(Error::Io {
                    what: "setting up an io_uring worker",
                    source: io::Error::other("worker ended before reporting"),
                });
            }
        }
    }
    supervise::until_stopped(&listeners, ctx);
    Ok(())
}

/// One worker thread: builds its ring (reporting success or failure on
/// `ready`, so `run` fails at start rather than serving with fewer workers),
/// serves, and tears down.
fn worker_main(
    socks: Vec<TcpListener>,
    ctx: &'static Ctx,
    tuning: Tuning,
    ready: mpsc::Sender<io::Result<()>>,
) {
    let mut worker = match Worker::new(socks, ctx, tuning) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    if let Err(e) = worker.serve() {
        error!("io_uring worker failed: {e}; closing its connections");
    }
    worker.exit();
}

/// Creates a ring: single issuer with deferred task work where the kernel
/// has it (6.1+: completions are processed only when this thread asks,
/// saving interrupts of its work), a plain ring otherwise.
fn new_ring() -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_cqsize(RING_ENTRIES * CQ_FACTOR)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES);
    match tuned {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(RING_ENTRIES * CQ_FACTOR)
            .build(RING_ENTRIES),
        r => r,
    }
}

/// A provided-buffer ring: the entry ring shared with the kernel and the
/// buffers it points at, in one anonymous mapping that lives until the
/// worker is gone (and is leaked if the kernel might still use it).
struct Pool {
    /// Start of the mapping: the page-aligned entry ring, buffers after it.
    base: NonNull<libc::c_void>,
    /// Bytes mapped.
    len: NonZeroUsize,
    /// Offset of the first buffer in the mapping.
    bufs_at: usize,
    /// Entries (and buffers), a power of two.
    count: u16,
    /// Bytes per buffer.
    size: u32,
    /// Our copy of the ring tail: entries published to the kernel so far.
    tail: u16,
    /// Buffers in the ring right now (given to the kernel, not yet used).
    free: usize,
}

impl Pool {
    /// Maps the memory, registers the ring with `ring` and gives the kernel
    /// every buffer.
    fn new(ring: &IoUring, tuning: Tuning) -> io::Result<Pool> {
        let page = page_size();
        let count = usize::from(tuning.bufs);
        let ring_bytes = (count * std::mem::size_of::<BufRingEntry>()).div_ceil(page) * page;
        let len = (tuning.buf_size as usize)
            .checked_mul(count)
            .and_then(|b| b.checked_add(ring_bytes))
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::other("buffer ring size overflows"))?;
        // SAFETY: a fresh private anonymous mapping overlaps nothing; it is
        // zero-filled (every ring entry empty, tail 0) and page-aligned, as
        // the kernel requires of a buffer ring. `Drop` unmaps it.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        let mut pool = Pool {
            base,
            len,
            bufs_at: ring_bytes,
            count: tuning.bufs,
            size: tuning.buf_size,
            tail: 0,
            free: 0,
        };
        // SAFETY: the entry ring is `count` entries at the start of our
        // mapping, which stays mapped until the ring is gone: `Pool` is
        // dropped after its `IoUring` (field order, explicit drops), or leaked.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.base.as_ptr() as u64,
                tuning.bufs,
                BGID,
                0,
            )
        }?;
        for bid in 0..tuning.bufs {
            pool.put(bid);
        }
        Ok(pool)
    }

    /// The entry ring, at the start of the mapping.
    fn entries(&self) -> *mut BufRingEntry {
        self.base.as_ptr().cast()
    }

    /// Address of buffer `bid` (checked by the callers: `bid < count`).
    fn buf(&self, bid: u16) -> *mut u8 {
        let at = self.bufs_at + usize::from(bid) * self.size as usize;
        // SAFETY: `at + size <= len` for every `bid < count`, so the pointer
        // stays inside the mapping.
        unsafe { self.base.as_ptr().cast::<u8>().add(at) }
    }

    /// True if `bid` names one of our buffers: a kernel result is checked
    /// before it is used as an index.
    fn owns(&self, bid: u16) -> bool {
        bid < self.count
    }

    /// Notes that the kernel took a buffer out of the ring.
    fn take(&mut self) {
        self.free = self.free.saturating_sub(1);
    }

    /// Gives buffer `bid` back to the kernel.
    fn put(&mut self, bid: u16) {
        if !self.owns(bid) {
            return;
        }
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, inside the entry ring. That entry lies past
        // the tail the kernel knows, so the kernel does not read it until we
        // publish the new tail below. The setters leave the `resv` field
        // (which is the ring tail in entry 0) untouched.
        let entry = unsafe { &mut *self.entries().add(slot) };
        entry.set_addr(self.buf(bid) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside entry 0 of our live mapping,
        // 2-aligned; the kernel reads it with acquire semantics and only we
        // write it, so a release store publishes the entry written above.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
        self.free += 1;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; it is dropped only once no request
        // can touch it any more (the ring is gone and nothing was in flight),
        // otherwise the pool is leaked instead.
        let _ = unsafe { munmap(self.base, self.len.get()) };
    }
}

/// The system page size (4 KiB if it cannot be read).
fn page_size() -> usize {
    const FALLBACK_PAGE: usize = 4096;
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(FALLBACK_PAGE)
}

/// Where one request of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// Not submitted: nothing of ours is in the kernel.
    Idle,
    /// Submitted and not finished.
    Busy,
    /// Submitted, and a cancel for it submitted too.
    Cancelling,
}

/// Received bytes not yet echoed: one provided buffer, held out of the ring
/// until its last byte is sent.
#[derive(Debug)]
struct Chunk {
    bid: u16,
    len: u32,
    /// Bytes of it already sent.
    sent: u32,
}

/// One client connection.
struct Conn {
    fd: OwnedFd,
    /// Buffers received and not fully echoed, in order; the front one is
    /// being sent.
    held: VecDeque<Chunk>,
    recv: Io,
    send: Io,
    /// The client sent its FIN: echo what is held, then send ours.
    eof: bool,
    /// The last receive ended with ENOBUFS: re-arm once a buffer is back.
    starved: bool,
    /// Receive one buffer at a time. Set when the connection is paused for
    /// backpressure: a client that sends faster than it reads would otherwise
    /// take a burst of buffers at every multishot re-arm, and single
    /// receives keep it to `held_cap`. Cleared once the client has caught up.
    single: bool,
    /// In single mode, the last receive found the socket's queue empty and
    /// everything is echoed: a multishot receive would not burst now.
    caught_up: bool,
    /// Set once the connection is to be closed; it is closed as soon as no
    /// request of it is in the kernel.
    end: Option<End>,
    /// When a byte last moved either way, for `--idle-timeout`.
    last_io: Instant,
    /// When the echo last moved forward (or started waiting), for
    /// `--stall-timeout`: only looked at while echo is held.
    last_sent: Instant,
    /// The client's address, kept only when `--max-conns-per-ip` needs it
    /// back at release (finding it costs a system call per connection).
    peer: Option<SocketAddr>,
}

/// A connection slot; the generation tells a late completion for a former
/// occupant from one for the current connection.
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// A listener as one worker sees it.
struct Listener {
    sock: TcpListener,
    /// A multishot accept is in the kernel.
    armed: bool,
    /// Accepting is paused (EMFILE...) until then.
    resume_at: Option<Instant>,
}

/// One worker's ring and everything in flight on it.
struct Worker {
    /// Declared before `pool`: dropped first, so the kernel lets go of the
    /// buffer ring before its memory is unmapped.
    ring: IoUring,
    pool: Pool,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    /// Empty slots, reused before the table grows.
    free_slots: Vec<usize>,
    /// Connections in the table.
    live: usize,
    /// Requests whose final completion has not arrived (submitted or waiting
    /// in `backlog`): the pool may be freed only when this is 0.
    inflight: usize,
    /// Entries that did not fit in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Connections waiting for a buffer to come back (slot, generation).
    starved: Vec<(usize, u32)>,
    /// Completions reaped, reused to avoid an allocation per loop.
    cqes: Vec<cqueue::Entry>,
    ctx: &'static Ctx,
    /// Buffers one connection may hold before its receive is paused.
    held_cap: usize,
    /// Time of the last wake-up, shared by everything handled after it.
    now: Instant,
    /// Next idle scan.
    next_tick: Instant,
    /// The stop flag was seen: accepts are cancelled and never re-armed.
    stopping: bool,
}

impl Worker {
    fn new(socks: Vec<TcpListener>, ctx: &'static Ctx, tuning: Tuning) -> io::Result<Worker> {
        let ring = new_ring()?;
        let pool = Pool::new(&ring, tuning)?;
        let now = Instant::now();
        Ok(Worker {
            ring,
            pool,
            listeners: socks
                .into_iter()
                .map(|sock| Listener {
                    sock,
                    armed: false,
                    resume_at: None,
                })
                .collect(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            inflight: 0,
            backlog: VecDeque::new(),
            starved: Vec::new(),
            cqes: Vec::with_capacity((RING_ENTRIES * CQ_FACTOR) as usize),
            ctx,
            held_cap: tuning.held_cap(),
            now,
            next_tick: now + TICK,
            stopping: false,
        })
    }

    /// The event loop: runs until the server stops and this worker has no
    /// connection left, or the ring fails.
    fn serve(&mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        loop {
            if !self.stopping && self.ctx.stats.stopping() {
                self.stop_accepting();
            }
            let tick = self.now >= self.next_tick;
            if tick {
                self.next_tick = self.now + TICK;
                self.expire_idle();
            }
            self.resume_accepts();
            self.feed_starved(tick);
            if self.stopping && self.live == 0 && self.listeners.iter().all(|l| !l.armed) {
                return Ok(());
            }
            self.wait()?;
            self.reap();
        }
    }

    /// Submits what is queued and sleeps until a completion arrives or the
    /// next timer is due.
    fn wait(&mut self) -> io::Result<()> {
        self.flush()?;
        let mut until = self.next_tick;
        for l in &self.listeners {
            if let Some(t) = l.resume_at {
                until = until.min(t);
            }
        }
        // Entries still in the backlog go in on the next turn: do not sleep.
        let want = usize::from(self.backlog.is_empty());
        let ts = Timespec::from(until.saturating_duration_since(self.now).min(TICK));
        let res = self
            .ring
            .submitter()
            .submit_with_args(want, &SubmitArgs::new().timespec(&ts));
        self.now = Instant::now();
        match res {
            Ok(_) => Ok(()),
            // ETIME: the timeout; EINTR: a signal (the loop looks at the stop
            // flag); EBUSY: completions must be reaped first.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            // The kernel is short of memory for now: try again shortly.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::sleep(ENTER_RETRY_PAUSE);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves backlog entries into the submission queue, submitting when it is
    /// full. Bounded: at most one submit per queue-full of entries.
    fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            {
                let mut sq = self.ring.submission();
                while let Some(e) = self.backlog.front() {
                    // SAFETY: every entry was built by this worker with
                    // buffers in `pool`, which outlives the request.
                    if unsafe { sq.push(e) }.is_err() {
                        break;
                    }
                    self.backlog.pop_front();
                }
            }
            if self.backlog.is_empty() {
                break;
            }
            match self.ring.submit() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues one request whose final completion we will wait for.
    fn push(&mut self, entry: squeue::Entry) {
        enqueue(&mut self.ring, &mut self.backlog, &mut self.inflight, entry);
    }

    /// Asks the kernel to cancel the request tagged `target`.
    fn cancel(&mut self, target: Op) {
        self.push(cancel_entry(target));
    }

    /// Handles every completion waiting in the queue.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion());
        for c in &cqes {
            self.complete(c.user_data(), c.result(), c.flags());
        }
        self.cqes = cqes;
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match Op::decode(data) {
            Some(Op::Accept(i)) => self.on_accept(i, res, flags),
            Some(Op::Recv(slot, generation)) => self.on_recv(slot, generation, res, flags),
            Some(Op::Send(slot, generation)) => self.on_send(slot, generation, res),
            // A cancel's own result (0, ENOENT, EALREADY) changes nothing:
            // the cancelled request reports for itself.
            Some(Op::Cancel) => {}
            None => {
                debug!(data, res, "completion with unknown user_data ignored");
            }
        }
    }

    // ---- accepting ----

    fn arm_accept(&mut self, i: usize) {
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if l.armed || self.stopping {
            return;
        }
        l.armed = true;
        let fd = l.sock.as_raw_fd();
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::Accept(i).encode());
        self.push(entry);
    }

    /// After the signal: accept nothing more. The supervisor's shutdown(2)
    /// of the listeners ends the accepts too; cancelling does not depend on it.
    fn stop_accepting(&mut self) {
        self.stopping = true;
        for i in 0..self.listeners.len() {
            self.listeners[i].resume_at = None;
            if self.listeners[i].armed {
                self.cancel(Op::Accept(i));
            }
        }
    }

    /// Re-arms the accepts whose pause is over.
    fn resume_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i].resume_at.is_some_and(|t| t <= self.now) {
                self.listeners[i].resume_at = None;
                self.arm_accept(i);
            }
        }
    }

    fn on_accept(&mut self, i: usize, res: i32, flags: u32) {
        // The supervisor's shutdown(2) may end an accept before this loop
        // looked at the stop flag: look now, so it is not taken for an error.
        if !self.stopping && self.ctx.stats.stopping() {
            self.stop_accepting();
        }
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if !more {
            l.armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a descriptor the kernel
            // just installed for this process; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.admit(fd);
        } else {
            let errno = -res;
            let pause = match errno {
                // Our own cancel: when stopping, or after a pause began
                // (which re-arms it when it ends).
                libc::ECANCELED => None,
                // The listener shut down by the supervisor: never re-armed.
                libc::EINVAL if self.stopping => None,
                _ => match accept::classify(&io::Error::from_raw_os_error(errno)) {
                    AcceptError::Retry => None,
                    AcceptError::Pause(d) => Some(d),
                    // A multishot accept stops after any error: a short
                    // pause before re-arming keeps a persistent one from
                    // spinning.
                    AcceptError::Skip | AcceptError::ListenerClosed => Some(ACCEPT_ERROR_PAUSE),
                },
            };
            if let Some(p) = pause {
                self.listeners[i].resume_at = Some(self.now + p);
                // A multishot accept that reports an error and goes on would
                // keep failing: stop it; the pause re-arms it.
                if more {
                    self.cancel(Op::Accept(i));
                }
            }
        }
        if !more && self.listeners[i].resume_at.is_none() {
            self.arm_accept(i);
        }
    }

    /// Takes an accepted descriptor under `--max-conns` (and
    /// `--max-conns-per-ip`) and starts serving it.
    fn admit(&mut self, fd: OwnedFd) {
        let ctx = self.ctx;
        // A multishot accept gives no address: ask for it only when the
        // per-address limit needs it.
        let peer = match ctx.max_conns_per_ip {
            None => None,
            Some(_) => match peer_of(&fd) {
                Some(p) => Some(p),
                // Reset before we looked: nothing to serve, nothing taken.
                None => return,
            },
        };
        let admitted = match &peer {
            Some(p) => ctx.admit(p),
            None => ctx.stats.try_admit(ctx.max_conns),
        };
        if !admitted {
            let peer = peer.or_else(|| peer_of(&fd));
            drop(fd);
            accept::log_rejected(peer, ctx);
            return;
        }
        if let Err(e) = SockRef::from(&fd).set_tcp_nodelay(true) {
            // Only fails on a socket already dead; its receive will say so.
            debug!("TCP_NODELAY on an accepted socket: {e}");
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(peer = ?peer_of(&fd), "connection open");
        }
        let conn = Conn {
            fd,
            held: VecDeque::new(),
            recv: Io::Idle,
            send: Io::Idle,
            eof: false,
            starved: false,
            single: false,
            caught_up: false,
            end: None,
            last_io: self.now,
            last_sent: self.now,
            peer,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].conn = Some(conn);
        self.live += 1;
        self.progress(slot);
    }

    // ---- connections ----

    /// The connection in `slot` if `generation` is still its own.
    fn conn_mut(&mut self, slot: usize, generation: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(slot)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.conn.as_mut())
    }

    fn on_recv(&mut self, slot: usize, generation: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.pool.take();
        }
        let now = self.now;
        let (count, size) = (self.pool.count, self.pool.size);
        let Some(c) = self.conn_mut(slot, generation) else {
            // Cannot happen (a slot is freed only when idle), but a buffer
            // must never be lost from the ring.
            if let Some(b) = bid {
                self.pool.put(b);
            }
            return;
        };
        if !more {
            c.recv = Io::Idle;
        }
        let mut spare = None;
        match res {
            n if n > 0 => match bid {
                Some(b) if b < count && n as u32 <= size => {
                    if c.held.is_empty() {
                        c.last_sent = now;
                    }
                    c.held.push_back(Chunk {
                        bid: b,
                        len: n as u32,
                        sent: 0,
                    });
                    c.last_io = now;
                    // A single receive that did not fill its buffer found the
                    // socket's queue empty: the client is not ahead of us.
                    c.caught_up = c.single && (n as u32) < size;
                }
                _ => {
                    spare = bid;
                    c.end.get_or_insert(End::Error(Errno::EINVAL));
                }
            },
            // FIN from the client: nothing more will come.
            0 => {
                spare = bid;
                c.eof = true;
            }
            e => {
                spare = bid;
                match -e {
                    // The ring ran dry: wait for a buffer to come back.
                    libc::ENOBUFS => {
                        c.starved = true;
                        self.starved.push((slot, generation));
                    }
                    // Our cancel (backpressure or closing), or a signal:
                    // `progress` decides whether to re-arm.
                    libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                    libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT => {
                        c.end.get_or_insert(End::Reset);
                    }
                    other => {
                        c.end.get_or_insert(End::Error(Errno::from_raw(other)));
                    }
                }
            }
        }
        if let Some(b) = spare {
            self.pool.put(b);
        }
        self.progress(slot);
    }

    fn on_send(&mut self, slot: usize, generation: u32, res: i32) {
        let now = self.now;
        let stats = self.ctx.stats;
        let Some(c) = self.conn_mut(slot, generation) else {
            return;
        };
        c.send = Io::Idle;
        let mut done = None;
        match res {
            n if n > 0 => {
                let n = n as u32;
                stats.bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                c.last_io = now;
                c.last_sent = now;
                if let Some(front) = c.held.front_mut() {
                    front.sent = front.sent.saturating_add(n).min(front.len);
                    if front.sent == front.len {
                        done = Some(front.bid);
                        c.held.pop_front();
                    }
                }
            }
            // Nothing sent of a non-empty buffer: never retried, so it
            // cannot loop.
            0 => {
                c.end.get_or_insert(End::Error(Errno::EIO));
            }
            e => match -e {
                // A signal: `progress` resubmits the rest.
                libc::EINTR | libc::EAGAIN => {}
                // Our cancel: the connection is closing.
                libc::ECANCELED => {}
                libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT => {
                    c.end.get_or_insert(End::Reset);
                }
                other => {
                    c.end.get_or_insert(End::Error(Errno::from_raw(other)));
                }
            },
        }
        if let Some(b) = done {
            self.pool.put(b);
        }
        self.progress(slot);
    }

    /// Moves a connection forward after anything changed: send what is
    /// held, pause or re-arm the receive, send our FIN, or close.
    fn progress(&mut self, slot: usize) {
        let held_cap = self.held_cap;
        let buf_size = self.pool.size;
        let buffers_back = self.pool.free > 0;
        let Worker {
            ring,
            backlog,
            inflight,
            slots,
            pool,
            ..
        } = self;
        let Some(s) = slots.get_mut(slot) else {
            return;
        };
        let generation = s.generation;
        let Some(c) = s.conn.as_mut() else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        let mut push = |entry| enqueue(ring, backlog, inflight, entry);
        if c.end.is_none() {
            if c.send == Io::Idle
                && let Some(front) = c.held.front()
            {
                let left = front.len - front.sent;
                // The chunk's bytes sit in pool buffer `front.bid`, held out
                // of the ring until this send completes. `wrapping_add`: the
                // offset is within the buffer (`sent < len <= size`).
                let ptr = pool.buf(front.bid).wrapping_add(front.sent as usize);
                push(
                    opcode::Send::new(Fd(fd), ptr, left)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(Op::Send(slot, generation).encode()),
                );
                c.send = Io::Busy;
            }
            // Backpressure: too much unsent echo, stop reading.
            let held_bytes: usize = c.held.iter().map(|h| (h.len - h.sent) as usize).sum();
            let over = held_bytes > HELD_BYTES || c.held.len() > held_cap;
            if over && c.recv == Io::Busy {
                push(cancel_entry(Op::Recv(slot, generation)));
                c.recv = Io::Cancelling;
                c.single = true;
            }
            let drained = c.held.is_empty() && c.send == Io::Idle;
            // The client has caught up: back to one multishot receive, which
            // costs one submission for many messages instead of one each.
            if drained && c.single && c.caught_up && c.recv == Io::Idle {
                c.single = false;
                c.caught_up = false;
            }
            if c.eof {
                if drained && c.recv == Io::Idle {
                    // Everything read was echoed: our FIN follows the last
                    // byte, and the receive queue is empty, so the close
                    // below is a FIN, never a reset.
                    c.end = Some(match shutdown(fd, Shutdown::Write) {
                        Ok(()) | Err(Errno::ENOTCONN) => End::Fin,
                        Err(e) => End::Error(e),
                    });
                }
            } else if c.recv == Io::Idle && (!c.starved || buffers_back) {
                // Multishot: re-armed once the echo is all sent. Single:
                // one more buffer while fewer than `held_cap` are held.
                let entry = if c.single && !over && c.held.len() < held_cap {
                    Some(
                        opcode::Recv::new(Fd(fd), std::ptr::null_mut(), buf_size)
                            .buf_group(BGID)
                            .build()
                            .flags(squeue::Flags::BUFFER_SELECT),
                    )
                } else if !c.single && drained {
                    Some(opcode::RecvMulti::new(Fd(fd), BGID).build())
                } else {
                    None
                };
                if let Some(e) = entry {
                    c.starved = false;
                    push(e.user_data(Op::Recv(slot, generation).encode()));
                    c.recv = Io::Busy;
                }
            }
        }
        let Some(end) = c.end else {
            return;
        };
        if c.recv == Io::Busy {
            push(cancel_entry(Op::Recv(slot, generation)));
            c.recv = Io::Cancelling;
        }
        if c.send == Io::Busy {
            push(cancel_entry(Op::Send(slot, generation)));
            c.send = Io::Cancelling;
        }
        if c.recv == Io::Idle && c.send == Io::Idle {
            self.close(slot, end);
        }
    }

    /// Closes a connection with nothing in flight, gives its buffers back
    /// to the ring, and frees its `--max-conns` slot after the close (so a
    /// drain that sees no active connection knows every FIN is out).
    fn close(&mut self, slot: usize, end: End) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(conn) = s.conn.take() else {
            return;
        };
        s.generation = s.generation.wrapping_add(1) & GEN_MASK;
        self.free_slots.push(slot);
        self.live = self.live.saturating_sub(1);
        for chunk in &conn.held {
            self.pool.put(chunk.bid);
        }
        echo::count_end(end, self.ctx.stats);
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(peer = ?peer_of(&conn.fd), ?end, "connection closed");
        }
        let peer = conn.peer;
        drop(conn);
        match peer {
            Some(p) => self.ctx.release(&p),
            None => self.ctx.stats.release(),
        }
    }

    /// Marks for closing the connections whose echo has not moved for the
    /// send timeout (`--stall-timeout`, else `--idle-timeout`) and those
    /// silent both ways for `--idle-timeout`. One pass over the table per
    /// [`TICK`]: a few nanoseconds per connection.
    fn expire_idle(&mut self) {
        let (idle, stall) = (self.ctx.idle_timeout, self.ctx.send_timeout());
        if idle.is_none() && stall.is_none() {
            return;
        }
        let now = self.now;
        let over = |since: Instant, limit: Option<Duration>| {
            limit.is_some_and(|l| now.saturating_duration_since(since) >= l)
        };
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].conn.as_mut() else {
                continue;
            };
            if c.end.is_some() {
                continue;
            }
            let end = if !c.held.is_empty() {
                over(c.last_sent, stall).then_some(End::Stall)
            } else {
                over(c.last_io, idle).then_some(End::Idle)
            };
            if end.is_some() {
                c.end = end;
                self.progress(slot);
            }
        }
    }

    /// Re-arms connections whose receive found the ring empty, once any
    /// buffer is back. All of them at once: one may find the ring empty
    /// again, but none waits for a wake-up that never comes. `force` (once
    /// per tick) retries even when our count says the ring is empty, so a
    /// miscount could delay a connection by a tick, never stall it.
    fn feed_starved(&mut self, force: bool) {
        if self.starved.is_empty() || (self.pool.free == 0 && !force) {
            return;
        }
        let waiting = std::mem::take(&mut self.starved);
        for (slot, generation) in waiting {
            if let Some(c) = self.conn_mut(slot, generation) {
                c.starved = false;
                self.progress(slot);
            }
        }
    }

    /// Leaves the loop cleanly whatever stopped it: every connection is
    /// marked stopped (its requests cancelled, then closed), accepts are
    /// cancelled, and the kernel is given [`EXIT_WAIT`] to finish. If it does
    /// not, descriptors are closed anyway and the buffer memory is leaked
    /// rather than unmapped under a request that may still write to it.
    fn exit(mut self) {
        self.stop_accepting();
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].conn.as_mut() {
                c.end.get_or_insert(End::Stopped);
                self.progress(slot);
            }
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while self.inflight > 0 && self.now < deadline {
            if self.wait().is_err() {
                break;
            }
            self.reap();
        }
        let leftover = self.inflight;
        for slot in 0..self.slots.len() {
            if self.slots[slot].conn.is_some() {
                self.close(slot, End::Stopped);
            }
        }
        let Worker { ring, pool, .. } = self;
        drop(ring);
        if leftover == 0 {
            drop(pool);
        } else {
            warn!(
                requests = leftover,
                "io_uring requests outlived the worker; leaking its buffers"
            );
            std::mem::forget(pool);
        }
    }
}

/// Queues `entry` in the submission queue, or in the backlog when the queue
/// is full (or the backlog not empty, to keep the order), and counts it in
/// flight until its final completion.
fn enqueue(
    ring: &mut IoUring,
    backlog: &mut VecDeque<squeue::Entry>,
    inflight: &mut usize,
    entry: squeue::Entry,
) {
    *inflight += 1;
    if backlog.is_empty() {
        // SAFETY: every entry is built by this worker; a send's buffer is a
        // pool buffer held out of the ring until its completion, and the pool
        // outlives every request (`Worker::exit` leaks it otherwise).
        if unsafe { ring.submission().push(&entry) }.is_ok() {
            return;
        }
    }
    backlog.push_back(entry);
}

/// A request to cancel the request tagged `target`.
fn cancel_entry(target: Op) -> squeue::Entry {
    opcode::AsyncCancel::new(target.encode())
        .build()
        .user_data(Op::Cancel.encode())
}

/// The peer of a connection, for logs.
fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    SockRef::from(fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept(3),
            Op::Recv(7, GEN_MASK),
            Op::Send(u32::MAX as usize, 1),
            Op::Cancel,
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }

    #[test]
    fn held_cap_is_about_one_echo_buffer_and_at_most_half_the_ring() {
        let t = |bufs, buf_size| Tuning { bufs, buf_size }.held_cap();
        assert_eq!(t(256, 16 * 1024), 4);
        assert_eq!(t(64, 64 * 1024), 2);
        assert_eq!(t(256, 1 << 20), 2);
        assert_eq!(t(4, 1024), 2);
        assert_eq!(t(1, 1024), 1);
    }
}
