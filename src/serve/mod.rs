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
//!   a client sends (at most one buffer of [`echo::BUF_SIZE`] per connection);
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
//! - [`conn`] the contract itself, as a sans-I/O state machine the event
//!   models drive; [`pending`] the bytes it keeps for epoll and tokio;
//!   [`timers`] the one timer rule of the event loops; [`splice`] the
//!   zero-copy path (`--zero-copy`);
//! - [`model`] the eight models, each `run(listeners, ctx) -> Result<()>`;
//! - [`opt`] the command line of `netecho serve`;
//! - [`listen`] binds the sockets and prints the `listening` lines (and
//!   parses them back: [`parse_listening`]);
//! - [`shutdown`] a server's stop state, passed in [`Ctx`]; [`signals`]
//!   wires SIGTERM/SIGINT/SIGHUP/SIGCHLD to it at the binary's edge;
//! - [`stats`] the counters, in memory shared with forked children;
//! - [`accept`] the accept step of the blocking models (poll, limits, EMFILE);
//! - [`echo`] the blocking read/write loop that keeps the contract;
//! - [`supervise`] drain and exit for the models that run in one process;
//! - [`children`] the same for the forking models (reaping, SIGTERM, SIGKILL);
//! - [`pool`] how many workers prefork and prethread start or retire (pure),
//!   [`scoreboard`] what each of their workers is doing;
//! - [`udp`], [`metrics`], [`sidecar`], [`activation`], [`inetd`]: the
//!   service features (UDP echo, Prometheus, systemd, inetd);
//! - [`handover`] SIGHUP: a new process takes the sockets over (restart
//!   and upgrade without a refused connect); [`notify`] tells systemd.

pub(crate) mod accept;
pub(crate) mod activation;
pub(crate) mod children;
pub(crate) mod conn;
pub(crate) mod echo;
pub(crate) mod handover;
pub(crate) mod inetd;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod notify;
pub(crate) mod opt;
pub(crate) mod pending;
pub(crate) mod per_ip;
pub(crate) mod percpu;
pub(crate) mod pool;
pub(crate) mod scoreboard;
pub(crate) mod shutdown;
pub(crate) mod sidecar;
pub(crate) mod signals;
pub(crate) mod splice;
pub(crate) mod stats;
pub(crate) mod supervise;
pub(crate) mod timers;
pub(crate) mod tls;
pub(crate) mod udp;

pub use model::{epoll, fork, iterative, prefork, prethread, thread, tokio, uring};

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::Duration;

use clap::ValueEnum;
use tracing::info;

use crate::error::{Error, Result};
use crate::sys::raise_nofile_limit;
pub use listen::{ListenKind, Listening, parse_listening};
pub(crate) use opt::ServeOpt;
pub(crate) use shutdown::Shutdown;
use stats::Stats;
pub use tls::TlsError;

/// The default port when no `--listen` is given.
pub(crate) const DEFAULT_PORT: u16 = 6666;
/// Listen backlog: enough for bursts of hundreds of connects while every
/// worker is busy (the kernel caps it at net.core.somaxconn).
pub(crate) const BACKLOG: i32 = 1024;
/// Default `--max-conns` for `fork`: a process per client is heavy.
pub(crate) const DEFAULT_MAX_CONNS_FORK: usize = 1024;
/// Default `--max-conns` for `thread`: a thread per client is lighter.
pub(crate) const DEFAULT_MAX_CONNS_THREAD: usize = 4096;
/// Default `--max-conns` for `prefork`: the pool grows to this many busy
/// processes (each a few hundred KiB of its own once it has run), a
/// quarter of `fork`'s, since a pool keeps its workers after the burst.
pub(crate) const DEFAULT_MAX_CONNS_PREFORK: usize = 256;
/// Default `--max-conns` for `prethread`: threads are cheaper than
/// processes (128 KiB of stack each, a 64 KiB buffer once used).
pub(crate) const DEFAULT_MAX_CONNS_PRETHREAD: usize = 1024;
/// Default `--max-conns` for the event models: an idle connection costs a
/// few hundred bytes, so the descriptor limit is the real bound.
pub(crate) const DEFAULT_MAX_CONNS_EVENT: usize = 65_536;

/// How the server handles concurrent clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// The fastest model on the running kernel: `uring` where io_uring is
    /// usable, else `epoll` (one log line says why).
    Auto,
    /// One client at a time; the rest wait in the listen backlog (the one
    /// model where `--max-conns` is not how many are served at once).
    Iterative,
    /// A process per client, forked after accept (the classic design).
    Fork,
    /// A pool of processes, each accepting and serving one client at a
    /// time; it grows with demand up to `--max-conns` and shrinks when idle.
    Prefork,
    /// A thread per client.
    Thread,
    /// A pool of threads, each accepting and serving one client at a time;
    /// it grows with demand up to `--max-conns` and shrinks when idle.
    Prethread,
    /// A mio (epoll) readiness loop per worker thread.
    Epoll,
    /// Async tasks on a tokio runtime with `--workers` threads.
    Tokio,
    /// A completion loop on io_uring per worker thread.
    Uring,
}

impl Model {
    /// What `auto` means here: `uring` when io_uring works on this kernel
    /// (measured the cheapest per request, see README), else `epoll`. The
    /// probe runs once; a refusal (seccomp, `io_uring_disabled`, an old
    /// kernel) is logged once with its reason.
    pub fn resolve(self) -> Model {
        static AUTO: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        match self {
            Model::Auto => *AUTO.get_or_init(|| match uring::probe() {
                Ok(()) => Model::Uring,
                Err(reason) => {
                    info!(%reason, "io_uring unavailable; --model auto uses epoll");
                    Model::Epoll
                }
            }),
            m => m,
        }
    }

    /// The model's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Model::Auto => "auto",
            Model::Iterative => "iterative",
            Model::Fork => "fork",
            Model::Prefork => "prefork",
            Model::Thread => "thread",
            Model::Prethread => "prethread",
            Model::Epoll => "epoll",
            Model::Tokio => "tokio",
            Model::Uring => "uring",
        }
    }

    /// The default `--max-conns`: how many clients the model serves at
    /// once (iterative: one, the rest wait).
    pub fn default_max_conns(self) -> usize {
        match self.resolve() {
            Model::Iterative => 1,
            Model::Fork => DEFAULT_MAX_CONNS_FORK,
            Model::Prefork => DEFAULT_MAX_CONNS_PREFORK,
            Model::Prethread => DEFAULT_MAX_CONNS_PRETHREAD,
            Model::Thread => DEFAULT_MAX_CONNS_THREAD,
            Model::Epoll | Model::Tokio | Model::Uring | Model::Auto => DEFAULT_MAX_CONNS_EVENT,
        }
    }
}

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
    /// This server's stop state: SIGTERM/SIGINT in the binary, a call in a
    /// test.
    pub(crate) shutdown: Shutdown,
    /// `--tls-listen`: the TLS configuration and which listeners speak it.
    pub(crate) tls: Option<tls::Tls>,
    /// `--zero-copy`, resolved on this kernel (`Off` where splice is refused).
    pub(crate) zero_copy: splice::ZeroCopy,
}

impl Ctx {
    /// Admits a new client under `--max-conns-per-ip` and `--max-conns`.
    /// `false` means: close it at once (it has been counted as rejected).
    pub(crate) fn admit(&self, peer: &SocketAddr) -> bool {
        if let Some(max) = self.max_conns_per_ip
            && !self.stats.per_ip.admit(peer.ip(), max)
        {
            self.stats
                .rejected_per_ip
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        if !self.stats.try_admit(self.max_conns) {
            if self.max_conns_per_ip.is_some() {
                self.stats.per_ip.release(peer.ip());
            }
            return false;
        }
        true
    }

    /// Gives back what [`Ctx::admit`] took, after the connection is closed.
    pub(crate) fn release(&self, peer: &SocketAddr) {
        self.release_ip(peer.ip());
    }

    /// [`Ctx::release`] knowing only the client's address.
    pub(crate) fn release_ip(&self, ip: std::net::IpAddr) {
        if self.max_conns_per_ip.is_some() {
            self.stats.per_ip.release(ip);
        }
        self.stats.release();
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
            shutdown,
            tls: None,
            zero_copy: splice::ZeroCopy::Auto,
        }
    }
}

/// Runs `netecho serve` until a signal stops it.
pub(crate) fn run(opt: ServeOpt) -> Result<()> {
    if opt.inetd {
        let idle = (!opt.idle_timeout.is_zero()).then_some(opt.idle_timeout);
        let stall = (!opt.stall_timeout.is_zero()).then_some(opt.stall_timeout);
        return inetd::run(idle, stall.or(idle));
    }
    // TLS files are read and checked before anything binds: a bad one is
    // one line and a non-zero exit, with no port ever opened.
    let tls = load_tls(&opt)?;
    let model = opt.model.resolve();
    let workers = opt.workers.unwrap_or_else(default_workers);
    let max_conns = opt.max_conns.unwrap_or_else(|| model.default_max_conns());
    if opt.min_spare > opt.max_spare {
        return Err(Error::InvalidOption(format!(
            "--min-spare {} is above --max-spare {}",
            opt.min_spare, opt.max_spare
        )));
    }
    let _ = raise_nofile_limit();
    let handed = handover::init();
    // Sockets passed by systemd (or a handover) first, before this process
    // opens any other descriptor that could sit where LISTEN_FDS says.
    let passed = activation::take()?.unwrap_or_default();
    // Handlers before binding: a test may send SIGTERM the moment it reads
    // our `listening` line, and the default action would kill us, no drain.
    let shutdown = Shutdown::new().map_err(Error::io("creating the wake-up pipe"))?;
    signals::install(shutdown).map_err(Error::io("installing signal handlers"))?;
    let stats = stats::Stats::shared().map_err(Error::io("mapping shared counters"))?;
    let listeners = if passed.tcp.is_empty() {
        listen::bind_all(&opt.listen)?
    } else {
        if !opt.listen.is_empty() && !handed {
            tracing::warn!("sockets passed by systemd (LISTEN_FDS); --listen ignored");
        }
        passed.tcp
    };
    let tls_listeners = if passed.tls.is_empty() {
        opt.tls_listen
            .iter()
            .map(|a| listen::bind(*a))
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
    let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
        max_conns,
        idle_timeout: (!opt.idle_timeout.is_zero()).then_some(opt.idle_timeout),
        drain_timeout: opt.drain_timeout,
        workers,
        spare: pool::Spare {
            min: opt.min_spare,
            max: opt.max_spare,
            retire_idle: (!opt.worker_idle_timeout.is_zero()).then_some(opt.worker_idle_timeout),
        },
        max_conns_per_ip: opt.max_conns_per_ip.map(|n| n as u64),
        stall_timeout: (!opt.stall_timeout.is_zero()).then_some(opt.stall_timeout),
        stats,
        shutdown,
        tls,
        zero_copy: opt.zero_copy.resolve(),
    }));
    if ctx.zero_copy == splice::ZeroCopy::On && !matches!(model, Model::Epoll | Model::Uring) {
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
        udp::bind_all(&local_addrs(&listeners))?
    };
    let metrics = match opt.metrics {
        // A handover passes the one it had.
        Some(_) if passed.metrics.is_some() => passed.metrics,
        Some(addr) => {
            let l = listen::bind(addr)?;
            // The metrics thread blocks in accept.
            l.set_nonblocking(false)
                .map_err(Error::io("metrics listener"))?;
            Some(l)
        }
        None => None,
    };
    keep_for_handover(&listeners, &udp_sockets, metrics.as_ref(), &tls_listeners)?;
    listen::announce(&listeners, ListenKind::Tcp)?;
    listen::announce(&tls_listeners, ListenKind::Tls)?;
    udp::announce(&udp_sockets)?;
    if let Some(m) = &metrics {
        let addr = m.local_addr().map_err(Error::io("metrics listener"))?;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let line = Listening {
            kind: ListenKind::Metrics,
            addr,
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
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
        },
        &listeners.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>(),
        stats,
    )?;
    info!(
        model = model.name(),
        workers,
        max_conns,
        idle_timeout_s = opt.idle_timeout.as_secs_f64(),
        drain_timeout_s = opt.drain_timeout.as_secs_f64(),
        zero_copy = ?ctx.zero_copy,
        "serving"
    );
    // The models serve every listener alike; an accepted socket whose
    // local address is a TLS listener's goes through the TLS layer.
    let mut listeners = listeners;
    listeners.extend(tls_listeners);
    run_model(model, listeners, ctx)
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

/// Hands the bound listeners to the chosen model.
pub(crate) fn run_model(
    model: Model,
    listeners: Vec<TcpListener>,
    ctx: &'static Ctx,
) -> Result<()> {
    match model.resolve() {
        Model::Iterative => iterative::run(listeners, ctx),
        Model::Fork => fork::run(listeners, ctx),
        Model::Prefork => prefork::run(listeners, ctx),
        Model::Prethread => prethread::run(listeners, ctx),
        // `resolve` never returns `Auto`; the arm keeps the match total.
        Model::Epoll | Model::Auto => epoll::run(listeners, ctx),
        Model::Tokio => tokio::run(listeners, ctx),
        Model::Uring => uring::run(listeners, ctx),
        Model::Thread => thread::run(listeners, ctx),
    }
}

/// One worker per core, as the OS reports them.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The addresses a set of listeners ended up bound to.
pub(crate) fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::mpsc;

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
            let r = run_model(model, vec![listener], ctx);
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
        let fins =
            || ctx.stats.closed[conn::End::Fin.index()].load(std::sync::atomic::Ordering::Relaxed);
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
