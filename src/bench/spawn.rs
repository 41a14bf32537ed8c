//! Servers under test as child processes: started pinned to one CPU in a
//! process group of their own, found by their `listening tcp ADDR` line,
//! stopped with SIGTERM (SIGKILL to the group if that is not enough).
//!
//! Also the CPU placement both sides need: which CPUs this process may use,
//! and pinning the load generator's thread to its own.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::serve::{ListenKind, parse_listening};

/// A server that has not printed its `listening tcp` line by then has failed.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed;
/// `fork` reaping ten thousand children needs a few seconds.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the stop wait looks at the child.
const STOP_POLL: Duration = Duration::from_millis(10);

/// A server we started, in its own process group.
pub(crate) struct Running {
    child: Child,
    /// Its pid, also its process group id.
    pub(crate) pid: i32,
    /// Where it listens, from its `listening tcp` line.
    pub(crate) addr: SocketAddr,
    /// The last line it wrote on stderr, to explain a failure.
    last_err: Arc<Mutex<String>>,
}

impl Running {
    /// The server's last stderr line as `; its stderr: ...`, or nothing.
    pub(crate) fn stderr_tail(&self) -> String {
        tail_note(&self.last_err)
    }
}

/// Formats the last stderr line kept by the reader thread.
fn tail_note(last: &Mutex<String>) -> String {
    let line = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if line.is_empty() {
        String::new()
    } else {
        format!("; its stderr: {line}")
    }
}

/// Starts `prog args`, pinned to `cpu` when given, and waits for its
/// `listening tcp ADDR` line. The server logs at `warn` (`NETECHO_LOG`), so
/// its stderr holds only what went wrong; the last line is kept.
pub(crate) fn start(prog: &Path, args: &[String], cpu: Option<usize>) -> Result<Running> {
    start_on(prog, args, cpu, ListenKind::Tcp)
}

/// [`start`], the address taken from the first `listening KIND` line
/// (`tls` for a `--tls-listen` server).
pub(crate) fn start_on(
    prog: &Path,
    args: &[String],
    cpu: Option<usize>,
    kind: ListenKind,
) -> Result<Running> {
    let mut cmd = pinned_command(prog, cpu);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NETECHO_LOG", "warn");
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Measure(format!("cannot start {}: {e}", prog.display())))?;
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Measure("server pid out of range".into()));
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group(pid);
        let _ = child.wait();
        return Err(Error::Measure("server output not captured".into()));
    };
    let last_err = Arc::new(Mutex::new(String::new()));
    let keep = Arc::clone(&last_err);
    // Both readers run until the server and all its children have closed
    // the pipe, so the server never blocks on a full one.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if !line.trim().is_empty() {
                *keep.lock().unwrap_or_else(|e| e.into_inner()) = line.trim().to_string();
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(l) = parse_listening(&line)
                && l.kind == kind
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(l.addr);
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(addr) => Ok(Running {
            child,
            pid,
            addr,
            last_err,
        }),
        Err(_) => {
            kill_group(pid);
            let status = child.wait();
            // Give the stderr reader a moment to take the last words.
            thread::sleep(STOP_POLL);
            let why = match status {
                Ok(s) if s.code().is_some() => format!("exited ({s})"),
                _ => format!(
                    "printed no `listening {}` line within {} s",
                    match kind {
                        ListenKind::Tcp => "tcp",
                        ListenKind::Tls => "tls",
                        ListenKind::Udp => "udp",
                        ListenKind::Inspect => "inspect",
                        ListenKind::Metrics => "metrics",
                    },
                    READY_TIMEOUT.as_secs()
                ),
            };
            Err(Error::Measure(format!(
                "the server {why}{}",
                tail_note(&last_err)
            )))
        }
    }
}

/// `prog` as a server under test: pinned to `cpu` when given, killed if
/// this process dies, and leader of a process group of its own. Also how
/// the benchmark starts peers that print no `listening` line.
pub(crate) fn pinned_command(prog: &Path, cpu: Option<usize>) -> Command {
    let mut cmd = Command::new(prog);
    let set = cpu.map(cpu_set);
    // SAFETY: the closure runs between fork and exec. It makes two raw
    // syscalls (prctl, sched_setaffinity) on values built before the fork,
    // and `last_os_error` only reads errno: no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            // A load generator that dies (Ctrl-C on `cargo bench`) must not
            // leave a pinned server behind: it would skew every later run.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(set) = &set {
                let size = std::mem::size_of::<libc::cpu_set_t>();
                if libc::sched_setaffinity(0, size, set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Its own group, so a server that ignores SIGTERM is killed with every
    // child it forked, and nothing else; and a Ctrl-C meant for the bench
    // reaches the bench, which then stops it in order.
    cmd.process_group(0);
    cmd
}

/// SIGTERM, then waits; a server still running after [`STOP_TIMEOUT`] is
/// killed with its group. Returns a note unless it exited 0.
pub(crate) fn stop(mut r: Running) -> Option<String> {
    if let Err(e) = kill(Pid::from_raw(r.pid), Signal::SIGTERM) {
        kill_group(r.pid);
        let _ = r.child.wait();
        return Some(format!("SIGTERM failed: {e}"));
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match r.child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(status)) => return Some(format!("server {status}{}", r.stderr_tail())),
            Ok(None) if Instant::now() < deadline => thread::sleep(STOP_POLL),
            Ok(None) => {
                kill_group(r.pid);
                let _ = r.child.wait();
                return Some(format!(
                    "still running {} s after SIGTERM; killed",
                    STOP_TIMEOUT.as_secs()
                ));
            }
            Err(e) => {
                kill_group(r.pid);
                let _ = r.child.wait();
                return Some(format!("waiting for the server: {e}"));
            }
        }
    }
}

/// SIGKILLs the process group of a server we started and have not reaped
/// (so the group id is still ours).
fn kill_group(pid: i32) {
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

/// A CPU set holding just `cpu`.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu < libc::CPU_SETSIZE as usize {
        // SAFETY: CPU_SET writes one bit inside `set`; `cpu` was just
        // checked to be below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Pins the calling thread (not the process) to one CPU; threads it starts
/// afterwards inherit the pin.
pub(crate) fn pin_current_thread(cpu: usize) -> Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(Error::Io {
            what: "pinning the load generator to its CPU",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The CPUs this process may run on, lowest first (what `nproc` counts).
pub(crate) fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: zeroed is a valid empty set; the kernel fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is writable and `size` is its size.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(Error::Io {
            what: "reading this process's CPU affinity",
            source: io::Error::last_os_error(),
        });
    }
    let max = libc::CPU_SETSIZE as usize;
    // SAFETY: CPU_ISSET only reads a bit below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}
/// An executable named `name` on PATH.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
