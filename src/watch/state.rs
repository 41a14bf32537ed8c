//! The TCP connection states of RFC 793 (section 3.2, "Terminology"), as
//! Linux numbers them in `include/net/tcp_states.h` and reports them over
//! sock_diag.

use std::fmt;

/// One TCP connection state. `Display` prints the RFC's spelling
/// (`SYN-SENT`, `TIME-WAIT`), which is what `watch` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum State {
    /// Waiting for a connection request from any remote TCP (a server).
    Listen,
    /// Sent a SYN, waiting for the matching SYN-ACK (a client).
    SynSent,
    /// Received a SYN and sent a SYN-ACK, waiting for the final ACK.
    /// Linux also reports its half-open "request sockets" this way.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We sent a FIN (closed first) and wait for its ACK or the peer's FIN.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer sent a FIN; waiting for our application to close.
    CloseWait,
    /// Both sides sent a FIN at the same time; waiting for the ACK of ours.
    Closing,
    /// We closed after the peer did; waiting for the ACK of our FIN.
    LastAck,
    /// We closed first and the close is done; lingering 2*MSL so a lost
    /// final ACK can be resent and old duplicates die out.
    TimeWait,
    /// No connection (also what a socket that vanished is shown as).
    Closed,
    /// A state number this program does not know; printed as a number so
    /// a newer kernel's report is never hidden or a cause to stop.
    Unknown(u8),
}

impl From<u8> for State {
    /// Linux's `TCP_*` numbers; `TCP_NEW_SYN_RECV` (12) is the kernel's
    /// lightweight SYN-RECEIVED, so it maps to the same RFC state.
    fn from(n: u8) -> State {
        match n {
            1 => State::Established,
            2 => State::SynSent,
            3 | 12 => State::SynReceived,
            4 => State::FinWait1,
            5 => State::FinWait2,
            6 => State::TimeWait,
            7 => State::Closed,
            8 => State::CloseWait,
            9 => State::LastAck,
            10 => State::Listen,
            11 => State::Closing,
            n => State::Unknown(n),
        }
    }
}

impl State {
    /// The RFC 793 name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
            State::Closed => "CLOSED",
            State::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Unknown(n) => write!(f, "STATE-{n}"),
            s => f.pad(s.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_numbers_map_to_rfc_names() {
        let names: Vec<String> = (1..=12).map(|n| State::from(n).to_string()).collect();
        assert_eq!(
            names,
            [
                "ESTABLISHED",
                "SYN-SENT",
                "SYN-RECEIVED",
                "FIN-WAIT-1",
                "FIN-WAIT-2",
                "TIME-WAIT",
                "CLOSED",
                "CLOSE-WAIT",
                "LAST-ACK",
                "LISTEN",
                "CLOSING",
                "SYN-RECEIVED",
            ]
        );
    }

    #[test]
    fn unknown_numbers_are_shown_not_hidden() {
        assert_eq!(State::from(0), State::Unknown(0));
        assert_eq!(State::from(200).to_string(), "STATE-200");
    }
}
