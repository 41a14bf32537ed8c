//! `serve --fault`: an echo that misbehaves exactly as told, checked with
//! real sockets and the real client, ping and metrics. Timing checks hold
//! [`timing`], keep the bounds the faults promise (50 ms ± 10 ms on a
//! median of many pings, 4 s ± 15 %) and print what they measured; the UDP
//! loss check uses a 6-sigma binomial band, so it does not flake.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netecho::serve::ListenKind;
use nix::sys::signal::Signal;

use crate::util::tls_peers::Pki;
use crate::util::{self, Server, assert_refused, netecho, run_to_end, timing};

/// Longest any client run here may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `n` bytes on `s` and reads until the server ends the connection
/// or nothing comes for `quiet`: (bytes echoed, how it ended).
fn send_and_read(s: &mut TcpStream, n: usize, quiet: Duration) -> (usize, String) {
    s.write_all(&vec![b'x'; n]).unwrap();
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, "fin".into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, "reset".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, "silence".into());
            }
            Err(e) => return (got, format!("error: {e}")),
        }
    }
}

/// ping's summary figures in ms: (min, median).
fn rtt_min_median(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rtt min/avg/median/max/stddev = "))
        .unwrap_or_else(|| panic!("no rtt line in:\n{stdout}"));
    let figures = line.split(" = ").nth(1).unwrap().trim_end_matches(" ms");
    let f: Vec<f64> = figures.split('/').map(|f| f.parse().unwrap()).collect();
    (f[0], f[2])
}

/// Probes per ping run: the median of 21 shrugs off the few echoes a busy
/// machine delays.
const PINGS: &str = "21";

/// `latency=50ms` adds 50 ms ± 10 ms to ping's median RTT (against the
/// same model without it), and no echo comes back before its 50 ms.
fn latency_adds_to_ping(model: &str) {
    if !util::model_runs(model, "faults::latency_adds_to_ping") {
        return;
    }
    let _t = timing();
    let srv = Server::start(model, &["--fault", "latency=50ms,from=127.0.0.1"]);
    let plain = Server::start(model, &[]);
    let ping = |addr: SocketAddr| {
        let run = run_to_end(
            netecho(&["ping", "-c", PINGS, "-i", "20ms", &addr.to_string()]),
            None,
            RUN_LIMIT,
        );
        run.assert_code(0, &format!("{model}: ping"));
        rtt_min_median(run.stdout_str())
    };
    let (_, base) = ping(plain.addr());
    let (least, slow) = ping(srv.addr());
    let added = slow - base;
    assert!(
        least >= 50.0 && (40.0..=60.0).contains(&added),
        "{model}: latency=50ms added {added:.3} ms to the median RTT (want 50 ± 10 ms: \
         {slow:.3} ms with it, {base:.3} ms without); fastest echo {least:.3} ms (want >= 50 ms)"
    );
}

/// `reset-after=4KiB` gives exactly 4096 echoed bytes, then a reset; the
/// client says so in words; the fault is counted.
fn reset_after_exact_bytes(model: &str) {
    if !util::model_runs(model, "faults::reset_after_exact_bytes") {
        return;
    }
    let srv = Server::start(
        model,
        &["--fault", "reset-after=4KiB", "--metrics", "127.0.0.1:0"],
    );
    let mut s = util::connect(srv.addr());
    let (got, how) = send_and_read(&mut s, 10_000, Duration::from_secs(10));
    assert_eq!(
        (got, how.as_str()),
        (4096, "reset"),
        "{model}: stderr:\n{}",
        srv.stderr_text()
    );
    let run = run_to_end(
        netecho(&["client", &srv.addr().to_string()]),
        Some(vec![0u8; 10_000]),
        RUN_LIMIT,
    );
    run.assert_code(1, &format!("{model}: client against reset-after"));
    assert!(
        run.stderr
            .contains("the server reset the connection after echoing 4096 of the"),
        "{model}: {}",
        run.stderr
    );
    let page = || util::scrape(srv.metrics_addr());
    assert!(
        util::eventually(Duration::from_secs(5), || {
            util::sample(
                &util::scrape(srv.metrics_addr()),
                "netecho_faults_total{fault=\"reset\"}",
            ) == Some(2)
        }),
        "{model}: resets counted:\n{}",
        page()
    );
}

/// A server in `model` with `fault` on its `--tls-listen` port (the test
/// CA's certificate), and that port.
fn tls_server(model: &str, pki: &Pki, fault: &str) -> (Server, String) {
    let (cert, key) = (pki.path("cert.pem"), pki.path("key.pem"));
    let srv = Server::start(
        model,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--fault",
            fault,
        ],
    );
    let addr = srv
        .listening(ListenKind::Tls, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{model}: no `listening tls` line"));
    (srv, addr.to_string())
}

/// Faults act on the plaintext of a TLS connection, checked with netecho's
/// TLS client and ping trusting the test CA: `corrupt-at=100` flips
/// plaintext byte 100, which the client's check names; `reset-after=4KiB`
/// resets after exactly 4096 plaintext bytes, `close-after=1KiB` closes
/// after 1024; `latency=50ms` holds each
/// echo 50 ms (every probe at least that, the median within 10 ms of it
/// plus the plain TCP round trip's few hundred microseconds).
fn faults_act_on_tls_plaintext(model: &str) {
    if !util::model_runs(model, "faults::faults_act_on_tls_plaintext") {
        return;
    }
    let pki = Pki::new(&format!("faults-{model}"));
    let ca = pki.path("ca.pem");
    let client = |addr: &str| {
        run_to_end(
            netecho(&["client", "--tls", "--tls-ca", &ca, addr]),
            Some(vec![0u8; 10_000]),
            RUN_LIMIT,
        )
    };
    let (srv, addr) = tls_server(model, &pki, "corrupt-at=100");
    let run = client(&addr);
    run.assert_code(1, &format!("{model}: TLS client against corrupt-at=100"));
    assert!(
        run.stderr.contains("mismatch at byte 100 "),
        "{model}: {}\nserver:\n{}",
        run.stderr,
        srv.stderr_text()
    );
    drop(srv);
    let (srv, addr) = tls_server(model, &pki, "reset-after=4KiB");
    let run = client(&addr);
    run.assert_code(1, &format!("{model}: TLS client against reset-after=4KiB"));
    assert!(
        run.stderr
            .contains("the server reset the connection after echoing 4096 of the 10000 bytes sent"),
        "{model}: {}\nserver:\n{}",
        run.stderr,
        srv.stderr_text()
    );
    drop(srv);
    // close-after: our close_notify, then FIN, after exactly 1024 bytes.
    let (srv, addr) = tls_server(model, &pki, "close-after=1KiB");
    let run = client(&addr);
    run.assert_code(1, &format!("{model}: TLS client against close-after=1KiB"));
    assert!(
        run.stderr
            .contains("the server closed the connection after echoing 1024 of the"),
        "{model}: {}\nserver:\n{}",
        run.stderr,
        srv.stderr_text()
    );
    drop(srv);
    let _t = timing();
    let (_srv, addr) = tls_server(model, &pki, "latency=50ms");
    let run = run_to_end(
        netecho(&[
            "ping", "--tls", "--tls-ca", &ca, "-c", PINGS, "-i", "20ms", &addr,
        ]),
        None,
        RUN_LIMIT,
    );
    run.assert_code(0, &format!("{model}: ping --tls against latency=50ms"));
    let (least, median) = rtt_min_median(run.stdout_str());
    assert!(
        least >= 50.0 && (50.0..=60.0).contains(&median),
        "{model}: over TLS, latency=50ms gave a median RTT of {median:.3} ms (want 50 ms to \
         60 ms), fastest {least:.3} ms (want >= 50 ms)"
    );
}

macro_rules! model_tests {
    ($($model:ident),* $(,)?) => {$(
        mod $model {
            #[test]
            fn latency_adds_to_ping() {
                super::latency_adds_to_ping(stringify!($model));
            }
            #[test]
            fn reset_after_exact_bytes() {
                super::reset_after_exact_bytes(stringify!($model));
            }
            #[test]
            fn faults_act_on_tls_plaintext() {
                super::faults_act_on_tls_plaintext(stringify!($model));
            }
        }
    )*};
}

model_tests!(
    iterative, fork, prefork, thread, prethread, epoll, tokio, uring
);

#[test]
fn bandwidth_paces_a_transfer() {
    let _t = timing();
    let srv = Server::start("epoll", &["--fault", "bandwidth=1MiB/s"]);
    let t0 = Instant::now();
    let run = run_to_end(
        netecho(&["client", &srv.addr().to_string()]),
        Some(vec![7u8; 4 * util::MIB]),
        RUN_LIMIT,
    );
    let took = t0.elapsed().as_secs_f64();
    run.assert_code(0, "client at 1 MiB/s");
    assert_eq!(run.stdout.len(), 4 * util::MIB);
    // 4 s ± 15 %: the pacing is a schedule, so a late wake-up on a busy
    // machine is caught up, not added to the transfer.
    assert!(
        (3.4..=4.6).contains(&took),
        "4 MiB at bandwidth=1MiB/s took {took:.3} s (want 4 s ± 15 %: 3.4 s to 4.6 s)"
    );
}

/// Threads of the server process named `fault`: one per faulted
/// connection handed off to a thread of its own.
fn fault_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim() == "fault")
                .count()
        })
        .unwrap_or(0)
}

/// tokio and epoll serve a faulted plain connection in their own loops:
/// three open faulted connections start no thread, where uring (which
/// hands them off) starts one each, and the faults apply all the same.
#[test]
fn event_loops_serve_faulted_connections_in_their_loop() {
    for (model, threads) in [("tokio", 0), ("epoll", 0), ("uring", 3)] {
        if !util::model_runs(
            model,
            "faults::event_loops_serve_faulted_connections_in_their_loop",
        ) {
            continue;
        }
        let srv = Server::start(model, &["--fault", "slice=4,corrupt-at=5"]);
        let conns: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = util::connect(srv.addr());
                s.write_all(b"0123456789").unwrap();
                let mut back = [0u8; 10];
                s.read_exact(&mut back).unwrap();
                assert_eq!(&back[..5], b"01234", "{model}");
                assert_ne!(back[5], b'5', "{model}: byte 5 not corrupted");
                assert_eq!(&back[6..], b"6789", "{model}");
                s
            })
            .collect();
        assert_eq!(
            fault_threads(srv.pid()),
            threads,
            "{model}: threads named fault with {} faulted connections open",
            conns.len()
        );
    }
}

#[test]
fn stall_leaves_one_client_waiting_while_others_are_served() {
    let srv = Server::start("epoll", &["--fault", "stall-after=1KiB,from=127.0.0.2"]);
    let mut stalled = connect_from("127.0.0.2", srv.addr());
    let (got, how) = send_and_read(&mut stalled, 8192, Duration::from_secs(1));
    assert_eq!((got, how.as_str()), (1024, "silence"));
    // Meanwhile another client is served in full.
    let mut fine = util::connect(srv.addr());
    util::echo_check(&mut fine, &vec![3u8; 64 * 1024], 1).unwrap();
    // The stalled connection is still open: nothing more, no end.
    let (more, how) = send_and_read(&mut stalled, 10, Duration::from_millis(300));
    assert_eq!((more, how.as_str()), (0, "silence"));
    // The client says what it met.
    let all = Server::start("thread", &["--fault", "stall-after=1KiB"]);
    let run = run_to_end(
        netecho(&["client", "--timeout", "1s", &all.addr().to_string()]),
        Some(vec![0u8; 8192]),
        RUN_LIMIT,
    );
    run.assert_code(1, "client against stall-after");
    assert!(
        run.stderr
            .contains("no echo from the server for 1 s: 1024 of the 8192 bytes"),
        "{}",
        run.stderr
    );
}

/// In the two event loops that serve a faulted connection themselves:
/// `close-after` ends with a FIN (the rest the client sent is read and
/// dropped, not answered with a reset).
#[test]
fn from_scope_faults_one_source_only() {
    for model in ["tokio", "epoll"] {
        let srv = Server::start(model, &["--fault", "close-after=1KiB,from=127.0.0.2/32"]);
        let mut bad = connect_from("127.0.0.2", srv.addr());
        let (got, how) = send_and_read(&mut bad, 4096, Duration::from_secs(10));
        assert_eq!(
            (got, how.as_str()),
            (1024, "fin"),
            "{model}: from 127.0.0.2"
        );
        let mut good = connect_from("127.0.0.1", srv.addr());
        util::echo_check(&mut good, &vec![5u8; 4096], 2).unwrap();
    }
}

#[test]
fn corrupt_at_is_caught_by_the_client_at_that_byte() {
    let srv = Server::start("prethread", &["--fault", "corrupt-at=100"]);
    let run = run_to_end(
        netecho(&["client", &srv.addr().to_string()]),
        Some(vec![0u8; 1000]),
        RUN_LIMIT,
    );
    run.assert_code(1, "client against corrupt-at=100");
    assert!(
        run.stderr.contains("mismatch at byte 100 "),
        "{}",
        run.stderr
    );
}

#[test]
fn udp_drop_half_stays_within_binomial_bounds() {
    const N: usize = 2000;
    let srv = Server::start(
        "epoll",
        &[
            "--udp",
            "--udp-rate",
            "1M",
            "--udp-global-rate",
            "1M",
            "--metrics",
            "127.0.0.1:0",
            "--fault",
            "drop=50%",
        ],
    );
    let to = srv
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(to).unwrap();
    let reader = sock.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let got = std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = reader.recv(&mut buf) {
            seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
            assert_eq!(n, 16);
        }
        seen.len()
    });
    for i in 0..N as u32 {
        let mut msg = [0u8; 16];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        sock.send(&msg).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let echoed = got.join().unwrap();
    let dropped = util::sample(
        &util::scrape(srv.metrics_addr()),
        "netecho_faults_total{fault=\"drop\"}",
    )
    .expect("the drop counter on /metrics") as usize;
    // On a busy machine the kernel may drop datagrams a socket had no
    // room for, before any fault saw them: counted per socket in
    // /proc/net/udp, at the server's end and at ours.
    let lost_at_server = udp_socket_drops(to.port());
    let lost_at_client = udp_socket_drops(sock.local_addr().unwrap().port());
    let read = N - lost_at_server;
    // Binomial(read, 0.5): for 2000, sd = 22.4 and 6 sigma = 134.
    let six_sigma = (6.0 * (read as f64 * 0.25).sqrt()).ceil() as usize;
    assert!(
        dropped.abs_diff(read / 2) <= six_sigma,
        "drop=50%: {dropped} of the {read} datagrams the server read were dropped \
         ({lost_at_server} of {N} lost before it read them)"
    );
    assert_eq!(
        dropped + echoed + lost_at_server + lost_at_client,
        N,
        "every datagram is echoed, counted dropped, or lost in a full socket \
         ({echoed} echoed, {dropped} dropped, kernel drops: {lost_at_server} at the server, \
         {lost_at_client} at the client)"
    );
}

/// Datagrams the kernel dropped for want of room at the UDP sockets bound
/// to local `port` on 127.0.0.1 (the last column of /proc/net/udp).
fn udp_socket_drops(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()))
                .then(|| f.last()?.parse::<usize>().ok())
                .flatten()
        })
        .sum()
}

#[test]
fn ping_names_duplicated_datagrams() {
    let srv = Server::start("epoll", &["--udp", "--fault", "duplicate=100%"]);
    let to = srv
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .unwrap();
    let run = run_to_end(
        netecho(&["ping", "--udp", "-c", "5", "-i", "50ms", &to.to_string()]),
        None,
        RUN_LIMIT,
    );
    run.assert_code(0, "ping --udp against duplicate=100%");
    assert!(
        run.stdout_str().contains("echoes duplicated"),
        "{}",
        run.stdout_str()
    );
}

#[test]
fn bench_names_duplicated_datagrams() {
    // One UDP worker: with two, one may be preempted between a datagram's
    // two copies while the other answers a hundred later requests, and the
    // late copy falls outside the rounds bench recognises.
    let srv = Server::start(
        "epoll",
        &[
            "--udp",
            "--workers",
            "1",
            "--udp-rate",
            "100k",
            "--fault",
            "duplicate=100%",
        ],
    );
    let to = srv
        .listening(ListenKind::Udp, Duration::from_secs(5))
        .unwrap();
    let run = run_to_end(
        netecho(&["bench", "--udp", "-c", "1", "-d", "1s", &to.to_string()]),
        None,
        RUN_LIMIT,
    );
    run.assert_code(0, "bench --udp against duplicate=100%");
    assert!(
        run.stdout_str().contains(" duplicated"),
        "{}",
        run.stdout_str()
    );
}

/// The client's count of bytes sent includes the write the server echoed
/// before resetting: "4096 of the 10000 bytes sent", never "of the 4096"
/// because its writer had not counted yet (it raced about one run in five).
#[test]
fn client_counts_every_byte_sent_before_a_reset() {
    let srv = Server::start("thread", &["--fault", "reset-after=4KiB"]);
    for run_no in 0..20 {
        let run = run_to_end(
            netecho(&["client", &srv.addr().to_string()]),
            Some(vec![7u8; 10_000]),
            RUN_LIMIT,
        );
        run.assert_code(1, "client against reset-after=4KiB");
        assert!(
            run.stderr.contains(
                "the server reset the connection after echoing 4096 of the 10000 bytes sent"
            ),
            "run {run_no}: {}",
            run.stderr
        );
    }
}

#[test]
fn ping_says_where_the_server_reset() {
    let srv = Server::start("thread", &["--fault", "reset-after=100"]);
    let run = run_to_end(
        netecho(&["ping", "-c", "2", "-i", "50ms", &srv.addr().to_string()]),
        None,
        RUN_LIMIT,
    );
    run.assert_code(1, "ping against reset-after=100");
    assert!(
        run.stdout_str().contains(
            "seq=2: connection reset by the server after echoing 100 bytes of the connection"
        ),
        "{}",
        run.stdout_str()
    );
}

/// A blocking model and an event loop (which waits on its timer, not in
/// the backlog).
#[test]
fn accept_delay_holds_a_new_connection() {
    let _t = timing();
    for model in ["prefork", "epoll"] {
        let srv = Server::start(model, &["--fault", "accept-delay=500ms"]);
        let mut s = util::connect(srv.addr());
        let t0 = Instant::now();
        util::ping(&mut s, b"first bytes").unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(5),
            "{model}: accept-delay=500ms: the first echo took {took:?}"
        );
        // Later echoes on the same connection are not held.
        let t1 = Instant::now();
        util::ping(&mut s, b"more").unwrap();
        assert!(
            t1.elapsed() < Duration::from_millis(400),
            "{model}: a later echo took {:?}",
            t1.elapsed()
        );
    }
}

#[test]
fn bad_faults_are_one_line_and_exit_2_before_binding() {
    for (args, names) in [
        (vec!["--fault", "wobble=3"], "wobble"),
        (vec!["--fault", "latency=5parsecs"], "latency=5parsecs"),
        (vec!["--fault", "drop=150%"], "drop=150%"),
        (
            vec![
                "--fault",
                "latency=10ms",
                "--fault",
                "latency=20ms,from=127.0.0.2",
            ],
            "both set latency",
        ),
        (
            vec!["--fault-file", "/nonexistent/faults.toml"],
            "/nonexistent/faults.toml",
        ),
        (vec!["--inetd", "--fault", "drop=1%"], "--inetd"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend(&args);
        let run = assert_refused(&all, RUN_LIMIT);
        run.assert_code(2, &format!("{args:?}"));
        assert!(run.stderr.contains(names), "{args:?}: {}", run.stderr);
        assert!(
            !run.stdout_str().contains("listening"),
            "{args:?} bound: {}",
            run.stdout_str()
        );
    }
}

/// A fault's durations and sizes are read by the flags' one grammar: the
/// same words for the same mistake, and a bare number is seconds in both.
#[test]
fn fault_durations_share_the_flags_grammar_and_words() {
    let words = |args: &[&str], quoted: &str| {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend(args);
        let run = assert_refused(&all, RUN_LIMIT);
        run.assert_code(2, &format!("{args:?}"));
        let at = run
            .stderr
            .rfind(quoted)
            .unwrap_or_else(|| panic!("{args:?} does not name {quoted}: {}", run.stderr));
        let rest = &run.stderr[at + quoted.len()..];
        rest.lines().next().unwrap_or("").trim().to_string()
    };
    for bad in ["5parsecs", "-3", "1e12"] {
        let flag = words(&[&format!("--idle-timeout={bad}")], &format!("'{bad}'"));
        let fault = words(
            &["--fault", &format!("latency={bad}")],
            &format!("latency={bad}'"),
        );
        assert_eq!(
            fault, flag,
            "--fault latency={bad} and --idle-timeout {bad} differ"
        );
    }
    // And a size: the same words from --udp-max-size and reset-after.
    for bad in ["lots", "-1", "4 parsecs"] {
        let flag = words(&[&format!("--udp-max-size={bad}")], &format!("'{bad}'"));
        let fault = words(
            &["--fault", &format!("reset-after={bad}")],
            &format!("reset-after={bad}'"),
        );
        assert_eq!(
            fault, flag,
            "--fault reset-after={bad} and --udp-max-size {bad} differ"
        );
    }
}

#[test]
fn fault_file_is_read_at_start_and_again_on_sighup() {
    let dir = std::env::temp_dir().join(format!("netecho-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("faults.toml");
    std::fs::write(&file, "[early-end]\nclose-after = \"1KiB\"\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    let srv = Server::start("epoll", &["--fault-file", &path]);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(
            util::eventually(Duration::from_secs(5), || srv
                .stderr_text()
                .contains("early-end: close-after=1024")),
            "start did not print the fault:\n{}",
            srv.stderr_text()
        );
        let mut s = util::connect(srv.addr());
        assert_eq!(
            send_and_read(&mut s, 4096, Duration::from_secs(10)),
            (1024, "fin".into())
        );
        std::fs::write(&file, "[hard-end]\nreset-after = \"2KiB\"\n").unwrap();
        srv.signal(Signal::SIGHUP);
        assert!(
            util::eventually(Duration::from_secs(20), || srv
                .stderr_text()
                .contains("hard-end: reset-after=2048")),
            "the new server did not read the file again:\n{}",
            srv.stderr_text()
        );
        let (got, how) = {
            // The new process answers once the old one stopped accepting.
            let mut last = (0, String::new());
            util::eventually(Duration::from_secs(10), || {
                let mut s = util::connect(srv.addr());
                last = send_and_read(&mut s, 4096, Duration::from_secs(10));
                last.1 == "reset"
            });
            last
        };
        assert_eq!((got, how.as_str()), (2048, "reset"));
    }));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
