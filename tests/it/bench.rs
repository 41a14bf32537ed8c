//! `netecho bench` against real servers on loopback: netecho's own server,
//! and test peers (`util::peers`) that misbehave on purpose (a flipped
//! byte, an early close, a stall, lost datagrams), which bench must catch.
//!
//! Every run is bounded by its own `-d`/`-n` and, in case bench misbehaves,
//! by a wall-clock limit after which the test kills it and fails.

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::peers::{
    UdpEcho, close_after_server, closed_port, echo_with, flip_server, tcp_server,
};
use crate::util::{Run, Running, Server, assert_refused, netecho, run_to_end};

/// Longest any bench run in these tests may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(20);
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

/// `--stream` checks every byte of the echo and says where the first wrong
/// one was, in the closed loop's words, with exit 1.
#[test]
fn stream_names_the_first_wrong_byte() {
    let addr = flip_server(70_000).to_string();
    let run = run_netecho(&[
        "bench", &addr, "--stream", "-c", "1", "-d", "1", "--warmup", "0",
    ]);
    run.assert_code(1, "bench --stream against a server that flips byte 70000");
    assert!(
        run.stderr.contains(
            "did not get their stream back whole (first: mismatch on connection 0 at byte 70000)"
        ),
        "stderr: {}",
        run.stderr
    );
}

/// Runs `netecho ARGS...`; fails the test if it is killed at [`RUN_LIMIT`].
fn run_netecho(args: &[&str]) -> Run {
    run_to_end(netecho(args), None, RUN_LIMIT)
}

/// The one JSON object a `--json` run prints on stdout.
fn json(run: &Run) -> serde_json::Value {
    let lines: Vec<&str> = run.stdout_str().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON line, got {:?}",
        run.stdout_str()
    );
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert!(v.is_object(), "a JSON object");
    v
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

#[test]
fn closed_loop_json_has_every_key_and_sane_figures() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "8", "-d", "1", "--warmup", "0.2", "--json",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
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
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&["bench", &addr, "-c", "4", "-d", "0.5", "--warmup", "0"]);
    assert!(run.success(), "stderr: {}", run.stderr);
    for word in [
        "req/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "errors",
    ] {
        assert!(
            run.stdout_str().contains(word),
            "{word} missing in {}",
            run.stdout_str()
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
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "3", "-n", "1000", "--warmup", "0.1", "--json",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    assert_eq!(f(&json(&run), "requests"), 1000.0);
}

#[test]
fn large_messages_split_over_many_reads_still_check() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "2", "-s", "300000", "-d", "0.5", "--warmup", "0", "--json",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
    assert!(f(&v, "requests") > 0.0);
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn open_loop_holds_the_asked_rate() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "10", "--rate", "2000", "-d", "3", "--warmup", "0.5", "--json",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
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
    let run = run_netecho(&[
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
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
    // 30 of ~200 samples waited 0-300 ms: p90 is well above a loopback RTT.
    assert!(f(&v, "p90_us") > 50_000.0, "coordinated omission? {v}");
    assert!(f(&v, "max_us") > 250_000.0, "{v}");
}

#[test]
fn flipped_byte_is_a_mismatch_with_connection_and_offset() {
    let addr = flip_server(1000).to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "2", "-d", "1", "--warmup", "0", "--json",
    ]);
    assert!(!run.success());
    assert!(
        run.stderr.contains("mismatch on connection 0 at byte 1000")
            && run.stderr.contains("mismatch on connection 1 at byte 1000"),
        "stderr: {}",
        run.stderr
    );
    let v = json(&run);
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
    let run = run_netecho(&["bench", &addr, "-c", "1", "-d", "1", "--warmup", "0"]);
    assert!(!run.success());
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
    let run = run_netecho(&["bench", &addr, "-d", "1"]);
    assert_eq!(run.code(), Some(1));
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
        assert_refused(args, RUN_LIMIT);
    }
}

#[test]
fn new_connection_per_request() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_netecho(&[
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
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
    assert_eq!(f(&v, "requests"), 200.0);
    assert_eq!(v["mode"], "new-conn");
}

#[test]
fn udp_datagrams_echoed() {
    let srv = UdpEcho::start(false);
    let addr = srv.addr.to_string();
    let run = run_netecho(&[
        "bench", &addr, "--udp", "-c", "4", "-d", "1", "--warmup", "0.2", "--json",
    ]);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v = json(&run);
    assert!(f(&v, "requests") > 100.0, "{v}");
    assert_eq!(f(&v, "lost"), 0.0);
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn udp_losses_are_lost_not_mismatches() {
    let srv = UdpEcho::start(true);
    let addr = srv.addr.to_string();
    let run = run_netecho(&[
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
    assert!(!run.success(), "losses must fail the run");
    let v = json(&run);
    assert!(f(&v, "lost") >= 3.0, "{v}");
    assert_eq!(f(&v, "mismatches"), 0.0, "{v}");
    // Every other datagram: as many lost as echoed, give or take the edges.
    assert!((f(&v, "lost") - f(&v, "requests")).abs() <= 2.0, "{v}");
    assert!(run.stderr.contains("datagrams lost"), "{}", run.stderr);
}

#[test]
fn sigterm_ends_the_run_early_with_the_summary_and_says_interrupted() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let child = Running::spawn(
        netecho(&[
            "bench", &addr, "-c", "4", "-d", "60", "--warmup", "0", "--json",
        ]),
        None,
    );
    thread::sleep(Duration::from_millis(700));
    child.signal(Signal::SIGTERM);
    let start = Instant::now();
    let run = child.wait_exit(RUN_LIMIT);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        start.elapsed()
    );
    run.assert_code(1, "an interrupted run is not a success");
    let v = json(&run);
    assert!(f(&v, "requests") > 0.0, "{v}");
    assert!(f(&v, "duration_s") < 5.0, "{v}");
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
}

#[test]
fn sigint_text_summary_says_interrupted() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let child = Running::spawn(
        netecho(&["bench", &addr, "-c", "2", "-d", "60", "--warmup", "0"]),
        None,
    );
    thread::sleep(Duration::from_millis(700));
    child.signal(Signal::SIGINT);
    let run = child.wait_exit(RUN_LIMIT);
    run.assert_code(1, "a Ctrl-C'd run is not a success");
    assert!(
        run.stdout_str().contains("requests") && run.stdout_str().contains("interrupted"),
        "stdout: {}",
        run.stdout_str()
    );
}

/// A server made here that reads everything and never answers.
fn silent_server() -> std::net::SocketAddr {
    tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        let until = Instant::now() + RUN_LIMIT;
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    })
}

#[test]
fn silent_server_requests_are_unanswered_and_fail_the_run() {
    let addr = silent_server().to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "2", "-d", "1", "--warmup", "0.2", "--json",
    ]);
    run.assert_code(1, "nothing answered");
    let v = json(&run);
    assert_eq!(f(&v, "requests"), 0.0, "{v}");
    assert_eq!(f(&v, "unanswered"), 2.0, "{v}");
    assert!(
        run.stderr.contains("2 requests sent and never answered"),
        "{}",
        run.stderr
    );
    // The echoes still owed are waited for a moment, not for --timeout.
    assert!(
        run.elapsed < Duration::from_secs(8),
        "took {:?}",
        run.elapsed
    );

    let text = run_netecho(&["bench", &addr, "-c", "3", "-d", "0.5", "--warmup", "0"]);
    text.assert_code(1, "nothing answered");
    assert!(
        text.stdout_str().contains("3 sent and never answered"),
        "{}",
        text.stdout_str()
    );
}

#[test]
fn a_server_that_stops_answering_midway_fails_the_run() {
    // Echoes the first 100 requests of 64 B of each connection, then
    // swallows everything: some requests were answered, the last were not.
    let addr = tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        let mut echoed = 0usize;
        let until = Instant::now() + RUN_LIMIT;
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let back = n.min(6400 - echoed);
                    if back > 0 && s.write_all(&buf[..back]).is_err() {
                        return;
                    }
                    echoed += back;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    let addr = addr.to_string();
    let run = run_netecho(&[
        "bench", &addr, "-c", "2", "-d", "1", "--warmup", "0", "--json",
    ]);
    run.assert_code(1, "requests unanswered");
    let v = json(&run);
    assert!(f(&v, "requests") >= 100.0, "{v}");
    assert!(f(&v, "unanswered") >= 1.0, "{v}");
}

#[test]
fn refused_with_json_prints_one_object_with_the_error() {
    let addr = closed_port().to_string();
    let run = run_netecho(&["bench", &addr, "-d", "1", "--json"]);
    run.assert_code(1, "refused");
    let v = json(&run);
    assert_eq!(f(&v, "requests"), 0.0, "{v}");
    assert_eq!(v["interrupted"], false, "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused"), "{v}");
    assert_eq!(v["target"], addr.as_str(), "{v}");
    // And with --interval, the stream's one summary line.
    let run = run_netecho(&["bench", &addr, "-d", "1", "--json", "--interval", "1"]);
    let v = json(&run);
    assert_eq!(v["type"], "summary", "{v}");
    assert!(v["error"].is_string(), "{v}");
}

#[test]
fn limits_beyond_this_machine_are_one_line_before_anything_runs() {
    let addr = closed_port().to_string();
    for (args, words) in [
        (&["-c", "99999999999"][..], &["descriptors"][..]),
        (&["-c", "99999999999", "--new-conn"], &["descriptors"]),
        (&["-c", "99999999999", "--udp"], &["descriptors"]),
        (&["-c", "99999999999", "--rate", "1000"], &["descriptors"]),
        (
            &["-c", "10000", "-s", "16777216"],
            &["memory", "descriptors"],
        ),
        (&["-c", "2000", "--threads", "2000"], &["--threads"]),
    ] {
        let mut all = vec!["bench", &addr, "-d", "1"];
        all.extend_from_slice(args);
        let run = run_netecho(&all);
        run.assert_code(2, &format!("{args:?}"));
        let line = run.one_line_error(&format!("{args:?}"));
        assert!(
            words.iter().any(|w| line.contains(w)),
            "{args:?}: the line should name the limit ({words:?}): {line}"
        );
        assert!(
            run.elapsed < Duration::from_secs(5),
            "{args:?}: {:?}",
            run.elapsed
        );
    }
}

#[test]
fn new_conn_stops_promptly_on_sigterm() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let child = Running::spawn(
        netecho(&[
            "bench",
            &addr,
            "--new-conn",
            "-c",
            "64",
            "-d",
            "60",
            "--warmup",
            "0",
            "--json",
        ]),
        None,
    );
    thread::sleep(Duration::from_millis(700));
    child.signal(Signal::SIGTERM);
    let start = Instant::now();
    let run = child.wait_exit(RUN_LIMIT);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        start.elapsed()
    );
    run.assert_code(1, "interrupted");
    assert_eq!(json(&run)["interrupted"], true);
}

#[test]
fn one_thread_reports_errors_as_many_threads_do() {
    // --threads 1 without a terminal runs the worker on the main thread.
    let addr = flip_server(70).to_string();
    let run = run_netecho(&[
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
    assert_eq!(run.code(), Some(1));
    for conn in 0..3 {
        let line = format!("mismatch on connection {conn} at byte 70");
        assert!(run.stderr.contains(&line), "stderr: {}", run.stderr);
    }
    assert_eq!(f(&json(&run), "mismatches"), 3.0);
}

#[test]
fn the_progress_line_counts_no_warm_up_request() {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd = netecho(&[
        "bench", &addr, "-c", "2", "--warmup", "1.5", "-d", "1", "--json",
    ]);
    cmd.env_remove("NETECHO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave.try_clone().expect("dup the pty")))
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn bench");
    // Only the child holds the slave now, so the master sees EIO when it exits.
    drop(cmd);
    drop(pty.slave);
    // What the terminal shows, until bench exits (EIO on the master).
    let mut shown = Vec::new();
    let deadline = Instant::now() + RUN_LIMIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(500u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        match nix::unistd::read(&pty.master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => shown.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    let status = child.wait().expect("wait for bench");
    assert!(status.success(), "bench: {status}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let measured = f(&v, "requests");
    let shown = String::from_utf8_lossy(&shown);
    let lines: Vec<&str> = shown.split(['\r', '\n']).collect();
    assert!(
        lines.iter().any(|l| l.contains("warm-up")),
        "no warm-up shown: {shown:?}"
    );
    let mut counts = Vec::new();
    for l in &lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        for w in words.windows(2) {
            if w[1] == "requests" {
                let n: f64 = w[0].replace(',', "").parse().unwrap_or(-1.0);
                assert!(
                    !l.contains("warm-up"),
                    "a warm-up line counts requests: {l:?}"
                );
                counts.push(n);
            }
        }
    }
    assert!(!counts.is_empty(), "no progress figures shown: {shown:?}");
    // Never more than the summary's count: no warm-up request in it.
    for n in counts {
        assert!(
            (0.0..=measured).contains(&n),
            "progress shows {n} requests, the summary {measured}: {shown:?}"
        );
    }
}

#[test]
fn help_cites_no_file_the_user_lacks_and_states_the_exit_status() {
    for flag in ["-h", "--help"] {
        let run = run_netecho(&["bench", flag]);
        assert!(run.success(), "{flag}: {}", run.stderr);
        // Lines are wrapped to the terminal's width: compare words.
        let text = run
            .stdout_str()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for word in [".md", "BENCHMARKING", "scripts/", "cargo bench"] {
            assert!(!text.contains(word), "{flag} cites {word}:\n{text}");
        }
        assert!(
            text.contains("Exit status: 0") && text.contains("2 a usage error"),
            "{flag}:\n{text}"
        );
    }
}
