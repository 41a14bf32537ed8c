//! What a server process tree costs, read from `/proc`: CPU time and
//! proportional memory (PSS) of a process and every live descendant; and
//! what the whole machine spent ([`machine_busy_ns`]), so that work a server
//! pushes onto its load generator is not mistaken for a saving.
//!
//! Forking models spread their work over children, some alive, some already
//! reaped, so a figure taken from the server's own line alone would miss
//! most of it. Everything here is read-only and never fails on a process
//! that exits between two reads: it is simply counted as gone.

use std::collections::HashMap;
use std::fs;

use crate::error::{Error, Result};
use crate::sys::proc;

/// Every process's parent, CPU ticks (utime+stime+cutime+cstime) and its
/// own threads' share of them (utime+stime), read in one pass.
type ProcTable = HashMap<i32, (i32, u64, u64)>;

/// Reads every process's parent and CPU ticks from `/proc/*/stat`.
fn scan() -> ProcTable {
    let mut all = HashMap::new();
    for pid in proc::pids() {
        if let Some(stat) = proc::read_stat(pid)
            && let (Some(ticks), Some(own)) = (stat.cpu_ticks, stat.own_ticks)
        {
            all.insert(pid, (stat.ppid, ticks, own));
        }
    }
    all
}

/// The root and all its live descendants, found through parent links.
fn tree(root: i32, all: &ProcTable) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &(ppid, _, _)) in all {
        kids.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    // Each pid enters once (a process has one parent), so this ends.
    while let Some(&pid) = out.get(i) {
        if let Some(k) = kids.get(&pid) {
            out.extend(k);
        }
        i += 1;
    }
    out
}

/// CPU time (ns) of the server `root` and its live descendants.
///
/// `/proc/PID/stat` truncates each process's utime and stime to whole 10 ms
/// ticks, so fifty forked children that each ran 5 ms in a window would add
/// up to nothing, and a threaded server that ran 8 ms in a short window
/// would read 0. So every live process is read on its CPU-time clock
/// (`clock_getcpuclockid`): the scheduler's run time in ns of all its
/// threads, those that exited included, one clock for every sample. The
/// root's cutime+cstime add its reaped children, in ticks (no finer record
/// of them is kept). Where the clock cannot be read, a process falls back to
/// its live threads' `/proc/PID/task/*/schedstat`, then to its ticks. A
/// child reaped between two reads moves from one sum to the other; at worst
/// one child is counted once more or less, negligible against the
/// thousands of requests a window holds.
///
/// Replaced the larger of the root's ticks and its live threads'
/// schedstat, taken per sample: two samples could take different clocks,
/// so a window's difference could mix them, and a thread that exited took
/// its schedstat time with it.
pub(crate) fn tree_cpu_ns(root: i32, clk_tck: f64) -> Result<u64> {
    let all = scan();
    let Some(&(_, root_ticks, own_ticks)) = all.get(&root) else {
        return Err(Error::Measure("the server exited during the run".into()));
    };
    let tick_ns = 1e9 / clk_tck;
    let ticks_ns = |t: u64| (t as f64 * tick_ns) as u64;
    let reaped_ns = ticks_ns(root_ticks.saturating_sub(own_ticks));
    let own_ns = proc::process_cpu_ns(root)
        .or_else(|| task_runtime_ns(root))
        .unwrap_or_else(|| ticks_ns(own_ticks));
    let mut total = own_ns.saturating_add(reaped_ns);
    for pid in tree(root, &all).into_iter().skip(1) {
        total = total.saturating_add(
            proc::process_cpu_ns(pid)
                .or_else(|| task_runtime_ns(pid))
                .unwrap_or_else(|| all.get(&pid).map_or(0, |&(_, t, _)| ticks_ns(t))),
        );
    }
    Ok(total)
}

/// Run time (ns) of every live thread of a process, from the first field of
/// `/proc/PID/task/TID/schedstat`; `None` where the kernel does not keep it.
fn task_runtime_ns(pid: i32) -> Option<u64> {
    let mut total: u64 = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
        let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
        total = total.saturating_add(ns);
    }
    // A kernel without schedstats prints zeros.
    (total > 0).then_some(total)
}

/// PSS (KiB) summed over the server `root` and its live descendants, and
/// how many processes that is. PSS divides each shared page among its
/// sharers, so forked children's shared pages are not counted once per child.
pub(crate) fn tree_pss_kib(root: i32) -> Result<(u64, usize)> {
    let all = scan();
    if !all.contains_key(&root) {
        return Err(Error::Measure("the server exited during the run".into()));
    }
    let pids = tree(root, &all);
    let total = pids
        .iter()
        .map(|&pid| pss_kib(pid).unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    Ok((total, pids.len()))
}

/// The `Pss:` line of `/proc/PID/smaps_rollup`, in KiB.
fn pss_kib(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&text)
}

/// The `Pss:` figure of a `smaps_rollup` text, in KiB.
fn parse_pss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Busy CPU time (ns) of the whole machine, every core summed, from the
/// aggregate `cpu` line of `/proc/stat`.
///
/// On loopback the kernel runs a segment's receive work in whichever process
/// sends it, so a server that makes its peer do more (smaller writes, more
/// wake-ups) can look cheaper in its own `/proc/PID/stat` while the machine
/// pays the same or more. Read at the same edges as the server's figure,
/// this one shows such a shift as no gain. It counts everything that ran,
/// the load generator and any other process included: on a quiet machine
/// that is the server and its load.
pub(crate) fn machine_busy_ns() -> Result<u64> {
    let text = fs::read_to_string("/proc/stat")
        .map_err(|e| Error::Measure(format!("cannot read /proc/stat: {e}")))?;
    let ticks = parse_busy_ticks(&text)
        .ok_or_else(|| Error::Measure("no usable cpu line in /proc/stat".into()))?;
    Ok((ticks as f64 * 1e9 / proc::clock_ticks()) as u64)
}

/// Busy ticks of the aggregate `cpu` line of a `/proc/stat` text: user,
/// nice, system, irq, softirq and steal (fields 1–3 and 6–8). Idle and
/// iowait (4–5) are time no core ran anything; guest and guest_nice (9–10)
/// are already inside user and nice, so adding them would count them twice.
fn parse_busy_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    // Kernels since 2.6.11 print at least eight fields (through steal).
    if fields.len() < 8 {
        return None;
    }
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| fields[i])
            .fold(0u64, u64::saturating_add),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few milliseconds of a server's work show up at their size: less
    /// than one 10 ms tick, which utime+stime alone would round to nothing
    /// or to whole ticks. The server is a shell spinning in a loop,
    /// measured over 3 ms windows. On a busy machine the spinner may not run in a given
    /// window, so windows are taken (at most 2 s of them) until three saw
    /// it run; a figure that is not a whole number of ticks shows the
    /// finer clock.
    #[test]
    fn a_few_milliseconds_of_the_servers_own_threads_are_counted() {
        let mut spin = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let pid = spin.id() as i32;
        let clk = proc::clock_ticks();
        let tick_ns = (1e9 / clk) as u64;
        std::thread::sleep(std::time::Duration::from_millis(20));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut seen = Vec::new();
        while seen.iter().filter(|&&ns| ns > 0).count() < 3 && std::time::Instant::now() < deadline
        {
            let before = tree_cpu_ns(pid, clk).expect("the spinner is alive");
            std::thread::sleep(std::time::Duration::from_millis(3));
            let after = tree_cpu_ns(pid, clk).expect("the spinner is alive");
            seen.push(after.saturating_sub(before));
        }
        let _ = spin.kill();
        let _ = spin.wait();
        assert!(
            seen.iter().any(|&ns| ns > 0 && ns % tick_ns != 0),
            "3 ms windows of a spinning process read as nothing or whole {tick_ns} ns ticks: {seen:?}"
        );
    }

    /// A thread that worked and exited inside the window still counts, at
    /// its size: 5 ms of spinning is half a tick, which ticks would round
    /// away, and a live thread's schedstat no longer holds it.
    #[test]
    fn the_time_of_a_thread_that_exited_is_counted() {
        let me = std::process::id() as i32;
        let clk = proc::clock_ticks();
        let before = tree_cpu_ns(me, clk).expect("this process is alive");
        let spun = std::thread::spawn(|| {
            let t0 = std::time::Instant::now();
            let mut x: u64 = 0;
            // Its own CPU clock, not the wall clock: a busy machine may not
            // run it at once.
            while proc::thread_cpu_ns().unwrap_or(0) < 5_000_000
                && t0.elapsed() < std::time::Duration::from_secs(2)
            {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            proc::thread_cpu_ns().unwrap_or(0)
        })
        .join()
        .expect("the spinner ends");
        let after = tree_cpu_ns(me, clk).expect("this process is alive");
        assert!(
            after.saturating_sub(before) >= spun,
            "a thread that ran {spun} ns and exited added only {} ns",
            after.saturating_sub(before)
        );
    }

    #[test]
    fn machine_busy_ticks_leave_out_idle_iowait_and_guest() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let text = "cpu  100 2 30 5000 40 0 7 1 9 3\ncpu0 50 1 15 2500 20 0 3 0 9 3\nintr 1 2\n";
        assert_eq!(parse_busy_ticks(text), Some(100 + 2 + 30 + 7 + 1));
        // The per-core lines are not the aggregate.
        assert_eq!(parse_busy_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        // A line cut short or with a word in it is not read.
        assert_eq!(parse_busy_ticks("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse_busy_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(parse_busy_ticks(""), None);
    }

    #[test]
    fn this_machine_is_busy_while_it_works() {
        let before = machine_busy_ns().expect("/proc/stat is readable");
        let t0 = std::time::Instant::now();
        let mut x: u64 = 0;
        // 50 ms of spinning: five ticks of this core at least.
        while t0.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = machine_busy_ns().expect("/proc/stat is readable");
        assert!(
            after > before,
            "busy time did not grow over 50 ms of spinning: {before} -> {after} ns"
        );
    }

    #[test]
    fn pss_is_read_from_its_own_line() {
        let text = "Rss:   900 kB\nPss:   512 kB\nPss_Anon:  100 kB\n";
        assert_eq!(parse_pss(text), Some(512));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
    }

    #[test]
    fn the_tree_follows_parent_links_only() {
        let all: ProcTable = [
            (1, (0, 0, 0)),
            (10, (1, 0, 0)),
            (11, (10, 0, 0)),
            (20, (1, 0, 0)),
        ]
        .into_iter()
        .collect();
        let mut t = tree(10, &all);
        t.sort_unstable();
        assert_eq!(t, vec![10, 11]);
    }

    #[test]
    fn this_process_is_measured() {
        let me = std::process::id() as i32;
        assert!(tree_cpu_ns(me, proc::clock_ticks()).is_ok());
        assert!(tree_pss_kib(me).is_ok_and(|(_, procs)| procs >= 1));
    }
}
