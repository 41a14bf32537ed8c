//! Refusing a system call (seccomp) to test fallbacks, a network
//! namespace of a test's own, and whether a tool is installed.

use std::io::{self};

/// For a `pre_exec` closure: from now on, `syscall` fails with `errno` in
/// this process (only when its first argument is `arg0`, if given), as a
/// container's seccomp profile or a kernel without the feature would make
/// it. Async-signal-safe: two prctl(2) calls on a program on the stack.
pub fn refuse_syscall(syscall: libc::c_long, arg0: Option<u32>, errno: i32) -> io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    /// Offsets in `struct seccomp_data`: the syscall number, then the low
    /// half of the first argument.
    const NR: u32 = 0;
    const ARG0_LOW: u32 = 16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        op(LD_W_ABS, 0, 0, NR),
        // Not this syscall: jump to "allow".
        op(JEQ_K, 0, 3, syscall as u32),
        op(LD_W_ABS, 0, 0, ARG0_LOW),
        // Without `arg0`, both branches fall through to "refuse".
        match arg0 {
            Some(a) => op(JEQ_K, 0, 1, a),
            None => op(JEQ_K, 0, 0, 0),
        },
        op(RET_K, 0, 0, RET_ERRNO | (errno as u32 & 0xffff)),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with valid arguments; the kernel copies the program
    // before returning, so its stack lifetime is enough.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const libc::sock_fprog) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// For a `pre_exec` closure (root only): this process moves to a network
/// namespace of its own with its loopback up, so what it sees of TCP (the
/// TIME-WAIT table, the packets on `lo`) is its own, not the rest of the
/// suite's. Async-signal-safe: unshare(2), socket(2), two ioctl(2) calls
/// and close(2) on a request that lives on this stack.
pub fn own_netns_with_loopback() -> io::Result<()> {
    // SAFETY: plain system calls with valid arguments; `req` is a zeroed
    // ifreq that outlives both ioctls, and the descriptor is closed on every
    // path after it is opened.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, &b) in req.ifr_name.iter_mut().zip(b"lo") {
            *d = b as libc::c_char;
        }
        let up = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        } else {
            false
        };
        let err = io::Error::last_os_error();
        libc::close(fd);
        if up { Ok(()) } else { Err(err) }
    }
}

/// For a `pre_exec` closure, after [`own_netns_with_loopback`]: every TCP
/// socket of this namespace starts with small, fixed buffers (`tcp_rmem`
/// and `tcp_wmem` are per namespace), so a few dozen KiB fill the path and
/// a server has echo it cannot deliver. Async-signal-safe: open(2),
/// write(2) and close(2) on static strings.
pub fn small_tcp_buffers() -> io::Result<()> {
    const SIZES: &[u8] = b"4096 8192 8192\n";
    for path in [
        c"/proc/sys/net/ipv4/tcp_rmem",
        c"/proc/sys/net/ipv4/tcp_wmem",
    ] {
        // SAFETY: plain system calls on a NUL-terminated static path and a
        // static buffer; the descriptor is closed on every path after it
        // is opened.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, SIZES.as_ptr().cast(), SIZES.len());
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != SIZES.len() as isize {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Moves the calling thread (only it: a network namespace is per thread)
/// into the network namespace of process `pid`, so the sockets it opens
/// afterwards reach addresses inside it. The namespace goes away with the
/// last process in it; this thread does not keep it, once it ends.
pub fn enter_netns_of(pid: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns(2) on a descriptor that stays open for the call.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `tool` is there to run, for SKIPPED messages. Only whether it
/// starts counts, not its exit status: `ip --version` exits 255 (iproute2
/// wants `-V`), and a check on the status skipped every test that needs it.
pub fn have_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
