//! The pool's scoreboard (prefork, prethread): one slot per worker saying
//! whether it is alive, serving a client (and which address, so a worker
//! that dies mid-connection can have its `--max-conns` slot given back), or
//! asked to retire. It lives in an anonymous shared mapping, so forked
//! prefork workers write the same slots their parent reads; prethread's
//! threads use the same atomics in one process.
//!
//! Who writes what: the supervisor (prefork's parent, prethread's main
//! thread) claims a free slot before it starts a worker, marks an idle one
//! to retire, and frees a prefork worker's slot when it reaps it; the
//! worker marks itself busy and idle around each client, and a prethread
//! worker frees its own slot when it exits. A worker that takes a client
//! while fewer than `--min-spare` others are idle writes one byte to the
//! scoreboard's pipe, so the supervisor wakes and grows the pool at once.
//! A worker also writes when it became idle, so the supervisor can retire
//! the ones idle longest, and the scoreboard counts workers that left
//! without being asked, so a worker dying on start is not restarted in a
//! loop.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use std::net::TcpListener;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, poll};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::serve::blocking::accept;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::shutdown::Shutdown;
use crate::serve::pool::sizing::{self, Counts, Sizer};
use crate::serve::service::stats::Stats;

/// A slot no worker uses.
const FREE: u64 = 0;
/// A live worker: idle, or busy while its [`WorkerSlot`] holds a client.
const LIVE: u64 = 1;
/// A worker asked to leave: it finishes the client it holds, then exits.
const RETIRE: u64 = 2;

/// [`WorkerSlot::held`]: nothing taken.
const TOOK_NOTHING: u64 = 0;
/// The worker holds an admitted connection: its `--max-conns` slot and (if
/// limited) its `--max-conns-per-ip` count.
const TOOK_CONN: u64 = 1;
/// A prefork worker is half-way through admitting: the per-IP count is
/// taken, the `--max-conns` slot not (yet).
const TOOK_PER_IP: u64 = 2;

/// What a worker's slot says it took, for the supervisor to give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The client's address.
    pub(crate) ip: IpAddr,
    /// The `--max-conns` slot too; else only the per-IP count.
    pub(crate) conn: bool,
}

/// One worker's admitted connection, as the supervisor can read it.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct WorkerSlot {
    /// [`TOOK_CONN`], [`TOOK_PER_IP`] or [`TOOK_NOTHING`].
    held: AtomicU64,
    /// The client's address as an IPv6 (IPv4-mapped) number, high half.
    ip_hi: AtomicU64,
    /// Low half.
    ip_lo: AtomicU64,
}

impl WorkerSlot {
    /// Records that this worker now holds a connection from `ip`.
    pub(crate) fn hold(&self, ip: IpAddr) {
        self.set_ip(ip);
        self.held.store(TOOK_CONN, Ordering::Release);
    }

    /// Writes the client's address, before anything is taken for it.
    fn set_ip(&self, ip: IpAddr) {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let n = u128::from(v6);
        self.ip_hi.store((n >> 64) as u64, Ordering::Relaxed);
        self.ip_lo.store(n as u64, Ordering::Relaxed);
    }

    /// The worker is about to release its connection itself. True if it
    /// held one.
    pub(crate) fn clear(&self) -> bool {
        self.held.swap(TOOK_NOTHING, Ordering::AcqRel) == TOOK_CONN
    }

    /// Takes what a dead worker held, if anything, leaving the slot empty.
    pub(crate) fn take(&self) -> Option<Taken> {
        let conn = match self.held.swap(TOOK_NOTHING, Ordering::AcqRel) {
            TOOK_CONN => true,
            TOOK_PER_IP => false,
            _ => return None,
        };
        let n = (u128::from(self.ip_hi.load(Ordering::Relaxed)) << 64)
            | u128::from(self.ip_lo.load(Ordering::Relaxed));
        let v6 = Ipv6Addr::from(n);
        let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        Some(Taken { ip, conn })
    }

    /// True while the worker holds a connection.
    fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire) == TOOK_CONN
    }
}

/// One worker's place on the scoreboard.
#[derive(Debug, Default)]
#[repr(C)]
struct Slot {
    /// [`FREE`], [`LIVE`] or [`RETIRE`].
    state: AtomicU64,
    /// The client it serves.
    conn: WorkerSlot,
    /// When it last became idle (started or done with a client), in
    /// nanoseconds after the scoreboard's `base`: CLOCK_MONOTONIC is one
    /// clock for every process, so a forked worker's stamp reads right in
    /// its parent.
    idle_since: AtomicU64,
}

/// Counters kept beside the slots so that a worker can tell in O(1)
/// whether the pool runs short of idle workers.
#[derive(Debug, Default)]
#[repr(C)]
struct Header {
    /// Slots in state [`LIVE`].
    live: AtomicU64,
    /// Slots holding a connection, retiring ones included.
    busy: AtomicU64,
    /// Workers gone without being asked (their slot was still [`LIVE`]),
    /// since the supervisor last looked.
    died: AtomicU64,
}

/// The scoreboard of one pool. Copied freely: it names memory that lives as
/// long as the process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoreboard(&'static Inner);

#[derive(Debug)]
struct Inner {
    header: &'static Header,
    slots: &'static [Slot],
    /// `--min-spare`: below this many idle workers, a worker taking a
    /// client wakes the supervisor.
    min_spare: u64,
    /// The instant [`Slot::idle_since`] counts from.
    base: Instant,
    /// Read end of the wake pipe, polled by the supervisor.
    rd: OwnedFd,
    /// Write end, written by workers (non-blocking: a full pipe already
    /// holds a wake-up).
    wr: OwnedFd,
}

impl Scoreboard {
    /// A scoreboard of `slots` free slots, shared with future children.
    pub(crate) fn new(slots: usize, min_spare: usize) -> io::Result<Scoreboard> {
        // SAFETY: `Header` and `Slot` hold only atomics: all-zero is valid.
        let header = unsafe { crate::sys::shm::shared_zeroed::<Header>(1) }?;
        // SAFETY: as above.
        let slots = unsafe { crate::sys::shm::shared_zeroed::<Slot>(slots) }?;
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Scoreboard(Box::leak(Box::new(Inner {
            header: &header[0],
            slots,
            min_spare: min_spare as u64,
            base: Instant::now(),
            rd,
            wr,
        }))))
    }

    /// Supervisor: takes a free slot for a worker about to start (counted
    /// live and idle at once, so the next decision does not start another
    /// for the same need). `None` when every slot is taken.
    pub(crate) fn claim(self) -> Option<usize> {
        let i = self
            .0
            .slots
            .iter()
            .position(|s| s.state.load(Ordering::Acquire) == FREE)?;
        let s = &self.0.slots[i];
        s.conn.held.store(0, Ordering::Relaxed);
        self.stamp_idle(s);
        s.state.store(LIVE, Ordering::Release);
        self.0.header.live.fetch_add(1, Ordering::AcqRel);
        Some(i)
    }

    /// Records that the worker of `s` is idle from now.
    fn stamp_idle(self, s: &Slot) {
        let ns = self.0.base.elapsed().as_nanos();
        s.idle_since
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the worker of `s` last became idle.
    fn idle_since(self, s: &Slot) -> Instant {
        self.0.base + Duration::from_nanos(s.idle_since.load(Ordering::Relaxed))
    }

    /// Supervisor: asks the idle worker idle longest to leave (the sizing
    /// rules retire the longest idle first). False when none is idle. The
    /// worker may take a client before it looks: it serves it, then leaves.
    pub(crate) fn retire_one(self) -> bool {
        loop {
            let oldest = self
                .0
                .slots
                .iter()
                .filter(|s| s.state.load(Ordering::Acquire) == LIVE && !s.conn.is_held())
                .min_by_key(|s| s.idle_since.load(Ordering::Relaxed));
            let Some(s) = oldest else { return false };
            if s.state
                .compare_exchange(LIVE, RETIRE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.0.header.live.fetch_sub(1, Ordering::AcqRel);
                return true;
            }
            // Its state changed under us (only a prethread worker freeing
            // its own slot can): look again.
        }
    }

    /// Frees slot `i` of a worker that is gone (reaped by the supervisor,
    /// or a prethread worker on its way out), returning the client address
    /// it still held, whose `--max-conns` slot the caller gives back.
    pub(crate) fn free(self, i: usize) -> Option<Taken> {
        let s = self.0.slots.get(i)?;
        let held = s.conn.take();
        if held.is_some_and(|t| t.conn) {
            self.0.header.busy.fetch_sub(1, Ordering::AcqRel);
        }
        if s.state.swap(FREE, Ordering::AcqRel) == LIVE {
            self.0.header.live.fetch_sub(1, Ordering::AcqRel);
            // Gone without being asked: at shutdown that is every worker,
            // and then nobody reads this any more.
            self.0.header.died.fetch_add(1, Ordering::AcqRel);
        }
        held
    }

    /// Worker `i`: now serving a client from `ip`. Should this leave fewer
    /// than `--min-spare` workers idle, wakes the supervisor.
    pub(crate) fn hold(self, i: usize, ip: IpAddr) {
        let Some(s) = self.0.slots.get(i) else { return };
        s.conn.hold(ip);
        let busy = self.0.header.busy.fetch_add(1, Ordering::AcqRel) + 1;
        let live = self.0.header.live.load(Ordering::Acquire);
        if live.saturating_sub(busy) < self.0.min_spare {
            self.wake();
        }
    }

    /// Prefork worker `i`: [`Ctx::admit`] step by step, each step written
    /// on the slot the moment it is taken, so that if this process is
    /// killed the supervisor gives back exactly what it took. (Admitting
    /// first and recording after, as before, left a window across a log
    /// line and two returns in which a SIGKILL leaked a `--max-conns` slot
    /// and a per-IP count for good; now only the instant between a
    /// compare-and-swap and the store after it remains, and it can only
    /// leak, never give back twice.) On success the worker holds the
    /// client, as after [`Scoreboard::hold`].
    pub(crate) fn admit(self, i: usize, peer: &SocketAddr, ctx: &Ctx) -> bool {
        let Some(s) = self.0.slots.get(i) else {
            return ctx.admit(peer);
        };
        let ip = peer.ip();
        s.conn.set_ip(ip);
        let held = ctx.held(ip, true);
        if ctx.max_conns_per_ip.is_some() {
            if !ctx.admit_per_ip(ip, held) {
                return false;
            }
            s.conn.held.store(TOOK_PER_IP, Ordering::Release);
        }
        if !ctx.admit_conn(held) {
            // Cleared before the release: a kill between them leaks, never
            // releases twice.
            s.conn.held.store(TOOK_NOTHING, Ordering::Release);
            if ctx.max_conns_per_ip.is_some() {
                ctx.stats.per_ip.release(ip);
            }
            return false;
        }
        self.hold(i, ip);
        true
    }

    /// Worker `i`: done with its client, about to release it itself.
    /// Clear before release: a crash between the two leaks nothing the
    /// supervisor cannot see, while the other order could release twice.
    pub(crate) fn idle(self, i: usize) {
        let Some(s) = self.0.slots.get(i) else { return };
        self.stamp_idle(s);
        if s.conn.clear() {
            self.0.header.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Worker `i`: true once asked to leave (or its slot is gone).
    pub(crate) fn retiring(self, i: usize) -> bool {
        self.0
            .slots
            .get(i)
            .is_none_or(|s| s.state.load(Ordering::Acquire) != LIVE)
    }

    /// Supervisor: what the slots show now (the accept queue is the
    /// caller's to add), with the deaths since the last look, and in
    /// `idle_since` when each idle worker became idle.
    pub(crate) fn observe(self, idle_since: &mut Vec<Instant>) -> Counts {
        idle_since.clear();
        let mut c = Counts {
            died: self.0.header.died.swap(0, Ordering::AcqRel) as usize,
            ..Counts::default()
        };
        for s in self.0.slots {
            match s.state.load(Ordering::Acquire) {
                LIVE => {
                    c.live += 1;
                    if s.conn.is_held() {
                        c.busy += 1;
                    } else {
                        idle_since.push(self.idle_since(s));
                    }
                }
                RETIRE => c.retiring += 1,
                _ => {}
            }
        }
        c
    }

    /// [`Scoreboard::observe`] without the idle times.
    #[cfg(test)]
    fn counts(self) -> Counts {
        self.observe(&mut Vec::new())
    }

    /// Wakes the supervisor. Only `write(2)`: callable from any worker.
    pub(crate) fn wake(self) {
        // A full pipe (a wake-up already pending) refuses: that is fine.
        let _ = nix::unistd::write(&self.0.wr, b"!");
    }

    /// The read end, for the supervisor's `poll`.
    pub(crate) fn wake_fd(self) -> BorrowedFd<'static> {
        self.0.rd.as_fd()
    }

    /// Empties the wake pipe after it polled readable.
    pub(crate) fn drain_wake(self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.0.rd, &mut buf), Ok(n) if n > 0) {}
    }
}

/// The supervisor's side of a pool: waits for a reason to look, then reads
/// the scoreboard and the backlog, asks [`Sizer`] what to do, does it, and
/// logs the change (at most one line per [`sizing::LOG_EVERY`]). prefork and
/// prethread differ only in how they start a worker.
#[derive(Debug)]
pub(crate) struct Supervisor {
    board: Scoreboard,
    sizer: Sizer,
    log: sizing::Log,
    /// When the last plan asked to be looked at again.
    wake: Option<Instant>,
    /// When each idle worker became idle, refilled at each look (kept to
    /// reuse its allocation).
    idle_since: Vec<Instant>,
    /// Where the busy and idle counts are published for `/metrics`.
    stats: &'static Stats,
}

/// The supervisor looks at the pool at least this often, whatever the plan
/// says, so a wake-up a worker did not send (two workers' counters raced)
/// costs at most this.
pub(crate) const TICK: Duration = Duration::from_secs(1);

impl Supervisor {
    /// The pool for `ctx`: `--workers` to `--max-conns` + 1 workers, and
    /// its scoreboard (created before any worker, so forks share it).
    pub(crate) fn new(ctx: &Ctx) -> Result<Supervisor> {
        let limits = sizing::Limits::new(ctx.workers, ctx.max_conns, ctx.spare);
        let board = Scoreboard::new(limits.max_workers, limits.min_spare)
            .map_err(Error::io("mapping the pool's scoreboard"))?;
        ctx.stats.pooled.store(true, Ordering::Relaxed);
        Ok(Supervisor {
            board,
            sizer: Sizer::new(limits),
            log: sizing::Log::default(),
            wake: None,
            idle_since: Vec::with_capacity(limits.max_workers),
            stats: ctx.stats,
        })
    }

    /// The scoreboard the workers write.
    pub(crate) fn board(&self) -> Scoreboard {
        self.board
    }

    /// Starts the first `--workers` workers at once: `start(slot)` for
    /// each, failing on the first that cannot start.
    pub(crate) fn start_minimum(
        &self,
        mut start: impl FnMut(usize) -> io::Result<()>,
    ) -> Result<()> {
        for _ in 0..self.sizer.limits().min_workers {
            let slot = self
                .board
                .claim()
                .ok_or_else(|| Error::Failed("no free slot for a worker".into()))?;
            self.launch(slot, &mut start)
                .map_err(Error::io("starting a worker"))?;
        }
        info!(
            workers = self.sizer.limits().min_workers,
            max_workers = self.sizer.limits().max_workers,
            "pool started"
        );
        Ok(())
    }

    /// `start(slot)`, counted in `netecho_workers_started_total` before it
    /// runs: a worker serves at once, and a client it answers must never
    /// see the count without it. A worker that cannot start gives its slot
    /// back, counted as a death so the next tries are held back.
    fn launch(
        &self,
        slot: usize,
        start: &mut impl FnMut(usize) -> io::Result<()>,
    ) -> io::Result<()> {
        self.stats.pool_started.fetch_add(1, Ordering::Relaxed);
        start(slot).inspect_err(|_| {
            self.stats.pool_started.fetch_sub(1, Ordering::Relaxed);
            self.board.free(slot);
        })
    }

    /// Sleeps until a signal (the server's wake pipe: SIGTERM, SIGCHLD), a
    /// worker's wake-up, the time the last plan asked for, or [`TICK`].
    pub(crate) fn wait(&self, shutdown: Shutdown) {
        let now = Instant::now();
        let until = self
            .wake
            .map_or(TICK, |t| t.saturating_duration_since(now))
            .min(TICK);
        // SAFETY: the server's wake pipe is open for the life of the
        // process (`Shutdown` is leaked).
        let server = unsafe { BorrowedFd::borrow_raw(shutdown.wake_fd()) };
        let mut fds = [
            PollFd::new(server, PollFlags::POLLIN),
            PollFd::new(self.board.wake_fd(), PollFlags::POLLIN),
        ];
        // EINTR is a wake-up like any other; nothing else can fail here.
        // Rounded up: waking a millisecond early would find nothing due.
        let _ = poll(&mut fds, crate::sys::poll_timeout(Some(until)));
        shutdown.drain_wake();
        self.board.drain_wake();
    }

    /// Looks at the pool now and grows or shrinks it: `start(slot)` for
    /// each worker to start (a failure frees the slot and ends this round),
    /// idle workers asked to retire for each one to go.
    pub(crate) fn step(
        &mut self,
        listeners: &[TcpListener],
        mut start: impl FnMut(usize) -> io::Result<()>,
    ) {
        let mut counts = self.board.observe(&mut self.idle_since);
        counts.queued = accept::queued(listeners);
        self.stats
            .pool_busy
            .store(counts.busy as u64, Ordering::Relaxed);
        self.stats.pool_idle.store(
            counts.live.saturating_sub(counts.busy) as u64,
            Ordering::Relaxed,
        );
        let now = Instant::now();
        let mut plan = self.sizer.plan(counts, &self.idle_since, now);
        self.wake = plan.wake;
        let mut started = 0;
        for _ in 0..plan.start {
            let Some(slot) = self.board.claim() else {
                break;
            };
            if let Err(e) = self.launch(slot, &mut start) {
                static LAST: AtomicU64 = AtomicU64::new(0);
                if accept::rate_ok(&LAST) {
                    warn!("cannot start a pool worker: {e}");
                }
                self.wake = Some(now + sizing::RESTART_EVERY);
                break;
            }
            started += 1;
        }
        plan.start = started;
        let mut retired = 0;
        for _ in 0..plan.retire {
            if !self.board.retire_one() {
                break;
            }
            retired += 1;
        }
        plan.retire = retired;
        if let Some(change) = self.log.note(&plan, now) {
            let size = counts.live + started - retired;
            info!(
                started = change.started,
                retired = change.retired,
                workers = size,
                busy = counts.busy,
                queued = counts.queued,
                "pool resized"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_dead_workers_slot_gives_back_its_client() {
        let slot = WorkerSlot::default();
        assert_eq!(slot.take(), None);
        let v4 = ip("127.0.0.2");
        slot.hold(v4);
        assert_eq!(slot.take(), Some(Taken { ip: v4, conn: true }));
        assert_eq!(slot.take(), None, "taken once");
        let v6 = ip("2001:db8::7");
        slot.hold(v6);
        assert!(slot.clear());
        assert_eq!(slot.take(), None, "the worker released it itself");
        assert!(!slot.clear());
    }

    #[test]
    fn counts_follow_claims_clients_retirements_and_frees() {
        let b = Scoreboard::new(4, 1).unwrap();
        let (w0, w1) = (b.claim().unwrap(), b.claim().unwrap());
        assert_eq!((w0, w1), (0, 1));
        assert_eq!(
            b.counts(),
            Counts {
                live: 2,
                ..Counts::default()
            }
        );
        b.hold(w0, ip("127.0.0.1"));
        let c = b.counts();
        assert_eq!((c.live, c.busy, c.idle()), (2, 1, 1));
        // The busy one is never picked to retire.
        assert!(b.retire_one());
        assert!(b.retiring(w1));
        assert!(!b.retiring(w0));
        assert!(!b.retire_one(), "no idle worker left");
        let c = b.counts();
        assert_eq!((c.live, c.busy, c.retiring), (1, 1, 1));
        // The retired one leaves; its slot is free for the next worker.
        assert_eq!(b.free(w1), None);
        assert_eq!(b.claim(), Some(1));
        // The busy one dies holding its client: given back once.
        assert_eq!(
            b.free(w0),
            Some(Taken {
                ip: ip("127.0.0.1"),
                conn: true
            })
        );
        assert_eq!(b.free(w0), None);
        // It was not asked to leave: a death, counted once.
        assert_eq!(
            b.counts(),
            Counts {
                live: 1,
                died: 1,
                ..Counts::default()
            }
        );
        assert_eq!(b.counts().died, 0);
        b.claim().unwrap();
        b.claim().unwrap();
        b.claim().unwrap();
        assert_eq!(b.claim(), None, "full");
    }

    #[test]
    fn taking_the_last_idle_worker_wakes_the_supervisor() {
        let b = Scoreboard::new(4, 1).unwrap();
        let (w0, w1) = (b.claim().unwrap(), b.claim().unwrap());
        let readable = || {
            let mut fds = [nix::poll::PollFd::new(
                b.wake_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
        };
        b.hold(w0, ip("127.0.0.1"));
        assert!(!readable(), "one idle worker left: no wake-up");
        b.hold(w1, ip("127.0.0.1"));
        assert!(readable(), "none idle: the supervisor must look");
        b.drain_wake();
        assert!(!readable());
        b.idle(w1);
        b.hold(w1, ip("127.0.0.1"));
        assert!(readable());
    }

    /// The bug this replaces: a prefork worker admitted a client, and only
    /// then wrote its slot, so one killed in between leaked a
    /// `--max-conns` slot and a per-IP count for good. Now a worker that
    /// dies right after its admission gives back exactly that, and one
    /// whose admission was refused leaves nothing to give back.
    #[test]
    fn a_worker_killed_right_after_admitting_gives_back_what_it_took() {
        let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
            max_conns_per_ip: Some(1),
            ..Ctx::for_tests(Shutdown::new().unwrap())
        }));
        let b = Scoreboard::new(2, 1).unwrap();
        let (w0, w1) = (b.claim().unwrap(), b.claim().unwrap());
        let peer: SocketAddr = "127.0.0.7:4000".parse().unwrap();
        // SAFETY: the child only does atomic operations and `_exit`, safe
        // after fork even in a multi-threaded test process.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let admitted = b.admit(w0, &peer, ctx);
                // A second client from the same address is over both limits.
                let refused = !b.admit(w1, &peer, ctx);
                // SAFETY: "killed" here, before any release.
                unsafe { libc::_exit(if admitted && refused { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(ctx.stats.active(), 1);
        assert_eq!(ctx.stats.per_ip.count(peer.ip()), 1);
        assert_eq!(b.free(w1), None, "the refused one took nothing");
        let taken = b.free(w0);
        assert_eq!(
            taken,
            Some(Taken {
                ip: peer.ip(),
                conn: true
            })
        );
        ctx.release_ip(peer.ip());
        assert_eq!(ctx.stats.active(), 0);
        assert_eq!(ctx.stats.per_ip.count(peer.ip()), 0);
        assert_eq!(b.counts().busy, 0);
    }

    #[test]
    fn a_forked_worker_writes_the_slots_its_parent_reads() {
        let b = Scoreboard::new(2, 1).unwrap();
        let w = b.claim().unwrap();
        // SAFETY: the test process may be multi-threaded; the child only
        // does atomic stores, write(2) and `_exit`, all safe after fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                b.hold(w, IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)));
                // SAFETY: `_exit` skips destructors and atexit, as a forked
                // child of a threaded process must.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(b.counts().busy, 1);
                assert_eq!(
                    b.free(w),
                    Some(Taken {
                        ip: ip("127.0.0.9"),
                        conn: true
                    })
                );
            }
        }
    }
}
