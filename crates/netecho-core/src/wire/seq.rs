//! Sequence numbers: wrap-around comparison and the `J+n` / `K+n` relative
//! form the classic TCP diagrams use.
//!
//! Sequence space is 32-bit and wraps (RFC 793 section 3.3): `a` is before
//! `b` when `b - a`, computed mod 2^32, is below 2^31. A connection's ISN is
//! random, so it often starts near the top and wraps within the transfer;
//! every computation here is modular and cannot overflow or panic.

use std::cmp::Ordering;

/// A TCP sequence number with wrap-around ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNumber(pub u32);

impl std::ops::Add<u32> for SeqNumber {
    type Output = SeqNumber;

    /// `self + n`, wrapping.
    fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }
}

impl SeqNumber {
    /// How far `self` is past `base`, as a signed distance (negative when
    /// `self` comes before `base`).
    pub fn since(self, base: SeqNumber) -> i32 {
        self.0.wrapping_sub(base.0) as i32
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.since(*other).cmp(&0))
    }
}

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end whose port is not the watched one: it connected.
    Client,
    /// The end on the watched port.
    Server,
}

impl Side {
    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// `client` / `server`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The letter the textbooks give this side's ISN: J for the client,
    /// K for the server.
    pub fn letter(self) -> char {
        match self {
            Side::Client => 'J',
            Side::Server => 'K',
        }
    }
}

/// Each side's initial sequence number once seen, to show numbers relative
/// to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relative {
    /// The client's ISN (J), from its SYN.
    client: Option<SeqNumber>,
    /// The server's ISN (K), from its SYN-ACK.
    server: Option<SeqNumber>,
}

impl Relative {
    /// Records `side`'s ISN (from a SYN); a retransmitted SYN with another
    /// number (a new connection on a reused 4-tuple) replaces it.
    pub fn set_isn(&mut self, side: Side, isn: u32) {
        *self.slot(side) = Some(SeqNumber(isn));
    }

    /// `side`'s ISN if its SYN was seen.
    pub fn isn(&self, side: Side) -> Option<SeqNumber> {
        match side {
            Side::Client => self.client,
            Side::Server => self.server,
        }
    }

    fn slot(&mut self, side: Side) -> &mut Option<SeqNumber> {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// A number in `side`'s sequence space: `J`, `J+5`, `K-1` relative to
    /// that side's ISN, or the absolute number if its SYN was not seen.
    pub fn show(&self, side: Side, n: u32) -> String {
        match self.isn(side) {
            None => n.to_string(),
            Some(isn) => match SeqNumber(n).since(isn) {
                0 => side.letter().to_string(),
                d if d > 0 => format!("{}+{d}", side.letter()),
                d => format!("{}{d}", side.letter()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordering_wraps() {
        assert!(SeqNumber(u32::MAX) < SeqNumber(0));
        assert!(SeqNumber(0) > SeqNumber(u32::MAX - 10));
        assert!(SeqNumber(5) < SeqNumber(6));
        assert_eq!(SeqNumber(u32::MAX) + 2, SeqNumber(1));
        assert_eq!(SeqNumber(1).since(SeqNumber(u32::MAX)), 2);
    }

    #[test]
    fn relative_numbers_across_the_wrap() {
        let mut r = Relative::default();
        assert_eq!(r.show(Side::Client, 42), "42", "unknown ISN: absolute");
        r.set_isn(Side::Client, u32::MAX - 1);
        r.set_isn(Side::Server, 1000);
        assert_eq!(r.show(Side::Client, u32::MAX - 1), "J");
        assert_eq!(r.show(Side::Client, u32::MAX), "J+1");
        assert_eq!(r.show(Side::Client, 5), "J+7");
        assert_eq!(r.show(Side::Server, 1001), "K+1");
        assert_eq!(r.show(Side::Server, 999), "K-1");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn offset_survives_any_isn(isn in any::<u32>(), n in 0u32..(1 << 30)) {
            let mut r = Relative::default();
            r.set_isn(Side::Server, isn);
            let shown = r.show(Side::Server, isn.wrapping_add(n));
            let expected = if n == 0 { "K".to_string() } else { format!("K+{n}") };
            prop_assert_eq!(shown, expected);
            prop_assert!(SeqNumber(isn) <= SeqNumber(isn.wrapping_add(n)));
        }
    }
}
