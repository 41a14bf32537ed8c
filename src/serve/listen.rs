//! socket → bind → listen, and the `listening tcp <addr>` line scripts wait for.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::{BACKLOG, DEFAULT_PORT};
use crate::error::{Error, Result};

/// Binds every address (the default when `addrs` is empty). Listeners are
/// non-blocking: every model polls them.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    if addrs.is_empty() {
        Ok(vec![bind_default()?])
    } else {
        addrs.iter().map(|a| bind(*a)).collect()
    }
}

/// Prints one `listening tcp <addr>` line per socket on stdout and flushes
/// it: scripts and tests wait for these lines to know the server is ready.
pub fn announce(listeners: &[TcpListener]) -> Result<()> {
    let mut out = io::stdout().lock();
    for l in listeners {
        let addr = l.local_addr().map_err(Error::io("reading bound address"))?;
        // A closed stdout must not stop a server: the line is for scripts.
        let _ = writeln!(out, "listening tcp {addr}");
    }
    let _ = out.flush();
    Ok(())
}

/// `[::]:6666` as one dual-stack socket; `0.0.0.0:6666` where the kernel has
/// no IPv6.
fn bind_default() -> Result<TcpListener> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, DEFAULT_PORT));
    match bind(v6) {
        Err(Error::Bind { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
            ) =>
        {
            tracing::info!("IPv6 unavailable ({source}); listening on IPv4 only");
            bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)))
        }
        r => r,
    }
}

/// Creates, binds and listens on one socket. An unspecified IPv6 address
/// (`[::]`) is made dual-stack (IPV6_V6ONLY off) so IPv4 clients share it.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let fail = |source: io::Error| match source.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::AddrInUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::BindPermission(addr),
        _ => Error::Bind { addr, source },
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // SO_REUSEADDR lets a restarted server bind while old connections sit in
    // TIME-WAIT; it does not allow two listeners on one port.
    sock.set_reuse_address(true).map_err(fail)?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        sock.set_only_v6(false).map_err(fail)?;
    }
    sock.bind(&addr.into()).map_err(fail)?;
    sock.listen(BACKLOG).map_err(fail)?;
    sock.set_nonblocking(true).map_err(fail)?;
    Ok(sock.into())
}
