//! The kernel's TCP socket table over netlink sock_diag, the interface `ss`
//! uses: one dump request per address family, answered with one binary
//! record per socket. No text parsing, no `/proc/net/tcp`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla,
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

use super::snapshot::{Key, Snapshot, Sock};
use super::state::State;
use crate::error::{Error, Result};

/// Receive buffer: the kernel fills dump replies up to about 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// Most datagrams read for one dump: a bound on the loop, far above what
/// even a busy host's table needs (each holds dozens of sockets).
const MAX_DATAGRAMS: usize = 100_000;
/// How long a dump reply may take before the poll gives up.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// The states asked for: bits 1 (ESTABLISHED) to 12 (NEW_SYN_RECV, which
/// the crate's `StateFlags::all()` leaves out). Not bit 13,
/// `TCP_BOUND_INACTIVE`: asking for it makes the kernel walk the whole bind
/// hash table on every dump, which was 95% of `watch`'s cost.
const STATES: u32 = 0x1ffe;
/// `INET_DIAG_REQ_BYTECODE`: the request attribute holding a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter opcodes (linux/inet_diag.h).
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;
const BC_D_GE: u8 = 4;
const BC_D_LE: u8 = 5;

/// The in-kernel filter "source port is `port` or destination port is
/// `port`", in the bytecode `ss` sends for `sport = :P or dport = :P`.
///
/// Each op is `{code: u8, yes: u8, no: u16}`; a port comparison is followed
/// by a second op whose `no` holds the port. The kernel steps `yes` bytes
/// when the test holds and `no` bytes when not; landing exactly on the end
/// accepts, jumping past it rejects. `JMP` always takes `no`. Every jump
/// target lies on the chain of `yes` steps, which the kernel's audit
/// requires. The ranges `>= P` and `<= P` are used instead of `== P`
/// because they exist on every kernel.
pub(crate) fn port_filter(port: u16) -> Vec<u8> {
    // Offsets: 0 S_GE, 8 S_LE, 16 JMP, 20 D_GE, 28 D_LE, end at 36.
    let ops: [(u8, u8, u16, Option<u16>); 5] = [
        (BC_S_GE, 8, 20, Some(port)), // no: try the destination port
        (BC_S_LE, 8, 12, Some(port)), // no: try the destination port
        (BC_JMP, 4, 20, None),        // source matched: jump to the end
        (BC_D_GE, 8, 20, Some(port)), // no: past the end, reject
        (BC_D_LE, 8, 12, Some(port)), // yes: the end, accept
    ];
    let mut bc = Vec::with_capacity(36);
    for (code, yes, no, arg) in ops {
        bc.push(code);
        bc.push(yes);
        bc.extend_from_slice(&no.to_ne_bytes());
        if let Some(p) = arg {
            bc.extend_from_slice(&[0, 0]);
            bc.extend_from_slice(&p.to_ne_bytes());
        }
    }
    bc
}

/// An open sock_diag socket, reused for every poll so polling costs two
/// request/reply round trips and no socket setup.
pub(crate) struct Diag {
    /// The netlink socket, connected to the kernel.
    sock: Socket,
    /// Reused receive buffer.
    buf: Vec<u8>,
}

impl Diag {
    /// Opens the netlink socket.
    pub(crate) fn open() -> Result<Diag> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)
            .map_err(Error::io("opening a netlink sock_diag socket"))?;
        sock.bind_auto()
            .map_err(Error::io("binding the netlink socket"))?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(Error::io("connecting the netlink socket"))?;
        // SAFETY: the descriptor belongs to `sock`, alive for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(|e| Error::Io {
            what: "setting the netlink receive timeout",
            source: e.into(),
        })?;
        Ok(Diag {
            sock,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Every TCP socket, IPv4 and IPv6, whose local or remote port is `port`.
    pub(crate) fn snapshot(&mut self, port: u16) -> Result<Snapshot> {
        let mut snap = Snapshot::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(
                family,
                port,
                STATES,
                ExtensionFlags::empty(),
                &mut |key, r| {
                    snap.insert(key, sock_of(r));
                },
            )?;
        }
        Ok(snap)
    }

    /// The kernel's `tcp_info` of every ESTABLISHED socket on `port`
    /// (`INET_DIAG_INFO`, what `ss -i` shows), as raw bytes for
    /// [`super::info::TcpInfo::parse`].
    pub(crate) fn tcp_infos(&mut self, port: u16) -> Result<Vec<(Key, Vec<u8>)>> {
        let mut out = Vec::new();
        let established = 1 << 1;
        for family in [AF_INET, AF_INET6] {
            self.dump(
                family,
                port,
                established,
                ExtensionFlags::INFO,
                &mut |key, r| {
                    for nla in &r.nlas {
                        if let Nla::TcpInfo(bytes) = nla {
                            out.push((key, bytes.clone()));
                        }
                    }
                },
            )?;
        }
        Ok(out)
    }

    /// One dump request and its replies, until the kernel says done; each
    /// socket on the port is handed to `each`.
    fn dump(
        &mut self,
        family: u8,
        port: u16,
        states: u32,
        extensions: ExtensionFlags,
        each: &mut dyn FnMut(Key, &InetResponse),
    ) -> Result<()> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions,
                states: StateFlags::from_bits_retain(states),
                socket_id,
            })
            .into(),
        );
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        // `serialize` needs exactly `buffer_len` bytes, which `req` has.
        msg.serialize(&mut req);
        // The crate has no field for the filter attribute: append it and
        // fix the message length (the first 4 bytes, native order), so the
        // kernel sends only the port's sockets instead of the whole table.
        let bc = port_filter(port);
        let nla_len = (4 + bc.len()) as u16;
        req.extend_from_slice(&nla_len.to_ne_bytes());
        req.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        req.extend_from_slice(&bc);
        let total = req.len() as u32;
        req[..4].copy_from_slice(&total.to_ne_bytes());
        self.sock
            .send(&req, 0)
            .map_err(Error::io("sending a sock_diag request"))?;
        for _ in 0..MAX_DATAGRAMS {
            let n = loop {
                match self.sock.recv(&mut &mut self.buf[..], 0) {
                    Ok(n) => break n.min(self.buf.len()),
                    // A signal (Ctrl-C): finish this dump, the caller stops.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("reading a sock_diag reply")(e)),
                }
            };
            if parse_datagram(&self.buf[..n], port, each)? {
                return Ok(());
            }
        }
        Err(Error::Io {
            what: "reading a sock_diag reply",
            source: io::Error::other("the dump did not end"),
        })
    }
}

/// What `watch` keeps of one socket record.
fn sock_of(r: &InetResponse) -> Sock {
    let h = &r.header;
    Sock {
        state: State::from(h.state),
        inode: h.inode,
        rq: h.recv_queue,
        wq: h.send_queue,
    }
}

/// Hands the sockets of one reply datagram to `each`; true once the
/// kernel's "done" message is seen. A record the crate cannot decode is an
/// error rather than a panic or a silently shorter table.
fn parse_datagram(
    mut bytes: &[u8],
    port: u16,
    each: &mut dyn FnMut(Key, &InetResponse),
) -> Result<bool> {
    while bytes.len() >= 16 {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| Error::Io {
            what: "decoding a sock_diag reply",
            source: io::Error::other(e.to_string()),
        })?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(Error::io("the kernel refused the sock_diag request")(
                    e.to_io(),
                ));
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let h = &r.header;
                let id = &h.socket_id;
                if id.source_port == port || id.destination_port == port {
                    let key = Key {
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                    };
                    each(key, &r);
                }
            }
            _ => {}
        }
        // Netlink messages are 4-byte aligned; a length that does not move
        // us forward ends the datagram instead of looping forever.
        let step = len.checked_add(3).map(|l| l & !3).unwrap_or(0);
        if step == 0 || step > bytes.len() {
            break;
        }
        bytes = &bytes[step..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `inet_diag_bc_run`, for the opcodes used here.
    fn run(bc: &[u8], sport: u16, dport: u16) -> bool {
        let mut pc = 0usize;
        let mut len = bc.len() as i64;
        for _ in 0..bc.len() {
            if len <= 0 {
                break;
            }
            let (code, yes) = (bc[pc], bc[pc + 1]);
            let no = u16::from_ne_bytes([bc[pc + 2], bc[pc + 3]]);
            let arg = || u16::from_ne_bytes([bc[pc + 6], bc[pc + 7]]);
            let ok = match code {
                BC_JMP => false,
                BC_S_GE => sport >= arg(),
                BC_S_LE => sport <= arg(),
                BC_D_GE => dport >= arg(),
                BC_D_LE => dport <= arg(),
                _ => unreachable!(),
            };
            let step = if ok {
                usize::from(yes)
            } else {
                usize::from(no)
            };
            pc += step;
            len -= step as i64;
        }
        len == 0
    }

    /// The kernel's `inet_diag_bc_audit`: every jump lands on the chain of
    /// `yes` steps or just past the end.
    fn audit(bc: &[u8]) -> bool {
        let on_chain = |target_len: usize| {
            let (mut pc, mut len) = (0usize, bc.len());
            while len > target_len {
                let yes = usize::from(bc[pc + 1]);
                if yes < 4 || yes % 4 != 0 {
                    return false;
                }
                pc += yes;
                len -= yes;
            }
            len == target_len
        };
        let (mut pc, mut len) = (0usize, bc.len());
        while len > 0 {
            let min = if bc[pc] == BC_JMP { 4 } else { 8 };
            let yes = usize::from(bc[pc + 1]);
            let no = usize::from(u16::from_ne_bytes([bc[pc + 2], bc[pc + 3]]));
            if no < min || no > len + 4 || no % 4 != 0 || (no < len && !on_chain(len - no)) {
                return false;
            }
            if yes < min || yes > len + 4 || yes % 4 != 0 {
                return false;
            }
            pc += yes;
            len -= yes;
        }
        len == 0
    }

    #[test]
    fn filter_passes_the_port_either_side_and_nothing_else() {
        let bc = port_filter(6666);
        assert_eq!(bc.len(), 36);
        assert!(audit(&bc));
        assert!(run(&bc, 6666, 0));
        assert!(run(&bc, 6666, 40000));
        assert!(run(&bc, 40000, 6666));
        assert!(!run(&bc, 6665, 6667));
        assert!(!run(&bc, 6667, 6665));
        assert!(!run(&bc, 1, 2));
        let edge = port_filter(0);
        assert!(audit(&edge) && run(&edge, 0, 5) && !run(&edge, 1, 5));
        let top = port_filter(u16::MAX);
        assert!(audit(&top) && run(&top, 1, u16::MAX) && !run(&top, 1, 2));
    }
}
