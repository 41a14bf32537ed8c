//! `serve --inspect-listen` and `ping --inspect`: on loopback (nothing
//! changes, the report's shape, a datagram never answered with more bytes
//! than it carried), and, as root, through network namespaces this test
//! builds — routers, a masquerading NAT, an MSS clamp and a DSCP rewrite in
//! nftables — where each change must be named.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use netecho::NetnsPath as Path;
use netecho::serve::ListenKind;
use serde_json::Value;

use crate::util::*;

/// How long a run of `ping --inspect` may take (it needs well under a second).
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn inspect_addr(s: &Server) -> SocketAddr {
    s.listening(ListenKind::Inspect, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no `listening inspect` line in {:?}", s.stdout_lines()))
}

/// `ping --inspect ADDR --json ARGS` run by `cmd_setup`; the parsed object.
fn ping_json(
    addr: SocketAddr,
    args: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> Value {
    let a = addr.to_string();
    let mut all = vec!["ping", "--inspect", &a, "--json", "--timeout", "2s"];
    all.extend_from_slice(args);
    let mut cmd = netecho(&all);
    setup(&mut cmd);
    let run = run_to_end(cmd, None, RUN_LIMIT);
    run.assert_code(0, "ping --inspect");
    serde_json::from_str(run.stdout_str().trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", run.stdout_str()))
}

/// The findings as (kind, proto) pairs, for assertions that name them.
fn kinds(v: &Value) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {v}"))
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or("?").to_string(),
                f["proto"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn finding<'a>(v: &'a Value, kind: &str, proto: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["kind"] == kind && f["proto"] == proto))
        .unwrap_or_else(|| panic!("no {kind} finding over {proto} in {v}"))
}

#[test]
fn loopback_changes_nothing_and_the_json_carries_both_reports() {
    let s = Server::start("epoll", &["--inspect-listen", "127.0.0.1:0"]);
    let addr = inspect_addr(&s);
    let v = ping_json(addr, &[], |_| {});
    assert_eq!(kinds(&v), vec![], "{v}");
    let tcp = &v["server"]["tcp"];
    assert_eq!(tcp["proto"], "tcp");
    assert_eq!(tcp["local"], addr.to_string());
    assert_eq!(tcp["syn"]["ttl"], 64, "{tcp}");
    assert_eq!(tcp["syn"]["options"][0]["kind"], "mss", "{tcp}");
    let udp = &v["server"]["udp"];
    assert_eq!(
        (udp["proto"].clone(), udp["cut"].clone()),
        ("udp".into(), false.into()),
        "{udp}"
    );
    assert_eq!(udp["ttl"], 64, "{udp}");
    let words = run_to_end(
        netecho(&["ping", "--inspect", &addr.to_string()]),
        None,
        RUN_LIMIT,
    );
    words.assert_code(0, "ping --inspect");
    let text = words.stdout_str();
    assert!(text.lines().any(|l| l == "no change seen"), "{text}");
}

#[test]
fn ipv6_reports_hop_limit_and_traffic_class() {
    if UdpSocket::bind("[::1]:0").is_err() {
        skipped!("SKIPPED: ipv6_reports_hop_limit_and_traffic_class: no IPv6 loopback here");
        return;
    }
    let s = Server::start("epoll", &["--inspect-listen", "[::1]:0"]);
    let v = ping_json(inspect_addr(&s), &["--ttl", "20", "--tos", "0x20"], |_| {});
    assert_eq!(kinds(&v), vec![], "{v}");
    let syn = &v["server"]["tcp"]["syn"];
    assert_eq!(
        (syn["ip_version"].clone(), syn["ttl"].clone()),
        (6.into(), 20.into()),
        "{syn}"
    );
    assert_eq!(syn["dscp"], 8, "{syn}");
    assert!(syn.get("df").is_none(), "IPv6 has no DF: {syn}");
    let udp = &v["server"]["udp"];
    assert_eq!(
        (udp["ttl"].clone(), udp["dscp"].clone()),
        (20.into(), 8.into()),
        "{udp}"
    );
}

#[test]
fn tos_and_ttl_set_by_the_client_arrive_as_sent() {
    let s = Server::start("epoll", &["--inspect-listen", "127.0.0.1:0"]);
    let v = ping_json(inspect_addr(&s), &["--ttl", "33", "--tos", "0xb8"], |_| {});
    assert_eq!(kinds(&v), vec![], "{v}");
    assert_eq!(v["server"]["tcp"]["syn"]["ttl"], 33);
    assert_eq!(v["server"]["tcp"]["syn"]["dscp"], 46);
    assert_eq!(v["server"]["udp"]["dscp"], 46);
}

#[test]
fn a_tcp_client_gets_one_json_line_then_the_end() {
    use std::io::Read;
    let s = Server::start("epoll", &["--inspect-listen", "127.0.0.1:0"]);
    let mut c = std::net::TcpStream::connect(inspect_addr(&s)).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text)
        .expect("the server closes after its line");
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    let v: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v["peer"], c.local_addr().unwrap().to_string());
}

#[test]
fn an_inspect_datagram_is_never_answered_with_more_bytes_than_it_carried() {
    let s = Server::start(
        "epoll",
        &["--inspect-listen", "127.0.0.1:0", "--udp-rate", "10k"],
    );
    let addr = inspect_addr(&s);
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.connect(addr).unwrap();
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let (mut whole, mut cut, mut none) = (0, 0, 0);
    for n in [0, 1, 10, 25, 26, 40, 60, 80, 100, 120, 140, 200, 512, 1400] {
        u.send(&vec![b'x'; n]).unwrap();
        match u.recv(&mut buf) {
            Ok(got) => {
                assert!(got <= n, "{n} bytes sent, {got} answered");
                let v: Value = serde_json::from_slice(&buf[..got])
                    .unwrap_or_else(|e| panic!("{n}: not JSON ({e})"));
                if v["cut"] == true {
                    cut += 1
                } else {
                    whole += 1
                }
            }
            Err(_) => {
                assert!(n < 26, "{n} bytes got no answer");
                none += 1;
            }
        }
    }
    assert!(
        whole > 0 && cut > 0 && none > 0,
        "whole {whole}, cut {cut}, none {none}"
    );
}

#[test]
fn the_inspect_port_keeps_the_udp_rate_limit() {
    let s = Server::start(
        "epoll",
        &["--inspect-listen", "127.0.0.1:0", "--udp-rate", "5"],
    );
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.connect(inspect_addr(&s)).unwrap();
    for _ in 0..40 {
        u.send(&[b'x'; 300]).unwrap();
    }
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 1024];
    while u.recv(&mut buf).is_ok() {
        answers += 1;
    }
    // 5/s with a burst of twice that: about 10 of 40, never all.
    assert!(
        (1..=15).contains(&answers),
        "{answers} of 40 answered at --udp-rate 5"
    );
}

#[test]
fn ping_inspect_at_an_echo_port_fails_in_one_line() {
    let s = Server::start("epoll", &[]);
    let mut cmd = netecho(&[
        "ping",
        "--inspect",
        &s.addr().to_string(),
        "--timeout",
        "300ms",
    ]);
    cmd.stdout(std::process::Stdio::null());
    let run = run_to_end(cmd, None, RUN_LIMIT);
    run.assert_code(1, "ping --inspect at an echo port");
    let line = run.one_line_error("ping --inspect at an echo port");
    assert!(line.contains("inspect"), "{line}");
}

/// Root, `ip` and (for the rules) `nft`: otherwise SKIPPED, out loud.
fn can_build(what: &str, nft: bool) -> bool {
    if !is_root() {
        skipped!("SKIPPED: {what}: network namespaces need root");
        return false;
    }
    if !have_tool("ip") {
        skipped!("SKIPPED: {what}: no `ip` (iproute2, installed by .ci/run)");
        return false;
    }
    if nft && !have_tool("nft") {
        skipped!("SKIPPED: {what}: no `nft` (nftables, installed by .ci/run)");
        return false;
    }
    true
}

/// Namespaces made by this test binary so far, for unique names.
static PATHS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Client — `routers` routers — server, deleted when dropped.
fn build(routers: usize) -> Path {
    let n = PATHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Path::build(&format!("ne{}-{n}", std::process::id()), routers)
        .unwrap_or_else(|e| panic!("building the path: {e}"))
}

/// Loads nftables rules on the router at `node`.
fn nft(path: &Path, node: usize, rules: &str) {
    path.nft(node, rules)
        .unwrap_or_else(|e| panic!("loading the rules: {e}"));
}

/// Starts `serve --inspect-listen SERVER:7007` in the path's server
/// namespace and runs `ping --inspect` from its client namespace.
fn inspect_through(path: &Path, args: &[&str]) -> Value {
    let sip = path.server_ip();
    let listen = format!("{sip}:7000");
    let inspect = format!("{sip}:7007");
    let s = Server::start_with(
        "epoll",
        &[&listen],
        &["--inspect-listen", &inspect],
        |cmd| {
            path.command_in(path.nodes.len() - 1, cmd)
                .unwrap_or_else(|e| panic!("{e}"))
        },
    );
    let addr = inspect_addr(&s);
    ping_json(addr, args, |cmd| {
        path.command_in(0, cmd).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Client — one router with `rules` loaded — server, then `ping --inspect
/// ARGS` through it; `None` (SKIPPED, said) without root, ip or nft.
fn through_one_router(test: &str, rules: &str, args: &[&str]) -> Option<Value> {
    if !can_build(test, true) {
        return None;
    }
    let path = build(1);
    nft(&path, 1, rules);
    Some(inspect_through(&path, args))
}

#[test]
fn a_direct_path_changes_nothing() {
    if !can_build("a_direct_path_changes_nothing", false) {
        return;
    }
    let path = build(0);
    let v = inspect_through(&path, &[]);
    assert_eq!(kinds(&v), vec![], "{v}");
    assert_eq!(
        v["server"]["tcp"]["peer"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some(path.client_ip())
    );
}

#[test]
fn two_routers_are_two_hops_over_tcp_and_udp() {
    if !can_build("two_routers_are_two_hops_over_tcp_and_udp", false) {
        return;
    }
    let path = build(2);
    let v = inspect_through(&path, &[]);
    assert_eq!(
        kinds(&v),
        vec![("hops".into(), "tcp".into()), ("hops".into(), "udp".into())],
        "{v}"
    );
    for proto in ["tcp", "udp"] {
        let f = finding(&v, "hops", proto);
        assert_eq!(
            (f["sent"].clone(), f["seen"].clone()),
            (64.into(), 62.into()),
            "{f}"
        );
    }
    let v = inspect_through(&path, &["--ttl", "10"]);
    assert_eq!(finding(&v, "hops", "udp")["seen"], 8, "{v}");
}

#[test]
fn masquerade_is_nat_over_tcp_and_udp() {
    let Some(v) = through_one_router(
        "masquerade_is_nat_over_tcp_and_udp",
        "table ip nat {\n chain postrouting_nat {\n type nat hook postrouting priority srcnat;\n oifname \"tosrv\" masquerade\n }\n}\n",
        &[],
    ) else {
        return;
    };
    for proto in ["tcp", "udp"] {
        let f = finding(&v, "nat", proto);
        assert!(f["sent"].as_str().unwrap().starts_with("10.77.1.1:"), "{f}");
        // The router's address on the server's link.
        assert!(f["seen"].as_str().unwrap().starts_with("10.77.2.1:"), "{f}");
    }
    assert!(kinds(&v).contains(&("hops".into(), "tcp".into())), "{v}");
}

#[test]
fn an_mss_clamp_to_1200_is_found_as_mss_1200() {
    let Some(v) = through_one_router(
        "an_mss_clamp_to_1200_is_found_as_mss_1200",
        "table inet clamp {\n chain forward_mangle {\n type filter hook forward priority mangle;\n tcp flags syn tcp option maxseg size set 1200\n }\n}\n",
        &[],
    ) else {
        return;
    };
    let f = finding(&v, "mss", "tcp");
    assert_eq!(f["seen"], 1200, "{f}");
    assert_eq!(f["sent"], 1460, "a 1500-byte veth MTU: {f}");
}

#[test]
fn a_dscp_rewrite_is_found_as_dscp() {
    let Some(v) = through_one_router(
        "a_dscp_rewrite_is_found_as_dscp",
        "table ip remark {\n chain forward_mangle {\n type filter hook forward priority mangle;\n ip dscp set cs1\n }\n}\n",
        &["--tos", "0xb8"],
    ) else {
        return;
    };
    for proto in ["tcp", "udp"] {
        let f = finding(&v, "dscp", proto);
        assert_eq!(
            (f["sent"].clone(), f["seen"].clone()),
            (46.into(), 8.into()),
            "{f}"
        );
    }
}
