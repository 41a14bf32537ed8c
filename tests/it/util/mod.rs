//! Helpers shared by the integration tests: a real `netecho serve` process on
//! a loopback port, a deterministic byte generator, echo round trips that
//! report the first wrong byte, views of the server's processes in /proc,
//! runs of the binary to completion under a time limit, and (in [`peers`])
//! misbehaving servers written here for netecho's clients to talk to.
//!
//! Every wait here has a deadline: a broken server fails a test, never hangs it.

pub mod peers;
pub mod tls_peers;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netecho::serve::{ListenKind, parse_listening};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_netecho");
/// How long a server may take to print its `listening tcp` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for test clients: loopback answers in microseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of test sockets, so a silent server fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Polling interval of the waits below.
const TICK: Duration = Duration::from_millis(10);
/// How long an exited server's stderr may take to reach its end.
const STDERR_EOF_WAIT: Duration = Duration::from_secs(1);

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Deterministic pseudo-random bytes
// ---------------------------------------------------------------------------

/// xorshift64* (Vigna): fast, deterministic, good enough for payloads and
/// chunk sizes. The same seed always gives the same stream, so a failing run
/// can be replayed and a long payload regenerated instead of stored.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is the one state xorshift cannot leave; mix the seed so that
        // small seeds (1, 2, 3) still start far apart.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        Rng(if s == 0 { 1 } else { s })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }

    /// A write size: mostly mid-sized, sometimes tiny, sometimes larger than
    /// any socket buffer chunk, so both short and long writes are exercised.
    fn chunk_size(&mut self) -> usize {
        match self.range(0, 9) {
            0 => self.range(1, 16),
            1..=4 => self.range(1, 1500),
            5..=7 => self.range(1, 16 * KIB),
            _ => self.range(16 * KIB, 200 * KIB),
        }
    }
}

/// A seed derived from a name (FNV-1a), so each test has its own stream.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

// ---------------------------------------------------------------------------
// Comparing byte streams
// ---------------------------------------------------------------------------

/// `Ok` if `got == want`; otherwise names the first differing offset and
/// the lengths, instead of dumping megabytes.
pub fn compare(what: &str, want: &[u8], got: &[u8]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    let first = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let show = |v: &[u8]| {
        let end = (first + 8).min(v.len());
        format!("{:02x?}", &v[first.min(end)..end])
    };
    Err(format!(
        "{what}: sent {} bytes, got {} back; first difference at offset {first} \
         (want {}, got {})",
        want.len(),
        got.len(),
        show(want),
        show(got),
    ))
}

// ---------------------------------------------------------------------------
// Client sockets
// ---------------------------------------------------------------------------

/// Connects with a timeout and sets read/write timeouts on the stream.
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// [`try_connect`] that fails the test with the address on error.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Upper bound on any single read-to-EOF: far beyond what the largest test
/// payload needs, so only a server that trickles forever can reach it.
const READ_DEADLINE: Duration = Duration::from_secs(120);
/// A server that sends this much more than it was sent is broken; stop
/// reading instead of collecting its garbage forever.
const EXTRA_LIMIT: usize = 64 * KIB;

/// Reads until EOF. A reset or timeout is an error naming how much came first.
pub fn read_to_eof(s: &mut TcpStream, expect_len: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut got = Vec::with_capacity(expect_len);
    let mut buf = vec![0u8; 64 * KIB];
    while Instant::now() < deadline {
        if got.len() > expect_len + EXTRA_LIMIT {
            return Err(format!(
                "the server sent over {} bytes for {expect_len} sent",
                got.len()
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "reading the echo after {} of {expect_len} bytes: {e} ({:?}) \
                     (a reset means the server did not close with a FIN)",
                    got.len(),
                    e.kind()
                ));
            }
        }
    }
    Err(format!(
        "no EOF within {READ_DEADLINE:?}; {} of {expect_len} bytes came",
        got.len()
    ))
}

/// Reads exactly `n` bytes (each read bounded by the socket's timeout).
pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut got = vec![0u8; n];
    let mut off = 0;
    while off < n {
        if Instant::now() >= deadline {
            return Err(format!("only {off} of {n} bytes within {READ_DEADLINE:?}"));
        }
        match s.read(&mut got[off..]) {
            Ok(0) => return Err(format!("EOF after {off} of {n} bytes")),
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {off} of {n} bytes: {e}")),
        }
    }
    Ok(got)
}

/// Writes `payload` in chunk sizes drawn from `rng`.
fn write_chunked(s: &mut TcpStream, payload: &[u8], rng: &mut Rng) -> Result<(), String> {
    let mut off = 0;
    while off < payload.len() {
        let end = (off + rng.chunk_size()).min(payload.len());
        s.write_all(&payload[off..end])
            .map_err(|e| format!("write at offset {off} of {}: {e}", payload.len()))?;
        off = end;
    }
    Ok(())
}

/// The full echo check on an open connection: one thread writes `payload` in
/// random chunks then half-closes, while this thread reads concurrently until
/// the server's FIN; the echo must equal the payload byte for byte.
pub fn echo_check(s: &mut TcpStream, payload: &[u8], seed: u64) -> Result<(), String> {
    let mut writer = s
        .try_clone()
        .map_err(|e| format!("cloning the socket: {e}"))?;
    std::thread::scope(|scope| {
        let w = scope.spawn(move || {
            let mut rng = Rng::new(seed);
            let r = write_chunked(&mut writer, payload, &mut rng);
            // Half-close even after a failed write, so the reader sees an end.
            let _ = writer.shutdown(Shutdown::Write);
            r
        });
        let got = read_to_eof(s, payload.len());
        let wrote = w
            .join()
            .unwrap_or_else(|_| Err("writer thread panicked".into()));
        let got = got?;
        wrote?;
        compare("echo", payload, &got)
    })
}

/// Connects, runs [`echo_check`], closes.
pub fn round_trip(addr: SocketAddr, payload: &[u8], seed: u64) -> Result<(), String> {
    let mut s = try_connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    echo_check(&mut s, payload, seed)
}

/// Writes `msg` and reads exactly its echo back, leaving the connection open.
pub fn ping(s: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let got = read_exact_n(s, msg.len())?;
    compare("ping", msg, &got)
}

/// What a read on a connection the server should have closed showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Read returned 0: the server's FIN.
    Fin,
    /// ECONNRESET (or EPIPE): the server closed with data unread.
    Reset,
    /// Bytes arrived: the connection was served.
    Data(usize),
    /// Nothing happened before the timeout.
    Open,
    /// Any other error.
    Other(String),
}

/// Waits up to `timeout` for the server to close `s`.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Closed {
    if let Err(e) = s.set_read_timeout(Some(timeout)) {
        return Closed::Other(format!("set_read_timeout: {e}"));
    }
    let mut buf = [0u8; 4096];
    let r = loop {
        match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    match r {
        Ok(0) => Closed::Fin,
        Ok(n) => Closed::Data(n),
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Closed::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Closed::Open,
            _ => Closed::Other(e.to_string()),
        },
    }
}

/// True if the loopback has IPv6 (`::1` can be bound).
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `netecho serve`. Dropping it SIGKILLs its whole process group
/// (the server and any child it forked) and reaps it, so no process outlives
/// the test; if the test is failing, the server's stderr is printed.
pub struct Server {
    child: Child,
    /// The bound addresses, in `--listen` order.
    pub addrs: Vec<SocketAddr>,
    pub model: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The thread copying stderr: [`Server::wait_exit`] lets it finish, so
    /// an exited server's last lines are in [`Server::stderr_text`].
    stderr_reader: Option<JoinHandle<()>>,
    stdout: Arc<Stdout>,
    status: Option<ExitStatus>,
}

/// The server's stdout lines so far, collected by a thread that drains the
/// pipe for the life of the server (so it never blocks on a full pipe).
#[derive(Default)]
struct Stdout {
    state: Mutex<Lines>,
    grew: Condvar,
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The pipe reached EOF: no line will come any more.
    eof: bool,
}

impl Server {
    /// `netecho serve --listen 127.0.0.1:0 --model MODEL ARGS...`.
    pub fn start(model: &str, args: &[&str]) -> Server {
        Server::start_on(model, &["127.0.0.1:0"], args)
    }

    /// Like [`Server::start`] with the given `--listen` addresses.
    pub fn start_on(model: &str, listen: &[&str], args: &[&str]) -> Server {
        Server::start_with(model, listen, args, |_| {})
    }

    /// Like [`Server::start_on`], with `setup` adjusting the command before
    /// it is spawned (environment variables, a `pre_exec` hook).
    pub fn start_with(
        model: &str,
        listen: &[&str],
        args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Server {
        Server::try_start_with(model, listen, args, setup).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start`], running the executable at `exe` (a copy of
    /// the binary, which a test may then replace).
    pub fn start_exe(exe: &std::path::Path, model: &str, args: &[&str]) -> Server {
        Server::try_start_exe(exe.as_os_str(), model, &["127.0.0.1:0"], args, |_| {})
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server and waits (up to [`START_TIMEOUT`]) for one
    /// `listening tcp ADDR` line per `--listen` address.
    fn try_start_with(
        model: &str,
        listen: &[&str],
        args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        Server::try_start_exe(BIN.as_ref(), model, listen, args, setup)
    }

    /// [`Server::try_start_with`] running `exe`.
    fn try_start_exe(
        exe: &std::ffi::OsStr,
        model: &str,
        listen: &[&str],
        args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        let mut cmd = Command::new(exe);
        cmd.arg("serve").arg("--model").arg(model);
        for l in listen {
            cmd.arg("--listen").arg(l);
        }
        cmd.args(args)
            .env_remove("NETECHO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so Drop can kill every child it forked.
            .process_group(0);
        setup(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning {exe:?} serve: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|mut err| {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut v) = sink.lock() {
                        v.extend_from_slice(&buf[..n]);
                    }
                }
            })
        });
        let stdout = Arc::new(Stdout::default());
        if let Some(out) = child.stdout.take() {
            let sink = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut st) = sink.state.lock() {
                        st.lines.push(line);
                    }
                    sink.grew.notify_all();
                }
                if let Ok(mut st) = sink.state.lock() {
                    st.eof = true;
                }
                sink.grew.notify_all();
            });
        }
        let mut server = Server {
            child,
            addrs: Vec::new(),
            model: model.to_string(),
            stderr,
            stderr_reader,
            stdout,
            status: None,
        };
        // Other lines (`listening udp`, `listening metrics`...) may come
        // before, between or after the TCP ones; only these are counted.
        let tcp = server.wait_lines(START_TIMEOUT, |lines| {
            let tcp: Vec<SocketAddr> = lines
                .iter()
                .filter_map(|l| parse_listening(l))
                .filter(|l| l.kind == ListenKind::Tcp)
                .map(|l| l.addr)
                .collect();
            (tcp.len() >= listen.len()).then_some(tcp)
        });
        let Some(tcp) = tcp else {
            // It may have exited (a bind error): let stderr arrive.
            let status = server.wait_exit(Duration::from_secs(1));
            return Err(format!(
                "server ({model} {listen:?} {args:?}) did not print {} `listening tcp` \
                 lines within {START_TIMEOUT:?}; stdout {:?}; exit status {status:?}; stderr:\n{}",
                listen.len(),
                server.stdout_lines(),
                server.stderr_text()
            ));
        };
        server.addrs = tcp;
        Ok(server)
    }

    /// Waits up to `timeout` until `found` returns something for the stdout
    /// lines so far; `None` at the timeout or when stdout closed first.
    fn wait_lines<T>(
        &self,
        timeout: Duration,
        found: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut st = self.stdout.state.lock().ok()?;
        loop {
            if let Some(t) = found(&st.lines) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.eof || left.is_zero() {
                return None;
            }
            st = self.stdout.grew.wait_timeout(st, left).ok()?.0;
        }
    }

    /// The first address the server announced for `kind`, waiting up to
    /// `timeout` for its `listening` line.
    pub fn listening(&self, kind: ListenKind, timeout: Duration) -> Option<SocketAddr> {
        self.wait_lines(timeout, |lines| {
            lines
                .iter()
                .filter_map(|l| parse_listening(l))
                .find(|l| l.kind == kind)
                .map(|l| l.addr)
        })
    }

    /// The address of `/metrics` the server printed (`--metrics` given).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.listening(ListenKind::Metrics, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no `listening metrics` line in {:?}", self.stdout_lines()))
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .state
            .lock()
            .map(|st| st.lines.clone())
            .unwrap_or_default()
    }

    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> i32 {
        // A pid always fits in an i32 on Linux (pid_max <= 2^22).
        self.child.id() as i32
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// Sends `sig` to every thread of the server and of its descendants
    /// (a process-directed signal reaches only one thread of a process).
    /// Returns how many threads were signalled.
    pub fn signal_every_thread(&self, sig: Signal) -> usize {
        let pid = self.pid();
        let mut n = 0;
        for p in std::iter::once(pid).chain(descendants(pid)) {
            for tid in threads(p) {
                // SAFETY: tgkill takes plain integers and only sends a
                // signal; a thread that exited meanwhile gives ESRCH.
                let r = unsafe { libc::syscall(libc::SYS_tgkill, p, tid, sig as libc::c_int) };
                if r == 0 {
                    n += 1;
                }
            }
        }
        n
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Waits up to `timeout` for the server to exit; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    self.await_stderr_eof();
                    return Some(s);
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for the server: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(TICK);
        }
    }

    /// Gives the stderr copier up to [`STDERR_EOF_WAIT`] to read the last
    /// lines of an exited server. Bounded: a forked child that outlived
    /// the server may still hold the pipe open.
    fn await_stderr_eof(&mut self) {
        let deadline = Instant::now() + STDERR_EOF_WAIT;
        if let Some(r) = &self.stderr_reader {
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(TICK);
            }
        }
    }

    /// Panics with the server's stderr if it has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(s) = self.wait_exit(Duration::ZERO) {
            panic!(
                "{}: server exited ({s}) {when}; stderr:\n{}",
                self.model,
                self.stderr_text()
            );
        }
    }

    /// Resident memory of the server and all its descendants, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let mut total = vm_rss_kib(pid).unwrap_or(0);
        for p in descendants(pid) {
            total += vm_rss_kib(p).unwrap_or(0);
        }
        total
    }

    /// Children of the server in state Z (exited, not reaped).
    fn zombies(&self) -> Vec<i32> {
        children(self.pid())
            .into_iter()
            .filter(|&p| state(p) == Some('Z'))
            .collect()
    }

    /// Waits up to `timeout` for the server to have no zombie child;
    /// returns those left.
    pub fn wait_no_zombies(&self, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let z = self.zombies();
            if z.is_empty() || Instant::now() >= deadline {
                return z;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(self.pid());
        // The whole group: a forking server's children must not outlive it.
        // ESRCH just means everything already exited.
        let _ = killpg(pgid, Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of the {} server (pid {}) ----\n{}",
                self.model,
                self.pid(),
                self.stderr_text()
            );
        }
    }
}

/// Reads the stdout of a `netecho serve` started by hand up to its first
/// `listening tcp` line and returns that address; fails the test if stdout
/// ends first.
pub fn read_tcp_addr(out: &mut impl BufRead) -> SocketAddr {
    let mut seen = Vec::new();
    for line in out.lines() {
        let line = line.unwrap_or_else(|e| panic!("reading the server's stdout: {e}"));
        if let Some(l) = parse_listening(&line).filter(|l| l.kind == ListenKind::Tcp) {
            return l.addr;
        }
        seen.push(line);
    }
    panic!("the server's stdout ended without a `listening tcp` line: {seen:?}");
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// One process as /proc/PID/stat shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
}

/// Parses `/proc/PID/stat`: the command name is in parentheses and may
/// itself contain spaces or parentheses, so fields are read after the last ')'.
fn read_stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some(Proc { pid, ppid, state })
}

/// Every process visible in /proc.
fn procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Children of `pid`, in any state.
pub fn children(pid: i32) -> Vec<i32> {
    procs()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// The state letter of `pid` (`R`, `S`, `Z`...); `None` once it is gone.
pub fn state(pid: i32) -> Option<char> {
    read_stat(pid).map(|p| p.state)
}

/// Children, grandchildren... of `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let all = procs();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    // Bounded: each round descends one generation; no tree is this deep.
    for _ in 0..16 {
        let next: Vec<i32> = all
            .iter()
            .filter(|p| frontier.contains(&p.ppid))
            .map(|p| p.pid)
            .collect();
        if next.is_empty() {
            break;
        }
        out.extend(&next);
        frontier = next;
    }
    out
}

/// Thread ids of process `pid`.
pub fn threads(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// VmRSS of one process in KiB (`None` for a zombie or a vanished process).
fn vm_rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// Running the binary to completion
// ---------------------------------------------------------------------------

/// What a finished (or killed) run of the binary produced.
#[derive(Debug)]
pub struct Run {
    /// `None` if it had to be killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// True if it exited with status 0 (false if it was killed).
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Asserts the exit code, naming `what` and showing stderr otherwise.
    pub fn assert_code(&self, code: i32, what: &str) {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: exit status {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// stdout as text; fails the test if it is not UTF-8.
    pub fn stdout_str(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap_or_else(|e| panic!("stdout is not UTF-8: {e}"))
    }

    /// The stderr lines, asserting there is exactly one and it is sane.
    pub fn one_line_error(&self, what: &str) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: stderr should be exactly one line, got {}:\n{}",
            lines.len(),
            self.stderr
        );
        let line = lines[0].trim();
        assert!(!line.is_empty(), "{what}: the error line is empty");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{what}: the binary panicked:\n{}",
            self.stderr
        );
        line.to_string()
    }
}

/// A started command whose stdout and stderr are collected by threads (so
/// it never blocks on a full pipe) and whose stdin is fed from a thread.
/// Dropping it before [`Running::wait`] kills its process group.
pub struct Running {
    child: Child,
    /// What was run, for failure messages.
    what: String,
    start: Instant,
    feeder: Option<JoinHandle<()>>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    reaped: bool,
}

/// A thread reading `pipe` to its end.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    })
}

impl Running {
    /// Starts `cmd` in its own process group, without `NETECHO_LOG`.
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Running {
        cmd.env_remove("NETECHO_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let what = format!("{cmd:?}");
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let feeder = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A write error means the process stopped reading; its exit
                // status and stderr tell the test why.
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        Running {
            child,
            what,
            start,
            feeder,
            out,
            err,
            reaped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        // A pid always fits in an i32 on Linux (pid_max <= 2^22).
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// SIGKILLs the process group and reaps the process.
    fn kill_all(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Waits up to `timeout` for the exit, killing the process group at the
    /// timeout, and collects the output.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    break Some(s);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(TICK),
                _ => {
                    self.kill_all();
                    break None;
                }
            }
        };
        let elapsed = self.start.elapsed();
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let stdout = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Run {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
        }
    }

    /// [`Running::wait`] that fails the test if the process had to be killed.
    pub fn wait_exit(self, timeout: Duration) -> Run {
        let what = self.what.clone();
        let run = self.wait(timeout);
        assert!(
            run.status.is_some(),
            "{what} was still running after {timeout:?} and was killed; stderr:\n{}",
            run.stderr
        );
        run
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_all();
        }
    }
}

/// Runs `cmd` with `stdin` fed from a thread, collecting stdout and stderr;
/// fails the test if it was still running after `timeout` (it and its
/// process group are killed then), so the run has an exit status.
pub fn run_to_end(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Run {
    Running::spawn(cmd, stdin).wait_exit(timeout)
}

/// Runs `netecho ARGS...` (failing the test if it runs past `limit`), which
/// must refuse: a non-zero exit and one sane line on stderr that starts with
/// `netecho: `. Returns the run.
pub fn assert_refused(args: &[&str], limit: Duration) -> Run {
    let what = format!("netecho {args:?}");
    let run = run_to_end(netecho(args), None, limit);
    assert!(!run.success(), "{what} succeeded");
    run.one_line_error(&what);
    assert!(
        run.stderr.starts_with("netecho: "),
        "{what}: {}",
        run.stderr
    );
    run
}

/// `netecho ARGS...` as a command.
pub fn netecho(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

// ---------------------------------------------------------------------------
// Refusing a system call (seccomp), to test fallbacks
// ---------------------------------------------------------------------------

/// For a `pre_exec` closure: from now on, `syscall` fails with `errno` in
/// this process (only when its first argument is `arg0`, if given), as a
/// container's seccomp profile or a kernel without the feature would make
/// it. Async-signal-safe: two prctl(2) calls on a program on the stack.
pub fn refuse_syscall(syscall: libc::c_long, arg0: Option<u32>, errno: i32) -> io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    /// Offsets in `struct seccomp_data`: the syscall number, then the low
    /// half of the first argument.
    const NR: u32 = 0;
    const ARG0_LOW: u32 = 16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        op(LD_W_ABS, 0, 0, NR),
        // Not this syscall: jump to "allow".
        op(JEQ_K, 0, 3, syscall as u32),
        op(LD_W_ABS, 0, 0, ARG0_LOW),
        // Without `arg0`, both branches fall through to "refuse".
        match arg0 {
            Some(a) => op(JEQ_K, 0, 1, a),
            None => op(JEQ_K, 0, 0, 0),
        },
        op(RET_K, 0, 0, RET_ERRNO | (errno as u32 & 0xffff)),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with valid arguments; the kernel copies the program
    // before returning, so its stack lifetime is enough.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const libc::sock_fprog) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// For a `pre_exec` closure (root only): this process moves to a network
/// namespace of its own with its loopback up, so what it sees of TCP (the
/// TIME-WAIT table, the packets on `lo`) is its own, not the rest of the
/// suite's. Async-signal-safe: unshare(2), socket(2), two ioctl(2) calls
/// and close(2) on a request that lives on this stack.
pub fn own_netns_with_loopback() -> io::Result<()> {
    // SAFETY: plain system calls with valid arguments; `req` is a zeroed
    // ifreq that outlives both ioctls, and the descriptor is closed on every
    // path after it is opened.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, &b) in req.ifr_name.iter_mut().zip(b"lo") {
            *d = b as libc::c_char;
        }
        let up = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        } else {
            false
        };
        let err = io::Error::last_os_error();
        libc::close(fd);
        if up { Ok(()) } else { Err(err) }
    }
}

/// Serialises heavy load against timing checks: the pool tests hold
/// hundreds of clients and workers on a two-core machine, and a timeout
/// measured meanwhile would measure the scheduler. Heavy tests hold it for
/// writing ([`heavy`]), timing checks for reading ([`timing`]); everything
/// else runs in parallel as before.
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by a test that loads the machine hard.
pub fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Taken by a test whose assertion is about time.
pub fn timing() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until `f()` holds, up to `within`, looking every 20 ms; the last
/// look is after the deadline, so a condition met just then still counts.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Fetches the server's `/metrics` page (answered 200), whole.
pub fn scrape(metrics: SocketAddr) -> String {
    let mut s =
        TcpStream::connect_timeout(&metrics, Duration::from_secs(5)).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).expect("reading /metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "bad answer: {page}");
    page
}

/// The value of the sample line `name` (with its labels) on a metrics
/// page, if it has one.
pub fn sample(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Fetches `/metrics` and returns the value of the sample line `name`;
/// fails the test when there is none.
pub fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let page = scrape(metrics);
    sample(&page, name).unwrap_or_else(|| panic!("no sample {name} in:\n{page}"))
}
