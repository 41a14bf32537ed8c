//! The `uring` model against real sockets on loopback: the real binary, one
//! worker, tiny provided-buffer rings to force the edge cases (buffer
//! exhaustion, backpressure, EMFILE, shutdown with connections in flight).
//! Every wait is bounded; a kernel without a usable io_uring makes each test
//! say SKIPPED and pass.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{self, Server};

/// Socket read/write timeout in the clients: a stalled server fails the
/// test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a signalled server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes written at once by the clients.
const CHUNK: usize = 8 * 1024;

/// True (after saying SKIPPED) when this kernel cannot run the model.
fn skip() -> bool {
    !crate::util::model_runs("uring", "uring")
}

/// `netecho serve --model uring --workers 1` with `env` set and, if given,
/// RLIMIT_NOFILE capped (soft and hard, since serve raises soft to hard at
/// start).
fn start(env: &[(&str, &str)], nofile: Option<u64>) -> Server {
    start_with(&[], env, nofile)
}

/// [`start`] with more `serve` flags.
fn start_with(args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Server {
    let mut all = vec!["--workers", "1"];
    all.extend(args);
    Server::start_with("uring", &["127.0.0.1:0"], &all, |cmd| {
        cmd.envs(env.iter().copied());
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
    })
}

/// A client connection with this file's (longer) socket timeouts.
fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
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
    let back = round_trip(connect(server), Arc::clone(&data))
        .unwrap_or_else(|e| panic!("{what}: {e}; stderr:\n{}", server.stderr_text()));
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
    let server = start(
        &[
            ("NETECHO_URING_BUFS", "4"),
            ("NETECHO_URING_BUF_SIZE", "1024"),
        ],
        None,
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let conn = connect(&server);
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
            Err(e) => panic!("client {i}: {e}; server stderr:\n{}", server.stderr_text()),
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
    let server = start(
        &[
            ("NETECHO_URING_BUFS", "64"),
            ("NETECHO_URING_BUF_SIZE", "4096"),
        ],
        None,
    );
    let rss_before = server.rss_kib();
    let data = Arc::new(pattern(99, SIZE));
    let mut conn = connect(&server);
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
        .unwrap_or_else(|e| panic!("reading the echo: {e}; stderr:\n{}", server.stderr_text()));
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
    let server = start(&[], Some(NOFILE));
    let mut conns = Vec::new();
    let mut served = 0;
    let mut unserved = 0;
    for _ in 0..TRIES {
        let mut c = connect(&server);
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
        server.stderr_text()
    );
    assert!(
        unserved > 0,
        "the server never ran out of descriptors with a limit of {NOFILE}"
    );
    drop(conns);
    // The pause is 500 ms; the backlog's leftovers are accepted and closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect(&server);
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
            server.stderr_text()
        );
    }
    // The log line was written before the pause; give the reader a moment.
    let logged_by = Instant::now() + Duration::from_secs(2);
    while !server.stderr_text().contains("pausing accepts") {
        assert!(
            Instant::now() < logged_by,
            "no EMFILE pause logged; stderr:\n{}",
            server.stderr_text()
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
    let mut server = start(&[], None);
    let echoed = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut conn = connect(&server);
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
    server.sigterm();
    // The listener is shut down at once: a new client is refused.
    let refused_by = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1)) {
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
            Err(e) => panic!("client {i}: {e}; stderr:\n{}", server.stderr_text()),
        }
    }
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "server exit: {status:?}; stderr:\n{}",
        server.stderr_text()
    );
}

/// A bad tuning value is refused at start, with the variable named.
#[test]
fn bad_tuning_is_an_error_not_a_default() {
    if skip() {
        return;
    }
    // The server fails before it is ready, so it never says `listening`.
    let mut cmd = util::netecho(&[
        "serve",
        "--model",
        "uring",
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    cmd.env("NETECHO_URING_BUFS", "3");
    let run = util::run_to_end(cmd, None, EXIT_TIMEOUT);
    assert_eq!(run.code(), Some(1), "server exit");
    assert!(
        !run.stdout_str().contains("listening"),
        "announced before it failed: {}",
        run.stdout_str()
    );
    let err = &run.stderr;
    assert!(err.contains("NETECHO_URING_BUFS"), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "stderr:\n{err}");
}

/// `--idle-timeout`: a silent client is closed (with a FIN: read returns 0)
/// about one tick after the deadline, and one that keeps talking is not.
#[test]
fn idle_connections_are_closed_busy_ones_are_not() {
    if skip() {
        return;
    }
    let server = start_with(&["--idle-timeout", "1"], &[], None);
    let mut silent = connect(&server);
    let mut busy = connect(&server);
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

/// Opens `n` clients that each write up to `per` bytes without blocking and
/// never read: they stop at EAGAIN (their echo fills both directions'
/// socket buffers) or after `per` bytes, bounded either way.
fn non_readers(server: &Server, n: usize, per: usize) -> Vec<TcpStream> {
    let junk = pattern(99, CHUNK);
    (0..n)
        .map(|_| {
            let mut s = connect(server);
            s.set_nonblocking(true).unwrap();
            let mut sent = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            while sent < per && Instant::now() < deadline {
                match s.write(&junk) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The server may still be taking bytes: look again
                        // shortly, then give up on this one.
                        thread::sleep(Duration::from_millis(5));
                        match s.write(&junk) {
                            Ok(k) => sent += k,
                            Err(_) => break,
                        }
                    }
                    Err(e) => panic!("non-reader write: {e}"),
                }
            }
            s
        })
        .collect()
}

/// A fresh client's round trip of `len` bytes, with a socket timeout of
/// `limit`: Err says how it failed.
fn fresh_round_trip(server: &Server, seed: u64, len: usize, limit: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&server.addr(), limit).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let data = pattern(seed, len);
    let mut tx = s.try_clone().map_err(|e| e.to_string())?;
    let want = data.clone();
    let writer = thread::spawn(move || tx.write_all(&want));
    let mut back = vec![0u8; len];
    let read = s.read_exact(&mut back);
    let wrote = writer.join().map_err(|_| "writer panicked".to_string())?;
    wrote.map_err(|e| format!("write: {e}"))?;
    read.map_err(|e| format!("read: {e}"))?;
    if back != data {
        return Err("echo differs".into());
    }
    Ok(())
}

/// Regression (scripts/soak.sh): 40 clients that send a lot and never read
/// must only block themselves. Before the fix each one pinned provided
/// buffers until `--stall-timeout`, the ring ran dry, and a fresh client's
/// echo waited for that timeout too.
#[test]
fn clients_that_never_read_do_not_starve_the_ring() {
    if skip() {
        return;
    }
    let _heavy = crate::util::heavy();
    for bufs in ["64", "8", "1"] {
        let server = start_with(
            &["--stall-timeout", "60"],
            &[("NETECHO_URING_BUFS", bufs)],
            None,
        );
        let hogs = non_readers(&server, 40, 4 << 20);
        for round in 0..3u64 {
            for len in [64 * 1024, 100] {
                fresh_round_trip(&server, round + 1, len, Duration::from_secs(5)).unwrap_or_else(
                    |e| {
                        panic!(
                            "NETECHO_URING_BUFS={bufs}: a {len} B echo behind 40 non-readers, \
                             round {round}: {e}; stderr:\n{}",
                            server.stderr_text()
                        )
                    },
                );
            }
        }
        drop(hogs);
    }
}

/// TLS clients that send a little, then their close_notify and FIN, and
/// never read: a server that takes every byte ends its core cleanly, but
/// the encrypted echo and our close_notify cannot go out. Regression: that
/// flush had no deadline in uring and the connection was held for ever;
/// `--stall-timeout` now ends it, counted as a stall, as in epoll. Where
/// the kernel's buffers take the whole echo, or the server's stop reading
/// first, a client is closed the old way: several sizes at once make sure
/// some land in between.
#[test]
fn a_tls_close_notify_stuck_behind_a_client_that_never_reads_ends_at_the_stall_timeout() {
    if skip() {
        return;
    }
    let python = std::process::Command::new("python3")
        .args(["-c", "import ssl"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        skipped!("SKIPPED: python3 with the ssl module is not installed");
        return;
    }
    let server = start_with(
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--stall-timeout",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
        None,
    );
    let tls = server
        .listening(netecho::serve::ListenKind::Tls, Duration::from_secs(10))
        .expect("a `listening tls` line");
    // A small receive buffer and a small segment size (which keeps the
    // server's send buffer from growing to megabytes, as it does on
    // loopback's 64 KiB segments) leave the kernel taking little of the
    // echo off the server's hands.
    const CLIENT: &str = r#"
import socket, ssl, sys, time
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
raw.settimeout(10)
raw.connect(("127.0.0.1", int(sys.argv[1])))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out)
def flush():
    data = out.read()
    if data:
        raw.sendall(data)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        flush()
        data = raw.recv(65536)
        if not data:
            sys.exit("EOF during the handshake")
        inc.write(data)
flush()
tls.write(b"x" * int(sys.argv[2]))
flush()
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
flush()
raw.shutdown(socket.SHUT_WR)
print("sent", flush=True)
time.sleep(30)
"#;
    const KIB: [usize; 8] = [48, 64, 80, 96, 128, 160, 192, 256];
    let mut clients = Vec::new();
    for kib in KIB {
        let child = std::process::Command::new("python3")
            .args([
                "-c",
                CLIENT,
                &tls.port().to_string(),
                &(kib * 1024).to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running python3");
        clients.push((kib, child));
    }
    let mut lines = Vec::new();
    for (kib, child) in &mut clients {
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        lines.push((*kib, line));
    }
    let m = server.metrics_addr();
    let closed = crate::util::eventually(Duration::from_secs(6), || {
        crate::hostile::metric(m, "netecho_connections_active") == 0
    });
    let count = |reason: &str| {
        crate::hostile::metric(
            m,
            &format!("netecho_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    let (stalls, fins) = (count("stall"), count("fin"));
    for (_, child) in &mut clients {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (kib, line) in lines {
        assert_eq!(
            line.trim(),
            "sent",
            "the {kib} KiB client did not get its bytes out"
        );
    }
    assert!(
        closed,
        "a connection is still held after the stall timeout ({stalls} stalls, {fins} FINs so far)"
    );
    assert_eq!(
        stalls + fins,
        KIB.len() as u64,
        "{stalls} stalls, {fins} FINs"
    );
}

/// The running kernel's `(major, minor)`, for what the server should say.
fn kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut p = r.trim().split(['.', '-']);
    let n = |s: Option<&str>| s.and_then(|v| v.parse().ok()).expect("a release number");
    (n(p.next()), n(p.next()))
}

/// 300 clients of 64-byte messages on a ring of four 64 KiB buffers: with
/// incremental buffers (Linux 6.15+) each buffer holds pieces of many
/// connections at once, and every client gets exactly its own bytes back;
/// on an older kernel the ring runs dry over and over and nobody stalls.
/// The server says at start which it does.
#[test]
fn three_hundred_small_clients_share_four_buffers_and_get_their_own_bytes() {
    if skip() {
        return;
    }
    const CONNS: usize = 300;
    const ROUNDS: usize = 20;
    const THREADS: usize = 4;
    let srv = start(
        &[
            ("NETECHO_URING_BUFS", "4"),
            ("NETECHO_URING_BUF_SIZE", "65536"),
        ],
        None,
    );
    let addr = srv.addr();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || -> Result<(), String> {
                let ids: Vec<usize> = (0..CONNS).filter(|i| i % THREADS == t).collect();
                let mut socks = Vec::new();
                for _ in &ids {
                    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    s.set_nodelay(true).unwrap();
                    socks.push(s);
                }
                let msg = |id: usize, round: usize| {
                    format!("{id:>5} {round:>5} {:>51}\n", id * 7919 + round)
                };
                for round in 0..ROUNDS {
                    // Every connection of this thread in flight at once.
                    for (s, &id) in socks.iter_mut().zip(&ids) {
                        s.write_all(msg(id, round).as_bytes())
                            .map_err(|e| format!("write {id}: {e}"))?;
                    }
                    for (s, &id) in socks.iter_mut().zip(&ids) {
                        let mut back = [0u8; 64];
                        s.read_exact(&mut back)
                            .map_err(|e| format!("read {id} round {round}: {e}"))?;
                        let want = msg(id, round);
                        if back[..] != *want.as_bytes() {
                            return Err(format!(
                                "connection {id} round {round}: got {:?}, sent {want:?}",
                                String::from_utf8_lossy(&back)
                            ));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{e}\nserver stderr:\n{}", srv.stderr_text()));
    }
    let said = srv.stderr_text();
    let want = if kernel() >= (6, 15) {
        "io_uring provided buffers consumed incrementally"
    } else {
        "io_uring provided buffers taken whole"
    };
    assert!(said.contains(want), "expected {want:?} in:\n{said}");
}
