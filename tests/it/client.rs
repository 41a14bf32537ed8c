//! `netecho client`: a pipe, a terminal, and the ways a server can let it
//! down, each run as the real binary.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use socket2::{Domain, Protocol, Socket, Type};

use crate::util::peers::{closed_port, echo_with, flip_server, tcp_server, tcp_server_for};
use crate::util::tls_peers::{After, Pki, rustls_server};
use crate::util::{BIN, KIB, MIB, Rng, Run, Server, compare, netecho, run_to_end, seed_of};

/// A client run that should finish; generous for 20 MiB in a debug build.
/// A run still going then is killed and fails its test.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// A run that should end at once (bad arguments, a 1 s connect timeout).
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);

fn client(addr: &str, stdin: Vec<u8>) -> Run {
    run_to_end(netecho(&["client", addr]), Some(stdin), RUN_TIMEOUT)
}

/// Asserts a successful run whose stdout is exactly `input`.
fn assert_echoed(run: &Run, input: &[u8], what: &str) {
    run.assert_code(0, what);
    if let Err(e) = compare(what, input, &run.stdout) {
        panic!("{e}");
    }
}

/// RFC 862 in a few lines: copy everything back, then close with a FIN.
fn plain_echo(s: TcpStream) {
    let Ok(mut r) = s.try_clone() else { return };
    let mut w = s;
    let _ = io::copy(&mut r, &mut w);
    let _ = w.shutdown(Shutdown::Write);
}

/// Bytes this faulty server echoes before it closes.
const SHORT_ECHO: usize = 1000;

/// A faulty server: reads everything to the client's FIN, echoes only the
/// first [`SHORT_ECHO`] bytes, then closes cleanly (a FIN, not a reset).
fn short_echo(mut s: TcpStream) {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let n = all.len().min(SHORT_ECHO);
    let _ = s.write_all(&all[..n]);
    let _ = s.shutdown(Shutdown::Write);
}

#[test]
fn twenty_mib_through_netecho_serve() {
    let server = Server::start("auto", &[]);
    let input = Rng::new(seed_of("client/20MiB/netecho")).bytes(20 * MIB);
    let run = client(&server.addr().to_string(), input.clone());
    assert_echoed(&run, &input, "20 MiB via netecho serve");
}

#[test]
fn twenty_mib_through_any_rfc862_server() {
    let addr = tcp_server_for(1, plain_echo);
    let input = Rng::new(seed_of("client/20MiB/std")).bytes(20 * MIB);
    let run = client(&addr.to_string(), input.clone());
    assert_echoed(&run, &input, "20 MiB via a minimal echo server");
}

#[test]
fn empty_stdin() {
    let server = Server::start("auto", &[]);
    let run = client(&server.addr().to_string(), Vec::new());
    assert_echoed(&run, b"", "empty stdin");
}

#[test]
fn one_line() {
    let server = Server::start("auto", &[]);
    let run = client(&server.addr().to_string(), b"hi\n".to_vec());
    assert_echoed(&run, b"hi\n", "printf 'hi\\n'");
}

/// Kills and reaps a child on drop, so a failing test leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads whatever the terminal master shows until `done(text)` or `timeout`.
fn read_master(
    master: &OwnedFd,
    text: &mut Vec<u8>,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while !done(text) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        match nix::unistd::read(master, &mut buf) {
            Ok(0) => return,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            // EIO: every slave descriptor is closed (the client exited).
            Err(_) => return,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn interactive_in_a_terminal() {
    let server = Server::start("auto", &[]);
    let pty = nix::pty::openpty(None, None).expect("openpty");
    // The terminal's own echo off: what the master shows is the server's echo.
    let mut t = tcgetattr(&pty.slave).expect("tcgetattr");
    t.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).expect("tcsetattr");

    let dup = |fd: &OwnedFd| fd.try_clone().expect("dup the pty slave");
    let mut cmd = Command::new(BIN);
    cmd.args(["client", &server.addr().to_string()])
        .env_remove("NETECHO_LOG")
        .stdin(Stdio::from(dup(&pty.slave)))
        .stdout(Stdio::from(dup(&pty.slave)))
        .stderr(Stdio::from(dup(&pty.slave)))
        .process_group(0);
    let mut child = Reaped(cmd.spawn().expect("spawn the client"));
    // Only the child holds the slave now, so the master sees EIO when it exits.
    drop(pty.slave);
    let master = pty.master;

    nix::unistd::write(&master, b"hello netecho\n").expect("type a line");
    let mut shown = Vec::new();
    read_master(&master, &mut shown, Duration::from_secs(5), |t| {
        contains(t, b"hello netecho") > 0
    });
    assert_eq!(
        contains(&shown, b"hello netecho"),
        1,
        "the line's echo did not show (once) within 5 s; terminal shows {:?}",
        String::from_utf8_lossy(&shown)
    );

    // Ctrl-D at the start of a line: end of input.
    nix::unistd::write(&master, &[0x04]).expect("type Ctrl-D");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => break None,
        }
    };
    read_master(&master, &mut shown, Duration::from_millis(200), |_| false);
    let status = status.unwrap_or_else(|| {
        panic!(
            "client still running 5 s after Ctrl-D; terminal shows {:?}",
            String::from_utf8_lossy(&shown)
        )
    });
    assert!(
        status.success(),
        "client exit {status} after Ctrl-D; terminal shows {:?}",
        String::from_utf8_lossy(&shown)
    );
    assert_eq!(
        contains(&shown, b"hello netecho"),
        1,
        "terminal shows {:?}",
        String::from_utf8_lossy(&shown)
    );
}

#[test]
fn server_that_echoes_too_little() {
    let addr = tcp_server_for(1, short_echo);
    let input = Rng::new(seed_of("client/short")).bytes(10 * KIB);
    let run = client(&addr.to_string(), input.clone());
    run.assert_code(
        1,
        &format!("only {SHORT_ECHO} of {} bytes came back", input.len()),
    );
    let line = run.one_line_error("short echo");
    assert_eq!(
        line,
        format!(
            "netecho: the server closed the connection after echoing {SHORT_ECHO} of the {} bytes sent",
            input.len()
        )
    );
    // What did come back was still written out.
    if let Err(e) = compare("partial echo", &input[..SHORT_ECHO], &run.stdout) {
        panic!("{e}");
    }
}

#[test]
fn connection_refused() {
    let addr = closed_port();
    let run = client(&addr.to_string(), b"x".to_vec());
    run.assert_code(1, "connection refused");
    let line = run.one_line_error("connection refused");
    assert!(line.contains("refused"), "error line: {line}");
}

#[test]
fn connect_timeout() {
    // A listener with backlog 0 that never accepts: once its accept queue
    // is full, the kernel drops further SYNs and a connect hangs.
    let l = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("an IP address");
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => held.push(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                full = true;
                break;
            }
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    if !full {
        skipped!(
            "SKIPPED: connect_timeout: the kernel completed {} connects to a backlog-0 \
             listener that never accepts, so no connect can time out here",
            held.len()
        );
        return;
    }
    let run = run_to_end(
        netecho(&["client", &addr.to_string(), "--connect-timeout", "1"]),
        Some(b"x".to_vec()),
        QUICK_TIMEOUT,
    );
    run.assert_code(1, "--connect-timeout 1");
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed <= Duration::from_secs(4),
        "gave up after {:?} with --connect-timeout 1",
        run.elapsed
    );
    let line = run.one_line_error("connect timeout");
    assert!(line.contains("timed out"), "error line: {line}");
    drop(held);
}

#[test]
fn bad_target() {
    let run = client("nohost", b"x".to_vec());
    assert!(!run.success(), "client 'nohost' succeeded");
    let line = run.one_line_error("bad target");
    assert!(
        line.contains("nohost"),
        "error line does not name the target: {line}"
    );
}

#[test]
fn bad_arguments() {
    for args in [
        &["client"][..],
        &["client", "127.0.0.1:1", "--connect-timeout", "0"][..],
        &["client", "127.0.0.1:1", "--connect-timeout", "abc"][..],
    ] {
        let run = run_to_end(netecho(args), None, QUICK_TIMEOUT);
        run.assert_code(2, &format!("netecho {args:?}"));
        let line = run.one_line_error(&format!("netecho {args:?}"));
        assert!(!line.contains("Usage"), "usage text in: {line}");
    }
    // A port out of range is found when resolving: an error all the same.
    let run = client("127.0.0.1:99999", Vec::new());
    assert!(!run.success(), "client 127.0.0.1:99999 succeeded");
    let line = run.one_line_error("client 127.0.0.1:99999");
    assert!(line.contains("99999"), "error line: {line}");
}

/// The `tr a b` of the issue, written here so it never skips: an echo
/// server that turns every `a` into a `b`.
fn tr_a_b_server() -> SocketAddr {
    tcp_server(|s| echo_with(s, |_, b| Some(if b == b'a' { b'b' } else { b })))
}

/// A server that reads everything and never answers: even after the
/// client's FIN it holds the connection open (until its I/O timeout).
fn silent_server() -> SocketAddr {
    tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        std::thread::sleep(crate::util::IO_TIMEOUT);
    })
}

#[test]
fn a_changed_byte_stops_the_run_and_is_not_shown() {
    let addr = tr_a_b_server().to_string();
    let run = client(&addr, b"banana\n".to_vec());
    run.assert_code(1, "printf 'banana\\n' to a tr a b server");
    assert_eq!(
        run.one_line_error("tr a b"),
        "netecho: mismatch at byte 1 (sent 0x61, got 0x62): the server changed the data"
    );
    // Only the verified prefix reached stdout.
    assert_eq!(
        run.stdout,
        b"b",
        "stdout: {:?}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn a_flipped_byte_deep_in_a_large_input_is_found_at_its_offset() {
    const AT: usize = 3_000_001;
    let addr = flip_server(AT as u64).to_string();
    let input = Rng::new(seed_of("client/flip-deep")).bytes(8 * MIB);
    let run = client(&addr, input.clone());
    run.assert_code(1, "a flip at byte 3000001 of 8 MiB");
    let line = run.one_line_error("flip deep");
    let want = format!(
        "netecho: mismatch at byte {AT} (sent 0x{:02x}, got 0x{:02x})",
        input[AT],
        input[AT] ^ 0x20
    );
    assert!(line.starts_with(&want), "want {want}, got {line}");
    if let Err(e) = compare("the verified prefix", &input[..AT], &run.stdout) {
        panic!("{e}");
    }
}

#[test]
fn no_verify_passes_any_answer_through() {
    let addr = tr_a_b_server().to_string();
    let run = run_to_end(
        netecho(&["client", &addr, "--no-verify"]),
        Some(b"banana\n".to_vec()),
        RUN_TIMEOUT,
    );
    run.assert_code(0, "--no-verify against tr a b");
    assert_eq!(run.stdout, b"bbnbnb\n");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn a_silent_server_fails_after_the_timeout_with_the_counts() {
    let addr = silent_server().to_string();
    let input = Rng::new(seed_of("client/silent")).bytes(100 * KIB);
    let run = run_to_end(
        netecho(&["client", &addr, "--timeout", "1"]),
        Some(input.clone()),
        QUICK_TIMEOUT,
    );
    run.assert_code(1, "a silent server with --timeout 1");
    let line = run.one_line_error("silent server");
    assert!(
        line.starts_with("netecho: no echo from the server for 1 s: 0 of the ")
            && line.ends_with(" bytes sent came back"),
        "{line}"
    );
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(8),
        "gave up after {:?} with --timeout 1",
        run.elapsed
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_server_that_answers_more_is_not_an_echo() {
    let addr = tcp_server_for(1, |mut s| {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        all.extend_from_slice(b"and more");
        let _ = s.write_all(&all);
    })
    .to_string();
    let run = client(&addr, b"hi\n".to_vec());
    run.assert_code(1, "a server that adds bytes");
    assert_eq!(
        run.one_line_error("excess"),
        "netecho: the server sent back more than the 3 bytes it was sent: not an echo server (--no-verify talks to any server)"
    );
    assert_eq!(run.stdout, b"hi\n");
}

#[test]
fn a_server_that_closes_before_the_input_ends() {
    // Echoes the first line, then closes while the client still sends.
    let addr = tcp_server(|mut s| {
        let mut buf = [0u8; 3];
        if s.read_exact(&mut buf).is_ok() {
            let _ = s.write_all(&buf);
        }
    })
    .to_string();
    let run = client(&addr, b"hi\n".to_vec());
    // The server may close before or after the client's FIN arrives; either
    // way all three bytes came back and the run ends 0 or names the close.
    let mut input = b"hi\n".to_vec();
    input.extend(Rng::new(seed_of("client/close-early")).bytes(4 * MIB));
    let long = client(&addr, input);
    if run.code() != Some(0) {
        run.assert_code(1, "close right after the echo");
    }
    long.assert_code(1, "a server that stops reading after 3 bytes");
    let line = long.one_line_error("close before the end");
    assert!(
        line.contains("the server closed the connection")
            || line.contains("the server reset the connection"),
        "{line}"
    );
    assert!(line.contains("bytes sent"), "{line}");
}

#[test]
fn host_and_port_as_two_words_and_families() {
    let server = Server::start("auto", &[]);
    let port = server.addr().port().to_string();
    for args in [
        &["client", "127.0.0.1", &port][..],
        &["client", "localhost", &port],
        &["client", "-4", "localhost", &port],
        &["client", &format!("localhost:{port}")],
    ] {
        let run = run_to_end(netecho(args), Some(b"hi\n".to_vec()), RUN_TIMEOUT);
        assert_echoed(&run, b"hi\n", &format!("netecho {args:?}"));
    }
    let run = run_to_end(
        netecho(&["client", "-6", "127.0.0.1", &port]),
        Some(b"hi\n".to_vec()),
        QUICK_TIMEOUT,
    );
    run.assert_code(1, "-6 with an IPv4 address");
    let line = run.one_line_error("-6 127.0.0.1");
    assert!(line.contains("-6 asks for IPv6"), "{line}");
    if crate::util::ipv6_available() {
        let v6 = Server::start_on("auto", &["[::1]:0"], &[]);
        let port = v6.addr().port().to_string();
        for args in [&["client", "::1", &port][..], &["client", "[::1]", &port]] {
            let run = run_to_end(netecho(args), Some(b"hi\n".to_vec()), RUN_TIMEOUT);
            assert_echoed(&run, b"hi\n", &format!("netecho {args:?}"));
        }
    } else {
        skipped!("SKIPPED: host_and_port_as_two_words_and_families: no IPv6 loopback here");
    }
}

#[test]
fn target_mistakes_are_one_line_usage_errors() {
    for (args, why) in [
        (
            &["client", "[::1]"][..],
            "'[::1]' has no port: give [::1]:PORT or ::1 PORT",
        ),
        (
            &["client", "::1"],
            "'::1' has no port: give [::1]:PORT or ::1 PORT",
        ),
        (&["client", "localhost"], "'localhost' has no port"),
        (&["client", "127.0.0.1:7", "7"], "not both"),
        (&["client", "127.0.0.1", "x"], "port 'x' is not a number"),
        (&["client", "127.0.0.1:0"], "port 0"),
        (
            &["client", "[localhost]:7"],
            "only IPv6 addresses go in brackets",
        ),
        (
            &["client", "-4", "-6", "127.0.0.1:7"],
            "cannot be used with",
        ),
    ] {
        let run = run_to_end(netecho(args), Some(Vec::new()), QUICK_TIMEOUT);
        run.assert_code(2, &format!("netecho {args:?}"));
        let line = run.one_line_error(&format!("netecho {args:?}"));
        assert!(line.contains(why), "netecho {args:?}: {line}");
    }
    // A name that does not resolve is not a usage error: exit 1.
    let run = client("nosuchhost.invalid:7", Vec::new());
    run.assert_code(1, "an unresolvable name");
    let line = run.one_line_error("nosuchhost.invalid");
    assert!(
        line.starts_with("netecho: cannot resolve nosuchhost.invalid:7"),
        "{line}"
    );
}

#[test]
fn a_changed_byte_over_tls_stops_the_run() {
    let pki = Pki::new("client-flip");
    let peer = rustls_server(&pki, After::Flip(5));
    let ca = pki.path("ca.pem");
    let addr = peer.addr.to_string();
    let input = b"hello, tls\n".to_vec();
    let run = run_to_end(
        netecho(&["client", "--tls", "--tls-ca", &ca, &addr]),
        Some(input.clone()),
        RUN_TIMEOUT,
    );
    run.assert_code(1, "a TLS server that flips byte 5");
    assert_eq!(
        run.one_line_error("TLS flip"),
        format!(
            "netecho: mismatch at byte 5 (sent 0x{:02x}, got 0x{:02x}): the server changed the data",
            input[5],
            input[5] ^ 0x20
        )
    );
    assert_eq!(run.stdout, &input[..5]);
    // The same server's answer passes with --no-verify.
    let run = run_to_end(
        netecho(&["client", "--tls", "--tls-ca", &ca, &addr, "--no-verify"]),
        Some(input.clone()),
        RUN_TIMEOUT,
    );
    run.assert_code(0, "--no-verify over TLS");
    assert_eq!(run.stdout.len(), input.len());
}

#[test]
fn a_tls_server_that_never_echoes_is_named_with_the_counts() {
    let pki = Pki::new("client-swallow");
    let peer = rustls_server(&pki, After::Swallow);
    let run = run_to_end(
        netecho(&[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("ca.pem"),
            &peer.addr.to_string(),
            "--timeout",
            "1",
        ]),
        Some(b"anyone there?\n".to_vec()),
        QUICK_TIMEOUT,
    );
    run.assert_code(1, "a TLS server that never echoes");
    // It answers our close_notify with its own: an early close.
    assert_eq!(
        run.one_line_error("TLS swallow"),
        "netecho: the server closed the connection after echoing 0 of the 14 bytes sent"
    );
}

#[test]
fn tls_to_a_plain_echo_server_says_so_in_one_line() {
    let server = Server::start("auto", &[]);
    let run = run_to_end(
        netecho(&["client", "--tls", "--insecure", &server.addr().to_string()]),
        Some(b"hi\n".to_vec()),
        QUICK_TIMEOUT,
    );
    run.assert_code(1, "--tls against a plain echo server");
    // The --insecure warning, then the one error line; no rustls log line.
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[1].ends_with("the server sent our own ClientHello back: it is a plain echo server, not TLS (drop --tls)"),
        "{}",
        run.stderr
    );
}

#[test]
fn ctrl_c_says_how_far_the_echo_had_come_and_exits_one() {
    let addr = silent_server().to_string();
    let child = crate::util::Running::spawn(netecho(&["client", &addr]), Some(b"hi\n".to_vec()));
    std::thread::sleep(Duration::from_millis(500));
    child.signal(nix::sys::signal::Signal::SIGINT);
    let run = child.wait_exit(QUICK_TIMEOUT);
    run.assert_code(1, "Ctrl-C while waiting for the echo");
    assert_eq!(
        run.one_line_error("Ctrl-C"),
        "netecho: interrupted: 0 of the 3 bytes sent had come back"
    );
}

/// Ctrl-C while the echo keeps flowing (endless input, a server that
/// answers at once) ends the client too: the stop is looked at before
/// every read, not only when reads go quiet.
#[test]
fn ctrl_c_ends_the_client_while_the_echo_keeps_flowing() {
    let server = Server::start("epoll", &[]);
    let script = format!(
        "exec {} client {} </dev/zero >/dev/null",
        BIN,
        server.addr()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    let child = crate::util::Running::spawn(sh, None);
    std::thread::sleep(Duration::from_millis(500));
    child.signal(nix::sys::signal::Signal::SIGINT);
    let run = child.wait_exit(QUICK_TIMEOUT);
    run.assert_code(1, "Ctrl-C while the echo flows");
    assert!(
        run.one_line_error("Ctrl-C")
            .starts_with("netecho: interrupted: "),
        "{}",
        run.stderr
    );
}

/// An echo server that echoes everything, sees the client's FIN, and then
/// never closes (it sleeps far past any --linger).
fn never_closing_echo() -> SocketAddr {
    tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        std::thread::sleep(RUN_TIMEOUT);
    })
}

#[test]
fn a_server_that_never_closes_is_left_after_linger_with_a_warning() {
    let addr = never_closing_echo().to_string();
    for (args, limit) in [
        (
            vec!["client", &addr, "--linger", "300ms"],
            Duration::from_millis(300),
        ),
        // The documented default.
        (vec!["client", &addr], Duration::from_secs(2)),
    ] {
        let what = args.join(" ");
        let run = run_to_end(netecho(&args), Some(b"hello\n".to_vec()), QUICK_TIMEOUT);
        assert_echoed(&run, b"hello\n", &what);
        assert!(
            run.elapsed >= limit && run.elapsed < limit + Duration::from_secs(5),
            "{what}: ended after {:?}, want --linger {limit:?} and a little",
            run.elapsed
        );
        assert_eq!(
            run.one_line_error(&what),
            format!(
                "netecho: warning: all 6 bytes sent came back, but the server did not close the \
                 connection within {} s (--linger) of the end of input; closing it",
                limit.as_secs_f64()
            )
        );
    }
    // --no-verify: the same wait, counted from the last byte that came.
    let run = run_to_end(
        netecho(&["client", &addr, "--no-verify", "--linger", "200ms"]),
        Some(b"hi".to_vec()),
        QUICK_TIMEOUT,
    );
    run.assert_code(0, "--no-verify against a server that never closes");
    assert_eq!(run.stdout, b"hi");
    assert!(run.stderr.contains("(--linger)"), "{}", run.stderr);
}

#[test]
fn bytes_missing_when_the_server_holds_the_connection_exit_1_in_words() {
    // Echoes 3 bytes of 6, then holds the connection open.
    let addr = tcp_server(|mut s| {
        let mut buf = [0u8; 16];
        let mut owed = 3usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            let k = n.min(owed);
            owed -= k;
            let _ = s.write_all(&buf[..k]);
        }
        std::thread::sleep(RUN_TIMEOUT);
    })
    .to_string();
    let args = ["client", &addr, "--timeout", "500ms", "--linger", "100ms"];
    let run = run_to_end(netecho(&args), Some(b"abcdef".to_vec()), QUICK_TIMEOUT);
    run.assert_code(1, "a server that holds back 3 of 6 bytes");
    assert_eq!(
        run.one_line_error("held back"),
        "netecho: no echo from the server for 0.5 s: 3 of the 6 bytes sent came back"
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
}
