//! `watch` in event mode: the I/O around [`super::timeline`]. It waits in
//! `poll(2)` on the instance's `trace_pipe` (no CPU while nothing happens:
//! the kernel wakes it when an event is written), feeds each line to the
//! timeline, and answers the timeline's TIME-WAIT questions from sock_diag.
//!
//! The only timed wake-ups are the end of `--duration`, the expected end
//! of a TIME-WAIT (60 s after it began, then every 250 ms until the socket
//! is gone), and `--info`/`--pid` ticks when those are asked for.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::diag::Diag;
use super::events::{
    RECEIVE_RESET, RETRANSMIT, RETRANSMIT_SYNACK, SEND_RESET, STATE_EVENT, parse_line, split_lines,
};
use super::format::{emit, format_owners, pid_note};
use super::info::InfoWatch;
use super::opt::Opt;
use super::procs::Owners;
use super::snapshot::{Key, Snapshot};
use super::state::State;
use super::timeline::{Step, Timeline};
use super::tracefs::{EventSpec, Instance};
use super::watcher::Watcher;
use crate::error::{Error, Result};
use crate::sys::stop;

/// Linux's TIME-WAIT length (`TCP_TIMEWAIT_LEN`, fixed at 60 s).
const TIME_WAIT: f64 = 60.0;
/// How often a time-wait socket still there at 60 s is looked for again
/// (the kernel's timer wheel fires it a little late).
const TIME_WAIT_RECHECK: f64 = 0.25;
/// A time-wait socket still there this long is no longer followed (a
/// kernel with a different TIME-WAIT length): bounds the re-checks.
const TIME_WAIT_GIVE_UP: f64 = 180.0;
/// Bytes read from the pipe at once.
const READ_BUF: usize = 64 * 1024;

/// The events enabled, each filtered in the kernel to the port where it
/// has port fields.
pub(crate) fn specs(port: u16) -> Vec<EventSpec> {
    let ports = format!("sport == {port} || dport == {port}");
    vec![
        EventSpec {
            name: STATE_EVENT,
            filter: format!("({ports}) && protocol == 6"),
        },
        EventSpec {
            name: RECEIVE_RESET,
            filter: ports.clone(),
        },
        EventSpec {
            name: RETRANSMIT,
            filter: ports.clone(),
        },
        EventSpec {
            name: RETRANSMIT_SYNACK,
            filter: ports,
        },
        // Its addresses are socket addresses the filter language cannot
        // take apart: filtered by the timeline instead. Resets are rare.
        EventSpec {
            name: SEND_RESET,
            filter: String::new(),
        },
    ]
}

/// CLOCK_MONOTONIC in seconds: the clock the instance stamps events with.
pub(crate) fn mono_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// How often an orphaned FIN-WAIT-2 is looked at until its peer's FIN
/// turns it into TIME-WAIT (an event on the peer's side looks sooner).
const FIN_WAIT_2_RECHECK: f64 = 0.1;
/// How soon after an event of the peer's side an orphaned FIN-WAIT-2 is
/// looked at: the peer's FIN reaches it in the same softirq, just after.
const PEER_EVENT_RECHECK: f64 = 0.002;

/// Sockets whose owner is remembered after they leave the table (a
/// CLOSED line still names who held it); past this the memory is dropped.
const MAX_KNOWN_OWNERS: usize = 4096;

/// Who holds the socket of an event: its inode from sock_diag, the
/// process from `/proc`. The tracepoint runs in whatever task the kernel
/// was in (often a softirq on another process's time), so its own task
/// name is not the owner.
struct OwnerNames {
    /// Inode → processes.
    owners: Owners,
    /// This batch's socket table, read at the first event that needs it.
    snap: Option<Snapshot>,
    /// The last owners named per connection, for sockets already gone.
    known: HashMap<Key, String>,
}

impl OwnerNames {
    /// ` (pid 4242 netecho)` for the socket `key`, or empty when no
    /// process holds it (SYN-RECEIVED and TIME-WAIT sockets belong to the
    /// kernel alone) or it is gone before anyone was seen holding it.
    fn of(&mut self, diag: &mut Diag, port: u16, key: Key) -> Result<String> {
        let find =
            |snap: &Option<Snapshot>| snap.as_ref().and_then(|s| s.get(&key)).map(|s| s.inode);
        let mut found = find(&self.snap);
        if found.is_none() {
            // Not in the table as last read (or none read yet): the socket
            // may be newer than that read.
            self.snap = Some(diag.snapshot(port)?);
            found = find(&self.snap);
        }
        let inode = found.unwrap_or(0);
        if inode != 0 {
            self.owners.refresh_for(&[inode]);
            let o = self.owners.of(inode);
            if !o.is_empty() {
                if self.known.len() >= MAX_KNOWN_OWNERS {
                    self.known.clear();
                }
                let name = format!(" {}", format_owners(&o));
                self.known.insert(key, name.clone());
                return Ok(name);
            }
        }
        Ok(self.known.get(&key).cloned().unwrap_or_default())
    }
}

/// A socket the tracepoint said was CLOSED but sock_diag still shows, held
/// by the kernel's small time-wait socket, followed until it leaves the
/// table.
struct Waiting {
    /// The connection.
    key: Key,
    /// Its state in the table: FIN-WAIT-2 (closed by the application
    /// before the peer's FIN came) or TIME-WAIT.
    state: State,
    /// When it entered `state`.
    since: f64,
    /// When to look again.
    due: f64,
}

/// Runs event mode until `--duration`, a signal, a closed stdout or an
/// error; `inst` is removed when this returns, whichever way.
pub(crate) fn run(opt: &Opt, mut inst: Instance) -> Result<()> {
    let start = mono_now();
    let started = Instant::now();
    let mut out = io::stdout().lock();
    let ticks = if opt.info { " and tcp_info" } else { "" };
    let header = format!(
        "watching TCP port {}{} from kernel events{ticks} (tracefs instance {}) (Ctrl-C to stop)",
        opt.port,
        pid_note(opt.pid),
        inst.name()
    );
    if !emit(&mut out, &[header]) {
        return Ok(());
    }
    let mut diag = Diag::open()?;
    let mut timeline = Timeline::new(opt.port, start);
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut procs = match opt.pid {
        Some(_) => Some(Watcher::new(opt.port, opt.pid)?),
        None => None,
    };
    let mut info = opt.info.then(InfoWatch::default);
    let tick = (opt.info || opt.pid.is_some()).then_some(opt.interval.as_secs_f64());
    let mut next_tick = start;
    let end = opt.duration.map(|d| start + d.as_secs_f64());
    let mut pending = String::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut names = OwnerNames {
        owners: Owners::default(),
        snap: None,
        known: HashMap::new(),
    };
    while !stop::requested() {
        let now = mono_now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let mut lines = Vec::new();
        if let Some(t) = tick
            && now >= next_tick
        {
            next_tick = now + t;
            let rel = now - start;
            if let Some(w) = procs.as_mut() {
                lines.extend(w.poll_procs(started.elapsed().as_secs_f64()));
            }
            if let Some(i) = info.as_mut() {
                lines.extend(i.update(rel, &diag.tcp_infos(opt.port)?));
            }
        }
        // Time-waits due: gone from the table, or look again soon.
        if waiting.iter().any(|w| w.due <= now) {
            let snap = diag.snapshot(opt.port)?;
            waiting.retain_mut(|w| {
                if w.due > now {
                    return true;
                }
                match snap.get(&w.key).map(|s| s.state) {
                    Some(State::TimeWait) if w.state == State::FinWait2 => {
                        lines.push(timeline.closed_or_time_wait(w.key, w.state, now, true));
                        *w = Waiting {
                            key: w.key,
                            state: State::TimeWait,
                            since: now,
                            due: now + TIME_WAIT,
                        };
                        true
                    }
                    Some(s) if s == w.state && now - w.since < TIME_WAIT_GIVE_UP => {
                        w.due = now
                            + if s == State::TimeWait {
                                TIME_WAIT_RECHECK
                            } else {
                                FIN_WAIT_2_RECHECK
                            };
                        true
                    }
                    Some(_) => false,
                    None if w.state == State::TimeWait => {
                        lines.push(timeline.time_wait_over(w.key, now));
                        false
                    }
                    None => {
                        lines.push(timeline.closed_or_time_wait(w.key, w.state, now, false));
                        false
                    }
                }
            });
        }
        // A new batch: the socket table is read again when an event needs it.
        names.snap = None;
        loop {
            let n = inst
                .read_available(&mut buf)
                .map_err(Error::io("reading the trace pipe"))?;
            if n == 0 {
                break;
            }
            let chunk = String::from_utf8_lossy(&buf[..n]);
            for line in split_lines(&mut pending, &chunk) {
                let Some(ev) = parse_line(&line) else {
                    continue;
                };
                // The peer's side moved: an orphaned FIN-WAIT-2 facing it
                // is about to get its FIN.
                for w in waiting.iter_mut() {
                    if w.state == State::FinWait2
                        && w.key.local == ev.remote
                        && w.key.remote == ev.local
                    {
                        w.due = w.due.min(mono_now() + PEER_EVENT_RECHECK);
                    }
                }
                let key = Key {
                    local: ev.local,
                    remote: ev.remote,
                };
                for step in timeline.on_event(&ev) {
                    match step {
                        Step::Print(l) => {
                            let who = if ev.local.port() == 0 {
                                String::new()
                            } else {
                                names.of(&mut diag, opt.port, key)?
                            };
                            lines.push(format!("{l}{who}"));
                        }
                        Step::CheckTimeWait { key, left, ts } => {
                            let snap = diag.snapshot(opt.port)?;
                            match snap.get(&key).map(|s| s.state) {
                                Some(State::TimeWait) => {
                                    lines.push(timeline.closed_or_time_wait(key, left, ts, true));
                                    waiting.push(Waiting {
                                        key,
                                        state: State::TimeWait,
                                        since: ts,
                                        due: ts + TIME_WAIT,
                                    });
                                }
                                // Orphaned: the application closed before
                                // the peer's FIN; the time-wait socket
                                // waits for it in FIN-WAIT-2. Nothing to
                                // print until it moves.
                                Some(State::FinWait2) => waiting.push(Waiting {
                                    key,
                                    state: State::FinWait2,
                                    since: ts,
                                    due: mono_now() + FIN_WAIT_2_RECHECK,
                                }),
                                _ => lines.push(timeline.closed_or_time_wait(key, left, ts, false)),
                            }
                        }
                    }
                }
            }
        }
        if !emit(&mut out, &lines) {
            return Ok(());
        }
        out.flush().map_err(Error::io("writing to stdout"))?;
        // Sleep in poll until an event, or the next thing due.
        let now = mono_now();
        let mut wake: Option<f64> = end;
        for due in waiting.iter().map(|w| w.due) {
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
        if tick.is_some() {
            wake = Some(wake.map_or(next_tick, |w| w.min(next_tick)));
        }
        let timeout = match wake {
            None => PollTimeout::NONE,
            Some(w) => {
                let ms = ((w - now).max(0.0) * 1000.0).ceil().min(60_000.0) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let Some(fd) = inst.fd() else { break };
        // Stdout too, for no event: a pipe whose reader went away (`| head`)
        // reports POLLERR, which ends the run instead of waiting for an
        // event to fail writing.
        let stdout = io::stdout();
        let stdout_fd = stdout.as_fd();
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(stdout_fd, PollFlags::empty()),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) => {
                let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
                if fds[1].revents().is_some_and(|r| r.intersects(gone)) {
                    break;
                }
            }
            // Ctrl-C or SIGTERM: the loop condition sees the flag.
            Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::Io {
                    what: "waiting on the trace pipe",
                    source: e.into(),
                });
            }
        }
    }
    // `inst` drops here: pipe closed, events disabled, instance removed.
    Ok(())
}
