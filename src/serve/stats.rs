//! The server's counters, kept in one anonymous shared mapping so that forked
//! children (fork, prefork) update the same numbers as the parent, and so the
//! parent can tell prefork workers to stop accepting.

use super::conn::End;
use super::per_ip::PerIp;
use super::percpu::PerCpu;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

/// Counters and flags shared by every thread and process of one server.
/// All fields are atomics, whose all-zero bit pattern is a valid value, so a
/// fresh zero-filled mapping is a valid `Stats`.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Stats {
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
    /// What each prefork worker is serving, so the parent can give the
    /// slot back if the worker dies mid-connection.
    pub(crate) workers: [WorkerSlot; WORKER_SLOTS],
}

/// Prefork workers whose connection the parent can release after a crash;
/// workers past this many still serve, their crash just leaks a slot.
pub(crate) const WORKER_SLOTS: usize = 1024;

/// One prefork worker's admitted connection, as the parent can read it.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct WorkerSlot {
    /// 1 while the worker holds an admitted connection.
    held: AtomicU64,
    /// The client's address as an IPv6 (IPv4-mapped) number, high half.
    ip_hi: AtomicU64,
    /// Low half.
    ip_lo: AtomicU64,
}

impl WorkerSlot {
    /// Records that this worker now holds a connection from `ip`.
    pub(crate) fn hold(&self, ip: IpAddr) {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let n = u128::from(v6);
        self.ip_hi.store((n >> 64) as u64, Ordering::Relaxed);
        self.ip_lo.store(n as u64, Ordering::Relaxed);
        self.held.store(1, Ordering::Release);
    }

    /// The worker is about to release its connection itself.
    pub(crate) fn clear(&self) {
        self.held.store(0, Ordering::Release);
    }

    /// Takes what a dead worker held, if anything, leaving the slot empty.
    pub(crate) fn take(&self) -> Option<IpAddr> {
        if self.held.swap(0, Ordering::AcqRel) == 0 {
            return None;
        }
        let n = (u128::from(self.ip_hi.load(Ordering::Relaxed)) << 64)
            | u128::from(self.ip_lo.load(Ordering::Relaxed));
        let v6 = std::net::Ipv6Addr::from(n);
        Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            active: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bytes: PerCpu::default(),
            idle_timeouts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            rejected_per_ip: AtomicU64::new(0),
            stall_timeouts: AtomicU64::new(0),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
            udp_datagrams: PerCpu::default(),
            udp_bytes: PerCpu::default(),
            udp_dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            per_ip: PerIp::default(),
            workers: std::array::from_fn(|_| WorkerSlot::default()),
        }
    }
}

/// Why a UDP datagram got no reply. Each reason is counted apart so an
/// operator can tell a flood from a loop from a misconfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpDrop {
    /// Larger than `--udp-max-size`: never echoed truncated.
    TooBig,
    /// From port 0 or a port of another small service (7, 9, 13, 19, 37):
    /// replying could start a loop between two services.
    LoopPort,
    /// From a broadcast, multicast or unspecified address.
    BadSource,
    /// The same bytes came back from where we just sent them, again and again:
    /// another echo server is bouncing our replies.
    Loop,
    /// Over the source's `--udp-rate`.
    SourceRate,
    /// Over `--udp-global-rate`.
    GlobalRate,
    /// From a new source while every slot it could take in the source table
    /// is held by a known source (a flood of new sources is on).
    TableFull,
}

impl UdpDrop {
    /// Every reason, in counter order.
    pub(crate) const ALL: [UdpDrop; 7] = [
        UdpDrop::TooBig,
        UdpDrop::LoopPort,
        UdpDrop::BadSource,
        UdpDrop::Loop,
        UdpDrop::SourceRate,
        UdpDrop::GlobalRate,
        UdpDrop::TableFull,
    ];

    /// The label value in metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            UdpDrop::TooBig => "too_big",
            UdpDrop::LoopPort => "loop_port",
            UdpDrop::BadSource => "bad_source",
            UdpDrop::Loop => "loop",
            UdpDrop::SourceRate => "source_rate",
            UdpDrop::GlobalRate => "global_rate",
            UdpDrop::TableFull => "table_full",
        }
    }
}

impl Stats {
    /// Maps a zeroed page shared with future children and returns it for the
    /// life of the process.
    pub(crate) fn shared() -> io::Result<&'static Stats> {
        let len = NonZeroUsize::new(std::mem::size_of::<Stats>()).expect("Stats is not empty");
        // SAFETY: a fresh anonymous mapping overlaps nothing; it is zero-filled
        // and page-aligned, which satisfies `Stats`' size, alignment and
        // validity (all-zero atomics), and it is never unmapped, so the
        // `'static` reference stays valid in this process and every fork.
        let stats: &'static Stats = unsafe {
            let p = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?;
            &*(p.as_ptr() as *const Stats)
        };
        // Before any child exists, so every process hashes alike.
        stats.per_ip.reseed();
        Ok(stats)
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
    pub(crate) fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
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
    fn a_dead_workers_slot_gives_back_its_client() {
        let slot = WorkerSlot::default();
        assert_eq!(slot.take(), None);
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        slot.hold(v4);
        assert_eq!(slot.take(), Some(v4));
        assert_eq!(slot.take(), None, "taken once");
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        slot.hold(v6);
        slot.clear();
        assert_eq!(slot.take(), None, "the worker released it itself");
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
