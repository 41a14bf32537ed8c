//! `netecho lab` without a scenario: the classic walkthrough of a TCP
//! connection's life, run live on loopback and narrated step by step.
//!
//! It starts a `fork` server (this same executable, `serve --listen
//! 127.0.0.1:0 --model fork`) and a client (`client`), and watches them
//! with the pieces of `watch` (sock_diag socket states, process states and
//! wait channels from `/proc`) and `trace` (an AF_PACKET capture): LISTEN,
//! the three-way handshake, ESTABLISHED, an echoed line, the four-way close
//! and TIME-WAIT, then a zombie made on purpose and the fork server's
//! reaping. Every number printed is what the kernel reported on this run.
//!
//! Without CAP_NET_RAW the capture cannot be opened; the lab then runs
//! everything else and says what it skipped.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use crate::error::{Error, Result};
use crate::serve::{ListenKind, Listening, parse_listening};
use crate::sys::stop;
use crate::trace::Tracer;
use crate::watch::format::{format_addr, format_owners, state_word};
use crate::watch::procs::{self, ProcInfo};
use crate::watch::snapshot::Snapshot;
use crate::watch::state::State;
use crate::watch::watcher::Watcher;

/// How long to wait for the server's `listening` line, the echo, or a
/// process to exit before the lab gives up on that step.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often sockets are polled while a step is watched (as `watch
/// --interval 10ms`).
pub(super) const POLL: Duration = Duration::from_millis(10);
/// How long each step watches after acting, to catch the segments and
/// state changes it caused.
const SETTLE: Duration = Duration::from_millis(400);
/// The line the lab sends through the echo server.
const LINE: &str = "hello, lab";

/// Processes the lab started; killed if the lab ends early, so nothing is
/// left behind.
#[derive(Default)]
struct Kids {
    /// The echo server.
    server: Option<Server>,
    /// The client.
    client: Option<Child>,
}

impl Drop for Kids {
    fn drop(&mut self) {
        // The client first, then the server (its own drop).
        if let Some(c) = self.client.as_mut()
            && let Ok(None) = c.try_wait()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `netecho serve` a lab scenario started, killed and reaped when
/// dropped (if it has not exited already).
pub(super) struct Server(pub(super) Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Server {
    /// Spawns `cmd` (this program's `serve`, with whatever arguments and
    /// namespace the scenario gives it) with its stdout piped here, and
    /// waits up to [`START_TIMEOUT`] for its `listening KIND` line, skipping
    /// the lines of other kinds before it. Returns the server, what that
    /// line says, and the line.
    pub(super) fn start(mut cmd: Command, kind: ListenKind) -> Result<(Server, Listening, String)> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut server = Server(cmd.spawn().map_err(Error::io("starting the server"))?);
        let out = server
            .0
            .stdout
            .as_mut()
            .ok_or_else(|| Error::Lab("no pipe from the server".into()))?;
        // Each listening line comes once; a server has a handful at most.
        for _ in 0..MAX_LISTENING_LINES {
            let Some(line) = read_line(out, START_TIMEOUT) else {
                break;
            };
            if let Some(l) = parse_listening(&line).filter(|l| l.kind == kind) {
                return Ok((server, l, line.trim_end().to_string()));
            }
        }
        Err(Error::Lab("the server did not say it was listening".into()))
    }
}

/// The most lines [`Server::start`] reads before the one it waits for.
const MAX_LISTENING_LINES: usize = 8;
/// How long [`Server::start`] waits for each line: a server in a fresh
/// network namespace on a busy machine may take a while.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the walkthrough.
pub(super) fn run() -> Result<()> {
    stop::install().map_err(Error::io("installing the SIGINT/SIGTERM handler"))?;
    let exe = std::env::current_exe().map_err(Error::io("finding this executable"))?;
    let mut kids = Kids::default();
    let mut skipped: Vec<&str> = Vec::new();

    step(
        1,
        "a fork server starts",
        "The server is this program run as `serve --listen 127.0.0.1:0 --model fork`: \
         it asks for port 0 so the kernel picks a free port, then calls listen().",
    );
    let mut cmd = Command::new(&exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--model", "fork"])
        .env("NETECHO_LOG", "warn");
    let (server, listening, line) = Server::start(cmd, ListenKind::Tcp)?;
    let server_pid = server.0.id() as i32;
    kids.server = Some(server);
    let port = listening.addr.port();
    say(&format!("server pid {server_pid} says: {line}"));

    let mut watcher = Watcher::new(port, Some(server_pid))?;
    let mut tracer = match Tracer::open("lo", port, false) {
        Ok(t) => Some(t),
        Err(e @ Error::NeedCapNetRaw(_)) => {
            say(&format!("capture skipped: {e}"));
            skipped.push("the packet capture (needs CAP_NET_RAW)");
            None
        }
        Err(e) => return Err(e),
    };

    step(
        2,
        "LISTEN: a socket waiting, a process asleep",
        "The kernel now answers SYNs on this port by itself (the listen queue); the \
         server process does not run until a connection is ready. Its wait channel is \
         the kernel function it sleeps in: a server blocked in accept() shows \
         inet_csk_accept; this fork server waits in poll() on its listening socket (and \
         its signal pipe), so the kernel shows a poll function. On a LISTEN socket the \
         two queue figures mean something else than on a connection: rq is the number \
         of connections the kernel finished and that wait for accept(), and wq is the \
         listen backlog, the most that queue may hold (listen()'s argument, capped by \
         net.core.somaxconn): wq=1024 is a limit, not data waiting to be sent.",
    );
    let snap = watcher.sockets()?;
    show_sockets(&mut watcher, &snap);
    show_proc(server_pid, "server");
    // Prime the watcher so later steps print only changes.
    watcher.poll()?;
    if stop::requested() {
        return Ok(());
    }

    step(
        3,
        "the three-way handshake",
        "A client connects. Its SYN carries its initial sequence number J, the server's \
         SYN-ACK carries K and acknowledges J+1, the client's ACK acknowledges K+1. Each \
         SYN uses up one sequence number. (On loopback the handshake takes microseconds, \
         so `watch` usually sees the sockets already ESTABLISHED.) In `watch`'s event \
         mode the client's ESTABLISHED comes before the server's SYN-RECEIVED, against \
         the textbook order: until the client's ACK arrives, Linux keeps the half-open \
         connection as a small request socket in the listener's SYN queue, which is not \
         a socket with a state of its own; the client is ESTABLISHED as soon as the \
         SYN-ACK arrives, and only the ACK it sends makes the server create the \
         connection's socket, which passes SYN-RECEIVED and ESTABLISHED at once.",
    );
    let mut client = Command::new(&exe)
        .args(["client", &format!("127.0.0.1:{port}")])
        .env("NETECHO_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(Error::io("starting the client"))?;
    let client_pid = client.id() as i32;
    let client_in = client.stdin.take();
    let client_out = client.stdout.take();
    kids.client = Some(client);
    let (Some(mut client_in), Some(mut client_out)) = (client_in, client_out) else {
        return Err(Error::Lab("no pipes to the client".into()));
    };
    say(&format!(
        "started `netecho client 127.0.0.1:{port}` as pid {client_pid}"
    ));
    observe(&mut watcher, tracer.as_mut(), SETTLE)?;

    step(
        4,
        "ESTABLISHED: both ends, and what each process waits in",
        "There are now two sockets for one connection, one per end, each seen from its \
         own side. The fork server accepted and forked a child that owns the server \
         end; the parent went back to waiting for the next client.",
    );
    let snap = watcher.sockets()?;
    show_sockets(&mut watcher, &snap);
    show_proc(client_pid, "client");
    for (pid, info) in procs::tree(server_pid) {
        let role = if pid == server_pid {
            "server parent"
        } else {
            "server child, one per connection"
        };
        show_info(pid, &info, role);
    }
    if stop::requested() {
        return Ok(());
    }

    step(
        5,
        "one line echoed",
        "The client writes a line; the segment carries it (PSH,ACK, len = its bytes) and \
         the server's ACK acknowledges J+1+len. The server child writes the same bytes \
         back and the client acknowledges them.",
    );
    client_in
        .write_all(format!("{LINE}\n").as_bytes())
        .map_err(Error::io("writing to the client"))?;
    let echo = read_line(&mut client_out, STEP_TIMEOUT)
        .ok_or_else(|| Error::Lab("the echo did not come back".into()))?;
    say(&format!(
        "sent {LINE:?}, the client printed {:?}",
        echo.trim_end()
    ));
    observe(&mut watcher, tracer.as_mut(), SETTLE)?;

    step(
        6,
        "the four-way close, and TIME-WAIT",
        "The client's input ends, so it shuts down its sending side: FIN (1/4). The server \
         acknowledges it (2/4), reads end-of-file, closes: its own FIN (3/4), which the \
         client acknowledges (4/4). The end that sent the first FIN, here the client, \
         keeps the connection in TIME-WAIT so a lost final ACK can be resent and stray \
         old segments die out; no process owns it any more. RFC 793 asks for 2*MSL; \
         Linux uses a fixed 60 s (TCP_TIMEWAIT_LEN, compiled into the kernel: no \
         sysctl changes it). \
         `watch` polls every 10 ms, so states that last microseconds on loopback \
         (FIN-WAIT-1, CLOSE-WAIT, LAST-ACK) show only in the trace.",
    );
    drop(client_in);
    let status = wait_exit(kids.client.as_mut(), STEP_TIMEOUT)?;
    say(&format!("client pid {client_pid} exited: {status}"));
    observe(&mut watcher, tracer.as_mut(), SETTLE)?;
    let snap = watcher.sockets()?;
    show_sockets(&mut watcher, &snap);
    let tw = snap.values().filter(|s| s.state == State::TimeWait).count();
    say(&format!(
        "{tw} socket(s) in TIME-WAIT on this port right now"
    ));
    if stop::requested() {
        return Ok(());
    }

    step(
        7,
        "a zombie: a child that exits and is not reaped",
        "A process that exits keeps its entry in the process table, with its exit \
         status, until its parent calls wait(); until then it is a zombie (state Z). \
         Here the lab forks a child that exits at once, and does not wait for it.",
    );
    say(&format!("the lab is pid {}", std::process::id()));
    zombie_demo()?;

    step(
        8,
        "the fork server reaps its children",
        "The server's child for our connection exited when the client left. The server \
         catches SIGCHLD and calls waitpid(), so the child is gone from /proc: no zombie \
         piles up however many clients come and go.",
    );
    let tree = procs::tree(server_pid);
    for (pid, info) in &tree {
        show_info(
            *pid,
            info,
            if *pid == server_pid {
                "server parent"
            } else {
                "server child"
            },
        );
    }
    let zombies = tree.values().filter(|i| i.state == 'Z').count();
    say(&format!(
        "{} process(es) under the server, {zombies} zombie(s)",
        tree.len()
    ));

    step(
        9,
        "the end",
        "SIGTERM asks the server to stop: it closes its listening socket and exits 0.",
    );
    if let Some(s) = kids.server.as_mut() {
        let _ = kill(Pid::from_raw(server_pid), Signal::SIGTERM);
        let status = wait_exit(Some(&mut s.0), STEP_TIMEOUT)?;
        say(&format!("server pid {server_pid} exited: {status}"));
    }
    observe(&mut watcher, tracer.as_mut(), Duration::from_millis(100))?;
    if skipped.is_empty() {
        say("every step ran.");
    } else {
        say(&format!("skipped: {}", skipped.join(", ")));
    }
    Ok(())
}

/// Prints a step header and its explanation.
pub(super) fn step(n: u32, title: &str, text: &str) {
    emit("");
    emit(&format!("== step {n}: {title} =="));
    for l in wrap(text, 78) {
        emit(&l);
    }
}

/// Prints one line of live data, indented under the explanation.
pub(super) fn say(s: &str) {
    emit(&format!("  {s}"));
}

/// Writes one line to stdout. A closed stdout (`netecho lab | head`) ends
/// the walkthrough quietly, as Ctrl-C would, instead of failing mid-step.
pub(super) fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        stop::request();
    }
}

/// Greedy word wrap.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for w in text.split_whitespace() {
        let cur = lines.last_mut().map_or(0, |l| l.len());
        if cur > 0 && cur + 1 + w.len() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(w);
        }
    }
    lines
}

/// Each socket on the port: endpoints, state, queues, owners.
fn show_sockets(w: &mut Watcher, snap: &Snapshot) {
    if snap.is_empty() {
        say("socket: none on this port");
    }
    for (k, s) in snap {
        let owners = w.owners_of(s.inode);
        say(&format!(
            "socket {} -> {} {} {} rq={} wq={}",
            format_addr(k.local),
            format_addr(k.remote),
            s.state,
            format_owners(&owners),
            s.rq,
            s.wq
        ));
    }
}

/// A process's state and wait channel, and each thread's if it has more.
fn show_proc(pid: i32, role: &str) {
    match procs::proc_info(pid) {
        Some(info) => show_info(pid, &info, role),
        None => say(&format!("process {pid} ({role}): gone")),
    }
}

fn show_info(pid: i32, info: &ProcInfo, role: &str) {
    say(&format!(
        "process {pid} {} [{role}]: state {} ({}), wait channel {}",
        info.comm,
        info.state,
        state_word(info.state),
        info.wchan
    ));
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    let tids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|t| *t != pid)
        .take(16)
        .collect();
    for tid in tids {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let wchan = match read("wchan") {
            w if w.is_empty() || w == "0" => "-".to_string(),
            w => w,
        };
        say(&format!(
            "  thread {tid} {}: wait channel {wchan}",
            read("comm")
        ));
    }
}

/// Polls the socket table every [`POLL`] and the capture in between for
/// `how_long`, printing what each sees as it comes.
pub(super) fn observe(
    w: &mut Watcher,
    mut t: Option<&mut Tracer>,
    how_long: Duration,
) -> Result<()> {
    let end = Instant::now() + how_long;
    while Instant::now() < end && !stop::requested() {
        if let Some(t) = t.as_deref_mut() {
            for l in t.pump(POLL, usize::MAX)? {
                emit(&format!("  trace {l}"));
            }
        } else {
            std::thread::sleep(POLL);
        }
        for l in w.poll()? {
            emit(&format!("  watch {l}"));
        }
    }
    Ok(())
}

/// Makes a zombie and shows it, then reaps it and shows it gone.
/// Returns whether the child was seen as a zombie and then gone.
pub(super) fn zombie_demo() -> Result<(bool, bool)> {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe, so
    // it is sound even if another thread held a lock at the fork.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: ends the child at once, running none of the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(Error::io("forking the zombie demo")(e.into())),
    };
    let pid = child.as_raw();
    say(&format!("forked child {pid}; it calls _exit(0) at once"));
    // Wait (bounded) until the kernel shows it as a zombie.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut info = procs::proc_info(pid);
    while info.as_ref().is_some_and(|i| i.state != 'Z') && Instant::now() < deadline {
        std::thread::sleep(POLL);
        info = procs::proc_info(pid);
    }
    std::thread::sleep(Duration::from_millis(200));
    let info = procs::proc_info(pid);
    let was_zombie = info.as_ref().is_some_and(|i| i.state == 'Z');
    match info {
        Some(i) if i.state == 'Z' => say(&format!(
            "200 ms later, /proc/{pid}/stat says state {}: ZOMBIE (exited, parent {} has not reaped it)",
            i.state, i.ppid
        )),
        Some(i) => say(&format!("/proc/{pid}/stat says state {}", i.state)),
        None => say(&format!("/proc/{pid} is already gone")),
    }
    let status = waitpid(child, None).map_err(|e| Error::io("reaping the zombie")(e.into()))?;
    let how = match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => format!("it exited with status {code}"),
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => {
            format!("it was killed by {}", sig.as_str())
        }
        _ => "it changed state".to_string(),
    };
    say(&format!("waitpid({pid}) reaped it: {how}"));
    let after = procs::proc_info(pid);
    match &after {
        None => say(&format!("/proc/{pid} is gone: reaped, nothing left")),
        Some(i) => say(&format!("/proc/{pid} still there, state {}", i.state)),
    }
    Ok((was_zombie, after.is_none()))
}

/// Reads one line from a child's stdout, waiting at most `timeout`.
pub(super) fn read_line(from: &mut ChildStdout, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return None,
            Ok(_) => {}
            // A signal: check the time and wait again.
            Err(_) => continue,
        }
        // One byte at a time: nothing past the newline is taken from the
        // pipe, so the next call sees it.
        match from.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => {
                line.push(b'\n');
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(_) => line.push(byte[0]),
            Err(_) => return None,
        }
    }
    None
}

/// Waits (bounded) for a child to exit; kills it past the timeout.
pub(super) fn wait_exit(child: Option<&mut Child>, timeout: Duration) -> Result<String> {
    let Some(child) = child else {
        return Ok("not running".into());
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st.to_string()),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(Error::io("waiting for a child")(e)),
        }
    }
    let _ = child.kill();
    let st = child.wait().map_err(Error::io("waiting for a child"))?;
    Ok(format!("{st} (killed after {}s)", timeout.as_secs()))
}

/// Prints the `conclusion:` line every scenario ends with.
pub(crate) fn conclusion(text: &str) -> Result<()> {
    emit("");
    emit(&format!("conclusion: {text}"));
    Ok(())
}

/// Prints one line of evidence (indented).
pub(crate) fn evidence(s: &str) {
    say(s);
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_words_whole() {
        let w = wrap("aaa bbb ccc ddd", 7);
        assert_eq!(w, ["aaa bbb", "ccc ddd"]);
        assert_eq!(wrap("", 10), [""]);
    }
}
