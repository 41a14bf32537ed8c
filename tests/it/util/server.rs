//! The server process: `netecho serve` on a loopback port, its
//! `listening` lines, signals, and its end.

use netecho::serve::{ListenKind, parse_listening};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

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
