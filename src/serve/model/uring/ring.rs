//! Ring setup and the start-up probe: can io_uring serve on this kernel?

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode};

use super::bufs::Pool;
use super::op::Op;
use super::tuning::{
    BGID, CQ_FACTOR, PROBE_BUF_SIZE, PROBE_BUFS, PROBE_ENTRIES, PROBE_WAIT, RING_ENTRIES, Tuning,
};

/// Checks that io_uring can serve here: the ring can be created (not
/// disabled by sysctl or seccomp), the kernel knows every operation the
/// model uses, and a multishot receive on a provided-buffer ring really
/// works (Linux 6.0+). `Err` carries a one-line reason for the log.
pub fn probe() -> Result<(), String> {
    let mut ring = IoUring::new(PROBE_ENTRIES).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => {
            format!("io_uring_setup refused ({e}): kernel.io_uring_disabled or a seccomp filter")
        }
        Some(libc::ENOSYS) => format!("io_uring_setup unavailable ({e})"),
        _ => format!("io_uring_setup failed: {e}"),
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks timed waits (IORING_FEAT_EXT_ARG, Linux 5.11+)".into());
    }
    let mut ops = Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel::CODE, "async cancel"),
    ];
    if let Some((_, name)) = needed.iter().find(|(code, _)| !ops.is_supported(*code)) {
        return Err(format!("io_uring lacks the {name} operation"));
    }
    let mut pool = Pool::new(
        &ring,
        Tuning {
            bufs: PROBE_BUFS,
            buf_size: PROBE_BUF_SIZE,
        },
    )
    .map_err(|e| format!("io_uring provided-buffer ring refused (Linux 5.19+): {e}"))?;
    let outcome = probe_recv_multi(&mut ring, &mut pool);
    // The ring goes first: the kernel lets go of the buffer ring with it.
    drop(ring);
    match outcome {
        ProbeEnd::Clean(r) => {
            drop(pool);
            r
        }
        ProbeEnd::InFlight(r) => {
            // The receive may still own a buffer: its memory must outlive it.
            std::mem::forget(pool);
            r
        }
    }
}

/// How the multishot-receive probe ended.
enum ProbeEnd {
    /// Nothing is in flight any more.
    Clean(Result<(), String>),
    /// The receive never completed for good: its buffers must be leaked.
    InFlight(Result<(), String>),
}

/// Arms a multishot receive on one end of a socket pair, writes a byte into
/// the other end, expects it back with the MORE flag, then closes the other
/// end and expects the final end-of-file completion.
fn probe_recv_multi(ring: &mut IoUring, pool: &mut Pool) -> ProbeEnd {
    let (ours, mut theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return ProbeEnd::Clean(Err(format!("socketpair for the probe: {e}"))),
    };
    let recv = opcode::RecvMulti::new(Fd(ours.as_raw_fd()), BGID)
        .build()
        .user_data(Op::Recv(0, 0).encode());
    // SAFETY: the receive writes only into the pool's buffers, and the pool
    // outlives the request: the caller leaks it unless the final completion
    // was seen (`ProbeEnd::Clean`).
    if unsafe { ring.submission().push(&recv) }.is_err() {
        return ProbeEnd::Clean(Err("probe ring is full".into()));
    }
    if let Err(e) = ring.submit() {
        return ProbeEnd::Clean(Err(format!("io_uring_enter failed: {e}")));
    }
    if let Err(e) = theirs.write_all(b"?") {
        return ProbeEnd::InFlight(Err(format!("probe write: {e}")));
    }
    let first = match probe_next(ring) {
        Some(c) => c,
        None => return ProbeEnd::InFlight(Err("no completion for a multishot receive".into())),
    };
    if let Some(bid) = cqueue::buffer_select(first.flags()) {
        pool.take(bid, 1, cqueue::buffer_more(first.flags()));
        pool.release(bid);
    }
    if !cqueue::more(first.flags()) {
        let why = match first.result() {
            r if r < 0 => format!("{}", io::Error::from_raw_os_error(-r)),
            r => format!("result {r} without the MORE flag"),
        };
        return ProbeEnd::Clean(Err(format!(
            "multishot receive unsupported (Linux 6.0+): {why}"
        )));
    }
    drop(theirs);
    match probe_next(ring) {
        Some(last) if !cqueue::more(last.flags()) => {
            if let Some(bid) = cqueue::buffer_select(last.flags()) {
                pool.take(bid, 0, cqueue::buffer_more(last.flags()));
                pool.release(bid);
            }
            ProbeEnd::Clean(Ok(()))
        }
        _ => ProbeEnd::InFlight(Err("multishot receive did not end at EOF".into())),
    }
}

/// The probe's next completion, waiting at most [`PROBE_WAIT`].
fn probe_next(ring: &mut IoUring) -> Option<cqueue::Entry> {
    let deadline = Instant::now() + PROBE_WAIT;
    loop {
        if let Some(c) = ring.completion().next() {
            return Some(c);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let ts = Timespec::from(deadline - now);
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(_) => return None,
        }
    }
}

/// Creates a ring: single issuer with deferred task work where the kernel
/// has it (6.1+: completions are processed only when this thread asks,
/// saving interrupts of its work), a plain ring otherwise.
pub(super) fn new_ring() -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_cqsize(RING_ENTRIES * CQ_FACTOR)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES);
    match tuned {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(RING_ENTRIES * CQ_FACTOR)
            .build(RING_ENTRIES),
        r => r,
    }
}
