//! `bench` at scale: `--interval` (a line per interval that adds up to the
//! summary), `--source-addrs` (connections from many local addresses, kept
//! or new per request) and `--hold` (one echo per connection, then idle),
//! against netecho's server and test peers on loopback, over TCP and TLS
//! alike. Which address a connection came from is read on the server's
//! side of it: in the kernel's own table (`/proc/net/tcp`), or as the
//! peer's `accept` returned it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::peers::{echo_with, tcp_server};
use crate::util::tls_peers::{After, Pki, rustls_server};
use crate::util::{Running, Server, assert_refused, eventually, netecho, run_to_end};

/// Longest any bench run here may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a count in {v}"))
}

#[test]
fn interval_json_gives_an_object_per_second_and_a_summary_that_is_their_sum() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_to_end(
        netecho(&[
            "bench",
            &addr,
            "-c",
            "4",
            "-d",
            "3",
            "--warmup",
            "0.3",
            "--interval",
            "1",
            "--json",
        ]),
        None,
        RUN_LIMIT,
    );
    assert!(run.success(), "stderr: {}", run.stderr);
    let objects: Vec<serde_json::Value> = run
        .stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (summary, intervals) = objects.split_last().expect("some output");
    assert_eq!(summary["type"], "summary", "last line: {summary}");
    assert!(intervals.len() >= 3, "{}", run.stdout_str());
    let mut sum = 0;
    for (k, v) in intervals.iter().enumerate() {
        assert_eq!(v["type"], "interval", "{v}");
        assert_eq!(num(v, "index"), k as u64, "in order, none missing: {v}");
        for key in ["rps", "p50_us", "p99_us", "max_us", "start_s", "end_s"] {
            assert!(v[key].is_number(), "{key} in {v}");
        }
        assert!(num(v, "requests") > 0, "a busy second has requests: {v}");
        sum += num(v, "requests");
    }
    assert_eq!(num(summary, "requests"), sum, "{}", run.stdout_str());
    assert_eq!(summary["errors"], 0);
}

#[test]
fn interval_lines_for_a_person_before_the_summary() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let run = run_to_end(
        netecho(&[
            "bench",
            &addr,
            "-c",
            "2",
            "-d",
            "1",
            "--warmup",
            "0",
            "--interval",
            "0.5",
        ]),
        None,
        RUN_LIMIT,
    );
    assert!(run.success(), "stderr: {}", run.stderr);
    let out = run.stdout_str();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        for word in ["requests", "req/s", "p50", "p99", "max"] {
            assert!(l.contains(word), "{word} missing in {l}");
        }
    }
    assert!(out.contains("latency"), "the summary follows: {out}");
}

/// The client addresses of established connections to local `port`, as the
/// kernel's table shows them on the server's side, with their counts.
fn clients_of(server: std::net::SocketAddr) -> BTreeMap<IpAddr, usize> {
    let IpAddr::V4(ip) = server.ip() else {
        panic!("clients_of reads /proc/net/tcp: an IPv4 server, not {server}")
    };
    // The server's end as the table prints it: the in-memory (network
    // order) word in hex, then the port. Matching the port alone would
    // count another test's client that happens to have the same local
    // port on another address.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        server.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let mut seen = BTreeMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; 01 is ESTABLISHED.
        if f.len() < 4 || f[3] != "01" || f[1] != local {
            continue;
        }
        let Some(ip) = f[2]
            .split_once(':')
            .and_then(|(ip, _)| u32::from_str_radix(ip, 16).ok())
        else {
            continue;
        };
        // The address is printed as the in-memory (network order) word.
        let ip = IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes()));
        *seen.entry(ip).or_insert(0) += 1;
    }
    seen
}

#[test]
fn source_addrs_connections_come_from_those_addresses_and_hold_keeps_them() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    let bench = Running::spawn(
        netecho(&[
            "bench",
            &addr,
            "-c",
            "12",
            "-d",
            "2",
            "--hold",
            "--source-addrs",
            "127.0.0.2-127.0.0.5",
            "--json",
        ]),
        None,
    );
    let want: Vec<IpAddr> = (2..=5)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect();
    let mut last = BTreeMap::new();
    let ok = eventually(Duration::from_secs(5), || {
        last = clients_of(srv.addr());
        last.values().sum::<usize>() == 12
    });
    assert!(ok, "12 connections expected at the server, saw {last:?}");
    assert_eq!(last.keys().copied().collect::<Vec<_>>(), want, "{last:?}");
    assert!(last.values().all(|&n| n == 3), "round robin: {last:?}");
    let run = bench.wait(RUN_LIMIT);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout_str().trim()).expect("JSON");
    // --hold: exactly one echo per connection, then idle to the end.
    assert_eq!(v["mode"], "hold", "{v}");
    assert_eq!(num(&v, "requests"), 12, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(
        run.stderr.contains("12 connections open in"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_source_addrs_and_intervals_are_one_line_errors() {
    let srv = Server::start("auto", &[]);
    let addr = srv.addr().to_string();
    for (args, why) in [
        (
            vec!["--source-addrs", "127.0.0.9-127.0.0.2"],
            "ends before it starts",
        ),
        (
            vec!["--source-addrs", "127.0.0.2-::1"],
            "mixes IPv4 and IPv6",
        ),
        (vec!["--source-addrs", "127.0.0.x"], "not an IP address"),
        (vec!["--source-addrs", "127.0.0.2,,127.0.0.3"], "empty item"),
        (vec!["--source-addrs", "::1"], "no IPv6 address"),
        (
            vec!["--source-addrs", "192.0.2.1"],
            "cannot bind to 192.0.2.1",
        ),
        (
            vec!["--source-addrs", "127.0.0.2", "--udp"],
            "cannot be used with",
        ),
        (vec!["--interval", "0.01"], "shortest interval"),
        (vec!["--hold", "-n", "10"], "cannot be used with"),
    ] {
        let mut all = vec!["bench", addr.as_str(), "-d", "1"];
        all.extend(&args);
        let run = assert_refused(&all, RUN_LIMIT);
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
    }
}

/// The addresses `clients` came from, with their counts.
fn by_address(clients: &[std::net::SocketAddr]) -> BTreeMap<IpAddr, usize> {
    let mut seen = BTreeMap::new();
    for c in clients {
        *seen.entry(c.ip()).or_insert(0) += 1;
    }
    seen
}

/// 127.0.0.2 to 127.0.0.5, the source addresses of these tests.
fn four_sources() -> Vec<IpAddr> {
    (2..=5)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect()
}

/// Runs bench with `args` and returns its one `--json` object, which must
/// come from a successful run.
fn bench_ok(args: &[&str]) -> (serde_json::Value, String) {
    let run = run_to_end(netecho(args), None, RUN_LIMIT);
    assert!(run.success(), "{args:?}: stderr: {}", run.stderr);
    let v = serde_json::from_str(run.stdout_str().trim())
        .unwrap_or_else(|e| panic!("{e}: {}", run.stdout_str()));
    (v, run.stderr)
}

#[test]
fn new_conn_connections_come_from_the_next_source_address_each() {
    // Seen on the server's side: the address each accept() gave.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let addr = tcp_server(move |s| {
        if let Ok(peer) = s.peer_addr() {
            log.lock().unwrap().push(peer);
        }
        echo_with(s, |_, b| Some(b));
    });
    let (v, _) = bench_ok(&[
        "bench",
        &addr.to_string(),
        "--new-conn",
        "-c",
        "3",
        "--threads",
        "2",
        "-n",
        "40",
        "--warmup",
        "0",
        "--source-addrs",
        "127.0.0.2-127.0.0.5",
        "--json",
    ]);
    assert_eq!(num(&v, "requests"), 40, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let clients = seen.lock().unwrap().clone();
    let counts = by_address(&clients);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), four_sources());
    // 40 connections round robin over 4 addresses, and the probe before
    // the run from the first.
    assert_eq!(clients.len(), 41, "{counts:?}");
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [11, 10, 10, 10]
    );
}

#[test]
fn tls_new_conn_connections_come_from_the_source_addresses_too() {
    let pki = Pki::new("bench-src");
    let peer = rustls_server(&pki, After::Echo);
    let (v, _) = bench_ok(&[
        "bench",
        &peer.addr.to_string(),
        "--tls",
        "--insecure",
        "--tls-resume",
        "-c",
        "2",
        "-n",
        "20",
        "--warmup",
        "0",
        "--source-addrs",
        "127.0.0.2-127.0.0.5",
        "--json",
    ]);
    assert_eq!(num(&v, "requests"), 20, "{v}");
    assert_eq!(num(&v, "handshakes"), 20, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let counts = by_address(&peer.clients());
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), four_sources());
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [6, 5, 5, 5]);
}

#[test]
fn hold_over_tls_echoes_once_per_connection_then_keeps_it() {
    let pki = Pki::new("bench-hold");
    let peer = rustls_server(&pki, After::Echo);
    let (v, stderr) = bench_ok(&[
        "bench",
        &peer.addr.to_string(),
        "--tls",
        "--insecure",
        "--hold",
        "-c",
        "6",
        "-d",
        "1",
        "--json",
    ]);
    // Exactly one echo per connection, on the 6 connections of setup (and
    // the probe that became connection 0): no reconnect, no second echo.
    assert_eq!(num(&v, "requests"), 6, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["proto"], "tls", "{v}");
    assert_eq!(num(&v, "handshakes"), 6, "{v}");
    assert_eq!(num(&v, "unfinished"), 0, "{v}");
    assert_eq!(peer.clients().len(), 6);
    assert!(stderr.contains("6 connections open in"), "{stderr}");
}

#[test]
fn hold_owes_the_echo_a_server_never_sends_over_tcp_and_tls() {
    let plain = tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0) {}
    });
    let pki = Pki::new("bench-swallow");
    let tls = rustls_server(&pki, After::Swallow);
    for (addr, extra) in [
        (plain.to_string(), &[][..]),
        (tls.addr.to_string(), &["--tls", "--insecure"][..]),
    ] {
        let mut args = vec!["bench", addr.as_str(), "--hold", "-c", "3", "-d", "0.5"];
        args.extend(extra);
        args.push("--json");
        let run = run_to_end(netecho(&args), None, RUN_LIMIT);
        run.assert_code(1, &format!("{extra:?}: no echo came back"));
        let v: serde_json::Value = serde_json::from_str(run.stdout_str().trim())
            .unwrap_or_else(|e| panic!("{e}: {}", run.stdout_str()));
        assert_eq!(num(&v, "requests"), 0, "{extra:?}: {v}");
        assert_eq!(
            num(&v, "unanswered"),
            3,
            "each held echo is owed: {extra:?}: {v}"
        );
        assert!(
            run.stderr.contains("3 requests sent and never answered"),
            "{extra:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn interval_over_tls_adds_up_to_the_summary() {
    let pki = Pki::new("bench-interval");
    let peer = rustls_server(&pki, After::Echo);
    let run = run_to_end(
        netecho(&[
            "bench",
            &peer.addr.to_string(),
            "--tls",
            "--insecure",
            "-c",
            "2",
            "-d",
            "1.5",
            "--warmup",
            "0.2",
            "--interval",
            "0.5",
            "--json",
        ]),
        None,
        RUN_LIMIT,
    );
    assert!(run.success(), "stderr: {}", run.stderr);
    let objects: Vec<serde_json::Value> = run
        .stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (summary, intervals) = objects.split_last().expect("some output");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(intervals.len(), 3, "{}", run.stdout_str());
    let sum: u64 = intervals.iter().map(|v| num(v, "requests")).sum();
    assert!(sum > 0, "{}", run.stdout_str());
    assert_eq!(num(summary, "requests"), sum, "{}", run.stdout_str());
    assert!(num(summary, "handshakes") == 2, "{summary}");
}

#[test]
fn hold_with_tls_resume_is_refused_in_one_line() {
    let run = assert_refused(
        &[
            "bench",
            "127.0.0.1:1",
            "--tls",
            "--tls-resume",
            "--hold",
            "-d",
            "1",
        ],
        RUN_LIMIT,
    );
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
