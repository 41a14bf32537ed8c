//! The server's counters, kept in one anonymous shared mapping so that forked
//! children (fork, prefork) update the same numbers as the parent, and so the
//! parent can tell prefork workers to stop accepting.

use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

/// Counters and flags shared by every thread and process of one server.
/// All fields are atomics, whose all-zero bit pattern is a valid value, so a
/// fresh zero-filled mapping is a valid `Stats`.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Stats {
    /// Clients being served now (admitted, not yet closed).
    pub active: AtomicU64,
    /// Connections accepted and admitted since start.
    pub accepted: AtomicU64,
    /// Connections accepted then closed at once because of `--max-conns`.
    pub rejected: AtomicU64,
    /// Bytes echoed back.
    pub bytes: AtomicU64,
    /// Connections closed for `--idle-timeout`.
    pub idle_timeouts: AtomicU64,
    /// Set by the first SIGTERM/SIGINT: accept nothing more.
    pub stopping: AtomicBool,
}

impl Stats {
    /// Maps a zeroed page shared with future children and returns it for the
    /// life of the process.
    pub fn shared() -> io::Result<&'static Stats> {
        let len = NonZeroUsize::new(std::mem::size_of::<Stats>()).expect("Stats is not empty");
        // SAFETY: a fresh anonymous mapping overlaps nothing; it is zero-filled
        // and page-aligned, which satisfies `Stats`' size, alignment and
        // validity (all-zero atomics), and it is never unmapped, so the
        // `'static` reference stays valid in this process and every fork.
        unsafe {
            let p = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?;
            Ok(&*(p.as_ptr() as *const Stats))
        }
    }

    /// Takes a serving slot if fewer than `max` are in use. Returns false
    /// (and counts a rejection) when the server is full.
    pub fn try_admit(&self, max: usize) -> bool {
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
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Clients being served now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// True once the server is draining.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
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
                s.bytes.fetch_add(42, Ordering::SeqCst);
                // SAFETY: `_exit` skips destructors and atexit, as a forked
                // child of a threaded process must.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(s.bytes.load(Ordering::SeqCst), 42);
            }
        }
    }
}
