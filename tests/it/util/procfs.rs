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

/// The inode of the server's end of the TCP connection whose client end is
/// `client` (`/proc/net/tcp` or `tcp6`: the row whose remote address is
/// the client's local one), if the kernel lists it.
fn server_end_inode(client: &std::net::TcpStream) -> Option<u64> {
    let (local, peer) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    // The table prints a port as four hex digits after the address.
    let (want_local, want_remote) = (
        format!(":{:04X}", peer.port()),
        format!(":{:04X}", local.port()),
    );
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let table = std::fs::read_to_string(table).ok()?;
            table.lines().skip(1).find_map(|l| {
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 9 && f[1].ends_with(&want_local) && f[2].ends_with(&want_remote))
                    .then(|| f[9].parse().ok())
                    .flatten()
            })
        })
}

/// Whether the server's end of `client`'s connection, held by process
/// `pid`, has TCP_NODELAY: its descriptor found by the socket's inode in
/// `/proc/PID/fd`, copied into this process with pidfd_getfd(2) (Linux
/// 5.6+, allowed on a child) and asked with getsockopt. `Err` says why it
/// could not be asked.
pub fn server_end_nodelay(client: &std::net::TcpStream, pid: i32) -> Result<bool, String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let inode = server_end_inode(client).ok_or("the connection is not in /proc/net/tcp")?;
    let want = format!("socket:[{inode}]");
    let fd: i32 = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .ok_or_else(|| format!("process {pid} holds no descriptor on {want}"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; nothing else is touched.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a non-negative result is a descriptor just opened for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that
    // process and flags, and returns a new descriptor or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(format!("pidfd_getfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: as above, a descriptor just installed in this process.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    nix::sys::socket::getsockopt(&copy, nix::sys::socket::sockopt::TcpNoDelay)
        .map_err(|e| format!("getsockopt TCP_NODELAY: {e}"))
}

/// Which of `pids` holds the server's end of `client`'s connection: the
/// one with a descriptor on that very socket. Counting sockets per process
/// instead misleads while a fresh worker still closes what it inherited.
pub fn holder_of(client: &std::net::TcpStream, pids: &[i32]) -> Option<i32> {
    let want = format!("socket:[{}]", server_end_inode(client)?);
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
    })
}
