//! `netecho ping` against real servers on loopback: netecho's own server,
//! and echo servers written here that misbehave on purpose (a flipped byte,
//! an early close, silence, lost datagrams), which ping must catch.
//!
//! Every run is bounded by its own `-c` and, in case ping misbehaves, by a
//! wall-clock limit after which the test kills it and fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netecho");
/// Longest any ping run in these tests may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// How long a test server's connection waits for bytes before giving up.
const SERVER_IDLE: Duration = Duration::from_secs(10);

/// `netecho serve` on 127.0.0.1:0, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn netecho serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("serve printed its listening line within 10 s");
        let addr = line
            .trim()
            .strip_prefix("listening tcp ")
            .unwrap_or_else(|| panic!("unexpected line from serve: {line:?}"))
            .parse()
            .expect("an address");
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished bench run left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `netecho ARGS...`, killing it after [`RUN_LIMIT`].
fn netecho(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netecho");
    finish(&mut child)
}

/// Waits for `child` (at most [`RUN_LIMIT`]) and collects its output.
fn finish(child: &mut Child) -> Run {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netecho did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// A TCP echo server in this process whose connections run `serve_conn`.
fn tcp_server<F>(serve_conn: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let serve_conn = Arc::new(serve_conn);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(SERVER_IDLE));
            let _ = conn.set_nodelay(true);
            let f = Arc::clone(&serve_conn);
            thread::spawn(move || f(conn));
        }
    });
    addr
}

/// Echoes, passing each byte through `alter(offset, byte)`; stops at EOF,
/// an error, or when `alter` says so by returning `None`.
fn echo_with(mut s: TcpStream, mut alter: impl FnMut(u64, u8) -> Option<u8>) {
    let mut buf = [0u8; 4096];
    let mut offset = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            match alter(offset, b) {
                Some(b) => out.push(b),
                None => {
                    let _ = s.write_all(&out);
                    return;
                }
            }
            offset += 1;
        }
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// A server that flips one bit of byte `at` of every connection's stream.
fn flip_server(at: u64) -> SocketAddr {
    tcp_server(move |s| echo_with(s, move |off, b| Some(if off == at { b ^ 0x20 } else { b })))
}

/// A server that echoes `n` bytes of each connection, then closes it.
fn close_after_server(n: u64) -> SocketAddr {
    tcp_server(move |s| echo_with(s, move |off, b| (off < n).then_some(b)))
}

/// A UDP echo server in this process; with `drop_every_other`, every second
/// datagram is swallowed. Stops when the returned flag is dropped.
struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    fn start(drop_every_other: bool) -> UdpEcho {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let addr = sock.local_addr().expect("local addr");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut seen = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                seen += 1;
                if drop_every_other && seen.is_multiple_of(2) {
                    continue;
                }
                let _ = sock.send_to(&buf[..n], peer);
            }
        });
        UdpEcho { addr, stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}

/// The probe lines of a run (`N bytes from ADDR: seq=S time=T ms`), as
/// (seq, time in ms).
fn probe_lines(stdout: &str, size: usize, addr: &str) -> Vec<(u64, f64)> {
    let prefix = format!("{size} bytes from {addr}: seq=");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (seq, time) = rest.split_once(" time=").expect("time= field");
            let ms = time.strip_suffix(" ms").expect("ms unit");
            (seq.parse().expect("seq"), ms.parse().expect("time"))
        })
        .collect()
}

#[test]
fn three_probes_against_netecho_serve() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&["ping", &addr, "-c", "3", "-i", "0.05"]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let probes = probe_lines(&run.stdout, 64, &addr);
    assert_eq!(
        probes.iter().map(|p| p.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{}",
        run.stdout
    );
    assert!(probes.iter().all(|p| p.1 > 0.0 && p.1 < 1000.0));
    assert!(
        run.stdout.contains("3 probes sent, 3 received, 0.0% loss"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("rtt min/avg/median/max/stddev = "),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn new_connection_per_probe_and_other_sizes() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "ping",
        &addr,
        "-c",
        "2",
        "-i",
        "0.01",
        "--new-conn",
        "-s",
        "100000",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(probe_lines(&run.stdout, 100000, &addr).len(), 2);
}

#[test]
fn flipped_byte_fails_that_probe_only() {
    // Byte 100 of the stream is byte 36 of the second 64-byte probe; the
    // third probe goes over a new connection and comes back intact.
    let addr = flip_server(100).to_string();
    let run = netecho(&["ping", &addr, "-c", "3", "-i", "0.02"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("seq=2: mismatch at byte 36 (byte 100 of the connection)"),
        "{}",
        run.stdout
    );
    let ok: Vec<u64> = probe_lines(&run.stdout, 64, &addr)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ok, [1, 3]);
    assert!(run.stdout.contains("3 probes sent, 2 received, 33.3% loss"));
    assert_eq!(
        run.stderr,
        "netecho: 1 of 3 probes failed; first: seq=2: mismatch at byte 36 (byte 100 of the connection)\n"
    );
}

#[test]
fn early_close_fails_the_probe() {
    let addr = close_after_server(100).to_string();
    let run = netecho(&["ping", &addr, "-c", "2", "-i", "0.02"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stdout
            .contains("seq=2: connection closed by the server after 36 bytes of the echo"),
        "{}",
        run.stdout
    );
}

#[test]
fn silence_is_a_timeout() {
    // Reads everything, echoes nothing.
    let silent = tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
    .to_string();
    let start = Instant::now();
    let run = netecho(&["ping", &silent, "-c", "1", "--timeout", "0.2"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.contains("seq=1: timed out"), "{}", run.stdout);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn udp_probes() {
    let srv = UdpEcho::start(false);
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "ping", &addr, "--udp", "-c", "3", "-i", "0.02", "-s", "1000",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(probe_lines(&run.stdout, 1000, &addr).len(), 3);
    assert!(run.stdout.contains(", udp)"), "{}", run.stdout);
}

#[test]
fn udp_lost_probes_are_loss() {
    let srv = UdpEcho::start(true);
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "ping",
        &addr,
        "--udp",
        "-c",
        "4",
        "-i",
        "0.01",
        "--timeout",
        "0.1",
    ]);
    assert_eq!(run.status.code(), Some(1));
    let ok: Vec<u64> = probe_lines(&run.stdout, 64, &addr)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ok, [1, 3], "{}", run.stdout);
    assert!(run.stdout.contains("seq=2: timed out"), "{}", run.stdout);
    assert!(run.stdout.contains("4 probes sent, 2 received, 50.0% loss"));
    assert!(run.stderr.starts_with("netecho: 2 of 4 probes failed"));
}

#[test]
fn refused_is_one_line() {
    let addr = closed_port().to_string();
    let run = netecho(&["ping", &addr, "-c", "1"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr,
        format!("netecho: connection refused by {addr}\n")
    );
}

#[test]
fn bad_arguments_are_one_line() {
    for args in [
        &["ping", "127.0.0.1:1", "-i", "0.0001"][..],
        &["ping", "127.0.0.1:1", "-c", "0"],
        &["ping", "127.0.0.1:1", "-s", "0"],
        &["ping", "127.0.0.1:1", "--udp", "--new-conn"],
        &["ping", "nonsense"],
    ] {
        let run = netecho(args);
        assert!(!run.status.success(), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("netecho: "), "{}", run.stderr);
    }
}

#[test]
fn sigterm_prints_the_summary_and_exits_zero() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let mut child = Command::new(BIN)
        .args(["ping", &addr, "-i", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let run = finish(&mut child);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let n = probe_lines(&run.stdout, 64, &addr).len();
    assert!(n >= 3, "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("{n} probes sent, {n} received, 0.0% loss")),
        "{}",
        run.stdout
    );
}

#[test]
fn ipv6_literal_in_brackets() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let addr = listener.local_addr().expect("local addr").to_string();
    thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(SERVER_IDLE));
            echo_with(conn, |_, b| Some(b));
        }
    });
    let run = netecho(&["ping", &addr, "-c", "2", "-i", "0.01"]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(
        probe_lines(&run.stdout, 64, &addr).len(),
        2,
        "{}",
        run.stdout
    );
}
