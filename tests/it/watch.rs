//! `netecho watch` against real sockets and processes.
//!
//! Reading the socket table over sock_diag needs no privilege, and the
//! sockets and processes here are the test's own, so these run as any user;
//! the lab and trace tests are the ones that need root.

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::util::BIN;

/// Starts `netecho watch` and waits for its header, so the first poll has
/// happened or is about to.
fn start_watch(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start netecho watch");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    assert!(header.starts_with("watching TCP port"), "header: {header}");
    (child, out)
}

/// Collects the rest of the output and the exit status (bounded by the
/// `--duration` the test passed).
fn finish(mut child: Child, mut out: BufReader<ChildStdout>) -> (String, i32) {
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let st = child.wait().unwrap();
    (rest, st.code().unwrap_or(-1))
}

#[test]
fn watch_sees_listen_established_and_time_wait() {
    // Not beside the pool tests' hundreds of processes: the owner scan of
    // /proc (10 ms polls) was seen to miss the client's socket under them.
    let _quiet = crate::util::timing();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = port.to_string();
    let (child, out) = start_watch(&[
        "--port",
        &p,
        "--mode",
        "poll",
        "--interval",
        "10ms",
        "--duration",
        "3",
    ]);
    std::thread::sleep(Duration::from_millis(200));

    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The client closes first, so the client's end goes to TIME-WAIT.
    client.shutdown(Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    server.read_to_end(&mut sink).unwrap();
    drop(server);
    drop(client);

    let (text, code) = finish(child, out);
    assert_eq!(code, 0, "watch exits 0 at the end of --duration\n{text}");
    let me = std::process::id();
    let find = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
            .to_string()
    };
    let listen = find(&format!("127.0.0.1:{port} -> 0.0.0.0:* (new) => LISTEN"));
    assert!(
        listen.contains(&format!("(pid {me} ")),
        "owner shown: {listen}"
    );
    let client_side = format!("127.0.0.1:{cport} -> 127.0.0.1:{port}");
    let server_side = format!("127.0.0.1:{port} -> 127.0.0.1:{cport}");
    // A poll may catch the client's handshake in flight: first seen
    // SYN-SENT, then SYN-SENT => ESTABLISHED; either way it is shown
    // reaching ESTABLISHED, with its owner.
    let est = text
        .lines()
        .find(|l| {
            l.contains(&format!("{client_side} (new) => ESTABLISHED"))
                || l.contains(&format!("{client_side} SYN-SENT => ESTABLISHED"))
        })
        .unwrap_or_else(|| panic!("client end never ESTABLISHED in:\n{text}"));
    assert!(est.contains(&format!("(pid {me} ")), "owner shown: {est}");
    find(&format!("{server_side} (new) => ESTABLISHED"));
    let tw_line = text
        .lines()
        .find(|l| l.contains(&client_side) && l.contains("=> TIME-WAIT"))
        .unwrap_or_else(|| panic!("client end never TIME-WAIT in:\n{text}"));
    assert!(tw_line.contains("(no process)"), "{tw_line}");
    assert!(
        text.lines()
            .any(|l| l.contains(&server_side) && l.contains("=> CLOSED")),
        "server end closes:\n{text}"
    );
    // Timestamps: seconds since start, millisecond precision.
    for l in text.lines() {
        let t = l.split_whitespace().next().unwrap();
        assert!(
            t.parse::<f64>().is_ok() && t.split('.').nth(1).map(str::len) == Some(3),
            "{l}"
        );
    }
}

#[test]
fn watch_pid_flags_zombies_and_their_reaping() {
    // `sh` starts a short sleep in the background, then becomes a long
    // sleep itself, which never waits: the short one stays a zombie until
    // the long one exits and init reaps it.
    let mut sh = Command::new("sh")
        .args(["-c", "sleep 0.3 & exec sleep 1.5"])
        .spawn()
        .unwrap();
    let pid = sh.id().to_string();
    let (child, out) = start_watch(&[
        "--port",
        "1",
        "--pid",
        &pid,
        "--interval",
        "10ms",
        "--duration",
        "2.5",
    ]);
    let (text, code) = finish(child, out);
    let _ = sh.wait();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("process {pid} sleep"))
                || l.contains(&format!("process {pid} sh"))),
        "the root process is shown:\n{text}"
    );
    let z = text
        .lines()
        .find(|l| l.contains("ZOMBIE"))
        .unwrap_or_else(|| panic!("no ZOMBIE in:\n{text}"));
    assert!(z.contains(&format!("parent {pid}")), "{z}");
    assert!(
        text.lines().any(|l| l.contains("=> gone")),
        "exits are shown:\n{text}"
    );
}

#[test]
fn watch_refuses_bad_flags_in_one_line() {
    for args in [
        &["--interval", "0"][..],
        &["--port", "70000"],
        &["--duration", "-1"],
        &["--port", "0"],
        &["--pid", "0"],
        &["--pid", "-1"],
        // Above the kernel's pid_max (4194304 at most): no such process.
        &["--pid", "2147483647"],
    ] {
        let o = Command::new(BIN).arg("watch").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// Waits for exit, at most 30 s (then kills: the test fails on the code).
/// Generous: removing a tracefs instance waits for the kernel's RCU grace
/// periods, slow on a busy machine with other tracers at work.
fn wait_code(child: &mut Child) -> i32 {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Say where it was stuck before killing it.
    let pid = child.id();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    eprintln!("pid {pid} did not exit in 30 s: wchan {wchan}\n{stack}");
    let _ = child.kill();
    let _ = child.wait();
    -1
}

/// Starts event-mode watch on `port`; `None` (and SKIPPED printed) when
/// not root or the kernel has no tracefs.
fn start_events(name: &str, args: &[&str]) -> Option<(Child, BufReader<ChildStdout>)> {
    if !crate::util::is_root() {
        skipped!("SKIPPED {name}: event mode needs root (tracefs)");
        return None;
    }
    let mut child = Command::new(BIN)
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netecho watch");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    if header.is_empty() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        if err.contains("tracefs") || err.contains("tracepoint") {
            skipped!("SKIPPED {name}: {}", err.trim());
            return None;
        }
        panic!("watch --mode events failed: {err}");
    }
    assert!(header.contains("from kernel events"), "header: {header}");
    assert!(
        header.contains(&format!("tracefs instance netecho-{}", child.id())),
        "header: {header}"
    );
    Some((child, out))
}

/// The instance directory a watch process of this pid would own.
fn instance_of(pid: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/sys/kernel/tracing/instances/netecho-{pid}"))
}

#[test]
fn watch_events_sees_every_state_and_removes_its_instance_on_sigterm() {
    let name = "watch_events_sees_every_state_and_removes_its_instance_on_sigterm";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = port.to_string();
    let Some((mut child, mut out)) = start_events(name, &["--port", &p, "--mode", "events"]) else {
        return;
    };
    assert!(
        instance_of(child.id()).is_dir(),
        "the instance exists while running"
    );

    // The client closes first: SYN-SENT, FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT
    // on its side; SYN-RECEIVED, CLOSE-WAIT, LAST-ACK on the server's.
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    client.shutdown(Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    server.read_to_end(&mut sink).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(server);
    client.read_to_end(&mut sink).unwrap();
    drop(client);

    let client_side = format!("127.0.0.1:{cport} -> 127.0.0.1:{port}");
    let server_side = format!("127.0.0.1:{port} -> 127.0.0.1:{cport}");
    let wanted = [
        (
            format!("127.0.0.1:* -> 127.0.0.1:{port}"),
            "CLOSED => SYN-SENT",
        ),
        (client_side.clone(), "SYN-SENT => ESTABLISHED after"),
        (server_side.clone(), "LISTEN => SYN-RECEIVED"),
        (server_side.clone(), "SYN-RECEIVED => ESTABLISHED after"),
        (client_side.clone(), "ESTABLISHED => FIN-WAIT-1 after"),
        (server_side.clone(), "ESTABLISHED => CLOSE-WAIT after"),
        (client_side.clone(), "FIN-WAIT-1 => FIN-WAIT-2 after"),
        (server_side.clone(), "CLOSE-WAIT => LAST-ACK after"),
        (server_side.clone(), "LAST-ACK => CLOSED after"),
        (client_side.clone(), "FIN-WAIT-2 => TIME-WAIT after"),
    ];
    let mut text = String::new();
    let seen_all = |text: &str| {
        wanted
            .iter()
            .all(|(who, what)| text.lines().any(|l| l.contains(who) && l.contains(what)))
    };
    // Read line by line until every transition is there (bounded: the
    // read times out through the SIGTERM below if one never comes).
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let killer = {
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            if wait_done.recv_timeout(Duration::from_secs(5)).is_err() {
                // SAFETY: kill(2) on a pid of ours, still running (the
                // test has not reaped it yet).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        })
    };
    let mut line = String::new();
    while !seen_all(&text) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
    }
    let _ = done.send(());
    killer.join().unwrap();
    assert!(seen_all(&text), "missing transitions in:\n{text}");
    // SAFETY: kill(2) on the pid of the child we started and still hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = wait_code(&mut child);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(code, 0, "SIGTERM ends watch with exit 0: {err}");
    assert!(
        !instance_of(child.id()).exists(),
        "the tracefs instance is removed after SIGTERM"
    );
    // Each `after` is a time at its resolution: `38 µs`, `1.25 ms`,
    // `1.204 s`, never `0.000 s`.
    for l in text.lines().filter(|l| l.contains(" after ")) {
        let mut w = l.split(" after ").nth(1).unwrap().split_whitespace();
        let (n, unit) = (w.next().unwrap(), w.next().unwrap_or(""));
        assert!(n.parse::<f64>().is_ok(), "{l}");
        assert!(["µs", "ms", "s"].contains(&unit), "{l}");
        assert!(!(unit == "s" && n.starts_with("0.")), "{l}");
    }
    // The client's ESTABLISHED lasted 100 ms; its handshake far less, in
    // microseconds unless the machine is very busy.
    let hs = text
        .lines()
        .find(|l| l.contains(&client_side) && l.contains("SYN-SENT => ESTABLISHED after"))
        .unwrap();
    assert!(hs.contains(" µs") || hs.contains(" ms"), "{hs}");
    // Lines name the process holding the socket: this test, for both ends
    // (at least while it held them when watch looked: a loaded machine
    // may look only after the test closed one).
    let me = format!("(pid {} ", std::process::id());
    for side in [&client_side, &server_side] {
        assert!(
            text.lines()
                .any(|l| l.contains(side.as_str()) && l.contains(&me)),
            "no line of {side} names its owner {me}:\n{text}"
        );
    }
}

/// A watch killed with SIGKILL cannot remove its tracefs instance; the
/// next watch does.
#[test]
fn watch_events_removes_the_instance_of_a_killed_watch() {
    let name = "watch_events_removes_the_instance_of_a_killed_watch";
    let Some((mut first, _out)) = start_events(name, &["--port", "1", "--mode", "events"]) else {
        return;
    };
    let left = instance_of(first.id());
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(left.is_dir(), "SIGKILL leaves {} behind", left.display());
    let Some((mut second, out)) = start_events(name, &["--port", "1", "--mode", "events"]) else {
        return;
    };
    assert!(
        !left.exists(),
        "the next watch removed {} before starting",
        left.display()
    );
    // SAFETY: kill(2) on the pid of the child we started and still hold.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_code(&mut second), 0);
    // (Its note on stderr may be another test's: any watch starting in
    // between removes the leftover first.)
    drop(out);
    assert!(!instance_of(second.id()).exists());
}

#[test]
fn watch_events_shows_a_reset() {
    let name = "watch_events_shows_a_reset";
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    let Some((mut child, mut out)) = start_events(name, &["--port", &p, "--duration", "1"]) else {
        return;
    };
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    assert_eq!(wait_code(&mut child), 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("127.0.0.1:{port} -> ")) && l.contains("RST sent")),
        "the RST answering the SYN is shown:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("RST received")),
        "the client's side of it too:\n{text}"
    );
    assert!(
        !instance_of(child.id()).exists(),
        "removed at --duration's end"
    );
}

#[test]
fn watch_info_shows_rtt_and_cwnd() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    use std::io::Write;
    client.write_all(b"hello").unwrap();
    let mut five = [0u8; 5];
    server.read_exact(&mut five).unwrap();
    let p = port.to_string();
    // Poll mode: runs as any user; the figures come from sock_diag either way.
    let (child, out) = start_watch(&[
        "--port",
        &p,
        "--mode",
        "poll",
        "--info",
        "--interval",
        "50ms",
        "--duration",
        "1",
    ]);
    let (text, code) = finish(child, out);
    assert_eq!(code, 0, "{text}");
    let cport = client.local_addr().unwrap().port();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{cport} -> 127.0.0.1:{port} info ")))
        .unwrap_or_else(|| panic!("no info line for the client socket:\n{text}"));
    let num = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    assert!(num("rtt=") > 0.0, "{line}");
    assert!(num("cwnd=") >= 1.0, "{line}");
    // Linux counts the SYN's sequence number in bytes_acked: 5 bytes + 1.
    assert_eq!(
        num("bytes_acked="),
        6.0,
        "the 5 bytes sent were acked: {line}"
    );
}
