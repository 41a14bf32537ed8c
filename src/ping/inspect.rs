//! `ping --inspect`: asks a `serve --inspect-listen` port what it saw of a
//! TCP connection and of a datagram, sets that against what this side
//! knows it sent, and names each difference the path made (NAT, hops, a
//! clamped MSS, a rewritten DSCP or ECN, options removed or added, a
//! changed window scale). The comparison is `netecho_core::inspect`'s; this
//! file does the sockets and the printing.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netecho_core::inspect::findings::{self, Outcome, SentTcp, SentTtl, SentUdp};
use netecho_core::inspect::report::{TcpReport, UdpReport};
use serde_json::json;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::args::{parse_header_byte, parse_ttl};
use crate::error::{Error, Result};
use crate::net::{self, TargetOpt};
use crate::sys::sockopt::{self, TCPI_OPT_TIMESTAMPS, TCPI_OPT_WSCALE};
use crate::sys::stop;

/// The flags of `ping --inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectOpt {
    /// Ask a `serve --inspect-listen` port what it saw of a TCP connection
    /// and a datagram, and name what the path changed: NAT, hops, MSS,
    /// DSCP, ECN, TCP options, window scale (`no change seen` when
    /// nothing); --json prints {"findings": [...], "server": {...}}.
    #[arg(long)]
    pub(crate) inspect: bool,

    /// With --inspect: send with this TTL or hop limit (1-255), so hops are
    /// counted from a known start.
    #[arg(long, value_name = "N", value_parser = parse_ttl, requires = "inspect")]
    pub(crate) ttl: Option<u8>,

    /// With --inspect: send with this TOS or traffic class (0-255, or hex:
    /// 0xb8 is DSCP 46, EF), so a rewritten DSCP or ECN shows.
    #[arg(long, value_name = "TOS", value_parser = parse_header_byte, requires = "inspect")]
    pub(crate) tos: Option<u8>,
}

/// What `--inspect` takes from ping's other flags.
struct Ask<'a> {
    flags: &'a InspectOpt,
    timeout: Duration,
}

/// Bytes in an inspect datagram: the server's report must fit in it (the
/// server never answers with more than it got), and the longest, with two
/// IPv6 addresses, is under 200.
pub(crate) const PROBE_SIZE: usize = 512;
/// Datagrams sent before UDP counts as unanswered.
const UDP_TRIES: u32 = 3;
/// The largest TCP report accepted; a real one is under 1 KiB.
const MAX_REPORT: u64 = 64 * 1024;
/// The timestamps option takes this much of each segment once agreed, and
/// Linux then lowers the MSS it reports as advertised by as much.
const TIMESTAMPS_ALIGNED: u16 = 12;

/// Runs `ping --inspect`: `timeout` bounds the connect, the TCP report and
/// each UDP try.
pub(crate) fn run(flags: &InspectOpt, to: &TargetOpt, timeout: Duration, json: bool) -> Result<()> {
    let opt = &Ask { flags, timeout };
    let target = to.target()?;
    let shown = target.to_string();
    stop::install().map_err(Error::io("installing signal handlers"))?;
    let addrs = net::resolve_target(&target, to.family())?;
    let (tcp_sent, tcp_seen, addr) = ask_tcp(opt, &shown, &addrs)?;
    let udp = ask_udp(opt, addr);
    let mut outcome = findings::tcp(&tcp_sent, &tcp_seen);
    let (udp_seen, udp_err) = match udp {
        Ok((sent, seen)) => {
            let o = findings::udp(&sent, &seen);
            outcome.findings.extend(o.findings);
            outcome.undetermined.extend(o.undetermined);
            (Some(seen), None)
        }
        Err(e) => (None, Some(e)),
    };
    if json {
        let line = json!({
            "findings": outcome.findings,
            "server": {"tcp": tcp_seen, "udp": udp_seen},
        });
        println!("{line}");
    } else {
        print_words(&shown, addr, &tcp_seen, udp_seen.as_ref(), &outcome);
    }
    match udp_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_words(
    shown: &str,
    addr: SocketAddr,
    tcp: &TcpReport,
    udp: Option<&UdpReport>,
    outcome: &Outcome,
) {
    println!("INSPECT {shown} ({addr}): what the path did, TCP and UDP");
    let opts = tcp.syn.as_ref().map(|s| {
        s.options
            .iter()
            .map(|o| match o {
                netecho_core::wire::options::TcpOption::Mss { value } => format!("mss {value}"),
                netecho_core::wire::options::TcpOption::Wscale { value } => {
                    format!("wscale {value}")
                }
                o => o.name(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    match (&tcp.syn, opts) {
        (Some(s), Some(opts)) => println!(
            "tcp: the server saw {} at {}, SYN with TTL {}, DSCP {}, ECN {}, options {opts}",
            tcp.peer, tcp.local, s.ttl, s.dscp, s.ecn
        ),
        _ => println!("tcp: the server saw {} at {}", tcp.peer, tcp.local),
    }
    if let Some(u) = udp {
        let or_unknown = |v: Option<u8>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
        println!(
            "udp: the server saw {} with TTL {}, DSCP {}, ECN {}{}",
            u.peer.map_or_else(
                || "an address it did not say (report cut)".into(),
                |p| p.to_string()
            ),
            or_unknown(u.ttl),
            or_unknown(u.dscp),
            or_unknown(u.ecn),
            if u.cut {
                " (report cut to fit the datagram)"
            } else {
                ""
            }
        );
    }
    for f in &outcome.findings {
        println!("{f}");
    }
    for u in &outcome.undetermined {
        println!("{u}");
    }
    if outcome.findings.is_empty() {
        println!("no change seen");
    }
}

/// Applies `--ttl` and `--tos` to `s`, a socket of `addr`'s family (a TCP
/// one before its connect, so the SYN carries them).
fn mark(opt: &Ask<'_>, s: SockRef<'_>, addr: SocketAddr) -> std::io::Result<()> {
    match addr {
        SocketAddr::V4(_) => {
            if let Some(t) = opt.flags.ttl {
                s.set_ttl_v4(u32::from(t))?;
            }
            if let Some(t) = opt.flags.tos {
                s.set_tos_v4(u32::from(t))?;
            }
        }
        SocketAddr::V6(_) => {
            if let Some(t) = opt.flags.ttl {
                s.set_unicast_hops_v6(u32::from(t))?;
            }
            if let Some(t) = opt.flags.tos {
                s.set_tclass_v6(u32::from(t))?;
            }
        }
    }
    Ok(())
}

/// The TTL or hop limit this socket sends with: `--ttl`, or the system's
/// default as the kernel reports it.
fn sent_ttl(opt: &Ask<'_>, s: SockRef<'_>, addr: SocketAddr) -> SentTtl {
    let read = match addr {
        SocketAddr::V4(_) => s.ttl_v4(),
        SocketAddr::V6(_) => s.unicast_hops_v6(),
    };
    match (opt.flags.ttl, read) {
        (Some(t), _) => SentTtl::Known(t),
        (None, Ok(t)) => u8::try_from(t).map_or(SentTtl::Unknown, SentTtl::Known),
        (None, Err(_)) => SentTtl::Unknown,
    }
}

/// Whether a `net.ipv4` switch is on (the IPv6 stack uses the same ones
/// for TCP); `None` when it cannot be read.
fn sysctl(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Connects to the first address that answers, reads the report, and
/// notes what this side's SYN carried.
fn ask_tcp(
    opt: &Ask<'_>,
    shown: &str,
    addrs: &[SocketAddr],
) -> Result<(SentTcp, TcpReport, SocketAddr)> {
    let mut last = None;
    for &addr in addrs {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .and_then(|s| mark(opt, SockRef::from(&s), addr).map(|()| s))
            .map_err(Error::io("setting up the TCP socket (--ttl, --tos)"))?;
        match s.connect_timeout(&addr.into(), opt.timeout) {
            Ok(()) => return read_tcp(opt, shown, s, addr),
            Err(e) => last = Some(net::connect_error(shown, opt.timeout, e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Resolve {
        target: shown.to_string(),
        reason: "no address found".into(),
    }))
}

fn read_tcp(
    opt: &Ask<'_>,
    shown: &str,
    s: Socket,
    addr: SocketAddr,
) -> Result<(SentTcp, TcpReport, SocketAddr)> {
    let ttl = sent_ttl(opt, SockRef::from(&s), addr);
    let stream: TcpStream = s.into();
    let src = stream
        .local_addr()
        .map_err(Error::io("reading the local address"))?;
    let info = sockopt::tcp_info(stream.as_fd()).map_err(Error::io("reading TCP_INFO"))?;
    stream
        .set_read_timeout(Some(opt.timeout))
        .map_err(Error::io("setting a read timeout"))?;
    let mut text = String::new();
    (&stream)
        .take(MAX_REPORT)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Failed(format!(
                "{shown} sent no inspect report within {} s: is it a `serve --inspect-listen` port?",
                opt.timeout.as_secs_f64()
            )),
            _ => Error::Failed(format!("{shown}: reading the inspect report: {e}")),
        })?;
    let report: TcpReport = serde_json::from_str(text.trim_end()).map_err(|e| {
        Error::Failed(format!(
            "{shown} sent no inspect report ({e}): is it a `serve --inspect-listen` port?"
        ))
    })?;
    let on = |name| sysctl(name).is_some_and(|v| v >= 1);
    let mut options = vec!["mss".to_string()];
    // Linux's order in a SYN: mss, sack_permitted (with timestamps), timestamps, wscale.
    if on("tcp_sack") {
        options.push("sack_permitted".into());
    }
    if on("tcp_timestamps") {
        options.push("timestamps".into());
    }
    if on("tcp_window_scaling") {
        options.push("wscale".into());
    }
    let timestamps = info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0;
    let sent = SentTcp {
        src,
        ttl,
        dscp: opt.flags.tos.unwrap_or(0) >> 2,
        mss: syn_mss(info.tcpi_advmss, timestamps),
        wscale: (info.tcpi_options & TCPI_OPT_WSCALE != 0).then(|| sockopt::wscales(&info).1),
        options,
        ecn_setup: sysctl("tcp_ecn") == Some(1),
    };
    Ok((sent, report, addr))
}

/// The MSS our SYN carried, from `TCP_INFO`'s advertised MSS (which
/// leaves out the timestamps' aligned 12 bytes when they were agreed). The
/// option is 16 bits: the kernel caps it at 65,535, so the sum is capped
/// too rather than overflowing on an interface with an MTU near 64 KiB.
fn syn_mss(advmss: u32, timestamps: bool) -> Option<u16> {
    let m = u16::try_from(advmss).ok()?;
    Some(if timestamps {
        m.saturating_add(TIMESTAMPS_ALIGNED)
    } else {
        m
    })
}

/// Sends up to [`UDP_TRIES`] padded datagrams and takes the first report.
fn ask_udp(opt: &Ask<'_>, addr: SocketAddr) -> Result<(SentUdp, UdpReport)> {
    let sock = net::udp_socket(addr).map_err(Error::io("opening the UDP socket"))?;
    mark(opt, SockRef::from(&sock), addr)
        .map_err(Error::io("setting up the UDP socket (--ttl, --tos)"))?;
    let ttl = sent_ttl(opt, SockRef::from(&sock), addr);
    let src = sock
        .local_addr()
        .map_err(Error::io("reading the local address"))?;
    let mut probe = vec![b' '; PROBE_SIZE];
    probe[..15].copy_from_slice(b"netecho inspect");
    let mut buf = vec![0u8; PROBE_SIZE + 1];
    for _ in 0..UDP_TRIES {
        if stop::requested() {
            break;
        }
        sock.send(&probe)
            .map_err(Error::io("sending the inspect datagram"))?;
        let deadline = Instant::now() + opt.timeout;
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let Ok(n) = sock.recv(&mut buf) else { break };
            if let Ok(r) = serde_json::from_slice::<UdpReport>(&buf[..n]) {
                let sent = SentUdp {
                    src,
                    ttl,
                    dscp: opt.flags.tos.unwrap_or(0) >> 2,
                    ecn: opt.flags.tos.unwrap_or(0) & 0b11,
                };
                return Ok((sent, r));
            }
        }
    }
    Err(Error::Failed(format!(
        "udp: no inspect report from {addr} after {UDP_TRIES} datagrams ({} s each)",
        opt.timeout.as_secs_f64()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syn_mss_adds_the_timestamps_back_and_never_overflows() {
        // Loopback with a 65,536-byte MTU: Linux reports 65,483.
        assert_eq!(syn_mss(65_483, true), Some(65_495));
        assert_eq!(syn_mss(1_448, true), Some(1_460));
        assert_eq!(syn_mss(1_460, false), Some(1_460));
        assert_eq!(syn_mss(65_530, true), Some(u16::MAX));
        assert_eq!(syn_mss(70_000, false), None);
    }
}
