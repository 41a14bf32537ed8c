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
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut most = 0;
            // Until the echo is done, or a pipe was seen; at most 60 s.
            for _ in 0..3000 {
                most = most.max(pipes(pid));
                if done.load(Ordering::Relaxed) || most > before {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
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
            fn bench_stream_checks_every_byte_of_a_full_duplex_echo() {
                super::bench_stream_checks_every_byte_of_a_full_duplex_echo(MODEL);
            }
        }
    )*};
}

zero_copy_tests!(epoll, uring);
