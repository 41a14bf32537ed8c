//! The production-service side of `netecho serve` (issue "UDP echo, metrics,
//! logs, limits and socket activation"), on real sockets and processes:
//! UDP sizes, loop and storm protection, metrics after known traffic in a
//! forking and an event model, per-IP limits, the stall timeout, systemd
//! socket activation, `--inetd`, completions, the man page and JSON logs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netecho::serve::{ListenKind, Listening, parse_listening};

use crate::util::{self, BIN, Rng, Server, is_root};

/// How long a test waits for a UDP reply that should come.
const UDP_WAIT: Duration = Duration::from_secs(2);
/// How long a test waits to be sure a UDP reply does not come.
const NO_REPLY_WAIT: Duration = Duration::from_millis(300);

/// A UDP socket on `ip`, port 0, with a receive timeout.
fn udp_from(ip: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("binding a UDP test socket");
    s.set_read_timeout(Some(UDP_WAIT)).unwrap();
    s
}

/// Sends `payload` and returns the reply, or `None` if none came within `wait`.
fn udp_echo(s: &UdpSocket, to: SocketAddr, payload: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(payload, to).expect("send_to");
    let mut buf = vec![0u8; 70_000];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, to, "reply from the wrong address");
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

use crate::util::{metric, scrape};

/// The UDP address a server printed (same port as its TCP listener).
fn udp_addr(server: &Server) -> SocketAddr {
    let addr = server
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no `listening udp` line in {:?}", server.stdout_lines()));
    assert_eq!(addr, server.addr(), "UDP shares the TCP address and port");
    addr
}

#[test]
fn udp_sizes_echo_exactly_in_every_kind_of_model() {
    for model in ["fork", "prefork", "thread", "epoll", "uring"] {
        let server = Server::start(model, &["--udp", "--workers", "2"]);
        let to = udp_addr(&server);
        let s = udp_from(Ipv4Addr::LOCALHOST);
        let mut rng = Rng::new(0x0dd);
        for size in [0usize, 1, 1472, 8192, 65_507] {
            let payload = rng.bytes(size);
            let got = udp_echo(&s, to, &payload, UDP_WAIT)
                .unwrap_or_else(|| panic!("{model}: no reply to {size} bytes"));
            assert!(got == payload, "{model}: {size}-byte reply differs");
        }
    }
}

#[test]
fn udp_oversize_is_dropped_and_counted_never_truncated() {
    let server = Server::start(
        "thread",
        &[
            "--udp",
            "--udp-max-size",
            "1000",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let (to, m) = (udp_addr(&server), server.metrics_addr());
    let s = udp_from(Ipv4Addr::LOCALHOST);
    assert_eq!(
        udp_echo(&s, to, &[7; 1000], UDP_WAIT).as_deref(),
        Some(&[7u8; 1000][..])
    );
    assert_eq!(
        udp_echo(&s, to, &[7; 1001], NO_REPLY_WAIT),
        None,
        "1001 > max: no reply"
    );
    assert!(crate::util::eventually(Duration::from_secs(2), || {
        metric(m, "netecho_udp_dropped_total{reason=\"too_big\"}") == 1
    }));
}

#[test]
fn udp_never_answers_small_service_ports() {
    if !is_root() {
        skipped!("SKIPPED udp_never_answers_small_service_ports: binding ports 7-37 needs root");
        return;
    }
    let server = Server::start("thread", &["--udp", "--metrics", "127.0.0.1:0"]);
    let (to, m) = (udp_addr(&server), server.metrics_addr());
    let mut bound = 0;
    for port in [7u16, 9, 13, 19, 37] {
        // Another service may own the port on this machine: skip that one.
        let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) else {
            eprintln!("port {port} is in use here; not tested");
            continue;
        };
        bound += 1;
        assert_eq!(
            udp_echo(&s, to, b"loop?", NO_REPLY_WAIT),
            None,
            "reply to port {port}"
        );
    }
    assert!(bound > 0, "could bind none of the small-service ports");
    assert!(crate::util::eventually(Duration::from_secs(2), || {
        metric(m, "netecho_udp_dropped_total{reason=\"loop_port\"}") == bound
    }));
}

/// Builds the 8-byte UDP header + payload (checksum 0: none, legal on IPv4).
fn udp_segment(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut seg = Vec::with_capacity(len as usize);
    seg.extend_from_slice(&src_port.to_be_bytes());
    seg.extend_from_slice(&dst_port.to_be_bytes());
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    seg
}

#[test]
fn two_servers_and_one_spoofed_datagram_do_not_ping_pong() {
    if !is_root() {
        skipped!(
            "SKIPPED two_servers_...ping_pong: forging a source port needs a raw socket (root)"
        );
        return;
    }
    let a = Server::start("thread", &["--udp", "--metrics", "127.0.0.1:0"]);
    let b = Server::start("epoll", &["--udp", "--metrics", "127.0.0.1:0"]);
    let (a_udp, b_udp) = (udp_addr(&a), udp_addr(&b));
    let (a_m, b_m) = (a.metrics_addr(), b.metrics_addr());
    // A raw UDP socket: we write the UDP header, so the source port can be
    // B's while the kernel fills in the IP header (127.0.0.1 → 127.0.0.1).
    // SAFETY: plain socket(2) call; the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    assert!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let raw = unsafe { OwnedFd::from_raw_fd(raw) };
    let seg = udp_segment(b_udp.port(), a_udp.port(), b"who echoes the echo?");
    let dst =
        nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    nix::sys::socket::sendto(
        raw.as_raw_fd(),
        &seg,
        &dst,
        nix::sys::socket::MsgFlags::empty(),
    )
    .expect("sending the forged datagram");
    // Let any loop run, then check it stopped: both counts frozen, small.
    std::thread::sleep(Duration::from_millis(500));
    let a1 = metric(a_m, "netecho_udp_datagrams_total");
    let b1 = metric(b_m, "netecho_udp_datagrams_total");
    std::thread::sleep(Duration::from_millis(500));
    let a2 = metric(a_m, "netecho_udp_datagrams_total");
    let b2 = metric(b_m, "netecho_udp_datagrams_total");
    assert!(a1 >= 1, "A never answered the forged datagram");
    assert_eq!((a1, b1), (a2, b2), "still bouncing");
    assert!(a2 + b2 <= 8, "bounced {a2}+{b2} times before stopping");
    let loops = metric(a_m, "netecho_udp_dropped_total{reason=\"loop\"}")
        + metric(b_m, "netecho_udp_dropped_total{reason=\"loop\"}");
    assert!(loops >= 1, "the loop was cut by the loop detector");
}

#[test]
fn a_flooding_source_is_held_to_its_rate_while_another_is_served() {
    let server = Server::start(
        "thread",
        &["--udp", "--udp-rate", "50", "--metrics", "127.0.0.1:0"],
    );
    let (to, m) = (udp_addr(&server), server.metrics_addr());
    let flooder = udp_from(Ipv4Addr::new(127, 0, 0, 2));
    let other = udp_from(Ipv4Addr::new(127, 0, 0, 3));
    let start = Instant::now();
    let mut sent = 0u32;
    let mut other_ok = 0;
    // About 1 s of flood, 2,000 datagrams at most.
    while start.elapsed() < Duration::from_secs(1) && sent < 2000 {
        flooder.send_to(&sent.to_be_bytes(), to).unwrap();
        sent += 1;
        if sent.is_multiple_of(200) {
            let probe = format!("other {sent}");
            if udp_echo(&other, to, probe.as_bytes(), UDP_WAIT).as_deref() == Some(probe.as_bytes())
            {
                other_ok += 1;
            }
        }
    }
    let mut replies = 0;
    flooder.set_read_timeout(Some(NO_REPLY_WAIT)).unwrap();
    let mut buf = [0u8; 64];
    while flooder.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    // Burst 100, then 50/s: at most 100 + 50·secs (+ slack for timing).
    let cap = (100.0 + 50.0 * secs + 10.0) as u32;
    assert!(
        sent > 500,
        "the flood was too small to test anything ({sent})"
    );
    assert!(
        replies >= 90 && replies <= cap,
        "flooder got {replies} replies of {sent} (cap {cap})"
    );
    assert_eq!(
        other_ok,
        sent / 200,
        "the other source was not served every time"
    );
    let dropped = metric(m, "netecho_udp_dropped_total{reason=\"source_rate\"}");
    assert!(
        dropped + u64::from(replies) >= u64::from(sent) - 5,
        "drops not counted: {dropped}"
    );
}

/// Known TCP and UDP traffic, then every counter checked.
fn metrics_after_known_traffic(model: &str) {
    let server = Server::start(
        model,
        &[
            "--udp",
            "--metrics",
            "127.0.0.1:0",
            "--max-conns",
            "2",
            "--workers",
            "3",
        ],
    );
    let m = server.metrics_addr();
    for i in 0..5 {
        util::round_trip(server.addr(), &[i as u8; 1000], i).unwrap();
    }
    let s = udp_from(Ipv4Addr::LOCALHOST);
    for i in 0..3u8 {
        assert!(udp_echo(&s, udp_addr(&server), &[i; 10], UDP_WAIT).is_some());
    }
    // Two held connections fill --max-conns 2; the third is rejected.
    let mut held: Vec<TcpStream> = (0..2).map(|_| util::connect(server.addr())).collect();
    for h in &mut held {
        util::ping(h, b"hold").unwrap();
    }
    let mut third = util::connect(server.addr());
    let _ = util::wait_closed(&mut third, Duration::from_secs(3));
    let ok = crate::util::eventually(Duration::from_secs(3), || {
        metric(m, "netecho_connections_total") == 7
            && metric(m, "netecho_connections_active") == 2
            && metric(
                m,
                "netecho_connections_rejected_total{reason=\"max_conns\"}",
            ) == 1
            && metric(m, "netecho_bytes_echoed_total") == 5 * 1000 + 2 * 4
            && metric(m, "netecho_udp_datagrams_total") == 3
    });
    assert!(ok, "{model}: metrics after known traffic:\n{}", scrape(m));
    drop(held);
    assert!(
        crate::util::eventually(Duration::from_secs(3), || metric(
            m,
            "netecho_connections_active"
        ) == 0),
        "{model}: active does not return to 0"
    );
    assert_eq!(metric(m, "netecho_idle_timeouts_total"), 0);
}

#[test]
fn metrics_count_known_traffic_in_a_forking_model() {
    metrics_after_known_traffic("fork");
}

#[test]
fn metrics_count_known_traffic_in_an_event_model() {
    metrics_after_known_traffic("epoll");
}

/// A client that reconnects the moment it has seen the server's FIN finds
/// its slot free: with `--max-conns 1`, a hundred clients one after another
/// are all served, none rejected. In `fork` the slot used to come back only
/// when the parent reaped the child, after the client had already seen the
/// end and reconnected.
#[test]
fn back_to_back_clients_are_never_over_max_conns() {
    for model in [
        "fork",
        "prefork",
        "thread",
        "prethread",
        "epoll",
        "tokio",
        "uring",
    ] {
        if !crate::util::model_runs(model, "back_to_back_clients_are_never_over_max_conns") {
            continue;
        }
        let server = Server::start(
            model,
            &[
                "--max-conns",
                "1",
                "--workers",
                "1",
                "--metrics",
                "127.0.0.1:0",
            ],
        );
        for i in 0..100u64 {
            if let Err(e) = util::round_trip(server.addr(), &[i as u8; 100], i) {
                panic!("{model}: client {i} of 100: {e}\n{}", server.stderr_text());
            }
        }
        let rejected = metric(
            server.metrics_addr(),
            "netecho_connections_rejected_total{reason=\"max_conns\"}",
        );
        assert_eq!(rejected, 0, "{model}: back-to-back clients rejected");
    }
}

#[test]
fn per_ip_limit_applies_to_each_source_apart() {
    let server = Server::start("thread", &["--max-conns-per-ip", "2"]);
    let from = |ip: Ipv4Addr| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        s.connect_timeout(&server.addr().into(), Duration::from_secs(5))
            .unwrap();
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = vec![from(a), from(a)];
    for h in &mut held {
        util::ping(h, b"mine").unwrap();
    }
    let mut third = from(a);
    let end = util::wait_closed(&mut third, Duration::from_secs(3));
    assert!(
        matches!(end, util::Closed::Fin | util::Closed::Reset),
        "a third connection from {a} was not closed at once: {end:?}"
    );
    let mut other = from(Ipv4Addr::new(127, 0, 0, 3));
    util::ping(&mut other, b"another source is served").unwrap();
    drop(held);
    assert!(
        crate::util::eventually(Duration::from_secs(3), || {
            let mut again = from(a);
            util::ping(&mut again, b"back").is_ok()
        }),
        "{a} is not served again after its connections left"
    );
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_stall_timeout() {
    for model in ["thread", "epoll"] {
        let server = Server::start(model, &["--stall-timeout", "1", "--idle-timeout", "0"]);
        let mut s = util::connect(server.addr());
        s.set_nonblocking(true).unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let start = Instant::now();
        let mut closed_after = None;
        // Write without ever reading, until the server gives up on us.
        while start.elapsed() < Duration::from_secs(10) {
            match s.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => {
                    closed_after = Some(start.elapsed());
                    break;
                }
            }
        }
        let after = closed_after.unwrap_or_else(|| panic!("{model}: never closed"));
        assert!(
            after >= Duration::from_millis(900),
            "{model}: closed too early ({after:?})"
        );
    }
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --model epoll",
        BIN,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; they put the listener
    // on fd 3, not close-on-exec, in the child only. (If it already is fd 3,
    // dup2 would do nothing and leave close-on-exec set.)
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawning sh");
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    let tcp = Listening {
        kind: ListenKind::Tcp,
        addr,
    };
    assert_eq!(parse_listening(&line), Some(tcp), "{line:?}");
    drop(listener);
    let r = util::round_trip(addr, b"activated", 1);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    r.unwrap();
    assert!(status.success(), "exit {status}");
}

#[test]
fn inetd_mode_serves_one_connection_on_stdin_and_stdout() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let theirs: OwnedFd = theirs.into();
    let child = Command::new(BIN)
        .args(["serve", "--inetd"])
        .stdin(Stdio::from(theirs.try_clone().unwrap()))
        .stdout(Stdio::from(theirs))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let payload = Rng::new(5).bytes(300_000);
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let writer = {
        let mut w = ours.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&p).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    ours.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    util::compare("inetd echo", &payload, &got).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {}", out.status);
}

#[test]
fn completions_and_man_page_come_from_the_cli_definitions() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("_netecho") && text.contains("--max-conns"),
        "bash completion"
    );
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".TH netecho 1") && text.contains("serve"),
        "man page"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = Server::start("thread", &["--log-format", "json"]);
    server.sigterm();
    assert!(
        server
            .wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let logs = server.stderr_text();
    assert!(!logs.trim().is_empty(), "no logs");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "no level in {line}");
    }
}
