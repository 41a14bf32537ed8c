//! The lines of a tracefs `trace_pipe` for the events `watch` enables,
//! parsed into [`Event`]s. Pure code: no file is read here, so every
//! format the kernel prints can be tested with a string.
//!
//! A line looks like (the timestamp is the instance's `trace_clock`, set
//! to `mono` by [`super::tracefs`], so it is CLOCK_MONOTONIC seconds):
//!
//! ```text
//!   python3-7149 [000] ..s2. 11357.940634: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP
//!       sport=7777 dport=51482 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1
//!       daddrv6=::ffff:127.0.0.1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV
//! ```

use std::net::{IpAddr, SocketAddr};

use super::state::State;

/// The tracepoints `watch` enables, as `group/name` under `events/`.
pub(crate) const STATE_EVENT: &str = "sock/inet_sock_set_state";
/// A reset this host sent (has no port fields: filtered here, not in the
/// kernel).
pub(crate) const SEND_RESET: &str = "tcp/tcp_send_reset";
/// A reset this host received.
pub(crate) const RECEIVE_RESET: &str = "tcp/tcp_receive_reset";
/// A data or FIN segment sent again.
pub(crate) const RETRANSMIT: &str = "tcp/tcp_retransmit_skb";
/// A SYN-ACK sent again (the peer's ACK did not come, or the accept queue
/// was full).
pub(crate) const RETRANSMIT_SYNACK: &str = "tcp/tcp_retransmit_synack";

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The socket went from one state to another.
    State {
        /// The state left.
        old: State,
        /// The state entered.
        new: State,
    },
    /// This host sent a RST; `reason` is the kernel's (`NO_SOCKET`...).
    SendReset { reason: String },
    /// A RST arrived for this socket.
    ReceiveReset,
    /// A segment was retransmitted, in this state.
    Retransmit { state: State },
    /// A SYN-ACK was retransmitted.
    RetransmitSynack,
}

/// One parsed trace line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// Kernel timestamp, seconds of the trace clock.
    pub(crate) ts: f64,
    /// The socket's own address (port 0 for a SYN-SENT socket whose port
    /// is not chosen yet).
    pub(crate) local: SocketAddr,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    /// What happened.
    pub(crate) kind: Kind,
}

/// Linux's `TCP_*` names as the tracepoints print them.
pub(crate) fn state_named(name: &str) -> Option<State> {
    Some(match name {
        "TCP_ESTABLISHED" => State::Established,
        "TCP_SYN_SENT" => State::SynSent,
        "TCP_SYN_RECV" | "TCP_NEW_SYN_RECV" => State::SynReceived,
        "TCP_FIN_WAIT1" => State::FinWait1,
        "TCP_FIN_WAIT2" => State::FinWait2,
        "TCP_TIME_WAIT" => State::TimeWait,
        "TCP_CLOSE" => State::Closed,
        "TCP_CLOSE_WAIT" => State::CloseWait,
        "TCP_LAST_ACK" => State::LastAck,
        "TCP_LISTEN" => State::Listen,
        "TCP_CLOSING" => State::Closing,
        _ => return None,
    })
}

/// The `key=value` fields after the event name.
fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    fields.split_ascii_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The address of an event with `family`, `saddr`/`daddr` (IPv4) and
/// `saddrv6`/`daddrv6` fields, and the given port field.
fn addr(fields: &str, side: &str, port: &str) -> Option<SocketAddr> {
    let port: u16 = field(fields, port)?.parse().ok()?;
    let ip: IpAddr = if field(fields, "family")? == "AF_INET6" {
        field(fields, &format!("{side}v6"))?.parse().ok()?
    } else {
        field(fields, side)?.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// `%pISpc` as printed: `127.0.0.1:6666` or `[::1]:6666`.
fn sockaddr(fields: &str, key: &str) -> Option<SocketAddr> {
    field(fields, key)?.parse().ok()
}

/// Parses one line; `None` for anything else (a comment, a lost-events
/// note `CPU:0 [LOST 12 EVENTS]`, an event of a newer format).
pub(crate) fn parse_line(line: &str) -> Option<Event> {
    // The event name follows the timestamp's colon: "1.5: name: fields".
    let names = [
        "inet_sock_set_state",
        "tcp_send_reset",
        "tcp_receive_reset",
        "tcp_retransmit_skb",
        "tcp_retransmit_synack",
    ];
    let (at, name) = names
        .iter()
        .filter_map(|n| line.find(&format!(": {n}: ")).map(|i| (i, *n)))
        .min()?;
    let ts: f64 = line[..at].split_ascii_whitespace().last()?.parse().ok()?;
    let fields = &line[at + name.len() + 4..];
    let (local, remote, kind) = match name {
        "inet_sock_set_state" => {
            if field(fields, "protocol")? != "IPPROTO_TCP" {
                return None;
            }
            let old = state_named(field(fields, "oldstate")?)?;
            let new = state_named(field(fields, "newstate")?)?;
            (
                addr(fields, "saddr", "sport")?,
                addr(fields, "daddr", "dport")?,
                Kind::State { old, new },
            )
        }
        "tcp_send_reset" => (
            // For a reset sent without a socket the kernel fills src from
            // the offending segment's destination: src is always us.
            sockaddr(fields, "src")?,
            sockaddr(fields, "dest")?,
            Kind::SendReset {
                reason: field(fields, "reason").unwrap_or("?").to_string(),
            },
        ),
        "tcp_receive_reset" => (
            addr(fields, "saddr", "sport")?,
            addr(fields, "daddr", "dport")?,
            Kind::ReceiveReset,
        ),
        "tcp_retransmit_skb" => (
            addr(fields, "saddr", "sport")?,
            addr(fields, "daddr", "dport")?,
            Kind::Retransmit {
                state: field(fields, "state")
                    .and_then(state_named)
                    .unwrap_or(State::Unknown(0)),
            },
        ),
        _ => (
            addr(fields, "saddr", "sport")?,
            addr(fields, "daddr", "dport")?,
            Kind::RetransmitSynack,
        ),
    };
    Some(Event {
        ts,
        local,
        remote,
        kind,
    })
}

/// Splits what `trace_pipe` returned into whole lines, keeping a partial
/// last line in `pending` for the next read.
pub(crate) fn split_lines(pending: &mut String, chunk: &str) -> Vec<String> {
    pending.push_str(chunk);
    let mut lines = Vec::new();
    while let Some(i) = pending.find('\n') {
        let line: String = pending.drain(..=i).collect();
        lines.push(line.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRE: &str = "         python3-7149    [000] ..s2. 11357.940634: ";

    #[test]
    fn state_change_v4() {
        let l = format!(
            "{PRE}inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=7777 dport=51482 saddr=127.0.0.1 daddr=127.0.0.2 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.2 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV"
        );
        let e = parse_line(&l).unwrap();
        assert_eq!(e.ts, 11357.940634);
        assert_eq!(e.local, "127.0.0.1:7777".parse().unwrap());
        assert_eq!(e.remote, "127.0.0.2:51482".parse().unwrap());
        assert_eq!(
            e.kind,
            Kind::State {
                old: State::Listen,
                new: State::SynReceived
            }
        );
    }

    #[test]
    fn state_change_v6_and_syn_sent_without_port() {
        let l = format!(
            "{PRE}inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=0 dport=80 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=::1 daddrv6=::1 oldstate=TCP_CLOSE newstate=TCP_SYN_SENT"
        );
        let e = parse_line(&l).unwrap();
        assert_eq!(e.local, "[::1]:0".parse().unwrap());
        assert_eq!(e.remote, "[::1]:80".parse().unwrap());
        assert_eq!(
            e.kind,
            Kind::State {
                old: State::Closed,
                new: State::SynSent
            }
        );
    }

    #[test]
    fn other_protocols_and_garbage_are_none() {
        let mptcp = format!(
            "{PRE}inet_sock_set_state: family=AF_INET protocol=IPPROTO_MPTCP sport=1 dport=2 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::1 daddrv6=::1 oldstate=TCP_CLOSE newstate=TCP_LISTEN"
        );
        assert_eq!(parse_line(&mptcp), None);
        assert_eq!(parse_line("CPU:0 [LOST 12 EVENTS]"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(
            parse_line(&format!("{PRE}inet_sock_set_state: family")),
            None
        );
    }

    #[test]
    fn resets_and_retransmits() {
        let sent = format!(
            "{PRE}tcp_send_reset: skbaddr=000000000534ffa2 skaddr=0000000000000000 src=127.0.0.1:7778 dest=127.0.0.1:34570 state=UNKNOWN reason=NO_SOCKET"
        );
        let e = parse_line(&sent).unwrap();
        assert_eq!(e.local.port(), 7778);
        assert_eq!(e.remote.port(), 34570);
        assert_eq!(
            e.kind,
            Kind::SendReset {
                reason: "NO_SOCKET".into()
            }
        );
        let sent6 = format!(
            "{PRE}tcp_send_reset: skbaddr=1 skaddr=2 src=[::1]:7778 dest=[::1]:3 state=TCP_ESTABLISHED reason=TCP_ABORT_ON_LINGER"
        );
        assert_eq!(
            parse_line(&sent6).unwrap().local,
            "[::1]:7778".parse().unwrap()
        );
        let got = format!(
            "{PRE}tcp_receive_reset: family=AF_INET sport=34570 dport=7778 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=106f"
        );
        assert_eq!(parse_line(&got).unwrap().kind, Kind::ReceiveReset);
        let re = format!(
            "{PRE}tcp_retransmit_skb: skbaddr=1 skaddr=2 family=AF_INET sport=5 dport=6 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::1 daddrv6=::1 state=TCP_SYN_SENT err=0"
        );
        assert_eq!(
            parse_line(&re).unwrap().kind,
            Kind::Retransmit {
                state: State::SynSent
            }
        );
        let syn = format!(
            "{PRE}tcp_retransmit_synack: family=AF_INET sport=5 dport=6 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::1 daddrv6=::1"
        );
        assert_eq!(parse_line(&syn).unwrap().kind, Kind::RetransmitSynack);
    }

    #[test]
    fn partial_lines_wait_for_their_end() {
        let mut p = String::new();
        assert_eq!(split_lines(&mut p, "a\nb"), ["a"]);
        assert_eq!(p, "b");
        assert_eq!(split_lines(&mut p, "c\n\nd\n"), ["bc", "", "d"]);
        assert!(p.is_empty());
    }
}
