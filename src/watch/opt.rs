//! The flags of `netecho watch` and the limits they are checked against.

use std::time::Duration;

use clap::Args;

use crate::args::{duration_between, parse_duration_nonzero};

/// The port watched when none is given: netecho's own.
pub(crate) const DEFAULT_PORT: u16 = 6666;
/// The shortest interval accepted: below this the polls cost more than the
/// changes they catch.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// The longest interval accepted: slower polls would miss most changes.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Options of `netecho watch`.
#[derive(Debug, Args)]
pub(crate) struct Opt {
    /// TCP port whose sockets to show (local or remote side).
    #[arg(long, short = 'p', default_value_t = DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,

    /// Also show this process and its descendants: state letter, wait
    /// channel, and zombies.
    #[arg(long, value_name = "PID", value_parser = parse_running_pid)]
    pub(crate) pid: Option<i32>,

    /// Stop after this long: seconds, or 500ms, 10s, 1m (default: run until
    /// Ctrl-C/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_nonzero)]
    pub(crate) duration: Option<Duration>,

    /// Time between two reads of the socket table: seconds, or 10ms,
    /// 100ms, 1s; 1ms to 1m (default 100ms).
    #[arg(long, value_name = "DURATION", default_value = "100ms",
          value_parser = duration_between(MIN_INTERVAL, MAX_INTERVAL))]
    pub(crate) interval: Duration,

    /// Where state changes come from: `events` (the kernel's
    /// `sock:inet_sock_set_state` tracepoint, every transition, no CPU
    /// while idle; needs root) or `poll` (the socket table every
    /// `--interval`). Default: events when possible, else poll.
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) mode: Option<Mode>,

    /// Also print the kernel's tcp_info (rtt, cwnd, ...) of each
    /// ESTABLISHED socket on the port when it changes, every `--interval`.
    #[arg(long)]
    pub(crate) info: bool,
}

/// Where `watch` learns of state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Kernel tracepoints through a tracefs instance of netecho's own.
    Events,
    /// Reading the socket table over sock_diag every `--interval`.
    Poll,
}

/// A `--pid`: a positive number naming a process that exists now.
fn parse_running_pid(s: &str) -> std::result::Result<i32, String> {
    let pid: i32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a process id (a whole number from 1)"))?;
    if pid < 1 {
        return Err(format!("'{s}' is not a process id (a whole number from 1)"));
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("no process has pid {pid}"));
    }
    Ok(pid)
}
