//! A timerfd for the open loop, so a request is sent when it is due to
//! within microseconds. `epoll_wait` only takes a timeout in whole
//! milliseconds (mio rounds up), and every millisecond the generator sends
//! late would be added to the latency it reports, as it is in wrk2.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

/// The timer's token in a worker's poll: no connection has it.
pub(crate) const TOKEN: Token = Token(usize::MAX);

/// A one-shot monotonic timer, readable in epoll when it expires.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
    /// When it is set to go off, to skip re-arming it for the same time.
    armed_for: Option<Instant>,
}

impl Timer {
    /// Creates the timer, and sets the calling thread's timer slack to 1 ns
    /// (the default, 50 µs, would be added to every wake-up).
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: a plain system call with constant arguments; the result is
        // checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: PR_SET_TIMERSLACK takes one integer and only changes this
        // thread's timer slack; a failure just leaves the default.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Ok(Timer {
            fd,
            armed_for: None,
        })
    }

    /// The descriptor, to register with epoll.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the timer go off at `at` (now, if it has passed).
    pub(crate) fn arm(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        if self.armed_for == Some(at) {
            return Ok(());
        }
        // Zero would disarm it: the soonest is 1 ns from now.
        let after = at
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec that outlives the call; the
        // old value is not asked for (null is allowed).
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            self.armed_for = None;
            return Err(io::Error::last_os_error());
        }
        self.armed_for = Some(at);
        Ok(())
    }
}

/// The open loop's timer, registered with `poll`; `None` in the closed loop
/// (nothing is scheduled) or if the timer cannot be made, in which case the
/// loop falls back to epoll's millisecond timeout.
pub(crate) fn for_loop(open_loop: bool, poll: &Poll) -> Option<Timer> {
    if !open_loop {
        return None;
    }
    let timer = Timer::new().ok()?;
    let raw = timer.raw_fd();
    poll.registry()
        .register(&mut SourceFd(&raw), TOKEN, Interest::READABLE)
        .ok()?;
    Some(timer)
}

/// How long to block in epoll before the next due time, arming `timer` for
/// it when there is one; `wait` is the longest the caller will block.
pub(crate) fn wait_for(
    timer: Option<&mut Timer>,
    next: Option<Instant>,
    now: Instant,
    wait: Duration,
) -> Duration {
    let Some(at) = next else {
        return wait;
    };
    let until = at.saturating_duration_since(now);
    if until >= wait {
        return wait;
    }
    match timer.map(|t| t.arm(at, now)) {
        // The timer wakes the loop; epoll's timeout is only a backstop.
        Some(Ok(())) => wait,
        _ => until,
    }
}

/// One wait of a worker loop: for socket events until the next request is
/// due (`next`), the tick (`tick`), or the end of the run, whichever comes
/// first. `Ok(false)` when a signal cut it short: the loop then looks at the
/// stop flag and goes on.
pub(crate) fn poll_until(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    clock: Option<&mut Timer>,
    next: Option<Instant>,
    end: Option<Instant>,
    now: Instant,
    tick: Duration,
) -> crate::error::Result<bool> {
    let mut wait = wait_for(clock, next, now, tick);
    if let Some(end) = end {
        wait = wait.min(end.saturating_duration_since(now));
    }
    match poll.poll(events, Some(wait)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(source) => Err(crate::error::Error::Io {
            what: "waiting for sockets",
            source,
        }),
    }
}

/// Requests not sent yet because they are not due, earliest first: the
/// open-loop schedule of one worker's connections.
#[derive(Debug, Default)]
pub(crate) struct Schedule(std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>>);

impl Schedule {
    /// Connection `conn` has its next request due at `at`.
    pub(crate) fn push(&mut self, at: Instant, conn: usize) {
        self.0.push(std::cmp::Reverse((at, conn)));
    }

    /// The earliest request due by `now`, as (due time, connection).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        let &std::cmp::Reverse((at, conn)) = self.0.peek()?;
        if at > now {
            return None;
        }
        self.0.pop();
        Some((at, conn))
    }

    /// When the next request is due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.peek().map(|&std::cmp::Reverse((at, _))| at)
    }
}
