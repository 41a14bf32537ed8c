//! `netecho bench` against real servers on loopback: netecho's own server,
//! and echo servers written here that misbehave on purpose (a flipped byte,
//! an early close, a stall, lost datagrams), which bench must catch.
//!
//! Every run is bounded by its own `-d`/`-n` and, in case bench misbehaves,
//! by a wall-clock limit after which the test kills it and fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netecho");
/// Longest any bench run in these tests may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// How long a test server's connection waits for bytes before giving up.
const SERVER_IDLE: Duration = Duration::from_secs(10);
/// Every key `--json` promises.
const JSON_KEYS: [&str; 11] = [
    "requests",
    "rps",
    "mbps",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "errors",
    "mismatches",
    "lost",
];

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

impl Run {
    fn json(&self) -> serde_json::Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one JSON line, got {:?}",
            self.stdout
        );
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
        assert!(v.is_object(), "a JSON object");
        v
    }
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

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

#[test]
fn closed_loop_json_has_every_key_and_sane_figures() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench", &addr, "-c", "8", "-d", "1", "--warmup", "0.2", "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    for key in JSON_KEYS {
        assert!(v.get(key).is_some(), "missing key {key} in {v}");
    }
    assert!(f(&v, "requests") > 100.0, "{v}");
    assert_eq!(f(&v, "errors"), 0.0);
    assert_eq!(f(&v, "mismatches"), 0.0);
    let p = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"].map(|k| f(&v, k));
    assert!(p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]), "{v}");
    let rps = f(&v, "requests") / f(&v, "duration_s");
    assert!((rps - f(&v, "rps")).abs() / rps < 0.01, "{v}");
    assert!((f(&v, "mbps") - rps * 64.0 / 1e6).abs() < 0.01, "{v}");
}

#[test]
fn summary_on_stdout_and_no_progress_line_when_stderr_is_piped() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&["bench", &addr, "-c", "4", "-d", "0.5", "--warmup", "0"]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    for word in [
        "req/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "errors",
    ] {
        assert!(
            run.stdout.contains(word),
            "{word} missing in {}",
            run.stdout
        );
    }
    assert!(
        !run.stderr.contains('\r'),
        "progress drawn: {:?}",
        run.stderr
    );
    assert!(run.stderr.is_empty(), "stderr: {:?}", run.stderr);
}

#[test]
fn request_count_is_exact() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench", &addr, "-c", "3", "-n", "1000", "--warmup", "0.1", "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(f(&run.json(), "requests"), 1000.0);
}

#[test]
fn large_messages_split_over_many_reads_still_check() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench", &addr, "-c", "2", "-s", "300000", "-d", "0.5", "--warmup", "0", "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    assert!(f(&v, "requests") > 0.0);
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn open_loop_holds_the_asked_rate() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench", &addr, "-c", "10", "--rate", "2000", "-d", "3", "--warmup", "0.5", "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    let rps = f(&v, "requests") / f(&v, "duration_s");
    assert!(
        (rps - 2000.0).abs() / 2000.0 < 0.10,
        "rate {rps:.0}/s in {v}"
    );
}

#[test]
fn open_loop_counts_latency_from_the_due_time() {
    // The server sits on the first request for 300 ms. At 100 req/s on one
    // connection, 30 requests fall due meanwhile; each must carry the wait
    // it suffered (300, 290, ... ms), not just the one that was stuck.
    let addr = tcp_server(|s| {
        let mut first = true;
        echo_with(s, move |_, b| {
            if first {
                thread::sleep(Duration::from_millis(300));
                first = false;
            }
            Some(b)
        })
    });
    let run = netecho(&[
        "bench",
        &addr.to_string(),
        "-c",
        "1",
        "-s",
        "1",
        "--rate",
        "100",
        "-d",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    // 30 of ~200 samples waited 0-300 ms: p90 is well above a loopback RTT.
    assert!(f(&v, "p90_us") > 50_000.0, "coordinated omission? {v}");
    assert!(f(&v, "max_us") > 250_000.0, "{v}");
}

#[test]
fn flipped_byte_is_a_mismatch_with_connection_and_offset() {
    let addr = flip_server(1000).to_string();
    let run = netecho(&[
        "bench", &addr, "-c", "2", "-d", "1", "--warmup", "0", "--json",
    ]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("mismatch on connection 0 at byte 1000")
            && run.stderr.contains("mismatch on connection 1 at byte 1000"),
        "stderr: {}",
        run.stderr
    );
    let v = run.json();
    assert_eq!(f(&v, "mismatches"), 2.0);
    assert_eq!(f(&v, "errors"), 2.0);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("netecho: bench failed: 2 errors"),
        "{last}"
    );
}

#[test]
fn early_close_is_an_error_with_its_offset() {
    let addr = close_after_server(640).to_string();
    let run = netecho(&["bench", &addr, "-c", "1", "-d", "1", "--warmup", "0"]);
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("connection 0 closed by the server at byte 640"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn refused_is_one_line() {
    let addr = closed_port().to_string();
    let run = netecho(&["bench", &addr, "-d", "1"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr,
        format!("netecho: connection refused by {addr}\n")
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn bad_arguments_are_one_line() {
    for args in [
        &["bench", "127.0.0.1:1", "-c", "0"][..],
        &["bench", "127.0.0.1:1", "--rate", "-5"],
        &["bench", "127.0.0.1:1", "-d", "1", "-n", "5"],
        &["bench", "127.0.0.1:99999"],
        &["bench", "127.0.0.1:1", "--udp", "-s", "70000"],
    ] {
        let run = netecho(args);
        assert!(!run.status.success(), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("netecho: "), "{}", run.stderr);
    }
}

#[test]
fn new_connection_per_request() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench",
        &addr,
        "--new-conn",
        "-c",
        "2",
        "-n",
        "200",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    assert_eq!(f(&v, "requests"), 200.0);
    assert_eq!(v["mode"], "new-conn");
}

#[test]
fn udp_datagrams_echoed() {
    let srv = UdpEcho::start(false);
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench", &addr, "--udp", "-c", "4", "-d", "1", "--warmup", "0.2", "--json",
    ]);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    assert!(f(&v, "requests") > 100.0, "{v}");
    assert_eq!(f(&v, "lost"), 0.0);
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn udp_losses_are_lost_not_mismatches() {
    let srv = UdpEcho::start(true);
    let addr = srv.addr.to_string();
    let run = netecho(&[
        "bench",
        &addr,
        "--udp",
        "-c",
        "1",
        "-d",
        "1",
        "--warmup",
        "0",
        "--timeout",
        "0.05",
        "--json",
    ]);
    assert!(!run.status.success(), "losses must fail the run");
    let v = run.json();
    assert!(f(&v, "lost") >= 3.0, "{v}");
    assert_eq!(f(&v, "mismatches"), 0.0, "{v}");
    // Every other datagram: as many lost as echoed, give or take the edges.
    assert!((f(&v, "lost") - f(&v, "requests")).abs() <= 2.0, "{v}");
    assert!(run.stderr.contains("datagrams lost"), "{}", run.stderr);
}

#[test]
fn sigterm_ends_the_run_early_with_the_summary() {
    let srv = Serve::start();
    let addr = srv.addr.to_string();
    let mut child = Command::new(BIN)
        .args([
            "bench", &addr, "-c", "4", "-d", "60", "--warmup", "0", "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bench");
    thread::sleep(Duration::from_millis(700));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let start = Instant::now();
    let run = finish(&mut child);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(run.status.success(), "stderr: {}", run.stderr);
    let v = run.json();
    assert!(f(&v, "requests") > 0.0);
    assert!(f(&v, "duration_s") < 5.0);
}

#[test]
fn one_thread_reports_errors_as_many_threads_do() {
    // --threads 1 without a terminal runs the worker on the main thread.
    let addr = flip_server(70).to_string();
    let run = netecho(&[
        "bench",
        &addr,
        "--threads",
        "1",
        "-c",
        "3",
        "-d",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(1));
    for conn in 0..3 {
        let line = format!("mismatch on connection {conn} at byte 70");
        assert!(run.stderr.contains(&line), "stderr: {}", run.stderr);
    }
    assert_eq!(f(&run.json(), "mismatches"), 3.0);
}
