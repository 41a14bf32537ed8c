//! `netecho ping` against real servers on loopback: netecho's own server,
//! and test peers (`util::peers`) that misbehave on purpose (a flipped
//! byte, an early close, silence, lost datagrams), which ping must catch.
//!
//! Every run is bounded by its own `-c` and, in case ping misbehaves, by a
//! wall-clock limit after which the test kills it and fails.

use std::io::Read;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::peers::{
    UdpEcho, close_after_server, closed_port, echo_with, flip_server, serve_listener, tcp_server,
};
use crate::util::{Run, Running, Server, assert_refused, netecho, run_to_end};

/// Longest any ping run in these tests may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Runs `netecho ARGS...`; fails the test if it is killed at [`RUN_LIMIT`].
fn run_netecho(args: &[&str]) -> Run {
    run_to_end(netecho(args), None, RUN_LIMIT)
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
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&["ping", &addr, "-c", "3", "-i", "0.05"]);
    assert!(run.success(), "stderr: {}", run.stderr);
    let probes = probe_lines(run.stdout_str(), 64, &addr);
    assert_eq!(
        probes.iter().map(|p| p.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{}",
        run.stdout_str()
    );
    assert!(probes.iter().all(|p| p.1 > 0.0 && p.1 < 1000.0));
    assert!(
        run.stdout_str()
            .contains("3 probes sent, 3 received, 0.0% loss"),
        "{}",
        run.stdout_str()
    );
    assert!(
        run.stdout_str()
            .contains("rtt min/avg/median/max/stddev = "),
        "{}",
        run.stdout_str()
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn new_connection_per_probe_and_other_sizes() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
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
    assert!(run.success(), "stderr: {}", run.stderr);
    assert_eq!(probe_lines(run.stdout_str(), 100000, &addr).len(), 2);
}

#[test]
fn flipped_byte_fails_that_probe_only() {
    // Byte 100 of the stream is byte 36 of the second 64-byte probe; the
    // third probe goes over a new connection and comes back intact.
    let addr = flip_server(100).to_string();
    let run = run_netecho(&["ping", &addr, "-c", "3", "-i", "0.02"]);
    assert_eq!(run.code(), Some(1), "{}", run.stdout_str());
    assert!(
        run.stdout_str()
            .contains("seq=2: mismatch at byte 36 (byte 100 of the connection)"),
        "{}",
        run.stdout_str()
    );
    let ok: Vec<u64> = probe_lines(run.stdout_str(), 64, &addr)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ok, [1, 3]);
    assert!(
        run.stdout_str()
            .contains("3 probes sent, 2 received, 33.3% loss")
    );
    assert_eq!(
        run.stderr,
        "netecho: 1 of 3 probes failed; first: seq=2: mismatch at byte 36 (byte 100 of the connection)\n"
    );
}

#[test]
fn early_close_fails_the_probe() {
    let addr = close_after_server(100).to_string();
    let run = run_netecho(&["ping", &addr, "-c", "2", "-i", "0.02"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stdout_str()
            .contains("seq=2: connection closed by the server after 36 bytes of the echo"),
        "{}",
        run.stdout_str()
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
    let run = run_netecho(&["ping", &silent, "-c", "1", "--timeout", "0.2"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stdout_str().contains("seq=1: timed out"),
        "{}",
        run.stdout_str()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn udp_probes() {
    let srv = UdpEcho::start(false);
    let addr = srv.addr.to_string();
    let run = run_netecho(&[
        "ping", &addr, "--udp", "-c", "3", "-i", "0.02", "-s", "1000",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    assert_eq!(probe_lines(run.stdout_str(), 1000, &addr).len(), 3);
    assert!(run.stdout_str().contains(", udp)"), "{}", run.stdout_str());
}

#[test]
fn udp_lost_probes_are_loss() {
    let srv = UdpEcho::start(true);
    let addr = srv.addr.to_string();
    let run = run_netecho(&[
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
    assert_eq!(run.code(), Some(1));
    let ok: Vec<u64> = probe_lines(run.stdout_str(), 64, &addr)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ok, [1, 3], "{}", run.stdout_str());
    assert!(
        run.stdout_str().contains("seq=2: timed out"),
        "{}",
        run.stdout_str()
    );
    assert!(
        run.stdout_str()
            .contains("4 probes sent, 2 received, 50.0% loss")
    );
    assert!(run.stderr.starts_with("netecho: 2 of 4 probes failed"));
}

#[test]
fn refused_is_one_line() {
    let addr = closed_port().to_string();
    let run = run_netecho(&["ping", &addr, "-c", "1"]);
    assert_eq!(run.code(), Some(1));
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
        assert_refused(args, RUN_LIMIT);
    }
}

#[test]
fn sigterm_prints_the_summary_and_exits_zero() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let child = Running::spawn(netecho(&["ping", &addr, "-i", "0.05"]), None);
    thread::sleep(Duration::from_millis(500));
    child.signal(Signal::SIGTERM);
    let run = child.wait_exit(RUN_LIMIT);
    assert!(run.success(), "stderr: {}", run.stderr);
    let n = probe_lines(run.stdout_str(), 64, &addr).len();
    assert!(n >= 3, "{}", run.stdout_str());
    assert!(
        run.stdout_str()
            .contains(&format!("{n} probes sent, {n} received, 0.0% loss")),
        "{}",
        run.stdout_str()
    );
}

#[test]
fn ipv6_literal_in_brackets() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let addr = listener.local_addr().expect("local addr").to_string();
    serve_listener(listener, 1, |conn| echo_with(conn, |_, b| Some(b)));
    let run = run_netecho(&["ping", &addr, "-c", "2", "-i", "0.01"]);
    assert!(run.success(), "stderr: {}", run.stderr);
    assert_eq!(
        probe_lines(run.stdout_str(), 64, &addr).len(),
        2,
        "{}",
        run.stdout_str()
    );
}
