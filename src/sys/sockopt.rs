//! Socket options that neither std nor socket2 wrap and that `serve
//! --inspect-listen` and `ping --inspect` need: the SYN the kernel saved
//! for a listener (`TCP_SAVE_SYN`, `TCP_SAVED_SYN`) and `TCP_INFO`; and how
//! much of what a server sent its peer has not acknowledged (`TIOCOUTQ`),
//! which a fault's reset waits for.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Room for the largest saved SYN: a 60-byte IPv4 header (or 40 of IPv6
/// plus extension headers) and a 60-byte TCP header.
const SAVED_SYN_MAX: usize = 512;

/// Sets an integer option.
fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a valid c_int for the duration of the call and its
    // size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes of `conn`'s send queue its peer has not acknowledged, sent or
/// not yet sent (`TIOCOUTQ`, the same as `SIOCOUTQ`).
pub(crate) fn unacked(conn: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int through the pointer, which points
    // at `n`, alive for the call.
    let rc = unsafe { libc::ioctl(conn.as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
    if rc == 0 {
        Ok(usize::try_from(n).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks a listener's kernel to keep each connection's SYN (IP and TCP
/// headers) for [`saved_syn`]. Needs no privilege (Linux 4.2+).
pub(crate) fn save_syn(listener: BorrowedFd<'_>) -> io::Result<()> {
    set_int(listener, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)
}

/// The SYN that opened an accepted connection, as it arrived. ENOENT when
/// the kernel kept none (SYN cookies answered the handshake, or the
/// listener was not asked).
pub(crate) fn saved_syn(conn: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; SAVED_SYN_MAX];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `len` bytes and outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// The kernel's `TCP_INFO` for a connection.
pub(crate) fn tcp_info(conn: BorrowedFd<'_>) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is valid for writes of `len` bytes; an older kernel
    // writes fewer and leaves the rest zero.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `tcpi_options` bits (include/uapi/linux/tcp.h).
pub(crate) const TCPI_OPT_TIMESTAMPS: u8 = 1;
pub(crate) const TCPI_OPT_SACK: u8 = 2;
pub(crate) const TCPI_OPT_WSCALE: u8 = 4;
pub(crate) const TCPI_OPT_ECN: u8 = 8;

/// The window scales of a `tcp_info`: (what the peer asked for, what we asked for).
pub(crate) fn wscales(info: &libc::tcp_info) -> (u8, u8) {
    let b = info.tcpi_snd_rcv_wscale;
    (b & 0x0f, b >> 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn a_listener_keeps_the_syn_and_tcp_info_names_the_options() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        save_syn(l.as_fd()).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let syn = saved_syn(s.as_fd()).unwrap();
        assert_eq!(syn[0] >> 4, 4, "an IPv4 header first: {syn:?}");
        assert!(syn.len() >= 40, "{} bytes", syn.len());
        let info = tcp_info(s.as_fd()).unwrap();
        assert!(info.tcpi_snd_mss > 0);
        let client = tcp_info(c.as_fd()).unwrap();
        assert_ne!(
            client.tcpi_options & TCPI_OPT_SACK,
            0,
            "loopback agrees on SACK"
        );
        drop(s);
        let _ = (&c).read(&mut [0u8; 1]);
    }
}
