//! One cell of the tables: one server on one workload, measured once.
//!
//! A server process is started on a free loopback port, pinned to the
//! server CPU, and driven from this process (pinned to the load CPU) with
//! the same TCP worker as `netecho bench HOST:PORT` ([`crate::bench::tcp`]).
//! The figure that counts is the server's CPU per request, read from `/proc`
//! ([`crate::bench::procstat`]) when the measured window opens and closes,
//! forked children included: it does not depend on whether the load
//! generator keeps up. Beside it, at the same edges, the whole machine's busy
//! CPU ([`procstat::machine_busy_ns`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{Server, model_flags};
use super::setup::{Programs, Setup, Skip};
use super::workload::{SMALL_MSG, Shape, Workload};
use super::{floor, peer};
use crate::bench::plan::{self, Plan};
use crate::bench::tally::Tally;
use crate::bench::{procstat, spawn, stream as bench_stream, tcp, tls as bench_tls};
use crate::error::{Error, Result};
use crate::net::pattern;
use crate::net::tls::{self as net_tls, Connector};
use crate::serve::ListenKind;
use crate::sys::stop;

/// Connections workload 4 opens before it reads their echoes: well under
/// the listen backlog (1024), so the kernel never refuses one for a full
/// queue, and enough to keep the server busy between two of our reads.
const IDLE_BATCH: usize = 64;
/// Workload 4 gives up opening its connections after this long.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(60);
/// Pause after the last idle connection is open and before PSS is read, for
/// anything the server does after echoing (a thread parking, a child settling).
pub(crate) const IDLE_SETTLE: Duration = Duration::from_millis(300);
/// Pause after workload 4's warm-up connection closes, before PSS is read.
const WARM_SETTLE: Duration = Duration::from_millis(100);
/// No echo for this long means the server is stuck: the cell fails.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Connect timeout of the load's blocking connects (loopback answers in µs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the main thread looks at the load worker while it waits for
/// the measured window to open or close.
const WAIT_TICK: Duration = Duration::from_millis(20);

pub(crate) use super::traffic::Traffic;

/// Figures of the [`Shape::Idle`] workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Connections held open when PSS was read.
    pub(crate) conns: f64,
    /// Seconds to open them all (each with one round trip).
    pub(crate) open_s: f64,
    /// Processes summed: the server and its children.
    pub(crate) procs: f64,
    pub(crate) pss_before_kib: f64,
    pub(crate) pss_after_kib: f64,
    /// (after − before) / conns.
    pub(crate) kib_per_conn: f64,
    /// Server CPU per connection opened and used once, microseconds.
    pub(crate) cpu_us_per_conn: f64,
    /// The whole machine's busy CPU per connection, microseconds.
    pub(crate) machine_us_per_conn: f64,
}

/// Figures of the [`Shape::Stream`] workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream {
    /// Connections streaming.
    pub(crate) conns: usize,
    /// MiB echoed back (one direction) and checked per second in the window.
    pub(crate) mib_s: f64,
    /// MiB echoed back and checked in the window.
    pub(crate) mib: f64,
    /// Server CPU per MiB echoed, microseconds.
    pub(crate) cpu_us_per_mib: f64,
    /// The whole machine's busy CPU per MiB echoed, microseconds.
    pub(crate) machine_us_per_mib: f64,
}

/// What one cell measured.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Traffic(Traffic),
    Memory(Memory),
    Stream(Stream),
}

impl Outcome {
    /// The figure charts and ratios use: server CPU per request, memory
    /// per idle connection, or server CPU per MiB streamed.
    pub(crate) fn primary(&self) -> f64 {
        match self {
            Outcome::Traffic(t) => t.cpu_us,
            Outcome::Memory(m) => m.kib_per_conn,
            Outcome::Stream(s) => s.cpu_us_per_mib,
        }
    }

    /// The whole machine's busy CPU per request (or per MiB streamed),
    /// beside [`Outcome::primary`]; `None` for memory, where the primary
    /// figure is not CPU.
    pub(crate) fn machine(&self) -> Option<f64> {
        match self {
            Outcome::Traffic(t) => Some(t.machine_us),
            Outcome::Memory(_) => None,
            Outcome::Stream(s) => Some(s.machine_us_per_mib),
        }
    }
}

/// A measured cell.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) outcome: Outcome,
    /// Flags that differ from the usual ones, an unclean exit: for the
    /// table's note column; empty if nothing is worth saying.
    pub(crate) note: String,
}

/// `netecho serve` on a free loopback port with `model`, no idle timeout and
/// a short drain: the command line every measured netecho server starts
/// from (a cell adds its workload's flags).
pub(crate) fn serve_args(model: crate::serve::Model) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--model",
        model.name(),
        "--idle-timeout",
        "0",
        "--drain-timeout",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Measures one cell: starts the server, drives one workload, stops it.
pub(crate) fn measure(
    server: Server,
    w: Workload,
    setup: &Setup,
    programs: &Programs,
) -> std::result::Result<Cell, Skip> {
    match server {
        Server::Netecho(model) => {
            let (extra, note) =
                model_flags(model, w, setup.idle_conns).map_err(Skip::NotApplicable)?;
            let mut args = serve_args(model);
            args.extend(extra);
            spawned(&programs.netecho, &args, note, w, setup, Wire::Plain)
        }
        Server::Tls(_) if matches!(w.shape, Shape::Stream { .. }) => {
            Err(Skip::NotApplicable("the stream load is plain TCP".into()))
        }
        Server::Tls(model) => {
            let (extra, note) =
                model_flags(model, w, setup.idle_conns).map_err(Skip::NotApplicable)?;
            let mut args = serve_args(model);
            args.extend(["--tls-listen".to_string(), "127.0.0.1:0".to_string()]);
            args.extend(extra);
            spawned(&programs.netecho, &args, note, w, setup, Wire::Tls)
        }
        Server::C(spec) => {
            // c-splice opens a pipe per connection (three descriptors each):
            // the idle workload would run it out of descriptors, and it is
            // the bar for large messages, not for idle connections.
            if spec.name == super::server::C_SPLICE.name && w.shape == Shape::Idle {
                return Err(Skip::NotApplicable(
                    "a pipe per connection (3 descriptors each); the bar for large messages".into(),
                ));
            }
            let program = programs.c_program(spec)?;
            spawned(program, &[], String::new(), w, setup, Wire::Plain)
        }
        Server::Peer(p) => {
            if w.shape == Shape::Idle {
                let n = setup.idle_conns;
                return Err(Skip::NotApplicable(format!(
                    "forks a process per connection: {n} idle connections would be {n} processes"
                )));
            }
            if p.tls() && matches!(w.shape, Shape::Stream { .. }) {
                return Err(Skip::NotApplicable("the stream load is plain TCP".into()));
            }
            let Some(prog) = p.program() else {
                return Err(Skip::NotApplicable(
                    "not installed (scripts/install-peers.sh)".into(),
                ));
            };
            let (running, addr) =
                peer::start(p, &prog, &programs.scratch, setup.server_cpu).map_err(fail)?;
            thread::sleep(peer::PROBE_SETTLE);
            let wire = if p.tls() { Wire::Tls } else { Wire::Plain };
            let outcome = load(addr, running.pid, w, setup, wire);
            let tail = running.tail();
            drop(running);
            let outcome = outcome.map_err(|e| Skip::Failed(format!("{e}{tail}")))?;
            Ok(Cell {
                outcome,
                note: "fork per conn".into(),
            })
        }
        Server::KernelFloor => {
            let Some(size) = w.kept_open_size() else {
                return Err(Skip::NotApplicable(
                    "no server: only for messages on connections kept open".into(),
                ));
            };
            let window = floor::WINDOW.min(setup.window);
            let t = floor::measure(size, window, setup.server_cpu).map_err(fail)?;
            Ok(Cell {
                outcome: Outcome::Traffic(t),
                note: "1 thread, both ends".into(),
            })
        }
        Server::Floor2t => {
            let Some(size) = w.kept_open_size() else {
                return Err(Skip::NotApplicable(
                    "no server: only for messages on connections kept open".into(),
                ));
            };
            let window = floor::WINDOW.min(setup.window);
            let (t, client_us) =
                floor::measure_two(size, window, setup.server_cpu, setup.load_cpu).map_err(fail)?;
            let cpus = match (setup.server_cpu, setup.load_cpu) {
                (Some(s), Some(l)) => format!("echo on CPU {s}, sender on CPU {l}"),
                _ => "2 threads, one CPU".into(),
            };
            Ok(Cell {
                outcome: Outcome::Traffic(t),
                note: format!(
                    "{cpus}; sender {} us/trip",
                    crate::bench::text::num(client_us)
                ),
            })
        }
    }
}

/// A cell of a server that prints `listening tcp ADDR` (netecho, the C
/// baselines): started with [`spawn::start`], loaded, stopped. `note` (the
/// flags that differ) is joined with an unclean exit, if any.
fn spawned(
    prog: &Path,
    args: &[String],
    note: String,
    w: Workload,
    setup: &Setup,
    wire: Wire,
) -> std::result::Result<Cell, Skip> {
    let kind = match wire {
        Wire::Plain => ListenKind::Tcp,
        Wire::Tls => ListenKind::Tls,
    };
    let running = spawn::start_on(prog, args, setup.server_cpu, kind).map_err(fail)?;
    let outcome = load(running.addr, running.pid, w, setup, wire);
    let tail = running.stderr_tail();
    let exit_note = spawn::stop(running);
    let outcome = outcome.map_err(|e| {
        Skip::Failed(match &exit_note {
            Some(n) => format!("{e} ({n})"),
            None => format!("{e}{tail}"),
        })
    })?;
    let notes: Vec<String> = [Some(note), exit_note]
        .into_iter()
        .flatten()
        .filter(|n| !n.is_empty())
        .collect();
    Ok(Cell {
        outcome,
        note: notes.join("; "),
    })
}

/// An error as a failed cell.
fn fail(e: Error) -> Skip {
    Skip::Failed(e.to_string())
}

/// How a cell's load talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Plain,
    /// TLS 1.3 with rustls, the server's certificate not verified (it is
    /// self-signed for the run); a full handshake per new connection.
    Tls,
}

/// The client side of [`Wire::Tls`]: no verification, no resumption.
fn tls_connector(addr: SocketAddr) -> Result<Connector> {
    let config = net_tls::client_config(None, true, false)?;
    let name = net_tls::server_name(Some("localhost"), &addr.to_string())?;
    Ok(Connector::new(config, name, &addr.to_string()))
}

/// Drives workload `w` against the server at `addr`, whose process
/// (forked children included) is `server`.
fn load(addr: SocketAddr, server: i32, w: Workload, setup: &Setup, wire: Wire) -> Result<Outcome> {
    let tls = match wire {
        Wire::Plain => None,
        Wire::Tls => Some(tls_connector(addr)?),
    };
    match w.shape {
        Shape::Traffic {
            conns,
            size,
            new_conn,
        } => traffic(addr, server, conns, size, new_conn, setup, tls).map(Outcome::Traffic),
        Shape::Idle => idle(addr, server, setup, tls.as_ref()).map(Outcome::Memory),
        Shape::Stream { conns } => stream(addr, server, conns, setup).map(Outcome::Stream),
    }
}

/// The [`Shape::Stream`] workload through `bench --stream`'s own load
/// ([`crate::bench::stream`]): `conns` connections, primed with one byte
/// each, then streaming for the warm-up and the window; the server's CPU is
/// read as the window opens and closes, the bytes echoed back and checked
/// within it are counted.
fn stream(addr: SocketAddr, server: i32, conns: usize, setup: &Setup) -> Result<Stream> {
    let mut list = Vec::with_capacity(conns);
    for id in 0..conns {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| Error::Measure(format!("cannot connect to the server: {e}")))?;
        let _ = s.set_nodelay(true);
        list.push((id as u64, Some(s)));
    }
    prime(&list)?;
    let socks: Vec<TcpStream> = list.into_iter().filter_map(|(_, s)| s).collect();
    let mut open: Option<Result<Cpu>> = None;
    let mut close: Option<Result<Cpu>> = None;
    let out = bench_stream::run_observed(socks, setup.warmup, setup.window, |edge| {
        let sample = Cpu::read(server, setup.clk_tck);
        match edge {
            bench_stream::Edge::Open => open = Some(sample),
            bench_stream::Edge::Close => close = Some(sample),
        }
    })?;
    if out.mismatches > 0 {
        return Err(Error::Measure(format!(
            "{} of {conns} connections did not get their stream back whole (first: {})",
            out.mismatches,
            out.first_failure.as_deref().unwrap_or("no detail")
        )));
    }
    if stop::requested() {
        return Err(Error::Measure("interrupted".into()));
    }
    let missing = || Error::Measure("the window never opened".into());
    let cpu0 = open.ok_or_else(missing)??;
    let cpu1 = close.ok_or_else(missing)??;
    if out.bytes == 0 {
        return Err(Error::Measure("no byte came back in the window".into()));
    }
    let mib = out.bytes as f64 / (1024.0 * 1024.0);
    let (server_us, machine_us) = cpu1.since(cpu0);
    Ok(Stream {
        conns,
        mib_s: mib / out.secs.max(1e-9),
        mib,
        cpu_us_per_mib: server_us / mib,
        machine_us_per_mib: machine_us / mib,
    })
}

/// Longest a connection may wait for its first answer: a pool that starts
/// with two workers grows to fifty within about six seconds.
const PRIME_TIMEOUT: Duration = Duration::from_secs(30);

/// One byte back and forth on every connection, all sent before any is
/// read, so that a pooled server has grown to the load before the warm-up
/// (an event server answers at once). Nothing is left on the stream.
fn prime(list: &[(u64, Option<TcpStream>)]) -> Result<()> {
    use std::io::{Read, Write};
    let socks: Vec<&TcpStream> = list.iter().filter_map(|(_, s)| s.as_ref()).collect();
    for mut s in socks.iter().copied() {
        s.write_all(b"p")
            .map_err(|e| Error::Measure(format!("priming a connection: {e}")))?;
    }
    for mut s in socks.iter().copied() {
        let _ = s.set_read_timeout(Some(PRIME_TIMEOUT));
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| {
            Error::Measure(format!("no first answer within {PRIME_TIMEOUT:?}: {e}"))
        })?;
        let _ = s.set_read_timeout(None);
    }
    Ok(())
}

/// Loopback addresses the connections of a connection-per-request workload
/// come from, as `bench --source-addrs` takes them.
const CONNECT_SOURCES: &str = "127.0.1.1-127.0.1.64";

/// The source addresses of a connection-per-request workload against
/// `addr`: [`CONNECT_SOURCES`] when `addr` is IPv4 loopback, else none.
/// The client closes first, so each connection leaves its port in
/// TIME_WAIT for a minute: one source address has about 28,000 ports, a
/// cell opens 30,000 or more, and a sitting runs many cells, so from one
/// address the load soon spends its CPU searching for a free port (and a
/// cell finished no request at all once, 2026-12-08). Spread over 64
/// addresses every cell finds ports free.
fn connect_sources(addr: SocketAddr) -> Option<crate::net::source::Sources> {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            crate::net::source::parse(CONNECT_SOURCES).ok()
        }
        _ => None,
    }
}

/// A [`Shape::Traffic`] workload through `bench`'s own TCP worker, on one
/// thread: `conns` connections of `size`-byte messages (`new_conn`: a
/// connection per request). The CPU of process `server` (forked children
/// included) is read when the window opens and closes.
fn traffic(
    addr: SocketAddr,
    server: i32,
    conns: usize,
    size: usize,
    new_conn: bool,
    setup: &Setup,
    tls: Option<Connector>,
) -> Result<Traffic> {
    let mut list = Vec::with_capacity(conns);
    for id in 0..conns {
        let sock = if new_conn {
            None
        } else {
            let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(|e| Error::Measure(format!("cannot connect to the server: {e}")))?;
            // Each message is written whole; nothing to gain from Nagle.
            let _ = s.set_nodelay(true);
            Some(s)
        };
        list.push((id as u64, sock));
    }
    let tls = match tls {
        // The handshakes prime a pool as the byte below does.
        Some(c) => {
            let mut streams: Vec<TcpStream> =
                list.iter_mut().filter_map(|(_, s)| s.take()).collect();
            let (sessions, hist) = bench_tls::handshake_all(&c, &mut streams, PRIME_TIMEOUT)?;
            for ((_, slot), s) in list.iter_mut().zip(streams) {
                *slot = Some(s);
            }
            Some(std::sync::Arc::new(bench_tls::Setup::new(
                c, sessions, hist,
            )))
        }
        None => {
            prime(&list)?;
            None
        }
    };
    let plan = Plan::new(plan::Settings {
        addr,
        conns,
        threads: 1,
        size,
        warmup: setup.warmup,
        duration: Some(setup.window),
        budget: None,
        rate: None,
        new_conn,
        timeout: STALL_LIMIT,
        interval: None,
        hold: false,
    })
    .with_sources(new_conn.then(|| connect_sources(addr)).flatten());
    let (open, close, tally) = thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("models-load".into())
            .spawn_scoped(scope, || match tls.as_deref() {
                Some(setup) => bench_tls::run(setup, &plan, 0, list),
                None => tcp::run(&plan, 0, list),
            })
            .map_err(Error::io("starting the load thread"))?;
        let open = sample_at(plan.warmup_end, &worker, server, setup.clk_tck);
        let close = match (&open, plan.end) {
            (Ok(_), Some(end)) => sample_at(end, &worker, server, setup.clk_tck),
            (Ok(_), None) => Err(Error::Measure("the window has no end".into())),
            (Err(_), _) => Err(Error::Measure("the window never opened".into())),
        };
        let tally = worker.join().unwrap_or_else(|_| {
            Err(Error::Measure(
                "the load thread stopped unexpectedly".into(),
            ))
        });
        Ok::<_, Error>((open, close, tally))
    })?;
    let tally: Tally = tally?;
    if tally.errors > 0 {
        return Err(Error::Measure(format!(
            "{} failed requests; first: {}",
            tally.errors,
            plan.first_error().unwrap_or_default()
        )));
    }
    if stop::requested() {
        return Err(Error::Measure("interrupted".into()));
    }
    let (t0, cpu0) = open?;
    let (t1, cpu1) = close?;
    let requests = tally.hist.len();
    if requests == 0 {
        return Err(Error::Measure("no request completed in the window".into()));
    }
    let secs = t1.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let us = |q: f64| tally.hist.value_at_quantile(q) as f64 / 1e3;
    let (server_us, machine_us) = cpu1.since(cpu0);
    Ok(Traffic {
        req_s: requests as f64 / secs,
        mb_s: requests as f64 * size as f64 / secs / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        cpu_us: server_us / requests as f64,
        machine_us: machine_us / requests as f64,
    })
}

/// Waits until `at` (or until the worker has ended early), then reads the
/// server's CPU: one edge of the measured window.
fn sample_at(
    at: Instant,
    worker: &thread::ScopedJoinHandle<'_, Result<Tally>>,
    server: i32,
    clk_tck: f64,
) -> Result<(Instant, Cpu)> {
    loop {
        let now = Instant::now();
        if now >= at {
            break;
        }
        if worker.is_finished() {
            return Err(Error::Measure("the load stopped before the window".into()));
        }
        thread::sleep(at.duration_since(now).min(WAIT_TICK));
    }
    let cpu = Cpu::read(server, clk_tck)?;
    Ok((Instant::now(), cpu))
}

/// CPU spent so far, read at one edge of a measured window: the server
/// tree's and the whole machine's, one right after the other.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server_ns: u64,
    machine_ns: u64,
}

impl Cpu {
    fn read(server: i32, clk_tck: f64) -> Result<Cpu> {
        Ok(Cpu {
            server_ns: procstat::tree_cpu_ns(server, clk_tck)?,
            machine_ns: procstat::machine_busy_ns()?,
        })
    }

    /// Server and machine CPU from `before` to this reading, microseconds.
    fn since(self, before: Cpu) -> (f64, f64) {
        (
            self.server_ns.saturating_sub(before.server_ns) as f64 / 1e3,
            self.machine_ns.saturating_sub(before.machine_ns) as f64 / 1e3,
        )
    }
}

/// The [`Shape::Idle`] workload: opens `setup.idle_conns` connections, one
/// checked round trip on each, holds them all, and reads the server's PSS
/// before and after.
fn idle(addr: SocketAddr, server: i32, setup: &Setup, tls: Option<&Connector>) -> Result<Memory> {
    let conns = setup.idle_conns;
    // One connection first, so one-time setup (a runtime, a first thread
    // stack, lazily mapped code) is in the "before" figure, not per connection.
    drop(open_batch(addr, 0, 1, tls)?);
    thread::sleep(WARM_SETTLE);
    let (pss_before, _) = procstat::tree_pss_kib(server)?;
    let cpu_before = Cpu::read(server, setup.clk_tck)?;
    let mut held: Vec<Held> = Vec::with_capacity(conns);
    let t0 = Instant::now();
    while held.len() < conns {
        if stop::requested() {
            return Err(Error::Measure("interrupted".into()));
        }
        if t0.elapsed() > IDLE_OPEN_LIMIT {
            return Err(Error::Measure(format!(
                "only {} of {conns} connections open after {} s",
                held.len(),
                IDLE_OPEN_LIMIT.as_secs()
            )));
        }
        let n = IDLE_BATCH.min(conns - held.len());
        held.extend(open_batch(addr, held.len() as u64 + 1, n, tls)?);
    }
    let open_s = t0.elapsed().as_secs_f64();
    thread::sleep(IDLE_SETTLE);
    let cpu_after = Cpu::read(server, setup.clk_tck)?;
    let (pss_after, procs) = procstat::tree_pss_kib(server)?;
    let n = held.len().max(1) as f64;
    drop(held);
    let (server_us, machine_us) = cpu_after.since(cpu_before);
    Ok(Memory {
        conns: conns as f64,
        open_s,
        procs: procs as f64,
        pss_before_kib: pss_before as f64,
        pss_after_kib: pss_after as f64,
        kib_per_conn: (pss_after as f64 - pss_before as f64) / n,
        cpu_us_per_conn: server_us / n,
        machine_us_per_conn: machine_us / n,
    })
}

/// An idle connection held open, with its TLS session if it has one.
type Held = (TcpStream, Option<rustls::ClientConnection>);

/// Opens `n` connections (ids from `first`), writes one 64 B message on
/// each, then reads every echo back and checks it. All the connects and
/// writes go out before the first read, so the server has `n` clients to
/// serve at once rather than one round trip at a time. With `tls`, each
/// connection's handshake comes first, one after another.
fn open_batch(
    addr: SocketAddr,
    first: u64,
    n: usize,
    tls: Option<&Connector>,
) -> Result<Vec<Held>> {
    let broken = |what: &str, id: u64, e: io::Error| {
        Error::Measure(format!("idle connection {id}: {what}: {e}"))
    };
    let mut socks = Vec::with_capacity(n);
    let mut msg = [0u8; SMALL_MSG];
    for id in first..first + n as u64 {
        let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| broken("connect", id, e))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(STALL_LIMIT))
            .and_then(|()| s.set_write_timeout(Some(STALL_LIMIT)))
            .map_err(|e| broken("socket timeout", id, e))?;
        pattern::fill(id, 0, &mut msg);
        let mut session = match tls {
            Some(c) => Some(c.handshake(&mut s, STALL_LIMIT)?.0),
            None => None,
        };
        match session.as_mut() {
            Some(t) => rustls::Stream::new(t, &mut s).write_all(&msg),
            None => s.write_all(&msg),
        }
        .map_err(|e| broken("write", id, e))?;
        socks.push((s, session));
    }
    let mut back = [0u8; SMALL_MSG];
    for (id, (s, session)) in (first..).zip(socks.iter_mut()) {
        pattern::fill(id, 0, &mut msg);
        match session.as_mut() {
            Some(t) => rustls::Stream::new(t, s).read_exact(&mut back),
            None => s.read_exact(&mut back),
        }
        .map_err(|e| broken("echo", id, e))?;
        if let Some(at) = pattern::first_difference(&msg, &back) {
            return Err(Error::Measure(format!(
                "idle connection {id}: echo mismatch at byte {at}"
            )));
        }
    }
    Ok(socks)
}
