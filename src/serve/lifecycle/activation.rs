//! systemd socket activation: when started with `LISTEN_PID` = our pid and
//! `LISTEN_FDS` = N, descriptors 3..3+N are listening sockets systemd bound
//! for us (sd_listen_fds(3)); serve on them instead of binding.
//!
//! `LISTEN_FDNAMES` (colon-separated, one per descriptor) says what each
//! one is for when it is one of [`NAMES`]: `tcp`, `udp`, `metrics`, `tls`,
//! `inspect-tcp` or `inspect-udp`
//! (a handover passes every socket so named, see `serve::handover`; a
//! systemd unit may name its sockets so with `FileDescriptorName=`). Any
//! other name, or none, is sorted by socket type: a stream socket is a TCP
//! echo listener, a datagram socket a UDP one.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag};
use nix::sys::socket::{SockType, getsockopt, sockopt};

use crate::error::{Error, Result};

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
pub(crate) const LISTEN_FDS_START: RawFd = 3;
/// More passed sockets than this is a broken environment, not a setup.
const MAX_PASSED: RawFd = 1024;

/// The names `LISTEN_FDNAMES` may give a socket, as a handover writes them.
pub(crate) const NAMES: [&str; 6] = ["tcp", "udp", "metrics", "tls", "inspect-tcp", "inspect-udp"];

/// Sockets passed by the service manager (or the process handing over),
/// split by kind.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    pub(crate) tcp: Vec<TcpListener>,
    pub(crate) udp: Vec<UdpSocket>,
    /// The `/metrics` listener (named `metrics`).
    pub(crate) metrics: Option<TcpListener>,
    /// TLS echo listeners (named `tls`).
    pub(crate) tls: Vec<TcpListener>,
    /// Inspect ports' listeners (named `inspect-tcp`), in the order of
    /// their UDP sockets (`inspect-udp`).
    pub(crate) inspect_tcp: Vec<TcpListener>,
    pub(crate) inspect_udp: Vec<UdpSocket>,
}

/// Takes the sockets passed with `LISTEN_FDS`, if any were passed to this
/// process. The variables are removed so children do not take them again.
/// A passed descriptor that is neither a listening stream socket nor a
/// datagram socket is an error: serving on it would hang or fail later.
pub(crate) fn take() -> Result<Option<Passed>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: called at start-up, before this program starts any thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let Some(n) = n else { return Ok(None) };
    if !pid_ok {
        return Ok(None);
    }
    let n: RawFd = n.trim().parse().map_err(|_| Error::Activation {
        reason: format!("LISTEN_FDS={n} is not a number"),
    })?;
    let mut passed = Passed::default();
    if !(0..=MAX_PASSED).contains(&n) {
        return Err(Error::Activation {
            reason: format!("LISTEN_FDS={n} is out of range 0-{MAX_PASSED}"),
        });
    }
    let mut names = names.split(':');
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        let name = names.next().filter(|n| NAMES.contains(n)).unwrap_or("");
        // SAFETY: systemd hands these descriptors to us and nothing else in
        // this process owns them; each is wrapped exactly once.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let kind = getsockopt(&owned, sockopt::SockType).map_err(|e| Error::Activation {
            reason: format!("descriptor {fd} is not a socket ({e})"),
        })?;
        // Our own children (fork models) must not inherit them across exec.
        nix::fcntl::fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| Error::io("passed socket")(e.into()))?;
        let wrong = |want: &str| Error::Activation {
            reason: format!("descriptor {fd} is named {name} but is not a {want} socket"),
        };
        match (name, kind) {
            ("udp" | "inspect-udp", SockType::Stream) => return Err(wrong("datagram")),
            ("tcp" | "metrics" | "tls" | "inspect-tcp", SockType::Datagram) => {
                return Err(wrong("stream"));
            }
            _ => {}
        }
        match kind {
            SockType::Stream => {
                let listening = getsockopt(&owned, sockopt::AcceptConn).unwrap_or(false);
                if !listening {
                    return Err(Error::Activation {
                        reason: format!("descriptor {fd} is a stream socket that is not listening"),
                    });
                }
                let l = TcpListener::from(owned);
                match name {
                    // The metrics thread blocks in accept.
                    "metrics" => {
                        l.set_nonblocking(false)
                            .map_err(Error::io("passed socket"))?;
                        passed.metrics = Some(l);
                    }
                    // Set up (blocking, SYNs kept) by `inspect::prepare`.
                    "inspect-tcp" => passed.inspect_tcp.push(l),
                    "tls" => {
                        l.set_nonblocking(true)
                            .map_err(Error::io("passed socket"))?;
                        passed.tls.push(l);
                    }
                    _ => {
                        l.set_nonblocking(true)
                            .map_err(Error::io("passed socket"))?;
                        passed.tcp.push(l);
                    }
                }
            }
            SockType::Datagram => {
                let u = UdpSocket::from(owned);
                // systemd may pass it non-blocking; the UDP loops block.
                u.set_nonblocking(false)
                    .map_err(Error::io("passed socket"))?;
                if name == "inspect-udp" {
                    passed.inspect_udp.push(u);
                } else {
                    passed.udp.push(u);
                }
            }
            other => {
                return Err(Error::Activation {
                    reason: format!("descriptor {fd} has unsupported socket type {other:?}"),
                });
            }
        }
    }
    Ok(Some(passed))
}
