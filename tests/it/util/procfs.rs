//! Views of processes in /proc: children, states, threads, memory.

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
pub(super) fn descendants(pid: i32) -> Vec<i32> {
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
pub(super) fn vm_rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
