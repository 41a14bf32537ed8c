//! Regression tests, each named after a bug a review found in the server, so
//! the bug cannot come back unnoticed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, BIN, Server, children};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// True while `pid` runs (it exists and is not a zombie).
fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok() && util::state(pid).is_some_and(|s| s != 'Z')
}

/// Prefork prints its listening line before it forks the workers.
fn wait_for_workers(server: &Server, n: usize) {
    let found =
        crate::util::eventually(Duration::from_secs(3), || children(server.pid()).len() == n);
    assert!(found, "the {n} workers did not appear");
}

#[test]
fn prefork_worker_killed_mid_connection_gives_its_slot_back() {
    // Two workers, two slots: before the fix, two dead workers locked the
    // server out for good. (`--max-conns 2`: the pool's default is 256,
    // which two leaked slots would not show.)
    let server = Server::start("prefork", &["--workers", "2", "--max-conns", "2"]);
    wait_for_workers(&server, 2);
    for round in 0..2 {
        let workers = children(server.pid());
        let mut conn = util::connect(server.addr());
        util::ping(&mut conn, b"who serves me?").unwrap();
        let serving = util::holder_of(&conn, &workers).unwrap_or_else(|| {
            panic!("round {round}: none of the workers {workers:?} holds the connection")
        });
        kill(Pid::from_raw(serving), Signal::SIGKILL).unwrap();
        let _ = util::wait_closed(&mut conn, Duration::from_secs(3));
        assert!(
            crate::util::eventually(Duration::from_secs(3), || !children(server.pid())
                .contains(&serving)
                && children(server.pid()).len() == 2),
            "round {round}: the dead worker was not replaced"
        );
    }
    // Both slots must be free again: two clients served at once.
    let mut a = util::connect(server.addr());
    let mut b = util::connect(server.addr());
    util::ping(&mut a, b"first").unwrap();
    util::ping(&mut b, b"second").unwrap();
}

#[test]
fn prefork_workers_do_not_outlive_a_killed_parent() {
    let server = Server::start("prefork", &["--workers", "2"]);
    let addr = server.addr();
    wait_for_workers(&server, 2);
    let workers = children(server.pid());
    // Kill the parent alone, not its group.
    kill(Pid::from_raw(server.pid()), Signal::SIGKILL).unwrap();
    assert!(
        crate::util::eventually(Duration::from_secs(3), || workers
            .iter()
            .all(|&w| !alive(w))),
        "workers {workers:?} still alive after their parent died"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the port is still served by an orphan"
    );
}

/// systemd's default stop sends SIGTERM to the whole control group: a
/// connection in flight must still get its drain in the forking models.
fn group_sigterm_keeps_the_drain(model: &str) {
    let mut server = Server::start(model, &["--drain-timeout", "10", "--workers", "2"]);
    let mut conn = util::connect(server.addr());
    util::ping(&mut conn, b"before").unwrap();
    killpg(Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    util::ping(&mut conn, b"after the group got SIGTERM")
        .unwrap_or_else(|e| panic!("{model}: the connection was cut: {e}"));
    conn.shutdown(Shutdown::Write).unwrap();
    let end = util::wait_closed(&mut conn, Duration::from_secs(3));
    assert_eq!(end, util::Closed::Fin, "{model}");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{model}: exit {status:?}"
    );
}

#[test]
fn group_sigterm_keeps_the_drain_in_fork() {
    group_sigterm_keeps_the_drain("fork");
}

#[test]
fn group_sigterm_keeps_the_drain_in_prefork() {
    group_sigterm_keeps_the_drain("prefork");
}

#[test]
fn metrics_survive_a_group_sigterm_until_the_server_exits() {
    let mut server = Server::start(
        "fork",
        &["--metrics", "127.0.0.1:0", "--drain-timeout", "10"],
    );
    let m = server.metrics_addr();
    let mut conn = util::connect(server.addr());
    util::ping(&mut conn, b"hold").unwrap();
    killpg(Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(m).expect("metrics refused during the drain");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.contains("netecho_connections_active 1"), "{page}");
    drop(conn);
    assert!(
        server
            .wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn one_dripping_scraper_does_not_block_metrics() {
    let server = Server::start("thread", &["--metrics", "127.0.0.1:0"]);
    let m = server.metrics_addr();
    // A request that never ends, one byte at a time.
    let mut slow = TcpStream::connect(m).unwrap();
    let dripper = std::thread::spawn(move || {
        for _ in 0..80 {
            if slow.write_all(b"G").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut s = TcpStream::connect(m).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    // An HTTP/1.0 request is answered in HTTP/1.0.
    assert!(page.starts_with("HTTP/1.0 200"), "no answer: {page:?}");
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "the scrape waited {:?} behind the dripping client",
        start.elapsed()
    );
    let _ = dripper.join();
}

/// Runs `netecho serve ARGS` with io_uring_setup refused by a seccomp filter
/// (EPERM), as a container runtime's default profile does.
fn serve_without_io_uring(args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: between fork and exec the closure only calls prctl(2), which
    // is async-signal-safe (see `util::refuse_syscall`).
    unsafe {
        cmd.pre_exec(|| util::refuse_syscall(libc::SYS_io_uring_setup, None, libc::EPERM));
    }
    cmd.spawn().expect("spawning netecho serve under seccomp")
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_refused() {
    let mut child = serve_without_io_uring(&["--listen", "127.0.0.1:0", "--model", "auto"]);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = util::read_tcp_addr(&mut out);
    let r = util::round_trip(addr, b"served without io_uring", 3);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    r.unwrap();
    assert!(out.status.success(), "exit {}: {log}", out.status);
    assert!(
        log.contains("io_uring unavailable"),
        "no fallback line: {log}"
    );
    assert!(log.contains("model=\"epoll\""), "not epoll: {log}");
}

#[test]
fn an_explicit_uring_model_without_io_uring_is_a_one_line_error() {
    let child = serve_without_io_uring(&["--listen", "127.0.0.1:0", "--model", "uring"]);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("netecho:")).collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(lines[0].contains("io_uring"), "{}", lines[0]);
    assert!(!err.contains("panicked"), "{err}");
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After ")": state is field 3, so utime (14) and stime (15) are
            // at 11 and 12 here.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Out of descriptors, a server pauses accepting (no busy loop), says so
/// once, and serves again by itself when descriptors come back.
fn survives_running_out_of_descriptors(model: &str) {
    use std::os::unix::process::CommandExt;
    const LIMIT: libc::rlim_t = 24;
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--model",
        model,
        "--workers",
        "1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    // SAFETY: setrlimit(2) is async-signal-safe; soft and hard are both set,
    // since serve raises its soft limit to the hard one.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawning netecho serve");
    let pid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = util::read_tcp_addr(&mut out);
    // Twice the limit: the kernel completes the handshakes (backlog), the
    // server runs out of descriptors accepting them.
    let held: Vec<TcpStream> = (0..2 * LIMIT)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - t0;
    drop(held);
    // Served again once the held connections are gone.
    let served = crate::util::eventually(Duration::from_secs(10), || {
        util::round_trip(addr, b"descriptors are back", 9).is_ok()
    });
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let status = child.wait().unwrap();
    let log = log.join().unwrap_or_default();
    assert!(
        served,
        "{model}: not served after descriptors came back; log:\n{log}"
    );
    // 2 s of a busy loop would be ~200 ticks; a paused acceptor uses ~0.
    assert!(
        spent < 50,
        "{model}: {spent} ticks of CPU in 2 s while out of descriptors"
    );
    assert!(
        log.contains("pausing accepts"),
        "{model}: no warning; log:\n{log}"
    );
    let warnings = log.matches("pausing accepts").count();
    assert!(
        warnings <= 2,
        "{model}: {warnings} warnings in ~2 s (rate limit is 5 s)"
    );
    assert!(status.success(), "{model}: exit {status}");
}

#[test]
fn thread_survives_running_out_of_descriptors() {
    survives_running_out_of_descriptors("thread");
}

#[test]
fn epoll_survives_running_out_of_descriptors() {
    survives_running_out_of_descriptors("epoll");
}

#[test]
fn tokio_survives_running_out_of_descriptors() {
    survives_running_out_of_descriptors("tokio");
}

#[test]
fn trace_hears_ctrl_c_and_keeps_printing_under_steady_traffic() {
    if !util::is_root() {
        skipped!("SKIPPED trace_hears_ctrl_c...: capturing needs CAP_NET_RAW (root)");
        return;
    }
    let server = Server::start("epoll", &[]);
    let port = server.addr().port().to_string();
    let mut trace = Command::new(BIN)
        .args(["trace", "--port", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = trace.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut n = 0usize;
        let mut first_at = None;
        let start = Instant::now();
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            if l.is_err() {
                break;
            }
            n += 1;
            first_at.get_or_insert(start.elapsed());
        }
        (n, first_at)
    });
    std::thread::sleep(Duration::from_millis(300));
    // Steady load for 4 s, bounded by time and count.
    let mut load = Command::new(BIN)
        .args([
            "bench",
            &server.addr().to_string(),
            "-c",
            "4",
            "-d",
            "4",
            "--warmup",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(trace.id() as i32), Signal::SIGINT).unwrap();
    let stopped = crate::util::eventually(Duration::from_secs(2), || {
        matches!(trace.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = trace.kill();
    }
    let status = trace.wait().unwrap();
    let _ = load.wait();
    let (n, _) = lines.join().unwrap();
    assert!(stopped, "trace ignored SIGINT under steady traffic");
    assert!(status.success(), "trace exit {status}");
    assert!(n > 100, "only {n} lines printed while traffic flowed");
}

#[test]
fn a_tiny_bench_rate_is_refused_not_a_panic() {
    let out = Command::new(BIN)
        .args(["bench", "127.0.0.1:9", "--rate", "1e-300", "-n", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lowest rate"), "{err}");
}

#[test]
fn lab_ends_quietly_when_its_reader_goes_away() {
    let mut lab = Command::new(BIN)
        .arg("lab")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, then close the pipe, as `| head -1` does.
    let mut first = String::new();
    let mut out = std::io::BufReader::new(lab.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    drop(out);
    let done = crate::util::eventually(Duration::from_secs(20), || {
        matches!(lab.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = lab.kill();
    }
    let out = lab.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(done, "lab kept running with no reader");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "exit {}: {err}", out.status);
}

/// `netecho_connections_active` as `/metrics` reads it now.
fn active_connections(metrics: std::net::SocketAddr) -> Option<u64> {
    util::scrape(metrics)
        .lines()
        .find_map(|l| l.strip_prefix("netecho_connections_active "))
        .and_then(|v| v.trim().parse().ok())
}

/// fork: a child gives its `--max-conns` slot back itself just before its
/// FIN; killed after that and before its clean exit, the parent gave the
/// slot back again, the active counter wrapped below zero and every later
/// client was refused as over the limit, for good. Clients here kill their
/// child the moment they see the FIN, again and again; then fresh clients
/// must all be served and the counter read zero.
#[test]
fn fork_child_killed_right_after_its_fin_frees_its_slot_once() {
    let server = Server::start("fork", &["--metrics", "127.0.0.1:0", "--max-conns", "4"]);
    let addr = server.addr();
    let metrics = server.metrics_addr();
    // The sidecar (metrics) is a child too: only newer children serve clients.
    let mut seen: std::collections::BTreeSet<i32> = children(server.pid()).into_iter().collect();
    let until = Instant::now() + Duration::from_secs(6);
    let (mut rounds, mut killed_alive) = (0, 0);
    while Instant::now() < until && rounds < 400 {
        let mut s = util::connect(addr);
        util::ping(&mut s, b"k")
            .unwrap_or_else(|e| panic!("client {rounds}, after {rounds} kills at the FIN: {e}"));
        // The child serving us exists now.
        let child = children(server.pid())
            .into_iter()
            .find(|p| !seen.contains(p))
            .expect("no new child for the connection");
        seen.insert(child);
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the FIN");
        if util::state(child).is_some_and(|st| st != 'Z') {
            killed_alive += 1;
        }
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        rounds += 1;
    }
    println!("{rounds} children killed at their FIN, {killed_alive} of them not yet exited");
    for i in 0..8u64 {
        util::round_trip(addr, b"after the kills", i)
            .unwrap_or_else(|e| panic!("fresh client {i} after {rounds} kills: {e}"));
    }
    let settle = Instant::now() + Duration::from_secs(10);
    let mut active = active_connections(metrics);
    while active != Some(0) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(50));
        active = active_connections(metrics);
    }
    assert_eq!(
        active,
        Some(0),
        "active connections after {rounds} kills at the FIN ({killed_alive} while alive)"
    );
}
