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
use crate::util::{Run, Running, Server, assert_refused, netecho, run_to_end, timing};

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
            .contains("seq=2: mismatch at byte 36 (sent 0x"),
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
    let line = run.one_line_error("flip");
    assert!(
        line.starts_with(
            "netecho: 1 of 3 probes failed; first: seq=2: mismatch at byte 36 (sent 0x"
        ) && line.ends_with("), byte 100 of the connection"),
        "{line}"
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
fn probes_go_on_while_the_service_is_down() {
    let addr = closed_port().to_string();
    let run = run_netecho(&["ping", &addr, "-c", "3", "-i", "0.05"]);
    assert_eq!(run.code(), Some(1), "{}", run.stdout_str());
    for seq in 1..=3 {
        let want = format!("from {addr}: seq={seq}: connection refused by {addr}\n");
        assert!(
            run.stdout_str().contains(&want),
            "{want}in:\n{}",
            run.stdout_str()
        );
    }
    assert!(
        run.stdout_str()
            .contains("3 probes sent, 0 received, 100.0% loss"),
        "{}",
        run.stdout_str()
    );
    assert_eq!(
        run.stderr,
        format!("netecho: 3 of 3 probes failed; first: seq=1: connection refused by {addr}\n")
    );
}

/// A port that is closed now and gets an echo server after `delay`.
fn comes_up_after(delay: Duration) -> String {
    let addr = closed_port();
    thread::spawn(move || {
        thread::sleep(delay);
        if let Ok(l) = TcpListener::bind(addr) {
            serve_listener(l, usize::MAX, |conn| echo_with(conn, |_, b| Some(b)));
        }
    });
    addr.to_string()
}

#[test]
fn a_service_that_comes_up_is_probed_from_then_on() {
    let addr = comes_up_after(Duration::from_millis(300));
    let run = run_netecho(&["ping", &addr, "-c", "12", "-i", "0.1"]);
    let out = run.stdout_str();
    assert!(out.contains("seq=1: connection refused"), "{out}");
    let ok: Vec<u64> = probe_lines(out, 64, &addr).iter().map(|p| p.0).collect();
    assert!(ok.contains(&12), "the last probes came back: {ok:?}\n{out}");
    assert_eq!(run.code(), Some(1), "some probes were lost: {out}");
}

#[test]
fn wait_holds_the_first_probe_until_the_service_is_up() {
    let addr = comes_up_after(Duration::from_millis(500));
    let run = run_netecho(&["ping", &addr, "-c", "2", "-i", "0.05", "--wait", "10"]);
    assert!(run.success(), "{}\n{}", run.stdout_str(), run.stderr);
    assert!(
        run.stdout_str()
            .contains("2 probes sent, 2 received, 0.0% loss"),
        "{}",
        run.stdout_str()
    );
    // A service that never comes up: one line, exit 1, after the wait.
    let addr = closed_port().to_string();
    let start = Instant::now();
    let run = run_netecho(&["ping", &addr, "-c", "1", "--wait", "0.5"]);
    assert_eq!(run.code(), Some(1));
    assert_eq!(
        run.one_line_error("--wait on a closed port"),
        format!(
            "netecho: {addr} did not answer within 0.5 s (--wait); last: connection refused by {addr}"
        )
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "--wait 0.5 took {took:?}"
    );
}

/// The JSON objects of a `--json` run's stdout, one per line.
fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_is_a_line_per_probe_then_a_summary() {
    let addr = flip_server(100).to_string();
    let run = run_netecho(&["ping", &addr, "-c", "3", "-i", "0.02", "--json"]);
    assert_eq!(run.code(), Some(1));
    let v = json_lines(&run);
    assert_eq!(v.len(), 4, "{}", run.stdout_str());
    assert!(v[..3].iter().all(|o| o["type"] == "probe"));
    assert_eq!(v[0]["ok"], true);
    assert!(v[0]["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert_eq!(v[1]["ok"], false);
    assert_eq!(v[1]["error"], "mismatch");
    assert_eq!(v[2]["seq"], 3);
    let sum = &v[3];
    assert_eq!(sum["type"], "summary");
    assert_eq!(
        (sum["sent"].as_u64(), sum["received"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(sum["lost"], 1);
    assert!(sum["rtt_ms"]["median"].as_f64().is_some());
    assert_eq!(sum["interrupted"], false);
    // A name that does not resolve: still one summary object, with the error.
    let run = run_netecho(&["ping", "nosuchhost.invalid:7", "--json"]);
    assert_eq!(run.code(), Some(1));
    let v = json_lines(&run);
    assert_eq!(v.len(), 1, "{}", run.stdout_str());
    assert!(
        v[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot resolve nosuchhost.invalid:7")),
        "{}",
        v[0]
    );
}

#[test]
fn sigint_with_losses_exits_one_after_the_summary() {
    let addr = closed_port().to_string();
    let child = Running::spawn(netecho(&["ping", &addr, "-i", "0.05"]), None);
    thread::sleep(Duration::from_millis(400));
    child.signal(Signal::SIGINT);
    let run = child.wait_exit(RUN_LIMIT);
    assert_eq!(run.code(), Some(1), "{}", run.stdout_str());
    assert!(
        run.stdout_str().contains("100.0% loss"),
        "{}",
        run.stdout_str()
    );
}

#[test]
fn a_16_mib_probe_measures_the_echo_not_the_tool() {
    let _quiet = timing();
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    // Today's largest probe, within the default 1 s timeout.
    let run = run_netecho(&["ping", &addr, "-s", "16777216", "-c", "1"]);
    assert!(run.success(), "{}\n{}", run.stdout_str(), run.stderr);
    // 8 MiB: ping's round trip against the whole run of `client` moving
    // the same bytes (which also pays its start and connect). Busy
    // machines get 5x; scripts/ or a release build hold the 2x.
    let run = run_netecho(&[
        "ping",
        &addr,
        "-s",
        "8388608",
        "-c",
        "3",
        "-i",
        "0.01",
        "--timeout",
        "10",
    ]);
    assert!(run.success(), "{}\n{}", run.stdout_str(), run.stderr);
    let best_ping = probe_lines(run.stdout_str(), 8_388_608, &addr)
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let input = vec![7u8; 8 * 1024 * 1024];
    let mut best_client = f64::INFINITY;
    for _ in 0..3 {
        let c = run_to_end(netecho(&["client", &addr]), Some(input.clone()), RUN_LIMIT);
        assert!(c.success(), "{}", c.stderr);
        best_client = best_client.min(c.elapsed.as_secs_f64() * 1e3);
    }
    assert!(
        best_ping <= 5.0 * best_client,
        "an 8 MiB ping took {best_ping:.1} ms, client moved 8 MiB in {best_client:.1} ms"
    );
}

#[test]
fn hostile_arguments_are_one_line_usage_errors() {
    for args in [
        &["ping", "127.0.0.1:7", "-s", "16777217"][..],
        &["ping", "127.0.0.1:7", "-s", "99999999999999999999"],
        &["ping", "127.0.0.1:7", "--udp", "-s", "65508"],
        &["ping", "127.0.0.1:7", "-i", "0"],
        &["ping", "127.0.0.1:7", "-c", "0"],
        &["ping", "127.0.0.1:7", "--timeout", "1e300"],
        &["ping", "[::1]"],
        &["ping", "localhost"],
        &["ping", "127.0.0.1:7", "--tls", "--udp"],
    ] {
        let run = assert_refused(args, RUN_LIMIT);
        assert_eq!(run.code(), Some(2), "netecho {args:?}: {}", run.stderr);
    }
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
        skipped!("SKIPPED: no IPv6 loopback here");
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
