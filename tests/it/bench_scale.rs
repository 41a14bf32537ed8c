//! `bench` at scale: `--interval` (a line per interval that adds up to the
//! summary), `--source-addrs` (connections from many local addresses) and
//! `--hold` (one echo per connection, then idle), against netecho's server
//! on loopback. Which address a connection came from is read on the
//! server's side of it, in the kernel's own table (`/proc/net/tcp`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

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
fn clients_of(port: u16) -> BTreeMap<IpAddr, usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let mut seen = BTreeMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; 01 is ESTABLISHED.
        if f.len() < 4 || f[3] != "01" {
            continue;
        }
        let port_of = |a: &str| {
            a.split_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        if port_of(f[1]) != Some(port) {
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
        last = clients_of(srv.addr().port());
        last.values().sum::<usize>() == 12
    });
    assert!(ok, "12 connections expected at the server, saw {last:?}");
    assert_eq!(last.keys().copied().collect::<Vec<_>>(), want, "{last:?}");
    assert!(last.values().all(|&n| n == 3), "round robin: {last:?}");
    let run = bench.wait(RUN_LIMIT);
    assert!(run.success(), "stderr: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout_str().trim()).expect("JSON");
    // --hold: exactly one echo per connection, then idle to the end.
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
