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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = port.to_string();
    let (child, out) = start_watch(&[
        "--port",
        &p,
        "--mode",
        "poll",
        "--interval",
        "10",
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
    let est = find(&format!("{client_side} (new) => ESTABLISHED"));
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
        "10",
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
    ] {
        let o = Command::new(BIN).arg("watch").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
