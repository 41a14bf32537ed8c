//! `--zero-copy`: the splice path of the epoll and uring models keeps the
//! echo contract. The per-model contract checks also run with
//! `--zero-copy on` (the `epoll_zero_copy` and `uring_zero_copy` modules of
//! tests/it/serve.rs); these add what only a spliced stream shows: large
//! transfers, a FIN behind a full pipe, a client that stops reading, and
//! the fallback where splice is refused. Every check runs for each model
//! that splices (the macro at the end).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::{self, MIB, Rng, Server, compare, connect, read_to_eof, seed_of};

/// Pipes the server holds open (`pipe:[…]` in /proc/PID/fd).
fn pipes(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

/// A thread that calls `look` on its state every `every` until `look`
/// says it has seen enough or `done` is set, for at most 60 s, and returns
/// the state: the server's pipes watched while a stream runs.
fn watch<T: Send + 'static>(
    done: &Arc<AtomicBool>,
    every: Duration,
    start: T,
    mut look: impl FnMut(&mut T) -> bool + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let done = Arc::clone(done);
    std::thread::spawn(move || {
        let mut state = start;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if look(&mut state) || done.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(every);
        }
        state
    })
}

/// Writes `data` from one thread while this one reads the echo to EOF;
/// the client's FIN follows the last byte.
fn stream(c: TcpStream, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut w = c.try_clone().map_err(|e| e.to_string())?;
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut r = c;
    let back = read_to_eof(&mut r, 64 * MIB);
    writer
        .join()
        .map_err(|_| "the writer panicked".to_string())?
        .map_err(|e| format!("writing: {e}"))?;
    back
}

/// 64 MiB through a spliced connection come back byte for byte, and the
/// connection really went through a pipe (two more pipe descriptors while
/// it is open).
fn sixty_four_mib(model: &str, mode: &str) {
    let _heavy = util::heavy();
    let server = Server::start(
        model,
        &[
            "--workers",
            "1",
            "--zero-copy",
            mode,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let before = pipes(server.pid());
    let data = Rng::new(seed_of(&format!("zerocopy/64MiB/{model}/{mode}"))).bytes(64 * MIB);
    let c = connect(server.addr());
    let done = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    // Until the echo is done, or a pipe was seen.
    let watcher = watch(&done, Duration::from_millis(20), 0, move |most| {
        *most = (*most).max(pipes(pid));
        *most > before
    });
    let back = stream(c, data.clone()).unwrap_or_else(|e| panic!("{model} {mode}: {e}"));
    done.store(true, Ordering::Relaxed);
    compare(
        &format!("{model}: 64 MiB, --zero-copy {mode}"),
        &data,
        &back,
    )
    .unwrap();
    let most = watcher.join().unwrap();
    assert_eq!(
        most,
        before + 2,
        "{model} {mode}: the connection never had a pipe"
    );
    // Spliced bytes are counted as copied ones are (once the worker's
    // turn has added them up).
    let m = server.metrics_addr();
    let counted = util::eventually(Duration::from_secs(5), || {
        crate::hostile::metric(m, "netecho_bytes_echoed_total") == data.len() as u64
    });
    assert!(
        counted,
        "{model} {mode}: bytes echoed not counted in the metrics"
    );
}

/// Small messages under `auto` never cost a pipe.
fn small_messages_stay_on_the_buffer_path_under_auto(model: &str) {
    let server = Server::start(model, &["--workers", "1"]);
    let before = pipes(server.pid());
    let mut c = connect(server.addr());
    let mut buf = [0u8; 100];
    for i in 0..50u8 {
        c.write_all(&[i; 100]).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [i; 100]);
    }
    assert_eq!(
        pipes(server.pid()),
        before,
        "{model}: a pipe for 100-byte messages"
    );
}

/// The client half-closes while the pipe and both socket queues are full
/// (it has not read a byte yet): everything still comes back, then a FIN.
fn a_half_close_in_the_middle_of_a_spliced_stream_comes_back_byte_identical(model: &str) {
    let server = Server::start(model, &["--workers", "1", "--zero-copy", "on"]);
    let data = Rng::new(seed_of(&format!("zerocopy/half-close/{model}"))).bytes(3 * MIB);
    let mut c = connect(server.addr());
    c.set_nonblocking(true).unwrap();
    // Write until the queues are full (the server stopped reading), bounded.
    let mut off = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stuck_since: Option<Instant> = None;
    while off < data.len() && Instant::now() < deadline {
        match c.write(&data[off..]) {
            Ok(n) => {
                off += n;
                stuck_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Full for 200 ms: the server holds a full pipe.
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(200) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("writing: {e}"),
        }
    }
    assert!(off > 0, "nothing written");
    c.shutdown(Shutdown::Write).unwrap();
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let back = read_to_eof(&mut c, off).unwrap();
    compare(
        &format!("{model}: echo of a stream half-closed mid-way"),
        &data[..off],
        &back,
    )
    .unwrap();
}

/// The receive queue of the server's end of a connection to `port` from
/// `client_port` (/proc/net/tcp: `rx_queue`), if found.
fn server_rx_queue(port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!(":{port:04X}");
    let want_remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 4 && f[1].ends_with(&want_local) && f[2].ends_with(&want_remote) {
            let (_, rx) = f[4].split_once(':')?;
            u64::from_str_radix(rx, 16).ok()
        } else {
            None
        }
    })
}

/// A client that sends and never reads fills the pipe; the server then
/// stops reading (its receive queue stays full) and holds no more memory,
/// however long the client keeps trying. Reading again brings every byte.
fn a_client_that_stops_reading_fills_the_pipe_and_the_server_stops_reading(model: &str) {
    let server = Server::start(
        model,
        &[
            "--workers",
            "1",
            "--zero-copy",
            "on",
            "--stall-timeout",
            "0",
        ],
    );
    let rss_before = server.rss_kib();
    let mut c = connect(server.addr());
    c.set_nonblocking(true).unwrap();
    let mut rng = Rng::new(seed_of(&format!("zerocopy/stops-reading/{model}")));
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stuck_since: Option<Instant> = None;
    // Bounded by time and by 256 MiB: a server that kept reading would
    // let the client write all of it.
    while Instant::now() < deadline && sent.len() < 256 * MIB {
        let chunk = rng.bytes(256 * 1024);
        let mut off = 0;
        while off < chunk.len() {
            match c.write(&chunk[off..]) {
                Ok(n) => {
                    off += n;
                    stuck_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("writing: {e}"),
            }
        }
        sent.extend_from_slice(&chunk[..off]);
        if off < chunk.len() {
            break;
        }
    }
    assert!(
        sent.len() < 64 * MIB,
        "{model}: the client wrote {} MiB without reading: the server kept reading",
        sent.len() / MIB
    );
    let port = server.addr().port();
    let client_port = c.local_addr().unwrap().port();
    let rx1 = server_rx_queue(port, client_port).expect("the server's socket in /proc/net/tcp");
    std::thread::sleep(Duration::from_millis(500));
    let rx2 = server_rx_queue(port, client_port).unwrap();
    assert!(
        rx1 > 0,
        "{model}: the server's receive queue is empty: it kept reading"
    );
    assert_eq!(rx1, rx2, "{model}: the server read on with a full pipe");
    let grew = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grew < 8 * 1024,
        "{model}: the server's RSS grew by {grew} KiB"
    );
    // Nothing was lost meanwhile.
    c.shutdown(Shutdown::Write).unwrap();
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let back = read_to_eof(&mut c, sent.len()).unwrap();
    compare(
        &format!("{model}: echo after the client read again"),
        &sent,
        &back,
    )
    .unwrap();
}

/// Where a seccomp filter refuses splice(2), `--zero-copy on` says so in
/// one log line and serves on the buffer path.
fn zero_copy_on_falls_back_with_one_line_where_splice_is_refused(model: &str) {
    use std::os::unix::process::CommandExt;
    let mut server = Server::start_with(
        model,
        &["127.0.0.1:0"],
        &["--workers", "1", "--zero-copy", "on"],
        |cmd| {
            // SAFETY: between fork and exec the closure only calls prctl(2),
            // which is async-signal-safe (see `util::refuse_syscall`).
            unsafe {
                cmd.pre_exec(|| util::refuse_syscall(libc::SYS_splice, None, libc::EPERM));
            }
        },
    );
    let before = pipes(server.pid());
    let data = Rng::new(seed_of(&format!("zerocopy/refused/{model}"))).bytes(4 * MIB);
    let c = connect(server.addr());
    let pid = server.pid();
    let back = stream(c, data.clone()).unwrap();
    compare(&format!("{model}: echo without splice"), &data, &back).unwrap();
    assert_eq!(
        pipes(pid),
        before,
        "{model}: a pipe although splice is refused"
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    let log = server.stderr_text();
    let lines = log.matches("splice unavailable").count();
    assert_eq!(lines, 1, "{model}: want one fallback line: {log}");
    assert!(log.contains("zero_copy=off"), "{model}: {log}");
    assert!(
        !log.contains("this one copies"),
        "{model}: a second line about zero copy: {log}"
    );
}

/// `netecho bench --stream` against a spliced server: full duplex on
/// every connection, every byte checked, bounded by -d.
fn bench_stream_checks_every_byte_of_a_full_duplex_echo(model: &str) {
    let server = Server::start(model, &["--workers", "1", "--zero-copy", "on"]);
    let addr = server.addr().to_string();
    let run = util::run_to_end(
        util::netecho(&[
            "bench", &addr, "--stream", "-c", "3", "-d", "1", "--warmup", "0", "--json",
        ]),
        None,
        Duration::from_secs(30),
    );
    assert!(
        run.success(),
        "{model}: bench --stream failed: {}",
        run.stderr
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["mismatches"], 0, "{model}: {v}");
    assert_eq!(v["connections"], 3, "{model}: {v}");
    assert!(v["bytes"].as_u64().unwrap() > 0, "{model}: {v}");
}

/// Round trips of one message each on a connection.
const ROUND_TRIPS: usize = 50;
/// Connections of the closed loop below.
const LOOP_CONNS: usize = 8;

/// A closed loop of 1 MiB messages, 8 connections with one in flight each
/// (the bulk workload of `bench --models`), with no idle timeout: every
/// message fills a pipe grown to 1 MiB, moves in several splices, and
/// leaves the socket quiet between requests, so a turn that stops waiting
/// for an edge that never comes (a budget used up without queueing the
/// connection again, an EAGAIN taken for an empty socket) leaves its
/// request unanswered for good: the bench's per-request timeout fails the
/// run. Normal is a few milliseconds a round trip; the 10 s allowed are
/// for a busy two-core machine.
fn a_closed_loop_of_one_mib_messages_is_never_left_waiting(model: &str) {
    let server = Server::start(model, &["--workers", "1", "--idle-timeout", "0"]);
    let addr = server.addr().to_string();
    let requests = (ROUND_TRIPS * LOOP_CONNS).to_string();
    let conns = LOOP_CONNS.to_string();
    let started = Instant::now();
    let run = util::run_to_end(
        util::netecho(&[
            "bench",
            &addr,
            "-c",
            &conns,
            "-s",
            "1MiB",
            "-n",
            &requests,
            "--timeout",
            "10s",
            "--warmup",
            "0",
            "--json",
        ]),
        None,
        Duration::from_secs(120),
    );
    let took = started.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_default();
    assert!(
        run.success(),
        "{model}: {requests} round trips of 1 MiB on {conns} connections failed after \
         {took:.1} s (slowest echo {} us): {v} {}",
        v["max_us"],
        run.stderr
    );
    assert_eq!(
        v["requests"].as_u64(),
        Some(ROUND_TRIPS as u64 * LOOP_CONNS as u64),
        "{model}: {v}"
    );
    assert_eq!(v["unanswered"], 0, "{model}: {v}");
    assert_eq!(v["mismatches"], 0, "{model}: {v}");
}

/// Every pipe the server holds (`pipe:[inode]`) with its capacity
/// (F_GETPIPE_SZ through /proc/PID/fd), each pipe once however many ends
/// are open.
fn pipe_sizes(pid: i32) -> Vec<(String, usize)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut seen = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let link = std::fs::read_link(&path).ok()?;
        let link = link.to_string_lossy().into_owned();
        if !link.starts_with("pipe:") || !seen.insert(link.clone()) {
            return None;
        }
        // Opening a pipe's /proc link opens the same pipe (as a reader,
        // without blocking): its size is the server's pipe's size.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        // SAFETY: F_GETPIPE_SZ takes no argument and only reads the pipe
        // of a descriptor this function owns.
        let n = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETPIPE_SZ) };
        Some((link, usize::try_from(n).ok()?))
    })
    .collect()
}

/// Streams `len` bytes through a spliced connection to `server` and
/// returns the largest pipe the server made for it (polled every 5 ms; the
/// pipes it had before, its stdio among them, do not count).
fn stream_watching_pipes(model: &str, server: &Server, len: usize, seed: &str) -> usize {
    let data = Rng::new(seed_of(seed)).bytes(len);
    let before: std::collections::HashSet<String> = pipe_sizes(server.pid())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    // Until the echo is done.
    let watcher = watch(&done, Duration::from_millis(5), 0, move |most| {
        for (pipe, size) in pipe_sizes(pid) {
            if !before.contains(&pipe) {
                *most = (*most).max(size);
            }
        }
        false
    });
    let back =
        stream(connect(server.addr()), data.clone()).unwrap_or_else(|e| panic!("{model}: {e}"));
    done.store(true, Ordering::Relaxed);
    compare(&format!("{model}: {seed}"), &data, &back).unwrap();
    watcher.join().unwrap()
}

/// A stream larger than the default pipe (64 KiB) grows the connection's
/// pipe to 1 MiB: one splice in and one out per MiB instead of sixteen.
fn a_bulk_connection_grows_its_pipe_to_one_mib(model: &str) {
    if !util::is_root() {
        // An unprivileged user may be at its pipe page limit already,
        // where the kernel refuses to grow (that fallback is tested below).
        skipped!(
            "SKIPPED zerocopy::{model}::a_bulk_connection_grows_its_pipe_to_one_mib: needs root"
        );
        return;
    }
    let server = Server::start(model, &["--workers", "1", "--zero-copy", "auto"]);
    let most = stream_watching_pipes(model, &server, 32 * MIB, &format!("zerocopy/grow/{model}"));
    assert_eq!(most, MIB, "{model}: the largest pipe the server had");
}

/// A user id no account on a test machine uses: the pipe page limit is
/// per user, so filling it for this one disturbs nobody else.
const PIPE_HOG_UID: u32 = 64_611;

/// Where the server's user is at its pipe page limit the kernel makes its
/// pipes small and refuses to grow them (EPERM): the server goes on with
/// what it got, every byte comes back, and nothing is logged above debug.
fn a_user_at_its_pipe_limit_keeps_small_pipes_and_loses_nothing(model: &str) {
    if !util::is_root() {
        skipped!(
            "SKIPPED zerocopy::{model}::a_user_at_its_pipe_limit_keeps_small_pipes_and_loses_nothing: \
             needs root (to run as a user of its own)"
        );
        return;
    }
    if !util::have_tool("python3") {
        skipped!(
            "SKIPPED zerocopy::{model}::a_user_at_its_pipe_limit_keeps_small_pipes_and_loses_nothing: \
             no python3"
        );
        return;
    }
    // One such user at a time: a hog that ends while another test's server
    // runs would let that server's pipes grow.
    static ONE_HOG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_HOG.lock().unwrap_or_else(|e| e.into_inner());
    // Another process of the same user takes the user's pipe pages up to
    // the soft limit: 1 MiB pipes until the kernel refuses to grow one
    // (bounded at 4,096 pipes), then prints the size a new pipe gets.
    let hog = r#"
import fcntl, os, sys
keep = []
for _ in range(4096):
    r, w = os.pipe()
    keep.append((r, w))
    try:
        fcntl.fcntl(w, 1031, 1 << 20)
    except OSError:
        break
r, w = os.pipe()
keep.append((r, w))
print(fcntl.fcntl(w, 1032), flush=True)
sys.stdin.read()
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", hog])
        .uid(PIPE_HOG_UID)
        .gid(PIPE_HOG_UID)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    use std::os::unix::process::CommandExt;
    let mut hog = cmd.spawn().expect("start python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let small: usize = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the hog said {line:?}"));
    assert!(
        small < 64 * 1024,
        "a new pipe of a user at its limit has {small} bytes: the limit was not reached"
    );
    let mut server = Server::start_with(
        model,
        &["127.0.0.1:0"],
        &["--workers", "1", "--zero-copy", "auto"],
        |cmd| {
            cmd.uid(PIPE_HOG_UID).gid(PIPE_HOG_UID);
        },
    );
    let most = stream_watching_pipes(model, &server, 8 * MIB, &format!("zerocopy/hog/{model}"));
    drop(hog.stdin.take());
    let _ = hog.wait();
    assert!(
        most > 0 && most <= small,
        "{model}: the server's largest pipe was {most} bytes where new pipes get {small}"
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    let log = server.stderr_text();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "{model}: the refused growth was logged above debug: {log}"
    );
}

/// Every check above, once per model that splices.
macro_rules! zero_copy_tests {
    ($($model:ident),*) => {$(
        mod $model {
            const MODEL: &str = stringify!($model);

            #[test]
            fn sixty_four_mib_come_back_byte_identical_with_zero_copy_on() {
                super::sixty_four_mib(MODEL, "on");
            }

            #[test]
            fn sixty_four_mib_come_back_byte_identical_with_zero_copy_auto() {
                super::sixty_four_mib(MODEL, "auto");
            }

            #[test]
            fn small_messages_stay_on_the_buffer_path_under_auto() {
                super::small_messages_stay_on_the_buffer_path_under_auto(MODEL);
            }

            #[test]
            fn a_half_close_in_the_middle_of_a_spliced_stream_comes_back_byte_identical() {
                super::a_half_close_in_the_middle_of_a_spliced_stream_comes_back_byte_identical(
                    MODEL,
                );
            }

            #[test]
            fn a_client_that_stops_reading_fills_the_pipe_and_the_server_stops_reading() {
                super::a_client_that_stops_reading_fills_the_pipe_and_the_server_stops_reading(
                    MODEL,
                );
            }

            #[test]
            fn zero_copy_on_falls_back_with_one_line_where_splice_is_refused() {
                super::zero_copy_on_falls_back_with_one_line_where_splice_is_refused(MODEL);
            }

            #[test]
            fn a_bulk_connection_grows_its_pipe_to_one_mib() {
                super::a_bulk_connection_grows_its_pipe_to_one_mib(MODEL);
            }

            #[test]
            fn a_user_at_its_pipe_limit_keeps_small_pipes_and_loses_nothing() {
                super::a_user_at_its_pipe_limit_keeps_small_pipes_and_loses_nothing(MODEL);
            }

            #[test]
            fn a_closed_loop_of_one_mib_messages_is_never_left_waiting() {
                super::a_closed_loop_of_one_mib_messages_is_never_left_waiting(MODEL);
            }

            #[test]
            fn bench_stream_checks_every_byte_of_a_full_duplex_echo() {
                super::bench_stream_checks_every_byte_of_a_full_duplex_echo(MODEL);
            }
        }
    )*};
}

zero_copy_tests!(epoll, uring);
