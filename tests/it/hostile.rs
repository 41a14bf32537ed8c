//! Hostile traffic (issue "Hostile traffic and restarts: nothing lost,
//! nobody starved"), on real processes and loopback sockets: a UDP source
//! already known keeps its answers through floods of spoofed new sources
//! below and above the global rate; the per-IP table stays bounded after
//! 10,000 client addresses; prefork workers killed at random never hang the
//! others.
//!
//! Every flood here is bounded in count and time and stays on 127.0.0.0/8.

use std::io::{IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netecho::serve::ListenKind;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, sendmsg};
use nix::unistd::Pid;
use socket2::{Domain, Socket, Type};

use crate::util::{self, Rng, Server};

/// How long one probe waits for its answer before it is sent again.
const PROBE_WAIT: Duration = Duration::from_millis(300);
/// Sends of one probe before it counts as unanswered: a loopback datagram
/// is lost only when a socket buffer overflows, which a loaded test
/// machine can cause now and then; a starved source loses them all.
const PROBE_TRIES: usize = 3;
/// Probes the known source sends during a flood.
const PROBES: usize = 20;
/// How long the known source talks before a flood starts: past the
/// policy's half second, after which a source still talking is known.
const WARM_UP: Duration = Duration::from_millis(800);
/// Hard limit on any flood, whatever its count.
const FLOOD_LIMIT: Duration = Duration::from_secs(10);
/// How long the server may take to settle a count after clients close.
const SETTLE: Duration = Duration::from_secs(10);

/// The `i`-th of many distinct loopback sources: 127.a.b.c from 127.1.0.1
/// on, never 127.0.0.1 nor a .0 or .255 last byte.
fn new_source(i: u32) -> Ipv4Addr {
    let (ab, c) = (i / 254, i % 254 + 1);
    let [_, _, a, b] = (ab + 256).to_be_bytes();
    Ipv4Addr::new(127, a, b, c as u8)
}

/// Sends `count` datagrams to `to`, each from a source never used before
/// (set per datagram with IP_PKTINFO, so one socket speaks for them all), at
/// about `rate` per second; stops early at [`FLOOD_LIMIT`] or when `stop`
/// is set. Returns how many were sent.
fn flood_new_sources(to: SocketAddr, count: u32, rate: u32, stop: &AtomicBool) -> u32 {
    let SocketAddr::V4(to) = to else {
        panic!("the flood speaks IPv4")
    };
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("flood socket");
    // The replies come back to this socket; nobody reads them, so they
    // must not be able to make a send block.
    sock.set_nonblocking(true).unwrap();
    let dst = SockaddrIn::from(to);
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < count && t0.elapsed() < FLOOD_LIMIT && !stop.load(Ordering::Relaxed) {
        let due = ((t0.elapsed().as_secs_f64() * f64::from(rate)) as u32).min(count);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due {
            let src = new_source(sent);
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let payload = sent.to_be_bytes();
            let _ = sendmsg(
                sock.as_raw_fd(),
                &[IoSlice::new(&payload)],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dst),
            );
            sent += 1;
        }
    }
    sent
}

/// A client on 127.0.0.1 that has talked long enough to be known.
struct Known {
    sock: UdpSocket,
    to: SocketAddr,
    seq: u32,
}

impl Known {
    /// Talks for [`WARM_UP`]; every probe of it must be answered (no flood
    /// yet).
    fn warm_up(to: SocketAddr) -> Known {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe socket");
        let mut k = Known { sock, to, seq: 0 };
        let t0 = Instant::now();
        while t0.elapsed() < WARM_UP {
            assert!(k.probe(), "probe {} unanswered before any flood", k.seq);
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }

    /// One probe, sent up to [`PROBE_TRIES`] times; true once answered.
    fn probe(&mut self) -> bool {
        self.seq += 1;
        let msg = format!("probe {}", self.seq);
        let mut buf = [0u8; 64];
        for _ in 0..PROBE_TRIES {
            self.sock
                .send_to(msg.as_bytes(), self.to)
                .expect("probe send");
            let deadline = Instant::now() + PROBE_WAIT;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                self.sock
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                match self.sock.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == msg.as_bytes() => return true,
                    // A late answer to an earlier try or probe.
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        false
    }
}

pub(crate) use crate::util::metric;

/// Runs a flood of `count` new sources at `rate` against a server started
/// with `args`, while a known source sends [`PROBES`] probes spread over
/// it; returns the server (for its metrics), the flood's size, and the
/// probes left unanswered.
fn known_source_through_a_flood(args: &[&str], count: u32, rate: u32) -> (Server, u32, Vec<u32>) {
    let every = Duration::from_secs_f64(f64::from(count) / f64::from(rate) / PROBES as f64);
    let mut all = vec!["--udp", "--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start("epoll", &all);
    let to = server
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .expect("a `listening udp` line");
    let mut known = Known::warm_up(to);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || flood_new_sources(to, count, rate, &stop))
    };
    let mut lost = Vec::new();
    for _ in 0..PROBES {
        std::thread::sleep(every);
        if !known.probe() {
            lost.push(known.seq);
        }
    }
    // The flood ends by itself (count or time); the flag is for a probe
    // loop that panicked.
    let sent = flood.join().expect("flood thread");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(sent, count, "the flood was cut short at {FLOOD_LIMIT:?}");
    (server, sent, lost)
}

/// Below the global rate every new source is answered, and there are more
/// of them than the source table holds (65,536). Before, past that point
/// each datagram swept the whole table under one lock and the new sources
/// were refused (counted as over their rate); a known client's datagrams
/// were lost with the flood's once the server fell behind.
#[test]
fn a_known_udp_source_is_answered_through_a_flood_below_the_global_rate() {
    // A flood at 12,000 datagrams a second: nothing else heavy beside it.
    let _heavy = util::heavy();
    const SOURCES: u32 = 72_000;
    let (server, sent, lost) =
        known_source_through_a_flood(&["--udp-global-rate", "100000"], SOURCES, 12_000);
    assert!(
        lost.is_empty(),
        "probes {lost:?} unanswered during the flood"
    );
    let m = server.metrics_addr();
    for reason in ["global_rate", "source_rate", "table_full"] {
        let name = format!("netecho_udp_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(m, &name), 0, "new sources refused for {reason}");
    }
    // The flood really reached the server, past the table's size.
    let echoed = metric(m, "netecho_udp_datagrams_total");
    assert!(echoed > 65_536, "{echoed} echoed of {sent} sent");
}

/// Above the global rate the new sources are refused their excess; the
/// known source is not (before, it drew from the same bucket as the flood
/// and lost most of its probes).
#[test]
fn a_known_udp_source_is_answered_through_a_flood_above_the_global_rate() {
    // A flood at 12,000 datagrams a second: nothing else heavy beside it.
    let _heavy = util::heavy();
    const SOURCES: u32 = 30_000;
    let (server, sent, lost) =
        known_source_through_a_flood(&["--udp-global-rate", "1000"], SOURCES, 10_000);
    assert!(
        lost.is_empty(),
        "probes {lost:?} unanswered during the flood"
    );
    let dropped = metric(
        server.metrics_addr(),
        "netecho_udp_dropped_total{reason=\"global_rate\"}",
    );
    assert!(
        dropped > u64::from(sent) / 4,
        "the flood ({sent} sent) was not above the global rate: {dropped} dropped for it"
    );
}

/// A TCP connection from `ip` that was admitted: it echoes a byte. `None`
/// when the server closed it at once (over a limit).
pub(crate) fn admitted_from(ip: impl Into<IpAddr>, to: SocketAddr) -> Option<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((ip.into(), 0)).into())
        .expect("bind a client address");
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    s.write_all(b"x").ok()?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(s),
        _ => None,
    }
}

/// 127.0.x.y, x in 1..=40, y in 1..=250: 10,000 client addresses.
fn client_address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (1 + i / 250) as u8, (1 + i % 250) as u8)
}

/// Before, an address's key stayed in the table forever: after 4,096
/// distinct addresses every new one scanned all slots under a spinlock.
/// Now a slot is freed when its count falls to zero: after 10,000
/// addresses the table holds only those with connections open, and a new
/// address finds its window as empty as the first did.
#[test]
fn the_per_ip_table_stays_bounded_after_ten_thousand_addresses() {
    const ADDRESSES: u32 = 10_000;
    const THREADS: u32 = 4;
    const HELD: u32 = 300;
    let server = Server::start(
        "epoll",
        &["--max-conns-per-ip", "1", "--metrics", "127.0.0.1:0"],
    );
    let (to, m) = (server.addr(), server.metrics_addr());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                (t..ADDRESSES)
                    .step_by(THREADS as usize)
                    .filter(|&i| admitted_from(client_address(i), to).is_none())
                    .count()
            })
        })
        .collect();
    let refused: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(refused, 0, "each address had one connection at a time");
    assert!(
        crate::util::eventually(SETTLE, || metric(m, "netecho_per_ip_tracked") == 0),
        "addresses with nothing open are still in the table: {}",
        metric(m, "netecho_per_ip_tracked")
    );
    // Connections held open are each counted, and the limit is exact.
    let held: Vec<TcpStream> = (0..HELD)
        .map(|i| admitted_from(client_address(i), to).expect("a first connection"))
        .collect();
    assert_eq!(metric(m, "netecho_per_ip_tracked"), u64::from(HELD));
    assert!(
        admitted_from(client_address(7), to).is_none(),
        "a second connection from one address"
    );
    drop(held);
    assert!(crate::util::eventually(SETTLE, || metric(
        m,
        "netecho_per_ip_tracked"
    ) == 0));
    let new = Ipv4Addr::new(127, 0, 250, 1);
    let first = admitted_from(new, to).expect("the 10,001st address is admitted");
    assert!(admitted_from(new, to).is_none(), "and limited");
    drop(first);
    assert!(
        metric(
            m,
            "netecho_connections_rejected_total{reason=\"max_conns_per_ip\"}"
        ) >= 2
    );
}

/// Workers of a prefork server are SIGKILLed at random instants while
/// clients connect and close as fast as they can, each admission and
/// release going through the per-IP table in shared memory. Before, a
/// worker killed inside the table's spinlock would have hung every other
/// process forever; now there is no lock. Afterwards every worker serves.
#[test]
fn a_prefork_worker_killed_at_any_moment_never_hangs_the_others() {
    const WORKERS: usize = 4;
    // The pool replaces a dead worker at its start rate (one a second after
    // a death), so each kill waits for a worker to be there to kill.
    const KILLS: usize = 12;
    const WORKER_BACK: Duration = Duration::from_secs(5);
    const CLIENTS: u8 = 3;
    const AFTER: usize = 4 * WORKERS;
    let mut server = Server::start("prefork", &["--workers", "4", "--max-conns-per-ip", "64"]);
    let to = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + c);
                let mut served = 0u32;
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < FLOOD_LIMIT {
                    // Killed mid-connection, or refused while no worker
                    // was accepting: both are expected here.
                    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    if sock.bind(&SocketAddr::from((ip, 0)).into()).is_err()
                        || sock
                            .connect_timeout(&to.into(), Duration::from_millis(500))
                            .is_err()
                    {
                        continue;
                    }
                    let mut s: TcpStream = sock.into();
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut b = [0u8; 1];
                    if s.write_all(b"k").is_ok() && matches!(s.read(&mut b), Ok(1)) {
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    let mut rng = Rng::new(util::seed_of("prefork_kill"));
    let mut killed = 0;
    for _ in 0..KILLS {
        crate::util::eventually(WORKER_BACK, || !util::children(server.pid()).is_empty());
        std::thread::sleep(Duration::from_millis(rng.range(5, 40) as u64));
        let kids = util::children(server.pid());
        if kids.is_empty() {
            continue;
        }
        let victim = kids[rng.range(0, kids.len() - 1)];
        if kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let served: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(killed > KILLS / 2, "only {killed} kills landed");
    assert!(served > 0, "no connection was served during the kills");
    server.assert_running("after the kills");
    // Every worker, restarted or not, takes its turn: sequential round
    // trips, each bounded by the I/O timeout, so a hung worker fails here.
    let payload = Rng::new(7).bytes(1024);
    for i in 0..AFTER {
        util::round_trip(to, &payload, i as u64)
            .unwrap_or_else(|e| panic!("round trip {i} after {killed} kills: {e}"));
    }
    assert!(
        // The pool is back to at least its --workers minimum (spares may
        // add more).
        crate::util::eventually(SETTLE, || util::children(server.pid()).len() >= WORKERS),
        "workers restarted: {:?}",
        util::children(server.pid())
    );
}

/// A reflector of another echo service, 20 ms away on a service port below
/// the client range, holding `payloads` different datagrams in a loop with
/// the server: returns every datagram it got back from the server within
/// `watch`. Bound to 127.0.0.1 on a port from 20000 on, as a server would be.
fn reflect(server: SocketAddr, payloads: usize, watch: Duration) -> usize {
    let mut rng = Rng::new(util::seed_of("reflect"));
    let sock = (0..200)
        .find_map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, rng.range(20_000, 30_000) as u16)).ok())
        .expect("a free port for the reflector");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for i in 0..payloads {
        sock.send_to(format!("loop payload {i}").as_bytes(), server)
            .unwrap();
    }
    let end = Instant::now() + watch;
    let mut got = 0;
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        assert_eq!(from, server, "only the server talks to the reflector");
        got += 1;
        std::thread::sleep(Duration::from_millis(20));
        sock.send_to(&buf[..n], server).unwrap();
    }
    got
}

/// Two and eight payloads alternating between netecho and another echo
/// service are cut within a few bounces. Before, each source remembered only
/// its last reply, so alternating payloads never matched it and bounced for
/// ever (about 94 a second, 280 in this test's three seconds).
#[test]
fn udp_loops_of_alternating_payloads_through_a_reflector_are_cut() {
    let _t = util::timing();
    for payloads in [2, 8] {
        let server = Server::start("epoll", &["--udp", "--metrics", "127.0.0.1:0"]);
        let to = server
            .listening(ListenKind::Udp, Duration::from_secs(5))
            .expect("a `listening udp` line");
        let back = reflect(to, payloads, Duration::from_secs(3));
        // Each payload is answered once, then the loop is cut within three
        // bounces in all.
        assert!(
            back <= payloads + 3,
            "{payloads} payloads: the reflector got {back} replies in 3 s, the loop went on"
        );
        let cut = metric(
            server.metrics_addr(),
            "netecho_udp_dropped_total{reason=\"loop\"}",
        );
        assert!(
            cut >= 1,
            "{payloads} payloads: no datagram counted as a loop"
        );
    }
}

/// A client sending the same bytes again and again from a client port (as
/// ping tools do) is answered every time, here every 120 ms: before, the
/// third identical datagram within a second was taken for a loop.
#[test]
fn udp_identical_probes_from_a_client_are_all_answered() {
    let _t = util::timing();
    let server = Server::start("epoll", &["--udp"]);
    let to = server
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .expect("a `listening udp` line");
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let probe = b"the same probe, again and again";
    let mut answered = 0;
    for _ in 0..10 {
        sock.send_to(probe, to).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            assert_eq!(&buf[..n], probe);
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    assert_eq!(answered, 10, "identical probes went unanswered");
}

/// Sends `request` to the metrics port and reads the answer to its end
/// within `wait`: the status line, and whether the connection ended with a
/// clean close (not a reset or a timeout).
fn metrics_exchange(metrics: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect_timeout(&metrics, wait).expect("metrics connect");
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut page = Vec::new();
    let clean = s.read_to_end(&mut page).is_ok();
    let status = String::from_utf8_lossy(&page)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    (status, clean)
}

/// Silent connections to `/metrics` never delay a scrape: before, scrapes
/// were served one at a time with five seconds each, so three idle sockets
/// made a scraper with a 10 s timeout fail two times in three. Here 100
/// silent sockets (more than the server keeps) and a 2 s scrape timeout.
#[test]
fn metrics_answers_through_silent_connections() {
    let _t = util::timing();
    let server = Server::start("epoll", &["--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let _silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(metrics).expect("silent connection"))
        .collect();
    for i in 0..3 {
        let t = Instant::now();
        let (status, clean) = metrics_exchange(
            metrics,
            b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
            Duration::from_secs(2),
        );
        assert!(
            status.starts_with("HTTP/1.1 200") && clean,
            "scrape {i} behind 100 silent connections: '{status}' after {:?}",
            t.elapsed()
        );
    }
}

/// Oversized and odd requests get an HTTP answer and a clean close: before,
/// a request over 8 KiB was reset without an answer and a GET with a body
/// got its page followed by a reset.
#[test]
fn metrics_answers_odd_requests_with_http_errors_not_resets() {
    let server = Server::start("epoll", &["--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let wait = Duration::from_secs(5);
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    for (what, request, want) in [
        ("a 9 KiB head", big, "HTTP/1.1 431"),
        (
            "a GET with a body",
            b"GET /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(),
            "HTTP/1.1 200",
        ),
        ("not HTTP", b"hello there\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "a POST",
            b"POST /metrics HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
            "HTTP/1.1 405",
        ),
    ] {
        let (status, clean) = metrics_exchange(metrics, &request, wait);
        assert!(
            status.starts_with(want),
            "{what}: got '{status}', want {want}"
        );
        assert!(
            clean,
            "{what}: the answer '{status}' was followed by a reset"
        );
    }
}

/// `--max-conns-per-ip` holds for new addresses after thousands of others
/// each keep one idle connection. Before, about 4,200 such addresses filled
/// the table, and a new address past a full window was not limited at all:
/// half of 30 fresh addresses got every connection they asked for.
#[test]
fn the_per_ip_limit_holds_after_thousands_of_addresses_fill_the_table() {
    const FILLERS: u32 = 5_000;
    const LIMIT: usize = 4;
    let _heavy = util::heavy();
    // Our side holds FILLERS connections too.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if hard < 2 * u64::from(FILLERS) {
        skipped!("SKIPPED: per-IP fill: the descriptor limit {hard} is too low");
        return;
    }
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    let server = Server::start(
        "epoll",
        &[
            "--max-conns-per-ip",
            &LIMIT.to_string(),
            "--max-conns",
            "20000",
        ],
    );
    let to = server.addr();
    let fillers: Vec<TcpStream> = (0..FILLERS)
        .filter_map(|i| admitted_from(client_address(i), to))
        .collect();
    assert_eq!(fillers.len(), FILLERS as usize, "every filler is served");
    let mut over = Vec::new();
    for i in 0..30u8 {
        let fresh = Ipv4Addr::new(127, 0, 251, 1 + i);
        let got: Vec<TcpStream> = (0..10).filter_map(|_| admitted_from(fresh, to)).collect();
        if got.len() != LIMIT {
            over.push((fresh, got.len()));
        }
    }
    assert!(
        over.is_empty(),
        "fresh addresses not held to {LIMIT} after {FILLERS} fillers: {over:?}"
    );
}

/// IPv6 clients are limited per prefix, /64 unless `--per-ip-v6-prefix`
/// says otherwise: in a network namespace of the test's own (made by a
/// thread that unshares it, gone with the thread and the server), with
/// addresses of two /64s on its loopback, two addresses of one /64 share a
/// limit and an address of the other does not.
#[test]
fn ipv6_clients_are_limited_per_prefix() {
    if !util::is_root() {
        skipped!("SKIPPED: IPv6 per-prefix limit: needs root for a network namespace");
        return;
    }
    if !util::have_tool("ip") {
        skipped!("SKIPPED: IPv6 per-prefix limit: `ip` (iproute2) is not installed");
        return;
    }
    let (a1, a2, b1): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
        "2001:db8:1:1::1".parse().unwrap(),
        "2001:db8:1:1::2".parse().unwrap(),
        "2001:db8:1:2::1".parse().unwrap(),
    );
    std::thread::spawn(move || {
        util::own_netns_with_loopback().expect("a network namespace of our own");
        for a in [a1, a2, b1] {
            let run = util::run_to_end(
                {
                    let mut c = std::process::Command::new("ip");
                    c.args([
                        "-6",
                        "addr",
                        "add",
                        &format!("{a}/128"),
                        "dev",
                        "lo",
                        "nodad",
                    ]);
                    c
                },
                None,
                Duration::from_secs(10),
            );
            assert!(run.success(), "ip addr add {a}: {}", run.stderr);
        }
        // (prefix flag, admitted from a1, a2, b1 under a limit of 1)
        for (prefix, want) in [
            (None, [true, false, true]),
            (Some("128"), [true, true, true]),
            (Some("48"), [true, false, false]),
        ] {
            let mut args = vec!["--max-conns-per-ip", "1"];
            args.extend(prefix.iter().flat_map(|p| ["--per-ip-v6-prefix", *p]));
            let server = Server::start_on("epoll", &["[::1]:0"], &args);
            let held: Vec<Option<TcpStream>> = [a1, a2, b1]
                .iter()
                .map(|&a| admitted_from(a, server.addr()))
                .collect();
            let got: Vec<bool> = held.iter().map(Option::is_some).collect();
            assert_eq!(
                got, want,
                "--per-ip-v6-prefix {prefix:?}: admitted from {a1}, {a2}, {b1}"
            );
        }
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
