//! The stop state of one server, as a value: a stop counter and a wake-up
//! pipe. Models look at it and sleep on it; whoever owns the server
//! triggers it. The binary wires SIGTERM and SIGINT to it
//! ([`crate::serve::lifecycle::signals::install`]); a test triggers it from a thread, so a
//! server can run inside the test process on port 0 and be stopped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, poll};

/// The longest one [`Shutdown::wait`] sleeps in one `poll`, whatever it
/// was asked (the callers loop).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One server's stop state. Copied freely: it names memory that lives as
/// long as the process (a server is started a handful of times at most).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shutdown(&'static Inner);

#[derive(Debug)]
struct Inner {
    /// Stops asked for so far: 1 means drain, 2 means exit now.
    stops: AtomicUsize,
    /// Handovers asked for so far (SIGHUP), see `serve::handover`.
    reloads: AtomicUsize,
    /// The first stop was a handover: the listeners are shared with the new
    /// process, so they are closed, never shut down.
    handed_over: AtomicBool,
    /// Read end of the wake pipe, polled by whoever waits.
    rd: OwnedFd,
    /// Write end: one byte per trigger or wake-up (non-blocking; a full pipe
    /// already holds a wake-up).
    wr: OwnedFd,
}

impl Shutdown {
    /// A fresh stop state with nothing asked yet.
    pub(crate) fn new() -> io::Result<Shutdown> {
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let inner = Box::leak(Box::new(Inner {
            stops: AtomicUsize::new(0),
            reloads: AtomicUsize::new(0),
            handed_over: AtomicBool::new(false),
            rd,
            wr,
        }));
        Ok(Shutdown(inner))
    }

    /// Asks the server to stop: the first time it drains, the second time
    /// it exits at once. Only an atomic and `write(2)`: async-signal-safe.
    #[cfg(test)]
    pub(crate) fn trigger(self) {
        self.0.stops.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes whoever waits without asking for a stop (SIGCHLD: reap).
    #[cfg(test)]
    pub(crate) fn wake(self) {
        // A full pipe (a wake-up already pending) refuses: that is fine.
        let _ = nix::unistd::write(&self.0.wr, b"!");
    }

    /// Stops asked for so far.
    pub(crate) fn stops(self) -> usize {
        self.0.stops.load(Ordering::SeqCst)
    }

    /// The counter, for a signal handler that must bump it without a call.
    pub(crate) fn counter(self) -> &'static AtomicUsize {
        &self.0.stops
    }

    /// The handover counter, for the SIGHUP handler.
    pub(crate) fn reload_counter(self) -> &'static AtomicUsize {
        &self.0.reloads
    }

    /// Handovers asked for so far.
    pub(crate) fn reloads(self) -> usize {
        self.0.reloads.load(Ordering::SeqCst)
    }

    /// A new process serves now: stop as on the first SIGTERM, but leave
    /// the listeners working for it.
    pub(crate) fn stop_for_handover(self) {
        self.0.handed_over.store(true, Ordering::SeqCst);
        self.0.stops.fetch_add(1, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.0.wr, b"!");
    }

    /// True once [`Shutdown::stop_for_handover`] was called.
    pub(crate) fn handed_over(self) -> bool {
        self.0.handed_over.load(Ordering::SeqCst)
    }

    /// The write end's descriptor, for a signal handler.
    pub(crate) fn wake_wr(self) -> RawFd {
        self.0.wr.as_raw_fd()
    }

    /// The read end, for a `poll` that also waits for sockets.
    pub(crate) fn wake_fd(self) -> RawFd {
        self.0.rd.as_raw_fd()
    }

    /// Empties the wake pipe after it polled readable.
    pub(crate) fn drain_wake(self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.0.rd, &mut buf), Ok(n) if n > 0) {}
    }

    /// Sleeps until a trigger or wake-up arrives or `timeout` passes
    /// (`None`: until one arrives).
    pub(crate) fn wait(self, timeout: Option<Duration>) {
        let ms = crate::sys::poll_timeout(timeout.map(|t| t.min(MAX_WAIT)));
        let mut fds = [PollFd::new(self.0.rd.as_fd(), PollFlags::POLLIN)];
        // EINTR is a wake-up too; nothing else can fail here.
        let _ = poll(&mut fds, ms);
        self.drain_wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_trigger_from_another_thread_ends_a_wait_and_counts() {
        let sd = Shutdown::new().unwrap();
        assert_eq!(sd.stops(), 0);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sd.trigger();
        });
        let start = Instant::now();
        while sd.stops() == 0 {
            sd.wait(Some(Duration::from_secs(10)));
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        sd.trigger();
        assert_eq!(sd.stops(), 2);
    }

    #[test]
    fn two_servers_stop_apart() {
        let (a, b) = (Shutdown::new().unwrap(), Shutdown::new().unwrap());
        a.trigger();
        assert_eq!((a.stops(), b.stops()), (1, 0));
        // A wake-up is not a stop.
        b.wake();
        b.wait(Some(Duration::from_secs(5)));
        assert_eq!(b.stops(), 0);
    }
}
