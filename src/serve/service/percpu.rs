//! Counters bumped on every send or datagram, kept per CPU.
//!
//! One `AtomicU64` shared by every worker puts one cache line in every
//! core's path: tokio and uring bump the byte counter on each send, so with
//! more than one worker each echo moved that line between cores. A
//! [`PerCpu`] counter has one line per CPU; a worker adds to the line of
//! the CPU it runs on and only a `/metrics` scrape reads them all.
//!
//! Why per CPU and not per worker: the same counter is bumped by threads
//! (prethread, thread, tokio), event-loop workers (epoll, uring) and forked
//! processes (fork, prefork), which share no notion of a worker index; the
//! CPU number is known to all of them for the price of a memory load
//! (glibc reads it from the rseq area the kernel keeps up to date). A worker
//! moved to another CPU between reading the number and adding still adds
//! atomically, only to a line another core may hold: correct, just slower.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lines per counter: CPUs past this share lines (`cpu % LANES`).
pub(crate) const LANES: usize = 64;

/// One CPU's share, alone in its cache line and the next one (Intel's
/// spatial prefetcher pulls lines in pairs; crossbeam's `CachePadded` pads
/// to 128 bytes on x86-64 for the same reason).
#[derive(Debug, Default)]
#[repr(C, align(128))]
struct Lane(AtomicU64);

/// A counter summed over CPUs. All-zero is a valid zero counter, so it can
/// sit in the zero-filled shared [`crate::serve::service::stats::Stats`] mapping.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct PerCpu {
    lanes: [Lane; LANES],
}

impl Default for PerCpu {
    fn default() -> Self {
        PerCpu {
            lanes: std::array::from_fn(|_| Lane::default()),
        }
    }
}

impl PerCpu {
    /// Adds `n` on this CPU's line.
    pub(crate) fn add(&self, n: u64) {
        // Relaxed: a counter orders nothing; the scrape reads a sum.
        self.lanes[lane()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far (each line read once; adds racing the read land in
    /// this scrape or the next).
    pub(crate) fn sum(&self) -> u64 {
        self.lanes
            .iter()
            .fold(0u64, |s, l| s.wrapping_add(l.0.load(Ordering::Relaxed)))
    }
}

/// This CPU's lane.
fn lane() -> usize {
    // SAFETY: sched_getcpu takes no argument and touches no memory of ours;
    // it returns -1 where the CPU cannot be known, mapped to lane 0 below.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).unwrap_or(0) % LANES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_exactly() {
        const THREADS: u64 = 8;
        const ADDS: u64 = 10_000;
        let c = Arc::new(PerCpu::default());
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..ADDS {
                        c.add(t + 1);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.sum(), ADDS * THREADS * (THREADS + 1) / 2);
    }

    #[test]
    fn each_lane_has_its_own_cache_lines() {
        assert_eq!(std::mem::align_of::<Lane>(), 128);
        assert_eq!(std::mem::size_of::<PerCpu>(), LANES * 128);
        assert!(lane() < LANES);
    }
}
