//! One command-line grammar for every subcommand, run on the real binary:
//! durations and sizes with units (a bare duration is seconds), host names
//! wherever an address is taken, `-4`/`-6`, and one exit-status rule
//! (0 success, 1 the check failed, 2 usage error).

use std::time::Duration;

use crate::util::{Run, Server, assert_refused, netecho, run_to_end};

/// Longest any run here may take before it is killed and fails its test.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Exit status of a command line that cannot be carried out as written.
const EXIT_USAGE: i32 = 2;

fn run(args: &[&str]) -> Run {
    run_to_end(netecho(args), None, RUN_LIMIT)
}

/// Runs `args`, which must be refused ([`assert_refused`]: one line on
/// stderr that starts with `netecho: `) as a usage error: exit 2, the line
/// containing `want`, no debug formatting.
fn usage_error(args: &[&str], want: &str) -> String {
    let what = format!("netecho {}", args.join(" "));
    let r = assert_refused(args, RUN_LIMIT);
    r.assert_code(EXIT_USAGE, &what);
    let line = r.stderr.trim().to_string();
    assert!(line.contains(want), "{what}: no {want:?} in: {line}");
    for debug in ["Some(", "None", "{ ", "Error {"] {
        assert!(!line.contains(debug), "{what}: debug formatting: {line}");
    }
    line
}

#[test]
fn durations_take_units_in_every_subcommand() {
    let srv = Server::start("epoll", &[]);
    let addr = srv.addr().to_string();
    let r = run(&["ping", &addr, "-c", "2", "-i", "200ms", "--timeout", "2s"]);
    r.assert_code(0, "ping -i 200ms --timeout 2s");
    let r = run(&[
        "bench",
        &addr,
        "-c",
        "1",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--timeout",
        "1m",
        "--connect-timeout",
        "2s",
    ]);
    r.assert_code(0, "bench -d 300ms --warmup 0s");
    let r = run_to_end(
        netecho(&["client", &addr, "--connect-timeout", "1500ms"]),
        Some(b"units\n".to_vec()),
        RUN_LIMIT,
    );
    r.assert_code(0, "client --connect-timeout 1500ms");
    assert_eq!(r.stdout, b"units\n");
    usage_error(&["ping", &addr, "-i", "2 parsecs"], "250ms");
    usage_error(&["bench", &addr, "--duration=-1s"], "-1s");
    usage_error(&["bench", &addr, "-d", "0ms"], "longer than 0");
    usage_error(&["ping", &addr, "-i", "100us"], "shortest interval, 1ms");
}

#[test]
fn sizes_take_units() {
    let srv = Server::start("epoll", &["--udp"]);
    let addr = srv.addr().to_string();
    let r = run(&["ping", &addr, "-c", "1", "-s", "1KiB"]);
    r.assert_code(0, "ping -s 1KiB");
    assert!(
        r.stdout_str().contains("1024 bytes from"),
        "{}",
        r.stdout_str()
    );
    let r = run(&["ping", &addr, "-c", "1", "-s", "2k", "--udp"]);
    r.assert_code(0, "ping -s 2k --udp");
    assert!(
        r.stdout_str().contains("2048 bytes from"),
        "{}",
        r.stdout_str()
    );
    usage_error(&["ping", &addr, "-s", "17MiB"], "16777216");
    usage_error(&["bench", &addr, "-s", "lots"], "64KiB");
    // A size fine for TCP but not for UDP: checked before anything runs.
    usage_error(&["ping", &addr, "-s", "64KiB", "--udp"], "65507");
}

#[test]
fn client_takes_host_and_port_apart_as_nc_does() {
    let srv = Server::start("epoll", &[]);
    let port = srv.addr().port().to_string();
    let r = run_to_end(
        netecho(&["client", "localhost", &port, "-4"]),
        Some(b"apart\n".to_vec()),
        RUN_LIMIT,
    );
    r.assert_code(0, "client localhost PORT -4");
    assert_eq!(r.stdout, b"apart\n");
    usage_error(&["client", "127.0.0.1:7", "7"], "already has a port");
}

#[test]
fn addresses_without_a_port_say_so() {
    usage_error(&["client", "[::1]"], "'[::1]' has no port");
    usage_error(&["client", "::1"], "'::1' has no port");
    usage_error(&["bench", "[::1]", "-d", "1"], "'[::1]' has no port");
    usage_error(
        &["bench", "localhost", "-d", "1"],
        "'localhost' has no port",
    );
    usage_error(&["client", "localhost:99999"], "out of range");
    usage_error(&["bench", "-4", "-6", "localhost:7"], "cannot be used with");
}

#[test]
fn minus_six_refuses_a_name_with_only_ipv4() {
    // 127.0.0.1 is an IPv4 literal: with -6 it has no address to use.
    let r = run(&["bench", "-6", "-d", "1", "127.0.0.1:7"]);
    r.assert_code(1, "bench -6 127.0.0.1:7");
    let line = r.one_line_error("bench -6");
    assert!(line.contains("only IPv4 addresses"), "{line}");
}

#[test]
fn values_checked_before_running_exit_two() {
    let srv = Server::start("epoll", &[]);
    let addr = srv.addr().to_string();
    usage_error(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--min-spare",
            "9",
            "--max-spare",
            "2",
        ],
        "--min-spare",
    );
    usage_error(&["bench", &addr, "--stream", "-c", "100000"], "--stream");
    usage_error(&["ping", &addr, "-c", "0"], "at least 1");
}

#[test]
fn serve_listens_on_a_host_name() {
    // localhost is every loopback address the resolver gives it: each is
    // served, each announced.
    let srv = Server::start_on("epoll", &["localhost:0"], &[]);
    let addr = srv.addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    crate::util::round_trip(addr, b"by name", 1).expect("echo on localhost:0");
    usage_error(&["serve", "--listen", "[::1]"], "expected [::1]:PORT");
    usage_error(
        &["serve", "--listen", "no-such-host.invalid:7"],
        "cannot resolve",
    );
}

#[test]
fn serve_prints_listening_only_once_its_workers_run() {
    use std::os::unix::process::CommandExt;
    // 2000 epoll workers each need a copy of the listener: under a hard
    // limit of 256 descriptors they cannot all start.
    let mut cmd = netecho(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--model",
        "epoll",
        "--workers",
        "2000",
    ]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run_to_end(cmd, None, RUN_LIMIT);
    r.assert_code(1, "serve --workers 2000 under 256 descriptors");
    assert!(
        !r.stdout_str().contains("listening"),
        "a server that failed to start announced: {}",
        r.stdout_str()
    );
    assert!(r.stderr.contains("netecho: "), "{}", r.stderr);
}

/// Every subcommand's `--help`: no internal names (intra-doc links, Rust
/// constants), no file the user does not have, and an EXIT STATUS.
#[test]
fn help_texts_speak_to_users() {
    for sub in [
        "serve",
        "client",
        "bench",
        "ping",
        "watch",
        "trace",
        "lab",
        "completions",
        "man",
    ] {
        let r = run(&[sub, "--help"]);
        r.assert_code(0, &format!("{sub} --help"));
        let text = r.stdout_str();
        assert!(
            text.to_lowercase().contains("exit status"),
            "{sub} --help:\n{text}"
        );
        for bad in [
            "[`",
            ".md",
            "README",
            "SWITCH_AT",
            "DEFAULT_",
            "Some(",
            "None",
        ] {
            assert!(!text.contains(bad), "{sub} --help shows {bad:?}:\n{text}");
        }
    }
}

/// Log lines speak in values, not Rust's debug forms: the open and close
/// lines of a connection both name the peer and TLS, and `serving` says
/// `zero_copy=auto`.
#[test]
fn logs_show_no_debug_formatting() {
    for model in ["epoll", "uring", "tokio"] {
        if !crate::util::model_runs(model, "logs_show_no_debug_formatting") {
            continue;
        }
        let srv = Server::start(model, &["-v"]);
        crate::util::round_trip(srv.addr(), b"log me", 7).expect("echo");
        let ok = crate::util::eventually(Duration::from_secs(5), || {
            srv.stderr_text().contains("connection closed")
        });
        let log = srv.stderr_text();
        assert!(ok, "{model}: no close line:\n{log}");
        for bad in ["Some(", "None", "Auto", "Exited(", "{ "] {
            assert!(!log.contains(bad), "{model}: {bad:?} in the log:\n{log}");
        }
        assert!(log.contains("zero_copy=auto"), "{model}:\n{log}");
        for what in ["connection open", "connection closed"] {
            let line = log
                .lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("{model}: no {what:?} line:\n{log}"));
            // The same fields on both lines. uring asks the socket for its
            // peer, which a closed one may no longer have: `unknown` then.
            let peer_known = line.contains("peer=127.0.0.1:");
            let peer_ok = peer_known || (model == "uring" && line.contains("peer=unknown"));
            assert!(peer_ok && line.contains("tls=false"), "{model}: {line}");
        }
    }
}
