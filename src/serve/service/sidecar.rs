//! The side services of a server — UDP echo, the inspect port and the
//! metrics endpoint — run
//! in one helper process forked at start, whatever the TCP model.
//!
//! Why a process and not threads: the forking models (fork, prefork) must
//! stay single-threaded so that every later fork is safe; a sidecar forked
//! while the server is still single-threaded may start all the threads it
//! likes. Counters live in the shared [`Stats`] mapping, so metrics see every
//! process. The sidecar ignores SIGTERM/SIGINT (the parent decides), dies
//! with the server (PR_SET_PDEATHSIG), stops its UDP loops when the server
//! starts draining, and keeps answering scrapes until the server exits or
//! hands its sockets to a new process (SIGHUP), which answers them then.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::unistd::{ForkResult, Pid, fork, getppid};
use tracing::warn;

use crate::error::{Error, Result};
use crate::serve::lifecycle::signals;
use crate::serve::service::draining::Draining;
use crate::serve::service::faults::FaultSet;
use crate::serve::service::inspect;
use crate::serve::service::metrics;
use crate::serve::service::stats::Stats;
use crate::serve::service::udp;

/// How often the sidecar checks that its parent is still there.
const PARENT_CHECK: Duration = Duration::from_millis(200);

/// What the sidecar serves.
#[derive(Debug)]
pub(crate) struct Services {
    /// UDP sockets to echo on, each served by `workers` threads.
    pub(crate) udp: Vec<UdpSocket>,
    /// UDP limits.
    pub(crate) udp_cfg: udp::Config,
    /// Threads per UDP socket.
    pub(crate) workers: usize,
    /// The `/metrics` listener.
    pub(crate) metrics: Option<TcpListener>,
    /// `--fault`: what UDP echo does wrong on purpose.
    pub(crate) faults: Option<&'static FaultSet>,
    /// `--inspect-listen` ports, each a thread for TCP and one for UDP;
    /// the UDP side shares the echo's limits.
    pub(crate) inspect: Vec<inspect::Port>,
}

/// Forks the sidecar if there is anything for it to do. Call while the
/// process is still single-threaded.
pub(crate) fn start(
    services: Services,
    inherited: &[std::os::fd::RawFd],
    stats: &'static Stats,
    draining: &'static Draining,
) -> Result<Option<Pid>> {
    if services.udp.is_empty() && services.metrics.is_none() && services.inspect.is_empty() {
        return Ok(None);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the server has started no thread yet (this runs before the
    // model), so the child inherits no lock held by another thread.
    match unsafe { fork() }.map_err(|e| Error::io("forking the sidecar")(e.into()))? {
        ForkResult::Parent { child } => Ok(Some(child)),
        ForkResult::Child => {
            signals::reset_in_child();
            for &fd in inherited {
                // SAFETY: closing this process's copies of the TCP listeners,
                // which the sidecar never uses (the `TcpListener` values stay
                // with the parent's code path, never run here).
                unsafe { libc::close(fd) };
            }
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // The parent may have died before the prctl took effect.
            if getppid() != parent {
                // SAFETY: `_exit` skips destructors belonging to the parent.
                unsafe { libc::_exit(0) }
            }
            run(services, stats, draining, parent)
        }
    }
}

fn run(services: Services, stats: &'static Stats, draining: &'static Draining, parent: Pid) -> ! {
    let policy = Arc::new(udp::Policy::new(services.udp_cfg, Instant::now()));
    let faults = services.faults;
    for sock in services.udp {
        let sock = Arc::new(sock);
        for i in 0..services.workers.max(1) {
            let (sock, policy) = (Arc::clone(&sock), Arc::clone(&policy));
            if let Err(e) = std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || udp::serve(&sock, &policy, stats, faults))
            {
                warn!("cannot start a UDP worker: {e}");
            }
        }
    }
    for port in services.inspect {
        let (tcp, udp) = (port.tcp, Arc::new(port.udp));
        let policy = Arc::clone(&policy);
        let started = std::thread::Builder::new()
            .name("inspect-tcp".into())
            .spawn(move || inspect::tcp::serve(&tcp))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("inspect-udp".into())
                    .spawn(move || inspect::udp::serve(&udp, &policy, stats))
            });
        if let Err(e) = started {
            warn!("cannot start an inspect thread: {e}");
        }
    }
    if let Some(l) = services.metrics
        && let Err(e) = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || metrics::serve(l, stats, draining))
    {
        warn!("cannot start the metrics thread: {e}");
    }
    while getppid() == parent {
        std::thread::sleep(PARENT_CHECK);
    }
    // SAFETY: `_exit` ends the sidecar without the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}
