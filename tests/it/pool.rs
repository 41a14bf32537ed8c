//! The growing and shrinking pools of `prefork` and `prethread`: real
//! servers, real clients on loopback, real signals. The pool's size is read
//! from /proc (prefork: the parent's children; prethread: the process's
//! threads but the main one), never from the server's own word.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{
    self, Closed, KIB, Rng, Server, children, compare, connect, ping, read_to_eof, seed_of,
    threads, try_connect, wait_closed,
};

/// How many clients the "served at once" checks hold open together.
const AT_ONCE: usize = 200;
/// The longest a fresh pool may take to serve them all: the start rate
/// doubles each second up to 64, so about 8 s, and far less than this on a
/// busy machine.
const GROW_LIMIT: Duration = Duration::from_secs(60);
/// The bound for an idle pool to be back within its band.
const SHRINK_LIMIT: Duration = Duration::from_secs(60);

/// Workers in `server`'s pool now, as /proc shows them.
fn pool_size(server: &Server, model: &str) -> usize {
    match model {
        "prefork" => children(server.pid()).len(),
        _ => threads(server.pid()).len().saturating_sub(1),
    }
}

/// Opens `n` connections and sends each a distinct message; returns them
/// with their messages, and how long until every echo had come back. Each
/// read waits at most the socket timeout; the whole is bounded by
/// [`GROW_LIMIT`].
fn open_and_serve(addr: SocketAddr, n: usize, seed: u64) -> (Vec<(TcpStream, Vec<u8>)>, Duration) {
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(addr);
        let len = rng.range(1, KIB);
        let msg = rng.bytes(len);
        s.write_all(&msg)
            .unwrap_or_else(|e| panic!("client {i}: write: {e}"));
        conns.push((s, msg));
    }
    // Every client sent before any is read: they all wait at once.
    for (i, (s, msg)) in conns.iter_mut().enumerate() {
        let got = util::read_exact_n(s, msg.len()).unwrap_or_else(|e| {
            panic!(
                "client {i} of {n}: no echo after {:?}: {e}",
                start.elapsed()
            )
        });
        compare("echo", msg, &got).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(
            start.elapsed() < GROW_LIMIT,
            "{n} clients not served in {GROW_LIMIT:?}"
        );
    }
    (conns, start.elapsed())
}

/// Every held connection still echoes: they are served at the same time.
fn all_still_served(conns: &mut [(TcpStream, Vec<u8>)], what: &str) {
    for (i, (s, msg)) in conns.iter_mut().enumerate() {
        ping(s, msg).unwrap_or_else(|e| panic!("{what}: client {i}: {e}"));
    }
}

/// With default flags, 200 clients that connect together are all served
/// at the same time: the pool grows from `--workers` to hold them.
fn two_hundred_clients_are_served_at_once(model: &str) {
    let _heavy = crate::util::heavy();
    let server = Server::start(model, &[]);
    // The listening line comes before the first workers start.
    let deadline = Instant::now() + Duration::from_secs(3);
    while pool_size(&server, model) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = pool_size(&server, model);
    let (mut conns, took) =
        open_and_serve(server.addr(), AT_ONCE, seed_of(&format!("{model}/200")));
    all_still_served(&mut conns, &format!("{model}: {AT_ONCE} held"));
    let size = pool_size(&server, model);
    eprintln!("{model}: {AT_ONCE} clients all served after {took:?}; pool {before} -> {size}");
    assert!(
        size > AT_ONCE,
        "{model}: {AT_ONCE} clients served by a pool of {size}?"
    );
    let max = <netecho::serve::Model as clap::ValueEnum>::from_str(model, false)
        .unwrap()
        .default_max_conns();
    assert!(
        size <= max + 1,
        "{model}: a pool of {size} for --max-conns {max}"
    );
}

#[test]
fn prefork_serves_two_hundred_clients_at_once_with_default_flags() {
    two_hundred_clients_are_served_at_once("prefork");
}

#[test]
fn prethread_serves_two_hundred_clients_at_once_with_default_flags() {
    two_hundred_clients_are_served_at_once("prethread");
}

use crate::util::metric;

/// `netecho_workers{state}` follows the clients: three held show as three
/// busy, and none once they leave.
fn workers_gauge(model: &str) {
    const HELD: usize = 3;
    let busy = "netecho_workers{state=\"busy\"}";
    let idle = "netecho_workers{state=\"idle\"}";
    let server = Server::start(model, &["--metrics", "127.0.0.1:0"]);
    let m = server.metrics_addr();
    let wait_for = |want: u64| {
        // The supervisor counts at least once a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = metric(m, busy);
            if got == want || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (conns, _) = open_and_serve(server.addr(), HELD, seed_of(&format!("{model}/gauge")));
    assert_eq!(wait_for(HELD as u64), HELD as u64, "{model}: busy workers");
    let _ = metric(m, idle);
    drop(conns);
    assert_eq!(
        wait_for(0),
        0,
        "{model}: busy workers after the clients left"
    );
}

#[test]
fn prefork_workers_gauge_counts_busy_workers() {
    workers_gauge("prefork");
}

#[test]
fn prethread_workers_gauge_counts_busy_workers() {
    workers_gauge("prethread");
}

const REJECTED: &str = "netecho_connections_rejected_total{reason=\"max_conns\"}";

/// `--max-conns 10`: ten clients are served together, the next five are
/// accepted and closed at once without an echo and counted, and the ten
/// are still served.
fn max_conns_ten(model: &str) {
    const MAX: usize = 10;
    const OVER: usize = 5;
    let server = Server::start(model, &["--max-conns", "10", "--metrics", "127.0.0.1:0"]);
    let m = server.metrics_addr();
    let (mut conns, took) = open_and_serve(server.addr(), MAX, seed_of(&format!("{model}/max10")));
    eprintln!("{model}: {MAX} clients served after {took:?}");
    for i in 0..OVER {
        let mut c = connect(server.addr());
        // Ignored: the server may already have closed it.
        let _ = c.write_all(b"over the limit");
        // The pool may still be starting its last, idle worker: a second.
        let end = wait_closed(&mut c, Duration::from_secs(5));
        assert!(
            matches!(end, Closed::Fin | Closed::Reset),
            "{model}: client {} over --max-conns {MAX}: {end:?}",
            MAX + i + 1
        );
    }
    assert_eq!(
        metric(m, REJECTED),
        OVER as u64,
        "{model}: rejections counted"
    );
    all_still_served(
        &mut conns,
        &format!("{model}: the {MAX} after the rejections"),
    );
    let size = pool_size(&server, model) - usize::from(model == "prefork");
    assert!(
        size <= MAX + 1,
        "{model}: {size} workers for --max-conns {MAX}"
    );
    // One leaves: the next client is served in its place.
    let (mut s, _) = conns.pop().unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut s, 0).unwrap_or_else(|e| panic!("{model}: {e}"));
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    let served = loop {
        let mut c = connect(server.addr());
        if ping(&mut c, b"in its place").is_ok() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(served, "{model}: no client served after one of {MAX} left");
}

#[test]
fn prefork_max_conns_ten_serves_exactly_ten_and_turns_the_rest_away() {
    max_conns_ten("prefork");
}

#[test]
fn prethread_max_conns_ten_serves_exactly_ten_and_turns_the_rest_away() {
    max_conns_ten("prethread");
}

/// After 200 clients leave, the pool retires its idle extras gradually,
/// back into `--max-spare` within 60 s; ten clients kept open all along are
/// never dropped by a retiring worker.
fn shrinks_back_into_the_band(model: &str) {
    let _heavy = crate::util::heavy();
    const KEPT: usize = 10;
    const MAX_SPARE: usize = 4;
    let server = Server::start(
        model,
        &["--workers", "2", "--min-spare", "2", "--max-spare", "4"],
    );
    let (mut conns, _) =
        open_and_serve(server.addr(), AT_ONCE, seed_of(&format!("{model}/shrink")));
    let mut kept = conns.split_off(AT_ONCE - KEPT);
    for (mut s, _) in conns {
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_to_eof(&mut s, 0);
    }
    let left = Instant::now();
    let mut sizes = vec![(Duration::ZERO, pool_size(&server, model))];
    let band = KEPT + 2..=KEPT + MAX_SPARE;
    // Bounded by SHRINK_LIMIT, sampled every 500 ms.
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let size = pool_size(&server, model);
        if sizes.last().is_some_and(|&(_, s)| s != size) {
            sizes.push((left.elapsed(), size));
        }
        if band.contains(&size) || left.elapsed() > SHRINK_LIMIT {
            break;
        }
    }
    let took = left.elapsed();
    let summary: Vec<String> = sizes
        .iter()
        .map(|(t, s)| format!("{:.1}s:{s}", t.as_secs_f64()))
        .collect();
    eprintln!("{model}: pool after the load: {}", summary.join(" "));
    assert!(
        band.contains(&sizes.last().unwrap().1),
        "{model}: pool not back in {band:?} within {SHRINK_LIMIT:?}: {summary:?}"
    );
    // Gradually: a second later it had not yet lost half its extras.
    let early = sizes
        .iter()
        .take_while(|&&(t, _)| t <= Duration::from_millis(1000))
        .last()
        .map_or(0, |&(_, s)| s);
    assert!(
        early > AT_ONCE / 2,
        "{model}: the pool dropped to {early} within a second: {summary:?}"
    );
    eprintln!("{model}: back in the band after {took:?}");
    all_still_served(
        &mut kept,
        &format!("{model}: the {KEPT} kept through the shrink"),
    );
    // And it stays there: no thrash.
    std::thread::sleep(Duration::from_secs(3));
    let size = pool_size(&server, model);
    assert!(band.contains(&size), "{model}: pool of {size} 3 s later");
}

#[test]
fn prefork_shrinks_back_into_the_idle_band_after_the_load() {
    shrinks_back_into_the_band("prefork");
}

#[test]
fn prethread_shrinks_back_into_the_idle_band_after_the_load() {
    shrinks_back_into_the_band("prethread");
}

/// 500 connections in bursts of 100, with pauses in which the pool
/// retires workers: every exited worker is reaped.
#[test]
fn prefork_leaves_no_zombie_after_growth_and_shrink_churn() {
    let _heavy = crate::util::heavy();
    const BURSTS: usize = 5;
    const BURST: usize = 100;
    let mut server = Server::start("prefork", &["--max-spare", "4"]);
    let mut sizes = Vec::new();
    for b in 0..BURSTS {
        let (conns, _) = open_and_serve(server.addr(), BURST, seed_of(&format!("churn/{b}")));
        sizes.push(pool_size(&server, "prefork"));
        drop(conns);
        // Long enough for some to retire, short of a full shrink.
        std::thread::sleep(Duration::from_secs(3));
        sizes.push(pool_size(&server, "prefork"));
        let z = server.wait_no_zombies(Duration::from_secs(3));
        assert!(
            z.is_empty(),
            "zombies after burst {b}: {z:?} (sizes {sizes:?})"
        );
    }
    eprintln!("prefork: pool after each burst and pause: {sizes:?}");
    assert!(
        sizes.windows(2).any(|w| w[1] < w[0]),
        "the pool never shrank: {sizes:?}"
    );
    let z = server.wait_no_zombies(Duration::from_secs(3));
    assert!(z.is_empty(), "zombies at the end: {z:?}");
    let seed = seed_of("churn/after");
    util::round_trip(server.addr(), &Rng::new(seed).bytes(4 * KIB), seed)
        .unwrap_or_else(|e| panic!("after the churn: {e}"));
    server.assert_running("after the churn");
}

/// SIGTERM on a grown pool: new connects are refused at once, every client
/// in the middle of a message gets the rest of its echo and a FIN, and the
/// server exits 0.
fn sigterm_drains_a_grown_pool(model: &str) {
    let _heavy = crate::util::heavy();
    const IN_FLIGHT: usize = 50;
    let mut server = Server::start(model, &["--drain-timeout", "20"]);
    let addr = server.addr();
    let (mut conns, _) = open_and_serve(addr, IN_FLIGHT, seed_of(&format!("{model}/drain")));
    server.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{model}: still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rng = Rng::new(seed_of(&format!("{model}/drain/tail")));
    for (i, (s, _)) in conns.iter_mut().enumerate() {
        let tail = rng.bytes(16 * KIB);
        s.write_all(&tail)
            .unwrap_or_else(|e| panic!("{model}: client {i}: writing after SIGTERM: {e}"));
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_to_eof(s, tail.len())
            .unwrap_or_else(|e| panic!("{model}: client {i} after SIGTERM: {e}"));
        compare("tail", &tail, &got).unwrap_or_else(|e| panic!("{model}: client {i}: {e}"));
    }
    drop(conns);
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{model}: exit after the drain: {status:?}"
    );
}

#[test]
fn prefork_sigterm_drains_a_grown_pool() {
    sigterm_drains_a_grown_pool("prefork");
}

#[test]
fn prethread_sigterm_drains_a_grown_pool() {
    sigterm_drains_a_grown_pool("prethread");
}

/// Sockets a process holds: the worker serving a client holds one more.
fn socket_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `--max-conns 2`: kill the worker serving one client with SIGKILL, three
/// times. Each time the dead worker is reaped and replaced, and its slot
/// given back: two clients are then served at once and a third is turned
/// away (a leaked slot would turn away the second).
#[test]
fn prefork_worker_killed_mid_connection_is_replaced_and_its_slot_reused() {
    // At most 3 workers: two to serve, one to turn the third client away.
    const FULL: usize = 3;
    let server = Server::start("prefork", &["--workers", "2", "--max-conns", "2"]);
    let full = |what: &str, round: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = children(server.pid());
            if now.len() == FULL {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {what}: workers {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for round in 0..3 {
        let mut other = connect(server.addr());
        ping(&mut other, b"bystander").unwrap_or_else(|e| panic!("round {round}: {e}"));
        // One busy, fewer than --min-spare 2 idle: the pool grows to its cap.
        let workers = full("the pool did not grow to its cap", round);
        let before: Vec<usize> = workers.iter().map(|&w| socket_count(w)).collect();
        let mut conn = connect(server.addr());
        ping(&mut conn, b"who serves me?").unwrap_or_else(|e| panic!("round {round}: {e}"));
        let serving = workers
            .iter()
            .zip(&before)
            .find(|&(&w, &b)| socket_count(w) > b)
            .map(|(&w, _)| w)
            .unwrap_or_else(|| panic!("round {round}: no worker holds the connection"));
        kill(Pid::from_raw(serving), Signal::SIGKILL).unwrap();
        let end = wait_closed(&mut conn, Duration::from_secs(3));
        assert!(
            matches!(end, Closed::Fin | Closed::Reset),
            "round {round}: {end:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = children(server.pid());
            if !now.contains(&serving) && now.len() == FULL {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not replaced: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The bystander never noticed.
        ping(&mut other, b"still here").unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(other);
    }
    // Both slots free: two clients at once, and the third turned away.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut a, mut b) = loop {
        let mut a = connect(server.addr());
        let mut b = connect(server.addr());
        if ping(&mut a, b"first").is_ok() && ping(&mut b, b"second").is_ok() {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "two clients not served at once: a slot leaked"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut c = try_connect(server.addr()).unwrap();
    let _ = c.write_all(b"third");
    let end = wait_closed(&mut c, Duration::from_secs(5));
    assert!(
        matches!(end, Closed::Fin | Closed::Reset),
        "third client: {end:?}"
    );
    ping(&mut a, b"a").unwrap();
    ping(&mut b, b"b").unwrap();
    let z = server.wait_no_zombies(Duration::from_secs(3));
    assert!(z.is_empty(), "zombies: {z:?}");
}

/// A spare band upside down, or a zero spare (the idle worker is also the
/// one that turns clients away), is one line and a non-zero exit.
#[test]
fn a_bad_spare_band_is_a_one_line_error() {
    for (args, says) in [
        (
            &["--min-spare", "9", "--max-spare", "3"][..],
            "--max-spare 3",
        ),
        (&["--min-spare", "0"][..], "at least 1"),
        (&["--max-spare", "-1"][..], "--max-spare"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--model", "prefork"];
        all.extend(args);
        let run = util::assert_refused(&all, Duration::from_secs(10));
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}
