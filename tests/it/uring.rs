//! The `uring` model against real sockets on loopback: the real binary, one
//! worker, tiny provided-buffer rings to force the edge cases (buffer
//! exhaustion, backpressure, EMFILE, shutdown with connections in flight).
//! Every wait is bounded; a kernel without a usable io_uring makes each test
//! say SKIPPED and pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netecho::serve::{ListenKind, parse_listening};

/// How long the server may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read/write timeout in the clients: a stalled server fails the
/// test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a signalled server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes written at once by the clients.
const CHUNK: usize = 8 * 1024;

/// True (after saying SKIPPED) when this kernel cannot run the model.
fn skip() -> bool {
    match netecho::serve::uring::probe() {
        Ok(()) => false,
        Err(reason) => {
            eprintln!("SKIPPED: io_uring unusable here: {reason}");
            true
        }
    }
}

/// A running `netecho serve --model uring`, killed if the test ends early.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything the server wrote on stderr, for failure messages.
    log: Arc<Mutex<Vec<u8>>>,
    /// The thread copying stderr into `log`; joined once the server exited,
    /// so its last lines are in.
    log_reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the server with `env` set and, if given, RLIMIT_NOFILE capped
    /// (soft and hard, since serve raises soft to hard at start).
    fn start(env: &[(&str, &str)], nofile: Option<u64>) -> Server {
        Server::start_with(&[], env, nofile)
    }

    /// [`Server::start`] with more `serve` flags.
    fn start_with(args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netecho"));
        cmd.args([
            "serve",
            "--model",
            "uring",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: between fork and exec the closure only calls
            // setrlimit(2), which is async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn netecho serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&log);
        let log_reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(l) = parse_listening(&line).filter(|l| l.kind == ListenKind::Tcp) {
                    let _ = tx.send(l.addr);
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no `listening tcp` line ({other:?}); stderr:\n{}",
                    String::from_utf8_lossy(&log.lock().unwrap())
                );
            }
        };
        Server {
            child,
            addr,
            log,
            log_reader: Some(log_reader),
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// Sends SIGTERM to the server (by its pid).
    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill -TERM");
    }

    /// Waits for the server to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The pipe is closed now: the reader ends at once.
                if let Some(r) = self.log_reader.take() {
                    let _ = r.join();
                }
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory of the server, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `len` pseudo-random bytes, different for every `seed`, so bytes that
/// cross from one connection to another are caught.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` from a second thread while this one reads the echo, then
/// half-closes and reads to the server's FIN. Returns what came back.
fn round_trip(mut conn: TcpStream, data: Arc<Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let mut tx = conn.try_clone()?;
    let writer = thread::spawn(move || -> std::io::Result<()> {
        for chunk in data.chunks(CHUNK) {
            tx.write_all(chunk)?;
        }
        tx.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let read = conn.read_to_end(&mut back);
    let wrote = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")));
    read?;
    wrote?;
    Ok(back)
}

/// One plain round trip: the server is alive and serving.
fn assert_serves(server: &Server, what: &str) {
    let data = Arc::new(pattern(7, 4096));
    let back = round_trip(server.connect(), Arc::clone(&data))
        .unwrap_or_else(|e| panic!("{what}: {e}; stderr:\n{}", server.stderr()));
    assert!(back == *data, "{what}: echo differs");
}

/// Buffer-ring exhaustion (ENOBUFS on multishot receives, re-armed when
/// buffers come back), short sends and re-arming: 64 clients share 4
/// buffers of 1 KiB, each streams 256 KiB while reading, and every byte must
/// come back in order on its own connection.
#[test]
fn many_clients_share_a_tiny_buffer_ring() {
    if skip() {
        return;
    }
    const CLIENTS: u64 = 64;
    const SIZE: usize = 256 * 1024;
    let server = Server::start(
        &[
            ("NETECHO_URING_BUFS", "4"),
            ("NETECHO_URING_BUF_SIZE", "1024"),
        ],
        None,
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let conn = server.connect();
            thread::spawn(move || {
                let data = Arc::new(pattern(i + 1, SIZE));
                let back = round_trip(conn, Arc::clone(&data));
                (i, back.map(|b| b == *data))
            })
        })
        .collect();
    for c in clients {
        let (i, same) = c.join().expect("client thread");
        match same {
            Ok(true) => {}
            Ok(false) => panic!("client {i}: echo differs"),
            Err(e) => panic!("client {i}: {e}; server stderr:\n{}", server.stderr()),
        }
    }
    assert_serves(&server, "after the clients");
}

/// Backpressure: a client that writes without reading gets blocked (the
/// server stops receiving once it holds a few buffers of echo) and the
/// server's memory does not grow with what was sent; when the client then
/// reads, everything comes back. A second client is served meanwhile.
#[test]
fn a_client_that_does_not_read_is_paused_not_buffered() {
    if skip() {
        return;
    }
    const SIZE: usize = 48 * 1024 * 1024;
    let server = Server::start(
        &[
            ("NETECHO_URING_BUFS", "64"),
            ("NETECHO_URING_BUF_SIZE", "4096"),
        ],
        None,
    );
    let rss_before = server.rss_kib();
    let data = Arc::new(pattern(99, SIZE));
    let mut conn = server.connect();
    let mut tx = conn.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let (src, count) = (Arc::clone(&data), Arc::clone(&written));
    let writer = thread::spawn(move || -> std::io::Result<()> {
        for chunk in src.chunks(CHUNK) {
            tx.write_all(chunk)?;
            count.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        tx.shutdown(Shutdown::Write)
    });
    // Let the writer fill every buffer on the way; it must then block.
    let mut last = 0;
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let stuck_at = written.load(Ordering::SeqCst);
    assert!(
        stuck_at < SIZE,
        "the writer was never blocked: the server buffered all {SIZE} bytes"
    );
    let grown_kib = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < (SIZE / 1024 / 4) as u64,
        "server memory grew by {grown_kib} KiB while {stuck_at} bytes were unread"
    );
    assert_serves(&server, "while another client is paused");
    let mut back = Vec::with_capacity(SIZE);
    conn.read_to_end(&mut back)
        .unwrap_or_else(|e| panic!("reading the echo: {e}; stderr:\n{}", server.stderr()));
    writer.join().expect("writer thread").expect("writer");
    assert!(
        back.len() == SIZE,
        "got {} of {SIZE} bytes back",
        back.len()
    );
    assert!(back == *data, "echo differs");
}

/// Accept re-arm after an error completion: with few descriptors the server
/// hits EMFILE (its multishot accept ends with an error), pauses, and once
/// clients leave it accepts and serves again.
#[test]
fn accept_recovers_after_running_out_of_descriptors() {
    if skip() {
        return;
    }
    /// The server's whole descriptor budget: a handful of its own plus a
    /// few clients.
    const NOFILE: u64 = 16;
    const TRIES: usize = 32;
    let server = Server::start(&[], Some(NOFILE));
    let mut conns = Vec::new();
    let mut served = 0;
    let mut unserved = 0;
    for _ in 0..TRIES {
        let mut c = server.connect();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(1) => served += 1,
            _ => unserved += 1,
        }
        conns.push(c);
        if unserved >= 2 {
            break;
        }
    }
    assert!(
        served > 0,
        "no client was served; stderr:\n{}",
        server.stderr()
    );
    assert!(
        unserved > 0,
        "the server never ran out of descriptors with a limit of {NOFILE}"
    );
    drop(conns);
    // The pause is 500 ms; the backlog's leftovers are accepted and closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let ok = c.write_all(b"again").is_ok() && {
            let mut b = [0u8; 5];
            c.read_exact(&mut b).is_ok() && &b == b"again"
        };
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after EMFILE; stderr:\n{}",
            server.stderr()
        );
    }
    // The log line was written before the pause; give the reader a moment.
    let logged_by = Instant::now() + Duration::from_secs(2);
    while !server.stderr().contains("pausing accepts") {
        assert!(
            Instant::now() < logged_by,
            "no EMFILE pause logged; stderr:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_serves(&server, "after EMFILE");
}

/// SIGTERM with connections in flight: new connections are refused at once,
/// the ones in flight finish with every byte echoed, and the server exits 0.
#[test]
fn sigterm_lets_connections_in_flight_finish() {
    if skip() {
        return;
    }
    const CLIENTS: u64 = 4;
    const SIZE: usize = 4 * 1024 * 1024;
    let mut server = Server::start(&[], None);
    let echoed = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut conn = server.connect();
            let (echoed, go) = (Arc::clone(&echoed), Arc::clone(&go_rx));
            thread::spawn(move || -> std::io::Result<bool> {
                let data = pattern(100 + i, SIZE);
                let (first, rest) = data.split_at(SIZE / 4);
                // A quarter before the signal, the rest after it.
                conn.write_all(first)?;
                let mut back = vec![0u8; first.len()];
                conn.read_exact(&mut back)?;
                echoed.fetch_add(1, Ordering::SeqCst);
                let _ = go.lock().unwrap().recv_timeout(IO_TIMEOUT);
                let rest = Arc::new(rest.to_vec());
                back.extend(round_trip(conn, rest)?);
                Ok(back == data)
            })
        })
        .collect();
    let deadline = Instant::now() + IO_TIMEOUT;
    while echoed.load(Ordering::SeqCst) < CLIENTS as usize {
        assert!(
            Instant::now() < deadline,
            "clients never got their first echo"
        );
        thread::sleep(Duration::from_millis(10));
    }
    server.terminate();
    // The listener is shut down at once: a new client is refused.
    let refused_by = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)) {
            Err(_) => break,
            Ok(_) => assert!(Instant::now() < refused_by, "still accepting after SIGTERM"),
        }
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..CLIENTS {
        go_tx.send(()).unwrap();
    }
    for (i, c) in clients.into_iter().enumerate() {
        match c.join().expect("client thread") {
            Ok(true) => {}
            Ok(false) => panic!("client {i}: echo differs"),
            Err(e) => panic!("client {i}: {e}; stderr:\n{}", server.stderr()),
        }
    }
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "server exit: {status:?}; stderr:\n{}",
        server.stderr()
    );
}

/// A bad tuning value is refused at start, with the variable named.
#[test]
fn bad_tuning_is_an_error_not_a_default() {
    if skip() {
        return;
    }
    let mut server = Server::start(&[("NETECHO_URING_BUFS", "3")], None);
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| !s.success()),
        "server exit: {status:?}"
    );
    let err = server.stderr();
    assert!(err.contains("NETECHO_URING_BUFS"), "stderr:\n{err}");
}

/// `--idle-timeout`: a silent client is closed (with a FIN: read returns 0)
/// about one tick after the deadline, and one that keeps talking is not.
#[test]
fn idle_connections_are_closed_busy_ones_are_not() {
    if skip() {
        return;
    }
    let server = Server::start_with(&["--idle-timeout", "1"], &[], None);
    let mut silent = server.connect();
    let mut busy = server.connect();
    let started = Instant::now();
    let mut b = [0u8; 1];
    for _ in 0..8 {
        busy.write_all(b"b").unwrap();
        busy.read_exact(&mut b).unwrap();
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        silent.read(&mut b).unwrap(),
        0,
        "idle connection not closed"
    );
    let after = started.elapsed();
    assert!(
        after < Duration::from_secs(4),
        "idle close took {after:?} for a 1 s timeout"
    );
    busy.write_all(b"c").unwrap();
    busy.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"c", "the busy connection was closed");
}
