//! What `/proc` says about a process: one parser of `/proc/PID/stat`, the
//! process list, command names, wait channels, and the unit of CPU times;
//! and the running kernel's release.
//!
//! Everything here is read-only and returns `None` (or a placeholder) for a
//! process that exits between two reads: a race every caller expects.

use std::fs;
use std::io;

/// The time of `clock` in ns (`clock_gettime`). On a CPU-time clock it is
/// the scheduler's own count, to the nanosecond, where `/proc` ticks are
/// 10 ms.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// CPU time (ns) of the calling thread.
pub(crate) fn thread_cpu_ns() -> io::Result<u64> {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time (ns) of every thread of process `pid`, living or exited
/// (`clock_getcpuclockid`); `None` if it is gone or the clock cannot be
/// read.
pub(crate) fn process_cpu_ns(pid: i32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id; the call only
    // writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    clock_ns(clock).ok()
}

/// The running kernel's `(major, minor)` release, from
/// `/proc/sys/kernel/osrelease`; `None` if it cannot be read or parsed.
pub(crate) fn kernel_release() -> Option<(u32, u32)> {
    parse_release(&fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

/// `(major, minor)` of a release as `uname -r` prints it (`6.18.44-fc-v1045`,
/// `6.1.0-26-amd64`, `5.15.0`).
pub(crate) fn parse_release(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The fields of one `/proc/PID/stat` line that netecho reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The command name (field 2, without its parentheses).
    pub(crate) comm: String,
    /// R running, S sleeping, D disk sleep, Z zombie, T stopped... (field 3).
    pub(crate) state: char,
    /// The parent's pid (field 4).
    pub(crate) ppid: i32,
    /// utime+stime+cutime+cstime (fields 14–17), in [`clock_ticks`];
    /// `None` if the line stops before them or one does not parse.
    pub(crate) cpu_ticks: Option<u64>,
    /// utime+stime alone (fields 14–15): the process's own threads, dead
    /// ones included, without its reaped children.
    pub(crate) own_ticks: Option<u64>,
}

/// Parses one `/proc/PID/stat` line. The command name is in parentheses and
/// may itself hold `)` or spaces, so the fields after it are counted from
/// the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // The rest starts at field 3, so field n is f[n - 3].
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let sum = |ticks: &[&str]| {
        ticks
            .iter()
            .map(|v| v.parse::<u64>().ok())
            .try_fold(0u64, |sum, v| sum.checked_add(v?))
    };
    let cpu_ticks = f.get(11..15).and_then(sum);
    let own_ticks = f.get(11..13).and_then(sum);
    Some(Stat {
        comm,
        state,
        ppid,
        cpu_ticks,
        own_ticks,
    })
}

/// `/proc/PID/stat`, parsed; `None` if the process is gone.
pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The numeric entries of `/proc`: every process.
pub(crate) fn pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
}

/// A process's command name, `?` if it is gone.
pub(crate) fn comm_of(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The kernel's wait channel: `0` (running, or hidden) becomes `-`.
pub(crate) fn wchan_of(pid: i32) -> String {
    match fs::read_to_string(format!("/proc/{pid}/wchan")) {
        Ok(s) if !s.trim().is_empty() && s.trim() != "0" => s.trim().to_string(),
        _ => "-".into(),
    }
}

/// `/proc` CPU times are in these units per second (`sysconf(_SC_CLK_TCK)`).
pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tck > 0 { tck as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_its_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v1045\n"), Some((6, 18)));
        assert_eq!(parse_release("6.1.0-26-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15"), Some((5, 15)));
        assert_eq!(parse_release("6"), None);
        assert_eq!(parse_release("linux"), None);
        assert_eq!(parse_release(""), None);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0";
        let stat = parse_stat(line).expect("a whole line");
        assert_eq!((stat.ppid, stat.cpu_ticks), (7, Some(11 + 22 + 33 + 44)));
        assert_eq!(stat.own_ticks, Some(11 + 22));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0 1").and_then(|s| s.cpu_ticks), None);
    }

    #[test]
    fn stat_with_a_nasty_command_name() {
        let s = "4242 (we ird) S) Z 17 4242 4242 0 -1 4194560 0 0";
        let stat = parse_stat(s).map(|s| (s.comm, s.state, s.ppid));
        assert_eq!(stat, Some(("we ird) S".into(), 'Z', 17)));
        assert_eq!(parse_stat("4242 (x"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("1 (init) S notanumber"), None);
    }

    #[test]
    fn our_own_stat_is_read() {
        let me = std::process::id() as i32;
        let stat = read_stat(me).expect("we exist");
        assert!(stat.state == 'R' || stat.state == 'S');
        assert!(stat.cpu_ticks.is_some());
        assert!(pids().any(|p| p == me));
    }
}
