//! The server's counters, kept in one anonymous shared mapping so that forked
//! children (fork, prefork) update the same numbers as the parent, and so the
//! parent can tell prefork workers to stop accepting.

use crate::serve::contract::End;
use crate::serve::service::per_ip::PerIp;
use crate::serve::service::percpu::PerCpu;
pub(crate) use netecho_core::fault::Kind as FaultKind;
pub(crate) use netecho_core::udp::UdpDrop;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a TLS handshake did not complete: the session decides it (in
/// `netecho-core`), [`Stats::count_failure`] counts it.
pub(crate) use netecho_core::tls::Failure;

/// Counters and flags shared by every thread and process of one server.
/// All fields are atomics, whose all-zero bit pattern is a valid value, so a
/// fresh zero-filled mapping is a valid `Stats`.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Stats {
    /// [`Stats::layout`] of the build that made this mapping, so that a
    /// process handed the mapping of another build does not misread it.
    /// Must stay the first field: it is read before the rest is trusted.
    pub(crate) layout: AtomicU64,
    /// Clients being served now (admitted, not yet closed).
    pub(crate) active: AtomicU64,
    /// Connections accepted and admitted since start.
    pub(crate) accepted: AtomicU64,
    /// Connections accepted then closed at once because of `--max-conns`.
    pub(crate) rejected: AtomicU64,
    /// Bytes echoed back: bumped on every send, so kept per CPU.
    pub(crate) bytes: PerCpu,
    /// Connections closed for `--idle-timeout`.
    pub(crate) idle_timeouts: AtomicU64,
    /// Set by the first SIGTERM/SIGINT: accept nothing more.
    pub(crate) stopping: AtomicBool,
    /// Connections closed at once because of `--max-conns-per-ip`.
    pub(crate) rejected_per_ip: AtomicU64,
    /// Connections closed for `--stall-timeout` (client stopped reading).
    pub(crate) stall_timeouts: AtomicU64,
    /// prefork and prethread: workers serving a client, as the pool's
    /// supervisor last counted them (`netecho_workers{state="busy"}`).
    pub(crate) pool_busy: AtomicU64,
    /// … and workers waiting for one (`state="idle"`).
    pub(crate) pool_idle: AtomicU64,
    /// Workers the pool started since the server did, the first ones
    /// included (`netecho_workers_started_total`).
    pub(crate) pool_started: AtomicU64,
    /// Set when the model runs a pool: only then are the two exported.
    pub(crate) pooled: AtomicBool,
    /// TCP connections closed, by reason (`End::index`).
    pub(crate) closed: [AtomicU64; End::LABELS.len()],
    /// UDP datagrams echoed (per CPU: bumped per datagram).
    pub(crate) udp_datagrams: PerCpu,
    /// UDP bytes echoed (per CPU).
    pub(crate) udp_bytes: PerCpu,
    /// UDP datagrams dropped, indexed by [`UdpDrop`].
    pub(crate) udp_dropped: [AtomicU64; UdpDrop::ALL.len()],
    /// Clients served now per source address, for `--max-conns-per-ip`.
    pub(crate) per_ip: PerIp,
    /// TLS handshakes that failed, by [`Failure::index`].
    pub(crate) tls_handshake_failures: [AtomicU64; Failure::LABELS.len()],
    /// Acceptors inside an [`AcceptSection`]: a drain waits for 0, so no
    /// connection taken off a listen queue is left uncounted when it looks.
    pub(crate) accepting: AtomicU64,
    /// Set once a SIGHUP handed the sockets to a new process: the sidecar
    /// stops answering `/metrics` on the shared listener, so every scrape
    /// reaches the new process while this one drains.
    pub(crate) handed_over: AtomicBool,
    /// Faults applied on purpose (`--fault`), by [`FaultKind::index`].
    pub(crate) faults: [AtomicU64; FaultKind::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            layout: AtomicU64::new(Stats::layout()),
            active: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bytes: PerCpu::default(),
            idle_timeouts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            rejected_per_ip: AtomicU64::new(0),
            stall_timeouts: AtomicU64::new(0),
            pool_busy: AtomicU64::new(0),
            pool_idle: AtomicU64::new(0),
            pool_started: AtomicU64::new(0),
            pooled: AtomicBool::new(false),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
            udp_datagrams: PerCpu::default(),
            udp_bytes: PerCpu::default(),
            udp_dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            per_ip: PerIp::default(),
            tls_handshake_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            accepting: AtomicU64::new(0),
            handed_over: AtomicBool::new(false),
            faults: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    /// Counts one failed handshake.
    pub(crate) fn count_failure(&self, f: Failure) {
        self.tls_handshake_failures[f.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Maps a zeroed page shared with future children and returns it for the
    /// life of the process.
    #[cfg(test)]
    pub(crate) fn shared() -> io::Result<&'static Stats> {
        // SAFETY: `Stats` is all atomics (and arrays of them), valid when
        // all-zero.
        let one = unsafe { crate::sys::shm::shared_zeroed::<Stats>(1) }?;
        Ok(Stats::init(&one[0]))
    }

    /// [`Stats::shared`] in a memfd, returned with it: a SIGHUP hand-over
    /// passes it to the new process, which counts the clients this one
    /// still drains toward its limits (`serve::lifecycle::draining`).
    pub(crate) fn passable() -> io::Result<(&'static Stats, OwnedFd)> {
        // SAFETY: as in `shared`.
        let (stats, fd) =
            unsafe { crate::sys::shm::shared_memfd_zeroed::<Stats>("netecho-stats") }?;
        Ok((Stats::init(stats), fd))
    }

    /// Fills in a fresh zeroed mapping, before any child exists (so every
    /// process hashes alike).
    fn init(stats: &'static Stats) -> &'static Stats {
        stats.layout.store(Stats::layout(), Ordering::Relaxed);
        stats.per_ip.reseed();
        stats
    }

    /// A fingerprint of how this build lays out and reads the counters:
    /// the struct's size and the offsets another process reads, the per-IP
    /// table's shape, and the std hasher's output (which the table's keys
    /// come from, and which a toolchain may change). Never zero.
    pub(crate) fn layout() -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (
            "netecho Stats 1",
            std::mem::size_of::<Stats>(),
            std::mem::offset_of!(Stats, active),
            std::mem::offset_of!(Stats, per_ip),
            crate::serve::service::per_ip::SHAPE,
        )
            .hash(&mut h);
        h.finish() | 1
    }

    /// Takes a serving slot if fewer than `max` are in use. Returns false
    /// (and counts a rejection) when the server is full.
    pub(crate) fn try_admit(&self, max: usize) -> bool {
        let max = max as u64;
        let mut cur = self.active.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Gives back a slot taken by [`Stats::try_admit`].
    /// Never below zero: a second release of one slot is a bug
    /// ([`Permit`](crate::serve::admission::Permit) makes it impossible),
    /// caught in debug builds and never allowed to wrap the counter.
    pub(crate) fn release(&self) {
        let went = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        debug_assert!(went.is_ok(), "a connection slot given back twice");
    }

    /// Clients being served now.
    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// Counts a dropped UDP datagram.
    pub(crate) fn udp_drop(&self, why: UdpDrop) {
        self.udp_dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// True once the server is draining.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Enters an accept section, unless the server is stopping (`None`).
    /// An acceptor holds it from before its `accept(2)` until the connection
    /// is admitted (counted in `active`) or closed: the counter goes up
    /// before the flag is read, and the supervisor sets the flag before it
    /// reads the counter (both SeqCst), so once it sees 0 no acceptor can
    /// take a connection it would not count. That matters most on a
    /// handover, where a connection left in the queue is the new process's,
    /// but one taken off it and dropped would be lost.
    pub(crate) fn enter_accept(&self) -> Option<AcceptSection<'_>> {
        let section = self.acceptor();
        (!self.stopping.load(Ordering::SeqCst)).then_some(section)
    }

    /// An accept section held for as long as an acceptor lives, whatever
    /// the flag (tokio's accept tasks and io_uring's multishot accepts,
    /// whose `accept(2)` happens out of a short section's reach): dropped
    /// once the acceptor has seen the flag and admitted all it took.
    pub(crate) fn acceptor(&self) -> AcceptSection<'_> {
        self.accepting.fetch_add(1, Ordering::SeqCst);
        AcceptSection(self)
    }

    /// Acceptors inside a section now.
    pub(crate) fn accepting(&self) -> u64 {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Counts a connection's end by reason, and the idle and stall timeouts
    /// apart (their own metrics predate the reasons). Every model calls it.
    pub(crate) fn count_end(&self, end: End) {
        self.closed[end.index()].fetch_add(1, Ordering::Relaxed);
        match end {
            End::Idle => self.idle_timeouts.fetch_add(1, Ordering::Relaxed),
            End::Stall => self.stall_timeouts.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// See [`Stats::enter_accept`]; leaving is dropping it.
#[derive(Debug)]
pub(crate) struct AcceptSection<'a>(&'a Stats);

impl Drop for AcceptSection<'_> {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_limit_and_resumes() {
        let s = Stats::default();
        assert!(s.try_admit(2));
        assert!(s.try_admit(2));
        assert!(!s.try_admit(2));
        assert_eq!(s.rejected.load(Ordering::Relaxed), 1);
        s.release();
        assert!(s.try_admit(2));
        assert_eq!(s.accepted.load(Ordering::Relaxed), 3);
        assert_eq!(s.active(), 2);
    }

    #[test]
    fn shared_mapping_is_seen_by_a_forked_child() {
        let s = Stats::shared().unwrap();
        // SAFETY: the test process may be multi-threaded; the child only
        // does an atomic add and `_exit`, both safe after fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                s.bytes.add(42);
                // SAFETY: `_exit` skips destructors and atexit, as a forked
                // child of a threaded process must.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(s.bytes.sum(), 42);
            }
        }
    }
}
