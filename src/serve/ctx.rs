//! [`Ctx`], what every model needs besides its listeners: the limits and
//! timeouts of the command line, the shared counters, the stop state, TLS
//! and zero-copy settings. Built once by `serve::run` (or a test) and
//! leaked to `'static`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::serve::contract as conn;
use crate::serve::lifecycle::shutdown::Shutdown;
use crate::serve::pool::sizing as pool;
use crate::serve::service::draining::{Draining, Held};
use crate::serve::service::faults::FaultSet;
use crate::serve::service::per_ip::IpKey;
use crate::serve::service::stats::Stats;
use crate::serve::transport::{splice, tls};

/// What every model needs besides its listeners. Leaked to `'static` at start
/// so that threads and forked children can hold it without reference counts.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Clients served at once; the next is accepted and closed.
    pub(crate) max_conns: usize,
    /// `None` when `--idle-timeout 0`.
    pub(crate) idle_timeout: Option<Duration>,
    /// How long connections may finish after the first signal.
    pub(crate) drain_timeout: Duration,
    /// Worker count for the pre-spawned models (for the pools: the
    /// starting and least size).
    pub(crate) workers: usize,
    /// `--min-spare`/`--max-spare`/`--worker-idle-timeout`: idle workers
    /// the pools keep ready.
    pub(crate) spare: pool::Spare,
    /// `--max-conns-per-ip`, if set.
    pub(crate) max_conns_per_ip: Option<u64>,
    /// `--stall-timeout`: `None` when 0 (then only the idle timeout applies).
    pub(crate) stall_timeout: Option<Duration>,
    /// Counters, in memory shared with forked children.
    pub(crate) stats: &'static Stats,
    /// The clients processes before a SIGHUP hand-over still serve: they
    /// count toward both limits.
    pub(crate) draining: Draining,
    /// This server's stop state: SIGTERM/SIGINT in the binary, a call in a
    /// test.
    pub(crate) shutdown: Shutdown,
    /// `--tls-listen`: the TLS configuration and which listeners speak it.
    pub(crate) tls: Option<tls::Tls>,
    /// `--zero-copy`, resolved on this kernel (`Off` where splice is refused).
    pub(crate) zero_copy: splice::ZeroCopy,
    /// `--fault`, `--fault-file`: the faults applied on purpose, if any.
    pub(crate) faults: Option<&'static FaultSet>,
    /// Every listener has TCP_NODELAY, which accepted sockets inherit
    /// ([`crate::serve::service::listen::nodelay_for_accepted`]): the
    /// event models skip setting it per connection.
    pub(crate) nodelay_inherited: bool,
}

impl Ctx {
    /// TCP_NODELAY on an accepted socket (no 40 ms Nagle + delayed-ACK
    /// stall on a message's tail): nothing to do when it came from the
    /// listener ([`Ctx::nodelay_inherited`]), one setsockopt otherwise.
    /// Every model asks here, so the choice is made once.
    pub(crate) fn nodelay(&self, conn: socket2::SockRef<'_>) -> std::io::Result<()> {
        if self.nodelay_inherited {
            Ok(())
        } else {
            conn.set_tcp_nodelay(true)
        }
    }

    /// Admits a new client under `--max-conns-per-ip` and `--max-conns`.
    /// `false` means: close it at once (it has been counted as rejected).
    pub(crate) fn admit(&self, peer: &SocketAddr) -> bool {
        let held = self.held(peer.ip(), true);
        if !self.admit_per_ip(peer.ip(), held) {
            return false;
        }
        if !self.admit_conn(held) {
            if self.max_conns_per_ip.is_some() {
                self.stats.per_ip.release(peer.ip());
            }
            return false;
        }
        true
    }

    /// [`Ctx::admit`] for the iterative model, which serves one client at a
    /// time whatever `--max-conns` says (its accept waits for that client to
    /// end, the others wait in the backlog), so it never refuses for being
    /// full. The clients older processes still drain after a hand-over are
    /// not counted against its one: they were, and the new process closed
    /// every client it accepted until the old one was done (bench
    /// --new-conn across a SIGHUP saw resets at byte 0). `--max-conns-per-ip`
    /// counts them as in every model.
    pub(crate) fn admit_alone(&self, peer: &SocketAddr) -> bool {
        // Never full: this process serves no other client now.
        let held = self.held(peer.ip(), false);
        self.admit_per_ip(peer.ip(), held) && self.stats.try_admit(usize::MAX)
    }

    /// What older processes still serve, as an admission of a client at
    /// `ip` counts it (its address only under `--max-conns-per-ip`; all of
    /// them if `active`): read once, for both steps.
    pub(crate) fn held(&self, ip: std::net::IpAddr, active: bool) -> Held {
        let ip = self.max_conns_per_ip.map(|_| ip);
        self.draining.held(ip, active)
    }

    /// The first step of [`Ctx::admit`]: counts `ip` under
    /// `--max-conns-per-ip` (true when that is not set), its clients in
    /// older processes (`held`) included; a refusal is counted.
    pub(crate) fn admit_per_ip(&self, ip: std::net::IpAddr, held: Held) -> bool {
        let Some(max) = self.max_conns_per_ip else {
            return true;
        };
        let room = max.saturating_sub(held.from_ip);
        if !self.stats.per_ip.admit(ip, room) {
            self.stats
                .rejected_per_ip
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The second step of [`Ctx::admit`]: takes a slot under `--max-conns`,
    /// less the clients older processes still serve (`held`); a refusal is
    /// counted.
    pub(crate) fn admit_conn(&self, held: Held) -> bool {
        let earlier = usize::try_from(held.active).unwrap_or(usize::MAX);
        self.stats.try_admit(self.max_conns.saturating_sub(earlier))
    }

    /// Gives back what [`Ctx::admit`] took for a client at `ip`, after the
    /// connection is closed (what a [`crate::serve::admission::Permit`]
    /// does on drop; the pools' supervisors, for a worker that died).
    pub(crate) fn release_ip(&self, ip: std::net::IpAddr) {
        self.release_counted(self.per_ip_key(ip));
    }

    /// Where `ip` is counted under `--max-conns-per-ip` (`None` when that is
    /// not set), kept by a permit in place of the address.
    pub(crate) fn per_ip_key(&self, ip: std::net::IpAddr) -> Option<IpKey> {
        self.max_conns_per_ip
            .is_some()
            .then(|| self.stats.per_ip.key(ip))
    }

    /// [`Ctx::release_ip`], knowing where the client was counted
    /// ([`Ctx::per_ip_key`]).
    pub(crate) fn release_counted(&self, key: Option<IpKey>) {
        if let Some(k) = key {
            self.stats.per_ip.release_key(k);
        }
        self.stats.release();
    }

    /// The faults for a new connection from `peer` to `local`, with the
    /// seed of its randomness; `None` (always, without `--fault`): serve it
    /// normally.
    pub(crate) fn fault_for(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<(netecho_core::fault::Effects, u64)> {
        self.faults?.pick_tcp(peer, local)
    }

    /// The timeouts the connection core applies.
    pub(crate) fn timeouts(&self) -> conn::Timeouts {
        conn::Timeouts {
            idle: self.idle_timeout,
            send: self.send_timeout(),
        }
    }

    /// How long a send may wait for a client that does not read: the stall
    /// timeout, else the idle timeout (no byte moves either way meanwhile).
    pub(crate) fn send_timeout(&self) -> Option<Duration> {
        match (self.stall_timeout, self.idle_timeout) {
            (Some(s), Some(i)) => Some(s.min(i)),
            (s, i) => s.or(i),
        }
    }
}

#[cfg(test)]
impl Ctx {
    /// A server context for unit tests: one worker, no limit beyond
    /// `--max-conns 1`, no timeout; tests set what they look at.
    pub(crate) fn for_tests(shutdown: Shutdown) -> Ctx {
        Ctx {
            max_conns: 1,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(1),
            workers: 1,
            spare: pool::Spare::default(),
            max_conns_per_ip: None,
            stall_timeout: None,
            stats: Stats::shared().expect("mapping the shared counters"),
            draining: Draining::default(),
            shutdown,
            tls: None,
            zero_copy: splice::ZeroCopy::Auto,
            faults: None,
            nodelay_inherited: false,
        }
    }
}

/// One worker per core, as the OS reports them.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
