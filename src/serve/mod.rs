//! `netecho serve`: the echo server and the contract every model keeps.
//!
//! # The echo contract
//! Every model, whatever its design, gives a client exactly this:
//! - every byte read is written back, in order, nothing added or lost;
//! - when the client half-closes (FIN), what is left is written back, then the
//!   server closes its side with a FIN (never a reset);
//! - a reset or broken pipe ends that connection only, never the server;
//!   EINTR is retried;
//! - backpressure: a client that sends but does not read is not read from
//!   while its echo cannot be written, so server memory never grows with what
//!   a client sends (at most one buffer of [`contract::BUF_SIZE`] per connection);
//! - TCP_NODELAY on every accepted socket, so a large message's tail never
//!   waits 40 ms for a delayed ACK;
//! - `--max-conns`: over the limit a connection is accepted, closed at once
//!   and counted; `--idle-timeout`: no byte either way for that long closes it;
//! - SIGTERM/SIGINT: stop accepting at once, let connections finish for up to
//!   `--drain-timeout`, close the rest, exit 0; a second signal exits at once;
//! - SIGHUP: a new process from the same path takes every listening socket
//!   over ([`handover`]); this one then drains as on SIGTERM, and a new one
//!   that fails to start leaves it serving.
//!
//! # Layout
//! From the bottom up; a module imports only modules below it, and none
//! imports this file (it only runs the command line).
//! - [`contract`] the contract itself, as a sans-I/O state machine the
//!   event models drive, with the bytes it keeps ([`contract::pending`]),
//!   the one timer rule of the event loops ([`contract::timers`]) and the
//!   buffer size every model reads with;
//! - [`service`] what is served around the echo: the listeners and their
//!   `listening` lines, the counters ([`service::stats`], in memory shared
//!   with forked children), per-IP limits, Prometheus metrics, UDP echo
//!   and the sidecar process that runs UDP and metrics;
//! - [`transport`] how bytes reach the core other than by plain copies:
//!   TLS ([`transport::tls`]) and zero copy ([`transport::splice`],
//!   `--zero-copy`);
//! - [`lifecycle`] signals, the stop state, SIGHUP hand-over, drain and exit
//!   ([`lifecycle::supervise`], [`lifecycle::children`]), systemd socket
//!   activation and readiness;
//! - [`ctx`] [`ctx::Ctx`], what every model is given besides its listeners;
//! - [`admission`] the [`admission::Permit`] every connection holds under
//!   the limits, given back once on drop (fork's child and parent included);
//! - [`blocking`] the accept step and the read/write loop of the blocking
//!   models, and `--inetd` through that loop;
//! - [`pool`] how many workers prefork and prethread start or retire
//!   ([`pool::sizing`], pure) and what each is doing ([`pool::scoreboard`]);
//! - [`model`] the eight models, each `run(listeners, ctx) -> Result<()>`;
//! - [`opt`] the command line of `netecho serve`.

pub(crate) mod admission;
pub(crate) mod blocking;
pub(crate) mod contract;
pub(crate) mod ctx;
pub(crate) mod lifecycle;
pub(crate) mod model;
pub(crate) mod opt;
pub(crate) mod pool;
pub(crate) mod service;
pub(crate) mod transport;

pub use model::Model;
pub use model::{epoll, fork, iterative, prefork, prethread, thread, tokio, uring};
pub use service::listen::{ListenKind, Listening, parse_listening};
pub use transport::tls::TlsError;

pub(crate) use ctx::default_workers;
pub(crate) use opt::ServeOpt;

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use tracing::info;

use crate::error::{Error, Result};
use crate::net::target::Family;
use crate::serve::blocking::inetd;
use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::shutdown::Shutdown;
use crate::serve::lifecycle::{activation, handover, signals};
use crate::serve::model::Model as M;
use crate::serve::service::faults::FaultSet;
use crate::serve::service::listen::{self, local_addrs};
use crate::serve::service::{draining, inspect, sidecar, stats, udp};
use crate::serve::transport::{splice, tls};
use crate::sys::raise_nofile_limit;

/// Runs `netecho serve` until a signal stops it.
pub(crate) fn run(opt: ServeOpt) -> Result<()> {
    if opt.inetd && (!opt.faults.is_empty() || opt.fault_file.is_some()) {
        return Err(Error::Usage(
            "--fault and --fault-file apply to the connections serve accepts, not to --inetd's"
                .into(),
        ));
    }
    if opt.inetd {
        let idle = (!opt.idle_timeout.is_zero()).then_some(opt.idle_timeout);
        let stall = (!opt.stall_timeout.is_zero()).then_some(opt.stall_timeout);
        return inetd::run(idle, stall.or(idle));
    }
    // Addresses against -4/-6 first: a contradiction is a usage error before
    // any work (a self-signed certificate) is done.
    let (listen_addrs, tls_addrs) = (opt.listen_addrs()?, opt.tls_listen_addrs()?);
    let metrics_addr = opt.metrics_addr()?;
    let inspect_addrs = opt.inspect_listen_addrs()?;
    if tls_only(&opt) && opt.udp {
        return Err(Error::Usage(
            "--udp serves on the --listen addresses, and --tls-client-ca without --listen \
             serves TLS only: give --listen for UDP"
                .into(),
        ));
    }
    // TLS files are read and checked before anything binds: a bad one is
    // one line and a non-zero exit, with no port ever opened.
    let tls = load_tls(&opt)?;
    // So are the faults: a bad one is one line naming it, exit 2.
    let faults = FaultSet::load(&opt.faults, opt.fault_file.as_deref(), opt.fault_seed)?
        .map(|f| &*Box::leak(Box::new(f)));
    let model = opt.model.resolve();
    let workers = opt.workers.unwrap_or_else(default_workers);
    let max_conns = opt.max_conns.unwrap_or_else(|| model.default_max_conns());
    if opt.min_spare > opt.max_spare {
        return Err(Error::Usage(format!(
            "--min-spare {} is above --max-spare {}",
            opt.min_spare, opt.max_spare
        )));
    }
    let _ = raise_nofile_limit();
    let handed = handover::init();
    let draining_fds = draining::take_passed();
    // Sockets passed by systemd (or a handover) first, before this process
    // opens any other descriptor that could sit where LISTEN_FDS says.
    let passed = activation::take()?.unwrap_or_default();
    // Handlers before binding: a test may send SIGTERM the moment it reads
    // our `listening` line, and the default action would kill us, no drain.
    let shutdown = Shutdown::new().map_err(Error::io("creating the wake-up pipe"))?;
    signals::install(shutdown).map_err(Error::io("installing signal handlers"))?;
    let (stats, stats_fd) =
        stats::Stats::passable().map_err(Error::io("mapping shared counters"))?;
    if let Some(bits) = opt.per_ip_v6_prefix {
        stats.per_ip.set_v6_prefix(bits);
    }
    let draining = draining::Draining::start(stats_fd, draining_fds)
        .map_err(Error::io("creating the life line"))?;
    let listeners = if passed.tcp.is_empty() {
        if tls_only(&opt) {
            Vec::new()
        } else {
            listen::bind_all(&listen_addrs, opt.family())?
        }
    } else {
        if !opt.listen.is_empty() && !handed {
            tracing::warn!("sockets passed by systemd (LISTEN_FDS); --listen ignored");
        }
        passed.tcp
    };
    let tls_listeners = if passed.tls.is_empty() {
        tls_addrs
            .into_iter()
            .map(|a| listen::bind_in(a, opt.family()))
            .collect::<Result<Vec<_>>>()?
    } else {
        if !opt.tls_listen.is_empty() && !handed {
            tracing::warn!("TLS sockets passed by systemd (LISTEN_FDS); --tls-listen ignored");
        }
        passed.tls
    };
    let tls = tls.map(|mut t| {
        t.fds = tls_listeners.iter().map(|l| l.as_raw_fd()).collect();
        t
    });
    let nodelay_inherited = listen::nodelay_for_accepted(listeners.iter().chain(&tls_listeners));
    let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
        max_conns,
        idle_timeout: (!opt.idle_timeout.is_zero()).then_some(opt.idle_timeout),
        drain_timeout: opt.drain_timeout,
        workers,
        spare: pool::sizing::Spare {
            min: opt.min_spare,
            max: opt.max_spare,
            retire_idle: (!opt.worker_idle_timeout.is_zero()).then_some(opt.worker_idle_timeout),
        },
        max_conns_per_ip: opt.max_conns_per_ip.map(|n| n as u64),
        stall_timeout: (!opt.stall_timeout.is_zero()).then_some(opt.stall_timeout),
        stats,
        draining,
        shutdown,
        tls,
        zero_copy: opt.zero_copy.resolve(),
        faults,
        nodelay_inherited,
    }));
    if ctx.zero_copy == splice::ZeroCopy::On && !matches!(model, M::Epoll | M::Uring) {
        tracing::warn!(
            model = model.name(),
            "--zero-copy on: only the epoll and uring models splice; this one copies"
        );
    }
    // UDP shares the TCP sockets' addresses and ports (echo is port 7 for
    // both), unless systemd passed datagram sockets.
    let udp_sockets = if !opt.udp {
        Vec::new()
    } else if !passed.udp.is_empty() {
        passed.udp
    } else {
        udp::bind_all(&local_addrs(&listeners), opt.family() == Family::V6)?
    };
    let inspect = if passed.inspect_tcp.is_empty() {
        inspect::bind_all(&inspect_addrs, opt.family())?
    } else {
        passed
            .inspect_tcp
            .into_iter()
            .zip(passed.inspect_udp)
            .map(|(t, u)| inspect::prepare(t, u))
            .collect::<Result<Vec<_>>>()?
    };
    let metrics = match metrics_addr {
        // A handover passes the one it had.
        Some(_) if passed.metrics.is_some() => passed.metrics,
        Some(addr) => {
            let l = listen::bind_in(addr, opt.family())?;
            // The metrics thread blocks in accept.
            l.set_nonblocking(false)
                .map_err(Error::io("metrics listener"))?;
            Some(l)
        }
        None => None,
    };
    keep_for_handover(&listeners, &udp_sockets, metrics.as_ref(), &tls_listeners)?;
    keep_inspect_for_handover(&inspect)?;
    say_who_can_reach(&listeners, &tls_listeners, &udp_sockets, metrics.as_ref());
    for p in &inspect {
        if let Ok(addr) = p.tcp.local_addr() {
            let v6_only = socket2::SockRef::from(&p.tcp).only_v6().unwrap_or(false);
            let reach = listen::reach(addr.ip(), v6_only);
            info!(addr = %addr, reach, "open: inspect, tcp and udp, no authentication");
        }
    }
    // Printed once the model's workers all run (`handover::ready`).
    let bound = |kind, addr: std::io::Result<std::net::SocketAddr>| {
        addr.map(|addr| format!("{}\n", Listening { kind, addr }))
            .map_err(Error::io("reading bound address"))
    };
    let lines = (listeners
        .iter()
        .map(|l| bound(ListenKind::Tcp, l.local_addr())))
    .chain(
        tls_listeners
            .iter()
            .map(|l| bound(ListenKind::Tls, l.local_addr())),
    )
    .chain(
        udp_sockets
            .iter()
            .map(|u| bound(ListenKind::Udp, u.local_addr())),
    )
    .chain(
        inspect
            .iter()
            .map(|p| bound(ListenKind::Inspect, p.tcp.local_addr())),
    )
    .chain(
        metrics
            .iter()
            .map(|m| bound(ListenKind::Metrics, m.local_addr())),
    )
    .collect::<Result<String>>()?;
    handover::announce_when_ready(lines);
    sidecar::start(
        sidecar::Services {
            udp: udp_sockets,
            udp_cfg: udp::Config {
                max_size: opt.udp_max_size,
                rate: opt.udp_rate,
                global_rate: opt.udp_global_rate,
            },
            workers,
            metrics,
            faults,
            inspect,
        },
        &listeners.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>(),
        stats,
        &ctx.draining,
    )?;
    info!(
        model = model.name(),
        workers,
        max_conns,
        idle_timeout_s = opt.idle_timeout.as_secs_f64(),
        drain_timeout_s = opt.drain_timeout.as_secs_f64(),
        zero_copy = %clap::ValueEnum::to_possible_value(&ctx.zero_copy)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        "serving"
    );
    if let Some(f) = faults {
        f.announce();
    }
    // The models serve every listener alike; an accepted socket whose
    // local address is a TLS listener's goes through the TLS layer.
    let mut listeners = listeners;
    listeners.extend(tls_listeners);
    model::run(model, listeners, ctx)
}

/// Keeps both sockets of every inspect port for the next SIGHUP, the
/// listener before its UDP socket, so the new process pairs them in order.
fn keep_inspect_for_handover(ports: &[inspect::Port]) -> Result<()> {
    use std::os::fd::AsFd;
    for p in ports {
        handover::keep(handover::Kind::InspectTcp, p.tcp.as_fd())
            .and_then(|()| handover::keep(handover::Kind::InspectUdp, p.udp.as_fd()))
            .map_err(Error::io("keeping a socket for a handover"))?;
    }
    Ok(())
}

/// Mutual TLS without an explicit `--listen` serves TLS only: whoever asks
/// for client certificates means to keep out the unauthenticated, and a
/// plain default listener on every interface would let them in.
fn tls_only(opt: &ServeOpt) -> bool {
    opt.tls_client_ca.is_some() && opt.listen.is_empty()
}

/// Logs, for every open socket, who can reach it: every interface, this
/// host only, or the one interface with that address; and whether it
/// authenticates its clients.
fn say_who_can_reach(
    tcp: &[std::net::TcpListener],
    tls: &[std::net::TcpListener],
    udp: &[std::net::UdpSocket],
    metrics: Option<&std::net::TcpListener>,
) {
    // Whether a `[::]` socket refuses IPv4 clients (`-6`).
    let v6_only = |s: socket2::SockRef<'_>| s.only_v6().unwrap_or(false);
    let tcp = tcp.iter().map(|l| {
        let what = "tcp echo, no authentication";
        (what, l.local_addr(), v6_only(l.into()))
    });
    let tls = tls
        .iter()
        .map(|l| ("tls echo", l.local_addr(), v6_only(l.into())));
    let udp = udp.iter().map(|s| {
        let what = "udp echo, no authentication";
        (what, s.local_addr(), v6_only(s.into()))
    });
    let metrics = metrics.into_iter().map(|l| {
        let what = "metrics, no authentication";
        (what, l.local_addr(), v6_only(l.into()))
    });
    for (what, addr, v6_only) in tcp.chain(tls).chain(udp).chain(metrics) {
        if let Ok(addr) = addr {
            let reach = listen::reach(addr.ip(), v6_only);
            info!(addr = %addr, reach, "open: {what}");
        }
    }
}

/// `--tls-*`: the TLS configuration when `--tls-listen` is given (loaded
/// and checked now, before anything binds); a TLS file without
/// `--tls-listen` is a usage error rather than silently ignored.
fn load_tls(opt: &ServeOpt) -> Result<Option<tls::Tls>> {
    let files = tls::Files {
        cert: opt.tls_cert.as_deref(),
        key: opt.tls_key.as_deref(),
        client_ca: opt.tls_client_ca.as_deref(),
    };
    if opt.tls_listen.is_empty() {
        if files.cert.is_some() || files.key.is_some() || files.client_ca.is_some() {
            return Err(tls::TlsError::Usage(
                "--tls-cert, --tls-key and --tls-client-ca need --tls-listen",
            )
            .into());
        }
        return Ok(None);
    }
    Ok(Some(tls::Tls::load(&files, opt.tls_handshake_timeout)?))
}

/// Keeps a copy of every listening socket for the next SIGHUP (a kind
/// added to serve adds its line here).
fn keep_for_handover(
    tcp: &[TcpListener],
    udp: &[std::net::UdpSocket],
    metrics: Option<&TcpListener>,
    tls: &[TcpListener],
) -> Result<()> {
    let keep = |kind, fd: std::os::fd::BorrowedFd<'_>| {
        handover::keep(kind, fd).map_err(Error::io("keeping a socket for a handover"))
    };
    use std::os::fd::AsFd;
    for l in tcp {
        keep(handover::Kind::Tcp, l.as_fd())?;
    }
    for u in udp {
        keep(handover::Kind::Udp, u.as_fd())?;
    }
    if let Some(m) = metrics {
        keep(handover::Kind::Metrics, m.as_fd())?;
    }
    for l in tls {
        keep(handover::Kind::Tls, l.as_fd())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A server started inside this process on port 0, as a library user
    /// would: no signal handler, stopped through its [`Shutdown`].
    fn serve_in_process(model: Model) {
        let listener = listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new().unwrap();
        let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
            max_conns: 16,
            idle_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(5),
            ..Ctx::for_tests(shutdown)
        }));
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = model::run(model, vec![listener], ctx);
            let _ = done_tx.send(r.is_ok());
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"in-process").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"in-process", "{}", model.name());
        drop(c);
        shutdown.trigger();
        let ok = done_rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(ok, Ok(true), "{}: the server did not stop", model.name());
        assert!(
            TcpStream::connect(addr).is_err(),
            "{}: still accepting after the stop",
            model.name()
        );
        // The slot comes back before the FIN and the end is counted after
        // it, so the count may land a moment after the server returned.
        let fins = || {
            ctx.stats.closed[contract::End::Fin.index()].load(std::sync::atomic::Ordering::Relaxed)
        };
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while fins() == 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fins(), 1, "{}: ends counted", model.name());
    }

    #[test]
    fn every_threaded_model_runs_in_process_and_stops_on_its_shutdown() {
        // fork and prefork fork the process, which a multi-threaded test
        // harness must not do; they are tested as processes.
        let mut models = vec![
            Model::Iterative,
            Model::Thread,
            Model::Prethread,
            Model::Epoll,
            Model::Tokio,
        ];
        match uring::probe() {
            Ok(()) => models.push(Model::Uring),
            Err(why) => println!("SKIPPED uring in-process: {why}"),
        }
        for m in models {
            serve_in_process(m);
        }
    }
}
