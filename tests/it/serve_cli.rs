//! `netecho serve` from the command line: every bad input is refused with
//! one line on stderr and a non-zero exit; several `--listen` addresses all
//! serve; `--help` works.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use netecho::serve::{ListenKind, Listening, parse_listening};

use crate::util::{self, KIB, Rng, Run, Server, is_root, netecho, round_trip, run_to_end, seed_of};

/// A bad command line must be refused long before this; a run still going
/// then (it accepted the input?) is killed and fails its test.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code for a command line that does not parse.
const EXIT_USAGE: i32 = 2;
/// Exit code for a failure at run time (bind...).
const EXIT_RUNTIME: i32 = 1;

fn serve(args: &[&str]) -> Run {
    let mut all = vec!["serve"];
    all.extend(args);
    run_to_end(netecho(&all), None, EXIT_TIMEOUT)
}

/// Runs `serve ARGS`, which must fail with `code` and one line on stderr
/// that contains every string of `must_contain` (case-insensitive).
fn refused(args: &[&str], code: i32, must_contain: &[&str]) {
    let what = format!("serve {}", args.join(" "));
    let run = serve(args);
    run.assert_code(code, &what);
    let line = run.one_line_error(&what).to_lowercase();
    for s in must_contain {
        assert!(
            line.contains(&s.to_lowercase()),
            "{what}: error line does not mention {s:?}: {line}"
        );
    }
}

#[test]
fn port_out_of_range() {
    refused(&["--listen", "127.0.0.1:99999"], EXIT_USAGE, &["99999"]);
}

#[test]
fn per_ip_v6_prefix_out_of_range() {
    for bad in ["0", "129", "-1", "64bits"] {
        refused(
            &["--listen", "127.0.0.1:0", "--per-ip-v6-prefix", bad],
            EXIT_USAGE,
            &["--per-ip-v6-prefix", bad],
        );
    }
}

#[test]
fn listen_not_an_address() {
    refused(&["--listen", "nonsense"], EXIT_USAGE, &["nonsense"]);
}

#[test]
fn unknown_model_lists_the_valid_ones() {
    refused(
        &["--listen", "127.0.0.1:0", "--model", "bogus"],
        EXIT_USAGE,
        &[
            "bogus",
            "iterative",
            "fork",
            "prefork",
            "thread",
            "prethread",
            "epoll",
            "tokio",
            "uring",
        ],
    );
}

#[test]
fn max_conns_negative() {
    refused(
        &["--listen", "127.0.0.1:0", "--max-conns", "-1"],
        EXIT_USAGE,
        &["-1"],
    );
}

#[test]
fn max_conns_not_a_number() {
    refused(
        &["--listen", "127.0.0.1:0", "--max-conns", "abc"],
        EXIT_USAGE,
        &["abc"],
    );
}

#[test]
fn workers_zero() {
    refused(
        &["--listen", "127.0.0.1:0", "--workers", "0"],
        EXIT_USAGE,
        &["workers"],
    );
}

#[test]
fn idle_timeout_negative() {
    refused(
        &["--listen", "127.0.0.1:0", "--idle-timeout", "-5"],
        EXIT_USAGE,
        &["-5"],
    );
}

#[test]
fn address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a test listener");
    let addr = taken.local_addr().expect("local_addr").to_string();
    refused(
        &["--listen", &addr],
        EXIT_RUNTIME,
        &["already in use", &addr],
    );
    drop(taken);
}

#[test]
fn privileged_port_permission_denied() {
    if !is_root() {
        skipped!("SKIPPED: privileged_port_permission_denied needs root (to run as nobody)");
        return;
    }
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match start {
        Some(p) if p > 80 => {}
        other => {
            skipped!(
                "SKIPPED: privileged_port_permission_denied: ip_unprivileged_port_start is \
                 {other:?}, so port 80 is not privileged here"
            );
            return;
        }
    }
    let mut cmd = netecho(&["serve", "--listen", "127.0.0.1:80"]);
    // nobody/nogroup: no CAP_NET_BIND_SERVICE.
    cmd.uid(65534).gid(65534);
    let run = run_to_end(cmd, None, EXIT_TIMEOUT);
    run.assert_code(EXIT_RUNTIME, "serve on port 80 as nobody");
    let line = run
        .one_line_error("serve on port 80 as nobody")
        .to_lowercase();
    assert!(line.contains("permission denied"), "error line: {line}");
}

#[test]
fn two_listen_addresses_both_serve() {
    let server = Server::start_on("auto", &["127.0.0.1:0", "127.0.0.1:0"], &[]);
    assert_eq!(server.addrs.len(), 2, "listening lines: {:?}", server.addrs);
    assert_ne!(
        server.addrs[0], server.addrs[1],
        "two --listen 127.0.0.1:0 bound the same port"
    );
    for (i, addr) in server.addrs.iter().enumerate() {
        let seed = seed_of(&format!("two_listen/{i}"));
        if let Err(e) = round_trip(*addr, &Rng::new(seed).bytes(16 * KIB), seed) {
            panic!("round trip via {addr}: {e}");
        }
    }
}

#[test]
fn help_exits_zero() {
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let run = run_to_end(netecho(args), None, EXIT_TIMEOUT);
        run.assert_code(0, &format!("netecho {args:?}"));
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            out.contains("serve") || out.contains("--listen"),
            "netecho {args:?}: help text looks wrong:\n{out}"
        );
    }
}

/// Starts `netecho serve` with no `--listen` in a network namespace of its
/// own (so port 6666 is free whatever this machine runs), optionally with
/// socket(AF_INET6, ...) refused by a seccomp filter as on a kernel booted
/// with ipv6.disable=1, and returns the first line it prints.
fn default_listen_line(without_ipv6: bool) -> String {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(util::BIN);
    cmd.arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // SAFETY: between fork and exec only the namespace helper's system
    // calls and prctl(2), all async-signal-safe, on a filter program that
    // lives on this stack.
    unsafe {
        cmd.pre_exec(move || {
            util::own_netns_with_loopback()?;
            if without_ipv6 {
                util::refuse_syscall(
                    libc::SYS_socket,
                    Some(libc::AF_INET6 as u32),
                    libc::EAFNOSUPPORT,
                )?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawning netecho serve");
    let mut line = String::new();
    let read = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("reading the listening line");
    line
}

/// Asserts that `line` announces TCP on `addr`.
fn assert_listens_on(line: &str, addr: &str) {
    let want = Listening {
        kind: ListenKind::Tcp,
        addr: addr.parse().expect("a socket address"),
    };
    assert_eq!(parse_listening(line), Some(want), "first line {line:?}");
}

#[test]
fn default_listen_is_one_dual_stack_socket_on_6666() {
    if !is_root() {
        skipped!(
            "SKIPPED default_listen_is_one_dual_stack_socket_on_6666: needs root for a network namespace"
        );
        return;
    }
    assert_listens_on(&default_listen_line(false), "[::]:6666");
}

#[test]
fn default_listen_falls_back_to_ipv4_without_ipv6() {
    if !is_root() {
        skipped!(
            "SKIPPED default_listen_falls_back_to_ipv4_without_ipv6: needs root for a network namespace"
        );
        return;
    }
    assert_listens_on(&default_listen_line(true), "0.0.0.0:6666");
}
