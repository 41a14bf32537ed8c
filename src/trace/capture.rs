//! The capture itself: an AF_PACKET socket on one interface with a classic
//! BPF program in the kernel, so only TCP segments to or from the port are
//! copied to user space.
//!
//! Order matters: the socket is created with protocol 0 (it receives
//! nothing), the filter is attached, and only then is it bound to the
//! interface with `ETH_P_ALL`, so no unfiltered packet is ever queued.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};

/// Largest frame read: loopback's MTU is 65536 and offloads can hand the
/// capture a 64 KiB segment, so this never cuts a frame short.
pub(crate) const SNAPLEN: usize = 256 * 1024;
/// Socket receive buffer asked for, so a burst is not dropped while we print.
const RCVBUF: libc::c_int = 4 * 1024 * 1024;
/// `ARPHRD_ETHER` and `ARPHRD_LOOPBACK`: interfaces whose frames start with
/// a 14-byte Ethernet header, which the filter and parser assume.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// `sll_pkttype` of a frame we sent (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;
/// `SOL_PACKET` option for the kernel's received/dropped counters.
const PACKET_STATISTICS: libc::c_int = 6;
/// `SO_ATTACH_FILTER` (asm-generic/socket.h).
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfInsn {
    /// Operation.
    pub(crate) code: u16,
    /// Jump offset if true.
    pub(crate) jt: u8,
    /// Jump offset if false.
    pub(crate) jf: u8,
    /// Constant operand.
    pub(crate) k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct BpfProg {
    len: u16,
    filter: *const BpfInsn,
}

/// Classic BPF opcodes used by [`tcp_port_filter`] (linux/filter.h).
pub(crate) mod op {
    /// `ld h [k]`: 16-bit load at an absolute offset.
    pub(crate) const LDH_ABS: u16 = 0x28;
    /// `ld b [k]`: 8-bit load at an absolute offset.
    pub(crate) const LDB_ABS: u16 = 0x30;
    /// `ld h [x + k]`.
    pub(crate) const LDH_IND: u16 = 0x48;
    /// `ldx 4*([k]&0xf)`: the IPv4 header length.
    pub(crate) const LDXB_MSH: u16 = 0xb1;
    /// `jeq #k`.
    pub(crate) const JEQ_K: u16 = 0x15;
    /// `jset #k`.
    pub(crate) const JSET_K: u16 = 0x45;
    /// `ret #k`: accept k bytes (0 = drop).
    pub(crate) const RET_K: u16 = 0x06;
}

/// The kernel filter for "TCP or UDP, source or destination port
/// `port`", over Ethernet, IPv4 (first fragments only) and IPv6 (the
/// transport header right after the fixed header), like
/// `tcpdump -dd '(tcp or udp) and port P'` builds.
pub(crate) fn tcp_port_filter(port: u16) -> Vec<BpfInsn> {
    let p = u32::from(port);
    let i = |code, jt, jf, k| BpfInsn { code, jt, jf, k };
    // Jump offsets count from the next instruction; ACCEPT is index 20 and
    // DROP 21, written as (target - here - 1).
    vec![
        i(op::LDH_ABS, 0, 0, 12),           // 0: ethertype
        i(op::JEQ_K, 0, 7, 0x86dd),         // 1: IPv6? else 9
        i(op::LDB_ABS, 0, 0, 14 + 6),       // 2: next header
        i(op::JEQ_K, 1, 0, 6),              // 3: TCP? → 5
        i(op::JEQ_K, 0, 16, 17),            // 4: UDP? else DROP
        i(op::LDH_ABS, 0, 0, 14 + 40),      // 5: source port
        i(op::JEQ_K, 13, 0, p),             // 6: → ACCEPT
        i(op::LDH_ABS, 0, 0, 14 + 42),      // 7: destination port
        i(op::JEQ_K, 11, 12, p),            // 8: → ACCEPT / DROP
        i(op::JEQ_K, 0, 11, 0x0800),        // 9: IPv4? else DROP
        i(op::LDB_ABS, 0, 0, 14 + 9),       // 10: protocol
        i(op::JEQ_K, 1, 0, 6),              // 11: TCP? → 13
        i(op::JEQ_K, 0, 8, 17),             // 12: UDP? else DROP
        i(op::LDH_ABS, 0, 0, 14 + 6),       // 13: flags + fragment offset
        i(op::JSET_K, 6, 0, 0x1fff),        // 14: later fragment → DROP
        i(op::LDXB_MSH, 0, 0, 14),          // 15: x = IP header length
        i(op::LDH_IND, 0, 0, 14),           // 16: source port
        i(op::JEQ_K, 2, 0, p),              // 17: → ACCEPT
        i(op::LDH_IND, 0, 0, 16),           // 18: destination port
        i(op::JEQ_K, 0, 1, p),              // 19: → ACCEPT / DROP
        i(op::RET_K, 0, 0, SNAPLEN as u32), // 20: ACCEPT
        i(op::RET_K, 0, 0, 0),              // 21: DROP
    ]
}

/// One frame read from the socket.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    /// The bytes, from the Ethernet header on.
    pub(crate) data: &'a [u8],
    /// Length on the wire (more than `data` only if it was cut short).
    pub(crate) orig_len: usize,
    /// The outgoing copy of a loopback frame (the same frame then comes
    /// back incoming): skipped, so each packet shows once.
    pub(crate) duplicate: bool,
    /// Its interface's frames start with an Ethernet header (with
    /// `--iface any`, a tunnel's do not: those are skipped).
    pub(crate) ethernet: bool,
    /// When it was read, since the Unix epoch.
    pub(crate) ts: Duration,
}

/// An open, filtered capture on one interface.
pub(crate) struct Capture {
    /// The AF_PACKET socket.
    fd: OwnedFd,
    /// Receive buffer, [`SNAPLEN`] bytes.
    buf: Vec<u8>,
    /// The loopback interface's index: its frames show twice (out and
    /// in), and the outgoing copy is dropped. 0 when not captured.
    lo_index: i32,
}

impl Capture {
    /// Opens a capture of TCP and UDP port `port` on interface `iface`
    /// (`any`: every interface, as tcpdump's `-i any`).
    pub(crate) fn open(iface: &str, port: u16) -> Result<Capture> {
        let bad = |reason: &str| Error::Interface {
            name: iface.to_string(),
            reason: reason.to_string(),
        };
        let index_of = |name: &str| -> Result<u32> {
            let c = CString::new(name).map_err(|_| bad("the name holds a NUL byte"))?;
            // SAFETY: `c` is a valid NUL-terminated string for the call.
            Ok(unsafe { libc::if_nametoindex(c.as_ptr()) })
        };
        let any = iface == "any";
        // Index 0 binds to every interface.
        let ifindex = if any { 0 } else { index_of(iface)? };
        if ifindex == 0 && !any {
            return Err(bad("no such interface"));
        }
        let hatype = if any {
            ARPHRD_ETHER
        } else {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/type"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(ARPHRD_ETHER)
        };
        let lo_index = if any {
            i32::try_from(index_of("lo")?).unwrap_or(0)
        } else if hatype == ARPHRD_LOOPBACK {
            i32::try_from(ifindex).unwrap_or(0)
        } else {
            0
        };
        if hatype != ARPHRD_ETHER && hatype != ARPHRD_LOOPBACK {
            return Err(bad(
                "its frames are not Ethernet (only Ethernet and loopback are supported)",
            ));
        }
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    Error::NeedCapNetRaw("capturing packets (an AF_PACKET socket)")
                }
                _ => Error::io("opening an AF_PACKET socket")(e),
            });
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog = tcp_port_filter(port);
        let fprog = BpfProg {
            len: prog.len() as u16,
            filter: prog.as_ptr(),
        };
        // SAFETY: `fprog` points at `prog`, alive for the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                (&raw const fprog).cast(),
                size_of::<BpfProg>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io("attaching the BPF filter")(
                io::Error::last_os_error(),
            ));
        }
        // Best effort: a smaller buffer only means drops under a burst,
        // which the end-of-run counters report.
        let rcvbuf = RCVBUF;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: passing a c_int by pointer with its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const rcvbuf).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io("binding the capture to the interface")(
                io::Error::last_os_error(),
            ));
        }
        Ok(Capture {
            fd,
            buf: vec![0; SNAPLEN],
            lo_index,
        })
    }

    /// The next frame, waiting at most `timeout`; `None` on timeout or when
    /// a signal interrupted the wait (the caller looks at its stop flag).
    pub(crate) fn next(&mut self, timeout: Duration) -> Result<Option<Frame<'_>>> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            // A signal: let the caller decide whether to stop.
            Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(Error::io("waiting for packets")(e.into())),
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is writable for its length; `from`/`from_len`
        // describe a buffer large enough for an AF_PACKET address.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                // Readiness without data, or a signal: nothing this time.
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(Error::io("reading a packet")(e)),
            };
        }
        let orig_len = n as usize;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Some(Frame {
            data: &self.buf[..orig_len.min(self.buf.len())],
            orig_len,
            duplicate: from.sll_pkttype == PACKET_OUTGOING
                && self.lo_index != 0
                && from.sll_ifindex == self.lo_index,
            ethernet: matches!(u32::from(from.sll_hatype), ARPHRD_ETHER | ARPHRD_LOOPBACK),
            ts,
        }))
    }

    /// (frames passed by the filter, frames the kernel dropped) since the
    /// last call; `None` if the kernel would not say.
    pub(crate) fn stats(&self) -> Option<(u32, u32)> {
        let mut st = [0u32; 2];
        let mut len = size_of::<[u32; 2]>() as libc::socklen_t;
        // SAFETY: `struct tpacket_stats` is two u32 counters; `st` has
        // room for them and `len` says so.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        };
        (rc == 0).then_some((st[0], st[1]))
    }
}

/// Runs a classic BPF program over a packet, for testing the filter
/// without a socket. Only the opcodes [`tcp_port_filter`] uses are known;
/// anything else, or a load past the end, drops the packet (as the kernel
/// does for an out-of-bounds load).
#[cfg(test)]
pub(crate) fn run_filter(prog: &[BpfInsn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let ld16 = |off: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *pkt.get(off)?,
            *pkt.get(off.checked_add(1)?)?,
        ])))
    };
    // Each step moves pc forward, so at most prog.len() steps run.
    for _ in 0..=prog.len() {
        let Some(ins) = prog.get(pc) else { return 0 };
        let k = ins.k as usize;
        let mut next = pc + 1;
        match ins.code {
            op::LDH_ABS => match ld16(k) {
                Some(v) => a = v,
                None => return 0,
            },
            op::LDB_ABS => match pkt.get(k) {
                Some(v) => a = u32::from(*v),
                None => return 0,
            },
            op::LDH_IND => match ld16(k + x as usize) {
                Some(v) => a = v,
                None => return 0,
            },
            op::LDXB_MSH => match pkt.get(k) {
                Some(v) => x = u32::from(v & 0xf) * 4,
                None => return 0,
            },
            op::JEQ_K | op::JSET_K => {
                let t = if ins.code == op::JEQ_K {
                    a == ins.k
                } else {
                    a & ins.k != 0
                };
                next += usize::from(if t { ins.jt } else { ins.jf });
            }
            op::RET_K => return ins.k,
            _ => return 0,
        }
        pc = next;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use netecho_core::wire::packet::{Segment, build_frame, flags};

    fn frame(src: &str, dst: &str) -> Vec<u8> {
        build_frame(
            &Segment {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq: 1,
                ack: 0,
                flags: flags::SYN,
                window: 0,
                len: 0,
                offers: None,
            },
            b"",
        )
    }

    #[test]
    fn filter_passes_the_port_both_ways_v4_and_v6() {
        let f = tcp_port_filter(6666);
        let yes = SNAPLEN as u32;
        assert_eq!(
            run_filter(&f, &frame("127.0.0.1:40000", "127.0.0.1:6666")),
            yes
        );
        assert_eq!(
            run_filter(&f, &frame("127.0.0.1:6666", "127.0.0.1:40000")),
            yes
        );
        assert_eq!(run_filter(&f, &frame("[::1]:40000", "[::1]:6666")), yes);
        assert_eq!(run_filter(&f, &frame("[::1]:6666", "[::1]:40000")), yes);
        assert_eq!(
            run_filter(&f, &frame("127.0.0.1:40000", "127.0.0.1:6667")),
            0
        );
        assert_eq!(run_filter(&f, &frame("[::1]:1", "[::1]:2")), 0);
    }

    #[test]
    fn filter_drops_other_protocols_fragments_and_garbage() {
        let f = tcp_port_filter(6666);
        let mut udp = frame("127.0.0.1:40000", "127.0.0.1:6666");
        udp[14 + 9] = 17;
        assert_eq!(run_filter(&f, &udp), SNAPLEN as u32, "UDP passes");
        let mut udp6 = frame("[::1]:6666", "[::1]:40000");
        udp6[14 + 6] = 17;
        assert_eq!(run_filter(&f, &udp6), SNAPLEN as u32, "UDP over IPv6");
        let mut icmp = frame("127.0.0.1:40000", "127.0.0.1:6666");
        icmp[14 + 9] = 1;
        assert_eq!(run_filter(&f, &icmp), 0);
        let mut icmp6 = frame("[::1]:40000", "[::1]:6666");
        icmp6[14 + 6] = 58;
        assert_eq!(run_filter(&f, &icmp6), 0);
        let mut frag = frame("127.0.0.1:40000", "127.0.0.1:6666");
        frag[14 + 7] = 1;
        assert_eq!(run_filter(&f, &frag), 0);
        assert_eq!(run_filter(&f, &[]), 0);
        assert_eq!(run_filter(&f, &[0x86, 0xdd]), 0);
        let mut ip_options = frame("127.0.0.1:40000", "127.0.0.1:6666");
        ip_options[14] = 0x46; // 24-byte header: ports move by 4
        assert_eq!(run_filter(&f, &ip_options), 0);
    }
}
