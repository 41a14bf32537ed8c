//! Zero-downtime restart and upgrade: on SIGHUP, `netecho serve` starts a
//! new server from the executable at the path it was started from (a newer
//! build there is what runs), with the same arguments, and hands it every
//! listening socket it has; once the new process serves, the old one stops
//! accepting and drains as on SIGTERM. No socket is ever closed for good
//! or re-bound, so no connect is refused: the kernel keeps queueing on the
//! shared sockets while both processes exist, and whatever is queued when
//! the old process stops accepting is the new one's.
//!
//! # The protocol (what the new process is given)
//! - The sockets as systemd would pass them (sd_listen_fds(3)): descriptors
//!   3, 4, … with `LISTEN_FDS` = their number, `LISTEN_PID` = the new
//!   process's pid (written between fork and exec, as a child can only know
//!   its pid then), and `LISTEN_FDNAMES` naming each one's kind (`tcp`,
//!   `udp`, `metrics`, `tls`, `inspect-tcp`, `inspect-udp`): `serve::activation` reads them back.
//! - `NETECHO_READY_FD`: the descriptor right after the sockets, the write
//!   end of a pipe. The new process writes one byte there once its model
//!   serves (after its `listening` lines). The old one waits up to
//!   [`READY_TIMEOUT`]; an exec failure comes back on the same pipe, and an
//!   end of file means the new process exited (a bad build, flags it
//!   rejects). In each case the old server logs why in one line, kills what
//!   it started if it still runs, and serves on.
//! - `NETECHO_DRAINING_FDS`: after the readiness pipe, the counters (a
//!   memfd) and life line of this process and of the older ones still
//!   alive, so that the new process counts the clients they drain toward
//!   its limits (`serve::service::draining`).
//!
//! # The path
//! `/proc/self/exe` names the inode the old process runs, which an upgrade
//! replaces: the path is taken from `argv[0]` at start instead (searched in
//! `PATH` when it has no `/`), its directory made absolute and canonical,
//! its last part kept, so a file renamed over it or a symlink switched to
//! a new release is what the next SIGHUP runs.
//!
//! # After the handover
//! The old process stops accepting without `shutdown(2)` (which would stop
//! the shared socket listening for the new process too): it closes its own
//! copies, and its workers theirs (`serve::supervise::stop_accepting`).
//! Under systemd it tells the manager the new main pid (`MAINPID=`, see
//! `serve::notify`), so `ExecReload=/bin/kill -HUP $MAINPID` works again.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use tracing::{info, warn};

use crate::serve::ctx::Ctx;
use crate::serve::lifecycle::activation::LISTEN_FDS_START;
use crate::serve::lifecycle::notify;
use crate::serve::service::draining;

/// How long the new process may take from fork to serving.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The variable naming the readiness descriptor in the new process.
pub(crate) const READY_FD_VAR: &str = "NETECHO_READY_FD";
/// What a ready process writes on the readiness pipe.
const READY: u8 = b'R';
/// What the forked child writes when exec fails, followed by errno (4
/// bytes, native order).
const EXEC_FAILED: u8 = b'E';
/// How often the wait for readiness looks at the stop counter.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// How long a new process that closed the pipe may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// The environment a handover sets; an inherited copy is dropped.
const OWN_VARS: [&str; 5] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    READY_FD_VAR,
    draining::FDS_VAR,
];

/// What a passed socket is for, as `LISTEN_FDNAMES` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A TCP echo listener.
    Tcp,
    /// A UDP echo socket.
    Udp,
    /// The `/metrics` listener.
    Metrics,
    /// A TLS echo listener.
    Tls,
    /// An inspect port's TCP listener.
    InspectTcp,
    /// An inspect port's UDP socket.
    InspectUdp,
}

impl Kind {
    /// The name in `LISTEN_FDNAMES` (one of `activation::NAMES`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Metrics => "metrics",
            Kind::Tls => "tls",
            Kind::InspectTcp => "inspect-tcp",
            Kind::InspectUdp => "inspect-udp",
        }
    }
}

/// Everything a handover needs, taken at start.
#[derive(Debug)]
struct State {
    /// The executable to run: see "The path" above.
    exe: PathBuf,
    /// The arguments, `argv[0]` included, as this process got them.
    argv: Vec<OsString>,
    /// This process's own copy of every listening socket (close-on-exec),
    /// in the order they are passed.
    sockets: Vec<(Kind, OwnedFd)>,
}

/// Set by [`init`] in `serve::run`, the binary's edge: a server started
/// inside a test process has none, and SIGHUP is not wired there.
static STATE: Mutex<Option<State>> = Mutex::new(None);
/// The readiness pipe from the process that handed over to us, or -1.
static READY_FD: AtomicI32 = AtomicI32::new(-1);
/// True once [`ready`] ran.
static READY_SENT: AtomicBool = AtomicBool::new(false);
/// SIGHUPs dealt with so far.
static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// Why a handover did not happen (the old server serves on).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("no handover was set up for this server")]
    NotSetUp,
    #[error("preparing it: {0}")]
    Setup(#[from] io::Error),
    #[error("a path or argument holds a NUL byte")]
    Nul(#[from] std::ffi::NulError),
    #[error("fork: {0}")]
    Fork(nix::errno::Errno),
    #[error("cannot run {exe}: {source}")]
    Exec { exe: String, source: io::Error },
    #[error("the new process exited before it was ready ({0})")]
    Exited(String),
    #[error("the new process closed its readiness pipe without a word (killed)")]
    Silent,
    #[error("the new process was not ready within {} s (killed)", READY_TIMEOUT.as_secs())]
    Timeout,
    #[error("a stop signal came first (the new process was killed)")]
    Stopped,
}

/// At start, before any socket is kept: records the path and arguments,
/// and takes the readiness pipe if a handover started this process.
/// Returns true in that case (the passed sockets are then our own, not
/// systemd's).
pub(crate) fn init() -> bool {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let exe = argv
        .first()
        .and_then(|a0| own_path(a0).ok())
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_default();
    if let Ok(mut st) = STATE.lock() {
        *st = Some(State {
            exe,
            argv,
            sockets: Vec::new(),
        });
    }
    let fd = std::env::var(READY_FD_VAR).ok();
    // SAFETY: called at start-up, before this program starts any thread.
    unsafe { std::env::remove_var(READY_FD_VAR) };
    let Some(fd) = fd.and_then(|v| v.trim().parse::<RawFd>().ok()) else {
        return false;
    };
    // Only a pipe we inherited: a stray variable must not make us write
    // into some other descriptor.
    // SAFETY: fstat writes into the zeroed struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a closed descriptor gives EBADF.
    let is_pipe = fd > 2
        && unsafe { libc::fstat(fd, &mut st) } == 0
        && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO;
    if !is_pipe {
        warn!("{READY_FD_VAR}={fd} is not an inherited pipe; ignored");
        return false;
    }
    // SAFETY: F_SETFD on a descriptor we own: our own children must not
    // inherit it across exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    READY_FD.store(fd, Ordering::SeqCst);
    true
}

/// `argv[0]` as a path to run again: found in `PATH` if it has no `/`; its
/// directory canonical, its last part as given.
fn own_path(arg0: &std::ffi::OsStr) -> io::Result<PathBuf> {
    let given = Path::new(arg0);
    let found = if arg0.as_bytes().contains(&b'/') {
        given.to_path_buf()
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(given))
            .find(|p| p.is_file())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in PATH"))?
    };
    let name = found
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = match found.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// Keeps a copy of a listening socket to pass on at the next handover.
/// Every socket the server listens on must be kept, or the new process
/// would try to bind it and fail while the old one holds it.
pub(crate) fn keep(kind: Kind, sock: impl AsFd) -> io::Result<()> {
    let copy = sock.as_fd().try_clone_to_owned()?;
    if let Ok(mut st) = STATE.lock()
        && let Some(st) = st.as_mut()
    {
        st.sockets.push((kind, copy));
    }
    Ok(())
}

/// In a freshly forked child (fork, prefork, the sidecar): closes the
/// kept copies, which only the parent hands over. Async-signal-safe: a
/// `try_lock` (one atomic) and `close(2)`; nothing is freed.
pub(crate) fn close_in_child() {
    if let Ok(st) = STATE.try_lock()
        && let Some(st) = st.as_ref()
    {
        for (_, fd) in &st.sockets {
            // SAFETY: our copy of the descriptor, never used again in this
            // process (the child `_exit`s without dropping the state).
            unsafe { libc::close(fd.as_raw_fd()) };
        }
    }
}

/// The `listening` lines, held until every worker runs: printed by
/// [`ready`], so that a script which reads one can connect at once, and a
/// server that fails to start its workers prints none.
static LISTENING: Mutex<Option<String>> = Mutex::new(None);

/// Holds `lines` (the `listening` lines, each ending in a newline) for
/// [`ready`] to print.
pub(crate) fn announce_when_ready(lines: String) {
    *LISTENING.lock().unwrap_or_else(|p| p.into_inner()) = Some(lines);
}

/// Called by every model once it serves, its workers all started: prints
/// the `listening` lines, then tells the process that handed over (its
/// readiness pipe), or else systemd (`READY=1`), once.
pub(crate) fn ready() {
    if READY_SENT.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(lines) = LISTENING.lock().unwrap_or_else(|p| p.into_inner()).take() {
        use std::io::Write;
        let mut out = io::stdout().lock();
        // A closed stdout must not stop a server: the lines are for scripts.
        let _ = out.write_all(lines.as_bytes());
        let _ = out.flush();
    }
    let fd = READY_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the pipe taken in `init`, owned by nothing else.
        let pipe = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // If the old process is gone, nobody waits: nothing to do.
        let _ = nix::unistd::write(&pipe, &[READY]);
    } else {
        notify::send("READY=1");
    }
}

/// Called by each model's supervising loop whenever it wakes: if a SIGHUP
/// came since the last look, tries a handover; when the new process
/// serves, stops this one as on SIGTERM, listeners left open
/// ([`crate::serve::lifecycle::shutdown::Shutdown::stop_for_handover`]).
pub(crate) fn on_wake(ctx: &Ctx) {
    let asked = ctx.shutdown.reloads();
    if HANDLED.swap(asked, Ordering::SeqCst) == asked || ctx.shutdown.stops() > 0 {
        return;
    }
    info!("SIGHUP: starting a new server to hand the sockets to");
    match start(ctx) {
        Ok(pid) => {
            info!(
                pid = pid.as_raw(),
                "handed over: the new process serves; this one stops accepting and drains"
            );
            notify::send(&format!("MAINPID={pid}"));
            // Our copies go; the models close theirs as they stop.
            if let Ok(mut st) = STATE.lock()
                && let Some(st) = st.as_mut()
            {
                st.sockets.clear();
            }
            ctx.stats.handed_over.store(true, Ordering::SeqCst);
            ctx.shutdown.stop_for_handover();
        }
        Err(why) => warn!("handover failed, still serving: {why}"),
    }
}

/// Forks and execs the new server and waits until it is ready.
fn start(ctx: &Ctx) -> Result<Pid, Failed> {
    let guard = STATE.lock().map_err(|_| Failed::NotSetUp)?;
    let st = guard.as_ref().ok_or(Failed::NotSetUp)?;
    let n = st.sockets.len();
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let exe = CString::new(st.exe.as_os_str().as_bytes())?;
    let argv = st
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&str> = st.sockets.iter().map(|(k, _)| k.name()).collect();
    let mut env = std::env::vars_os()
        .filter(|(k, _)| !OWN_VARS.iter().any(|own| k.as_bytes() == own.as_bytes()))
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            CString::new(kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    env.push(CString::new(format!("LISTEN_FDS={n}"))?);
    env.push(CString::new(format!("LISTEN_FDNAMES={}", names.join(":")))?);
    let ready_fd = LISTEN_FDS_START + n as RawFd;
    env.push(CString::new(format!("{READY_FD_VAR}={ready_fd}"))?);
    // The counters and life lines go after the readiness pipe, in pairs.
    let held = ctx.draining.to_pass();
    let at = |i: usize| ready_fd + 1 + i as RawFd;
    let pairs: Vec<String> = (0..held.len())
        .map(|i| format!("{}:{}", at(2 * i), at(2 * i + 1)))
        .collect();
    env.push(CString::new(format!(
        "{}={}",
        draining::FDS_VAR,
        pairs.join(",")
    ))?);
    // LISTEN_PID's digits are written by the child into this buffer.
    let mut pid_var = [0u8; 32];
    pid_var[..PID_PREFIX.len()].copy_from_slice(PID_PREFIX);
    let pid_var_ptr = pid_var.as_mut_ptr();
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    envp.push(pid_var_ptr.cast_const().cast());
    envp.push(std::ptr::null());
    let mut argvp: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argvp.push(std::ptr::null());
    let srcs: Vec<RawFd> = st
        .sockets
        .iter()
        .map(|(_, fd)| fd.as_raw_fd())
        .chain(std::iter::once(wr.as_raw_fd()))
        .chain(held.iter().flat_map(|&(m, l)| [m, l]))
        .collect();
    let mut tmps: Vec<RawFd> = vec![-1; srcs.len()];
    let tmps_ptr = tmps.as_mut_ptr();
    // SAFETY: the child runs `exec_child` only: async-signal-safe calls on
    // memory prepared above, then exec or `_exit`. That holds whatever
    // threads this process has.
    match unsafe { fork() }.map_err(Failed::Fork)? {
        ForkResult::Child => {
            // SAFETY: every pointer points into the vectors and buffers
            // above, alive in the child's copy of memory.
            unsafe {
                exec_child(
                    exe.as_ptr(),
                    argvp.as_ptr(),
                    envp.as_ptr(),
                    &srcs,
                    n,
                    tmps_ptr,
                    pid_var_ptr,
                )
            }
        }
        ForkResult::Parent { child } => {
            drop(guard);
            drop(wr);
            let r = wait_ready(&rd, child, ctx);
            if let Err(Failed::Exec { source, .. }) = r {
                return Err(Failed::Exec {
                    exe: exe.to_string_lossy().into_owned(),
                    source,
                });
            }
            r.map(|()| child)
        }
    }
}

/// `LISTEN_PID=` as the child's environment holds it.
const PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// The child between fork and exec: moves the sockets to 3…, the
/// readiness pipe after them (`srcs[report_at]`) and the draining
/// descriptors after it, closes every other descriptor, writes its pid
/// into `LISTEN_PID=`, unblocks signals and execs. Only async-signal-safe
/// calls (fcntl, dup2, close_range, getpid, sigprocmask, execve, write,
/// `_exit`); any failure is reported on the pipe and ends the child.
///
/// # Safety
/// Only in a forked child, with `tmps` writable for `srcs.len()` entries
/// and `pid_var` for 32 bytes starting with [`PID_PREFIX`].
unsafe fn exec_child(
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    srcs: &[RawFd],
    report_at: usize,
    tmps: *mut RawFd,
    pid_var: *mut u8,
) -> ! {
    let Some(&original_report) = srcs.get(report_at) else {
        // SAFETY: `_exit` is always safe.
        unsafe { libc::_exit(127) }
    };
    let fail = |fd: RawFd| -> ! {
        // SAFETY: errno is thread-local and readable at any time.
        let errno = unsafe { *libc::__errno_location() };
        let mut msg = [EXEC_FAILED, 0, 0, 0, 0];
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write(2) and `_exit` are async-signal-safe.
        unsafe {
            libc::write(fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    let first_free = LISTEN_FDS_START + srcs.len() as RawFd;
    // SAFETY (the block): the calls named above, on descriptors this
    // process owns and memory the caller vouched for.
    unsafe {
        // Out of the way first, so that no dup2 below overwrites a source.
        for (i, &fd) in srcs.iter().enumerate() {
            let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free);
            if t < 0 {
                fail(original_report);
            }
            *tmps.add(i) = t;
        }
        for i in 0..srcs.len() {
            // dup2 leaves the new descriptor without FD_CLOEXEC: inherited.
            if libc::dup2(*tmps.add(i), LISTEN_FDS_START + i as RawFd) < 0 {
                fail(original_report);
            }
        }
        let report = LISTEN_FDS_START + report_at as RawFd;
        // Nothing else may leak into the new server (a client connection
        // kept open there would never see its FIN). Where close_range is
        // missing, close-on-exec (set on everything else) does it.
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
        let mut digits = [0u8; 10];
        let mut pid = libc::getpid() as u32;
        let mut k = digits.len();
        loop {
            k -= 1;
            digits[k] = b'0' + (pid % 10) as u8;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        let at = pid_var.add(PID_PREFIX.len());
        for (j, d) in digits[k..].iter().enumerate() {
            *at.add(j) = *d;
        }
        *at.add(digits.len() - k) = 0;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(exe, argv, envp);
        fail(report)
    }
}

/// Waits for the new process's word on `rd`: ready, an exec error, or the
/// end of the pipe; kills it on a timeout or a stop signal.
fn wait_ready(rd: &OwnedFd, child: Pid, ctx: &Ctx) -> Result<(), Failed> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::with_capacity(5);
    loop {
        if ctx.shutdown.stops() > 0 {
            kill_and_reap(child);
            return Err(Failed::Stopped);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_and_reap(child);
            return Err(Failed::Timeout);
        }
        let ms = left.min(WAIT_SLICE).as_millis() as u16;
        let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                kill_and_reap(child);
                return Err(Failed::Setup(e.into()));
            }
        }
        let mut buf = [0u8; 8];
        match nix::unistd::read(rd, &mut buf) {
            Ok(0) => return Err(ended(child)),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                kill_and_reap(child);
                return Err(Failed::Setup(e.into()));
            }
        }
        match got.first() {
            Some(&READY) => return Ok(()),
            Some(&EXEC_FAILED) if got.len() >= 5 => {
                let errno = i32::from_ne_bytes([got[1], got[2], got[3], got[4]]);
                kill_and_reap(child);
                return Err(Failed::Exec {
                    exe: String::new(),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            Some(&EXEC_FAILED) => {}
            _ => {
                kill_and_reap(child);
                return Err(Failed::Silent);
            }
        }
    }
}

/// The pipe ended without a word: the new process exited (or closed it and
/// runs on, which is no server of ours: killed).
fn ended(child: Pid) -> Failed {
    let until = Instant::now() + EXIT_WAIT;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Failed::Exited(format!("exit status {code}"));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Failed::Exited(format!("killed by {sig}"));
            }
            Ok(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            // Reaped elsewhere, or gone: it is not running.
            Err(_) => return Failed::Exited("status unknown".into()),
            Ok(_) => {
                kill_and_reap(child);
                return Failed::Silent;
            }
        }
    }
}

/// SIGKILLs a new process that will not serve, and reaps it.
fn kill_and_reap(child: Pid) {
    // ESRCH: it exited already; the wait below reaps it.
    let _ = kill(child, Signal::SIGKILL);
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_keeps_its_last_part_and_makes_the_directory_absolute() {
        let p = own_path("./netecho".as_ref()).unwrap();
        assert!(p.is_absolute(), "{p:?}");
        assert_eq!(p.file_name().unwrap(), "netecho");
        assert_eq!(
            p.parent().unwrap(),
            std::env::current_dir().unwrap().canonicalize().unwrap()
        );
        // A bare name is looked up in PATH, as execvp would.
        let sh = own_path("sh".as_ref()).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert!(own_path("no-such-program-netecho".as_ref()).is_err());
    }

    #[test]
    fn kinds_are_named_as_activation_reads_them() {
        let names: Vec<&str> = [
            Kind::Tcp,
            Kind::Udp,
            Kind::Metrics,
            Kind::Tls,
            Kind::InspectTcp,
            Kind::InspectUdp,
        ]
        .iter()
        .map(|k| k.name())
        .collect();
        assert_eq!(names, super::super::activation::NAMES);
    }
}
