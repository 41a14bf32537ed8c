//! `netecho watch`: the TCP sockets on one port, live, each state change
//! printed as it happens.
//!
//! # Event mode (the default as root)
//! The kernel's `sock:inet_sock_set_state` tracepoint and the TCP reset
//! and retransmission tracepoints, through a tracefs instance of netecho's
//! own ([`tracefs`]), filtered in the kernel to the port. Lines are parsed
//! by [`events`] (pure), followed by [`timeline`] (pure: each transition
//! with the time spent in the state left, TIME-WAIT confirmed over
//! sock_diag), and driven by [`event_mode`], which sleeps in `poll` on the
//! trace pipe: no CPU while nothing happens, and no state missed.
//!
//! # Poll mode (`--mode poll`, or without root/tracefs)
//! Every `--interval` the kernel's socket table is read over netlink
//! sock_diag ([`diag`]), reduced to the sockets whose local or remote port is
//! `--port`, and compared with the previous read ([`snapshot::diff`]):
//!
//! ```text
//!    0.000 127.0.0.1:6666 -> 0.0.0.0:* (new) => LISTEN (pid 4242 netecho) rq=0 wq=1024
//!   12.345 127.0.0.1:54260 -> 127.0.0.1:6666 ESTABLISHED => FIN-WAIT-1 (pid 4300 netecho) rq=0 wq=0
//! ```
//!
//! A poll can miss a state that lasts less than the interval (SYN-SENT on
//! loopback lasts microseconds): `watch` shows what the table held at each
//! poll, and `trace` shows every segment.
//!
//! `--info` adds each ESTABLISHED socket's `tcp_info` ([`info`]) when it
//! changes, in either mode.
//!
//! With `--pid`, the process tree under that pid is shown too, each
//! process's state letter and wait channel (the kernel function it sleeps
//! in), and a finished child nobody has reaped is flagged `ZOMBIE`.
//!
//! # Cost
//! A poll is two sock_diag dumps (IPv4, IPv6) with the port filter run in
//! the kernel, plus a `/proc` fd scan only when a socket with an unknown
//! inode shows up. The kernel walks its whole TCP established-hash table for
//! each dump, so the cost is set by that table's size, not by the sockets
//! shown. Measured with `watch --interval 10 --duration 10`, 5 connections
//! open, utime+stime from `/proc/PID/stat` (2-core CI box, kernel 6.18):
//! - in a network namespace with a 1024-bucket table: 0.12-0.13 s of CPU
//!   in 10 s, about 1.2% of one core; with `--pid`, 0.37 s (3.7%);
//! - in the host namespace (262144 buckets, ~300 sockets): 2.5 s in 10 s,
//!   25% of one core at 10 ms, so about 2.5% at the default 100 ms.
//!
//! The request leaves out `TCP_BOUND_INACTIVE`: asking for it made the
//! kernel walk the bind hash too and cost 20 times more.

pub(crate) mod diag;
pub(crate) mod event_mode;
pub(crate) mod events;
pub(crate) mod format;
pub(crate) mod info;
pub(crate) mod opt;
pub(crate) mod procs;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod timeline;
pub(crate) mod tracefs;
pub(crate) mod watcher;

use std::io;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sys::stop;
use format::{emit, pid_note};
pub(crate) use opt::{Mode, Opt};
use watcher::Watcher;

/// Runs `netecho watch` until `--duration` ends or a signal stops it.
pub(crate) fn run(opt: Opt) -> Result<()> {
    stop::install().map_err(Error::io("installing the SIGINT/SIGTERM handler"))?;
    let why_poll = match opt.mode {
        Some(Mode::Poll) => "chosen with --mode poll".to_string(),
        _ => match tracefs::ensure_mounted().and_then(|()| {
            for name in tracefs::remove_leftovers() {
                eprintln!(
                    "netecho: removed the tracefs instance {name}, left by a watch that was killed"
                );
            }
            tracefs::Instance::create(&event_mode::specs(opt.port))
        }) {
            Ok(inst) => return event_mode::run(&opt, inst),
            Err(why) if opt.mode == Some(Mode::Events) => {
                return Err(Error::Usage(format!("--mode events: {}", why.0)));
            }
            Err(why) => why.0,
        },
    };
    let mut w = Watcher::new(opt.port, opt.pid)?;
    let mut info = opt.info.then(info::InfoWatch::default);
    let mut out = io::stdout().lock();
    let header = format!(
        "watching TCP port {}{}, polling every {} ms ({why_poll}) (Ctrl-C to stop)",
        opt.port,
        pid_note(opt.pid),
        opt.interval.as_secs_f64() * 1000.0
    );
    if !emit(&mut out, &[header]) {
        return Ok(());
    }
    let interval = opt.interval;
    let deadline = opt.duration.map(|d| w.start + d);
    let mut next = Instant::now();
    while !stop::requested() && deadline.is_none_or(|d| Instant::now() < d) {
        let mut lines = w.poll()?;
        if let Some(info) = info.as_mut() {
            lines.extend(w.info_lines(info)?);
        }
        if !emit(&mut out, &lines) {
            return Ok(());
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (a slow /proc scan): start counting again from now.
            next = now;
        }
    }
    Ok(())
}
