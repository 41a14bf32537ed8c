//! SIGHUP: the zero-downtime restart and upgrade (`serve::handover`), per
//! model, on the real binary: a `bench --new-conn` across it sees no
//! error, a 32 MiB transfer in flight across it comes back identical, and a
//! bad executable at the path leaves the old server serving and saying why
//! (and a good one put back at that path is what the next SIGHUP runs).

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::hostile::admitted_from;
use crate::util::{self, BIN, MIB, Rng, Running, Server, compare, netecho, seed_of};

/// How long a handover may take to show in the old server's log.
const HANDOVER_WAIT: Duration = Duration::from_secs(15);
/// How long the old server may take to drain and exit after it.
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// The bench run across the SIGHUP.
const BENCH_SECS: &str = "3";

/// True (after saying SKIPPED) when the model cannot run here.
fn skip(model: &str) -> bool {
    !crate::util::model_runs(model, &format!("handover {model}"))
}

/// The pid in the old server's `handed over … pid=N` line, once it is
/// logged (up to [`HANDOVER_WAIT`]); fails the test with the log otherwise.
fn handed_over_to(srv: &Server) -> i32 {
    let mut pid = None;
    util::eventually(HANDOVER_WAIT, || {
        pid = srv
            .stderr_text()
            .lines()
            .find(|l| l.contains("handed over"))
            .and_then(|l| l.split("pid=").nth(1))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_else(|| {
        panic!(
            "{}: no handover within {HANDOVER_WAIT:?}; stderr:\n{}",
            srv.model,
            srv.stderr_text()
        )
    })
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    util::state(pid).is_some_and(|s| s != 'Z')
}

/// After a handover: the old server exits 0 once drained, the new one
/// serves on the same address.
fn old_exits_new_serves(srv: &mut Server, new_pid: i32) {
    let status = srv.wait_exit(EXIT_WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{}: the old server did not exit 0 after the handover ({status:?}); stderr:\n{}",
        srv.model,
        srv.stderr_text()
    );
    assert!(
        alive(new_pid),
        "{}: the new server {new_pid} is gone",
        srv.model
    );
    util::round_trip(srv.addr(), b"served by the new process", 1)
        .unwrap_or_else(|e| panic!("{}: after the handover: {e}", srv.model));
    // The new process has no server of its own to drop it: the test's
    // process group kill in `Server::drop` gets it, but say so early.
    let _ = kill(Pid::from_raw(new_pid), Signal::SIGTERM);
}

fn bench_across_sighup_sees_no_error(model: &str) {
    if skip(model) {
        return;
    }
    let _heavy = util::heavy();
    let mut srv = Server::start(model, &["--workers", "2"]);
    let addr = srv.addr().to_string();
    let bench = Running::spawn(
        netecho(&[
            "bench",
            &addr,
            "--new-conn",
            "-c",
            "4",
            "-d",
            BENCH_SECS,
            // A new connection every half millisecond keeps connections
            // arriving all through the handover; unpaced, the eight models'
            // runs would leave over 100,000 TIME-WAIT sockets, fill the
            // kernel's table (tcp_max_tw_buckets) and change what the lab
            // and watch tests running beside them see.
            "--rate",
            "2000",
            "--warmup",
            "0",
            "--json",
        ]),
        None,
    );
    let sent_at = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    let handed_at = sent_at.elapsed();
    // The switch must have happened inside the bench's run. Asked of the
    // bench itself, not of a clock: starting the new process takes over a
    // second on a busy machine, and a bound on it (2.5 s of the 3 s run)
    // failed there while the run still had connections to make.
    let bench_running =
        std::fs::read_to_string(format!("/proc/{}/stat", bench.pid())).is_ok_and(|stat| {
            // The state follows the command name's closing parenthesis.
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
    let run = bench.wait_exit(Duration::from_secs(30));
    assert!(
        bench_running,
        "{model}: the handover took until {handed_at:?}, after the bench run ended"
    );
    assert!(
        run.success(),
        "{model}: bench failed: {}\nserver stderr:\n{}",
        run.stderr,
        srv.stderr_text()
    );
    let v: serde_json::Value = serde_json::from_str(run.stdout_str().trim())
        .unwrap_or_else(|e| panic!("bench JSON: {e}: {}", run.stdout_str()));
    assert_eq!(
        v["errors"].as_f64(),
        Some(0.0),
        "{model}: errors across the SIGHUP: {v}\nbench stderr:\n{}\nserver stderr:\n{}",
        run.stderr,
        srv.stderr_text()
    );
    assert_eq!(v["mismatches"].as_f64(), Some(0.0), "{model}: {v}");
    assert!(v["requests"].as_f64().unwrap_or(0.0) > 50.0, "{model}: {v}");
    old_exits_new_serves(&mut srv, new_pid);
}

fn transfer_in_flight_crosses_sighup(model: &str) {
    if skip(model) {
        return;
    }
    let mut srv = Server::start(model, &["--workers", "2"]);
    let payload = Rng::new(seed_of("handover 32 MiB")).bytes(32 * MIB);
    let mut conn = util::connect(srv.addr());
    let mut writer = conn.try_clone().unwrap();
    let back = std::thread::scope(|s| {
        let w = s.spawn(|| -> Result<(), String> {
            let (first, rest) = payload.split_at(8 * MIB);
            writer.write_all(first).map_err(|e| format!("write: {e}"))?;
            // Mid-transfer: hand over, and go on only once the old process
            // has stopped accepting and drains this connection.
            srv.signal(Signal::SIGHUP);
            handed_over_to(&srv);
            for chunk in rest.chunks(256 * 1024) {
                writer.write_all(chunk).map_err(|e| format!("write: {e}"))?;
            }
            writer
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("half-close: {e}"))
        });
        let got = util::read_to_eof(&mut conn, payload.len());
        let wrote = w.join().unwrap();
        wrote.and(got)
    });
    let back = back.unwrap_or_else(|e| panic!("{model}: {e}; stderr:\n{}", srv.stderr_text()));
    compare("32 MiB across the SIGHUP", &payload, &back).unwrap_or_else(|e| panic!("{model}: {e}"));
    let new_pid = handed_over_to(&srv);
    old_exits_new_serves(&mut srv, new_pid);
}

/// A scratch directory holding a copy of the binary, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(model: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("netecho-handover-{model}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Scratch(dir);
        s.put_binary();
        s
    }

    fn exe(&self) -> PathBuf {
        self.0.join("netecho")
    }

    /// Writes `contents` as a new file renamed over the path (a new inode,
    /// as an upgrade installs one), with `mode`.
    fn replace(&self, contents: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.0.join("netecho.new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, self.exe()).unwrap();
    }

    fn put_binary(&self) {
        self.replace(&std::fs::read(BIN).unwrap(), 0o755);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SIGHUP, then waits for the `handover failed` line number `nth` (from
/// 1) and returns it.
fn failed_handover(srv: &Server, nth: usize) -> String {
    srv.signal(Signal::SIGHUP);
    let mut line = None;
    util::eventually(HANDOVER_WAIT, || {
        line = srv
            .stderr_text()
            .lines()
            .filter(|l| l.contains("handover failed"))
            .nth(nth - 1)
            .map(str::to_string);
        line.is_some()
    });
    line.unwrap_or_else(|| {
        panic!(
            "{}: no `handover failed` line #{nth}; stderr:\n{}",
            srv.model,
            srv.stderr_text()
        )
    })
}

fn bad_executable_leaves_the_old_server_serving(model: &str) {
    if skip(model) {
        return;
    }
    let scratch = Scratch::new(model);
    let mut srv = Server::start_exe(&scratch.exe(), model, &["--workers", "2"]);
    let check = |srv: &mut Server, when: &str| {
        srv.assert_running(when);
        util::round_trip(srv.addr(), when.as_bytes(), 2)
            .unwrap_or_else(|e| panic!("{model}: {when}: {e}"));
    };
    // A build that exits at once.
    scratch.replace(b"#!/bin/sh\nexit 1\n", 0o755);
    let why = failed_handover(&srv, 1);
    assert!(
        why.contains("exited before it was ready (exit status 1)"),
        "{why}"
    );
    check(&mut srv, "after a build that exits 1");
    // A file that cannot be run at all.
    scratch.replace(b"not a program\n", 0o644);
    let why = failed_handover(&srv, 2);
    assert!(
        why.contains("cannot run") && why.contains(&*scratch.exe().to_string_lossy()),
        "{why}"
    );
    check(&mut srv, "after a file that cannot run");
    // A build that rejects the flags (clap exits 2, its error on stderr).
    scratch.replace(
        b"#!/bin/sh\necho 'error: unexpected argument' >&2\nexit 2\n",
        0o755,
    );
    let why = failed_handover(&srv, 3);
    assert!(why.contains("exit status 2"), "{why}");
    check(&mut srv, "after a build that rejects the flags");
    assert_eq!(
        srv.stderr_text().matches("handed over").count(),
        0,
        "{model}: no handover happened"
    );
    // A good build put back at the path: the next SIGHUP runs it.
    scratch.put_binary();
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(
        exe,
        scratch.exe(),
        "the new process runs the file at the path"
    );
    old_exits_new_serves(&mut srv, new_pid);
    drop(scratch);
}

/// After a handover every `/metrics` scrape is the new process's, while
/// the old one still drains a held client: the old sidecar stops taking
/// scrapes off the shared listener (it would report the old counters).
#[test]
fn metrics_after_a_handover_come_from_the_new_process() {
    let mut srv = Server::start(
        "epoll",
        &["--metrics", "127.0.0.1:0", "--drain-timeout", "30"],
    );
    let m = srv.metrics_addr();
    let mut held = util::connect(srv.addr());
    util::ping(&mut held, b"held through the handover").unwrap();
    assert_eq!(util::metric(m, "netecho_connections_active"), 1);
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    // Give the old metrics thread the time it takes to look (200 ms).
    std::thread::sleep(Duration::from_millis(500));
    let old_pid = srv.pid();
    for i in 0..30 {
        assert!(alive(old_pid), "the old server stopped draining early");
        let active = util::metric(m, "netecho_connections_active");
        assert_eq!(
            active, 0,
            "scrape {i} after the handover was answered by the old process \
             (it holds one client)"
        );
    }
    util::ping(&mut held, b"still served by the old process").unwrap();
    drop(held);
    old_exits_new_serves(&mut srv, new_pid);
}

/// `--inspect-listen` crosses a SIGHUP: the new process gets the inspect
/// port's TCP listener and UDP socket (binding them afresh would fail while
/// the old process holds them) and answers on both once the old one exits.
#[test]
fn the_inspect_port_is_handed_over_whole() {
    use std::io::Read;
    let mut srv = Server::start(
        "epoll",
        &["--inspect-listen", "127.0.0.1:0", "--drain-timeout", "1"],
    );
    let at = srv
        .listening(netecho::serve::ListenKind::Inspect, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no inspect line: {:?}", srv.stdout_lines()));
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    let status = srv.wait_exit(EXIT_WAIT);
    assert!(status.is_some_and(|s| s.success()), "{}", srv.stderr_text());
    let mut c = TcpStream::connect(at).expect("the inspect port after the handover");
    c.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let mut report = String::new();
    c.read_to_string(&mut report).unwrap();
    assert!(report.starts_with("{\"proto\":\"tcp\""), "{report:?}");
    assert!(
        report.contains("\"syn\":{"),
        "the new listener keeps SYNs: {report}"
    );
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u.send_to(&[b' '; 300], at).unwrap();
    let mut buf = [0u8; 512];
    let n = u.recv(&mut buf).expect("a UDP report after the handover");
    assert!(
        buf[..n].starts_with(b"{\"proto\":\"udp\""),
        "{:?}",
        &buf[..n]
    );
    assert!(n <= 300);
    let _ = kill(Pid::from_raw(new_pid), Signal::SIGTERM);
}

/// The old process's clients count toward the new one's limits: with
/// `--max-conns 3` filled by idle clients, after a SIGHUP the new process
/// refuses the next client until an old one leaves, admits one in its
/// place, and takes all three places once the old process is gone.
/// (Before, the limits restarted from zero: the new process admitted three
/// more while the old one drained its three.)
fn limits_count_the_clients_the_old_process_drains(model: &str) {
    if skip(model) {
        return;
    }
    let lo = Ipv4Addr::LOCALHOST;
    let mut srv = Server::start(
        model,
        &[
            "--max-conns",
            "3",
            "--workers",
            "1",
            "--metrics",
            "127.0.0.1:0",
            "--drain-timeout",
            "60",
        ],
    );
    let (addr, m) = (srv.addr(), srv.metrics_addr());
    let admit = || admitted_from(lo, addr);
    let mut old: Vec<TcpStream> = (0..3)
        .map(|i| admit().unwrap_or_else(|| panic!("{model}: client {i} refused before the SIGHUP")))
        .collect();
    assert!(
        admit().is_none(),
        "{model}: a 4th client admitted under --max-conns 3"
    );
    assert_eq!(
        util::metric(m, "netecho_connections_active"),
        3,
        "{model}: old process"
    );
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    // The old metrics thread stops answering within 200 ms.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        admit().is_none(),
        "{model}: the new process admitted a client while the old one drains 3 under --max-conns 3"
    );
    let page = util::scrape(m);
    let read = |name| util::sample(&page, name);
    assert_eq!(
        read("netecho_connections_draining"),
        Some(3),
        "{model}:\n{page}"
    );
    assert_eq!(
        read("netecho_connections_active"),
        Some(0),
        "{model}:\n{page}"
    );
    assert!(
        read("netecho_connections_rejected_total{reason=\"max_conns\"}") >= Some(1),
        "{model}: the refusal is not counted:\n{page}"
    );
    // One old client leaves: its place is the new process's.
    drop(old.pop());
    let mut new = Vec::new();
    util::eventually(Duration::from_secs(10), || {
        admit().map(|s| new.push(s)).is_some()
    });
    assert_eq!(
        new.len(),
        1,
        "{model}: no place came back after an old client left"
    );
    assert!(
        admit().is_none(),
        "{model}: 2 old + 1 new clients, and a 4th admitted"
    );
    // The others leave; the old process exits; the new one fills up.
    old.clear();
    let status = srv.wait_exit(EXIT_WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{model}: the old server did not exit 0 after its drain ({status:?}); stderr:\n{}",
        srv.stderr_text()
    );
    util::eventually(Duration::from_secs(10), || {
        admit().map(|s| new.push(s)).is_some() && new.len() == 3
    });
    assert_eq!(
        new.len(),
        3,
        "{model}: the places of the old clients did not come back"
    );
    assert!(
        admit().is_none(),
        "{model}: a 4th client admitted by the new process"
    );
    let page = util::scrape(m);
    assert_eq!(
        util::sample(&page, "netecho_connections_draining"),
        Some(0),
        "{page}"
    );
    assert_eq!(
        util::sample(&page, "netecho_connections_active"),
        Some(3),
        "{page}"
    );
    let _ = kill(Pid::from_raw(new_pid), Signal::SIGTERM);
}

#[test]
fn epoll_limits_count_the_clients_the_old_process_drains() {
    limits_count_the_clients_the_old_process_drains("epoll");
}

/// The fork model: the old clients are held by its children, which keep
/// being counted however the old parent fares.
#[test]
fn fork_limits_count_the_clients_the_old_process_drains() {
    limits_count_the_clients_the_old_process_drains("fork");
}

/// A SIGHUP during a drain makes a chain: the third process counts the
/// clients of both older ones, and takes their places as they leave.
#[test]
fn limits_count_every_older_process_of_a_chain() {
    let lo = Ipv4Addr::LOCALHOST;
    let srv = Server::start(
        "epoll",
        &[
            "--max-conns",
            "3",
            "--metrics",
            "127.0.0.1:0",
            "--drain-timeout",
            "60",
        ],
    );
    let (addr, m) = (srv.addr(), srv.metrics_addr());
    let first: Vec<TcpStream> = (0..2)
        .map(|_| admitted_from(lo, addr).expect("admitted by the first process"))
        .collect();
    srv.signal(Signal::SIGHUP);
    let second = handed_over_to(&srv);
    std::thread::sleep(Duration::from_millis(500));
    let held = admitted_from(lo, addr).expect("the second process admits the 3rd client");
    assert!(admitted_from(lo, addr).is_none(), "a 4th client admitted");
    kill(Pid::from_raw(second), Signal::SIGHUP).unwrap();
    // Both processes log to the same stderr: the second `handed over`.
    let mut third = None;
    util::eventually(HANDOVER_WAIT, || {
        third = srv
            .stderr_text()
            .lines()
            .filter(|l| l.contains("handed over"))
            .nth(1)
            .and_then(|l| {
                l.split("pid=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<i32>()
                    .ok()
            });
        third.is_some()
    });
    let third =
        third.unwrap_or_else(|| panic!("no second handover; stderr:\n{}", srv.stderr_text()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        admitted_from(lo, addr).is_none(),
        "the third process admitted a client while the first drains 2 and the second 1"
    );
    assert_eq!(util::metric(m, "netecho_connections_draining"), 3);
    drop(first);
    let mut now = Vec::new();
    util::eventually(Duration::from_secs(10), || {
        admitted_from(lo, addr).map(|s| now.push(s)).is_some() && now.len() == 2
    });
    assert_eq!(now.len(), 2, "the first process's places did not come back");
    assert!(
        admitted_from(lo, addr).is_none(),
        "the second still holds one"
    );
    drop(held);
    for pid in [second, third] {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// `--max-conns-per-ip` across a hand-over, and an old process killed
/// mid-drain: its clients stop counting (nothing it held stays taken).
#[test]
fn per_ip_counts_of_an_old_process_come_back_when_it_is_killed() {
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let mut srv = Server::start(
        "epoll",
        &[
            "--max-conns-per-ip",
            "2",
            "--metrics",
            "127.0.0.1:0",
            "--drain-timeout",
            "60",
        ],
    );
    let (addr, m) = (srv.addr(), srv.metrics_addr());
    let _old: Vec<TcpStream> = (0..2)
        .map(|_| admitted_from(a, addr).expect("admitted before the SIGHUP"))
        .collect();
    srv.signal(Signal::SIGHUP);
    let new_pid = handed_over_to(&srv);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        admitted_from(a, addr).is_none(),
        "127.0.0.1 holds 2 in the old process, limit 2, and the new one admitted a 3rd"
    );
    assert!(
        util::metric(
            m,
            "netecho_connections_rejected_total{reason=\"max_conns_per_ip\"}"
        ) >= 1
    );
    let _other = admitted_from(b, addr).expect("another address is not limited");
    srv.signal(Signal::SIGKILL);
    assert!(
        srv.wait_exit(EXIT_WAIT).is_some(),
        "the old server outlived SIGKILL"
    );
    let mut again = Vec::new();
    util::eventually(Duration::from_secs(10), || {
        admitted_from(a, addr).map(|s| again.push(s)).is_some() && again.len() == 2
    });
    assert_eq!(
        again.len(),
        2,
        "the killed process's per-IP counts still count"
    );
    assert!(admitted_from(a, addr).is_none(), "a 3rd from 127.0.0.1");
    assert_eq!(util::metric(m, "netecho_connections_draining"), 0);
    let _ = kill(Pid::from_raw(new_pid), Signal::SIGTERM);
}

macro_rules! handover_tests {
    ($($model:ident),* $(,)?) => {$(
        mod $model {
            const MODEL: &str = stringify!($model);

            #[test]
            fn bench_new_conn_across_sighup_sees_no_error() {
                super::bench_across_sighup_sees_no_error(MODEL);
            }
            #[test]
            fn a_32_mib_transfer_in_flight_crosses_the_sighup() {
                super::transfer_in_flight_crosses_sighup(MODEL);
            }
            #[test]
            fn a_bad_executable_leaves_the_old_server_serving() {
                super::bad_executable_leaves_the_old_server_serving(MODEL);
            }
        }
    )*};
}

handover_tests!(
    epoll, uring, fork, prefork, tokio, thread, prethread, iterative
);
