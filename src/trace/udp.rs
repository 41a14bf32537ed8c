//! UDP datagrams in `trace`: one line each with its size, and whether the
//! echo came back. Pure: fed datagrams, their data and their times.
//!
//! A datagram from the server is the echo of the oldest datagram of that
//! client still waiting whose bytes are the same; the echo's line says how
//! long after. Datagrams never echoed are listed at the end ([`Echoes::unanswered`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use crate::watch::timeline::human_secs;
use netecho_core::wire::packet::Datagram;

/// Datagrams remembered per client while waiting for their echo; past
/// this the oldest is given up (and counted as unanswered).
const MAX_WAITING: usize = 4096;

/// One datagram waiting for its echo.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// When it was seen.
    t: f64,
    /// Its size.
    len: u32,
    /// A hash of its bytes, to match the echo.
    sum: u64,
}

/// The datagrams to and from one server port.
#[derive(Debug)]
pub(crate) struct Echoes {
    /// The server's port.
    port: u16,
    /// Datagrams waiting, by (client, server).
    waiting: HashMap<(SocketAddr, SocketAddr), VecDeque<Waiting>>,
    /// Given up for room: (client, server, time, size).
    dropped: Vec<(SocketAddr, SocketAddr, f64, u32)>,
}

fn sum(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl Echoes {
    /// Datagrams to and from `port`.
    pub(crate) fn new(port: u16) -> Echoes {
        Echoes {
            port,
            waiting: HashMap::new(),
            dropped: Vec::new(),
        }
    }

    /// The line for one datagram seen at `t` carrying `data`.
    pub(crate) fn observe(&mut self, t: f64, d: &Datagram, data: &[u8]) -> String {
        let from_server = d.src.port() == self.port && d.dst.port() != self.port;
        let (me, peer) = if from_server {
            ("server", "client")
        } else {
            ("client", "server")
        };
        let head = format!("{me} {} -> {peer} {} UDP      len={}", d.src, d.dst, d.len);
        let s = sum(data);
        if !from_server {
            let q = self.waiting.entry((d.src, d.dst)).or_default();
            if q.len() >= MAX_WAITING
                && let Some(old) = q.pop_front()
            {
                self.dropped.push((d.src, d.dst, old.t, old.len));
            }
            q.push_back(Waiting {
                t,
                len: d.len,
                sum: s,
            });
            return head;
        }
        let Some(q) = self.waiting.get_mut(&(d.dst, d.src)) else {
            return format!("{head} (no datagram from this client before it: not an echo)");
        };
        match q.iter().position(|w| w.sum == s && w.len == d.len) {
            Some(i) => {
                let w = q.remove(i).unwrap_or(Waiting { t, len: 0, sum: 0 });
                format!(
                    "{head} (echo of the client's datagram at {:.6}, back after {})",
                    w.t,
                    human_secs(t - w.t)
                )
            }
            None => format!("{head} (not the echo of any datagram waiting)"),
        }
    }

    /// Every client datagram whose echo never came: (client, server,
    /// time, size), oldest first.
    pub(crate) fn unanswered(&self) -> Vec<(SocketAddr, SocketAddr, f64, u32)> {
        let mut v = self.dropped.clone();
        for ((c, s), q) in &self.waiting {
            v.extend(q.iter().map(|w| (*c, *s, w.t, w.len)));
        }
        v.sort_by(|a, b| a.2.total_cmp(&b.2));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(from_client: bool, len: u32) -> Datagram {
        let (c, s) = ("127.0.0.1:5000", "127.0.0.1:7");
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        Datagram {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            len,
        }
    }

    #[test]
    fn echo_matched_by_bytes_with_its_delay() {
        let mut e = Echoes::new(7);
        let a = e.observe(1.0, &dg(true, 3), b"abc");
        assert!(
            a.starts_with("client 127.0.0.1:5000 -> server 127.0.0.1:7 UDP"),
            "{a}"
        );
        assert!(a.ends_with("len=3"), "{a}");
        e.observe(1.1, &dg(true, 3), b"xyz");
        let b = e.observe(1.1 + 38e-6, &dg(false, 3), b"xyz");
        assert!(
            b.contains("echo of the client's datagram at 1.100000, back after 38 µs"),
            "{b}"
        );
        let un = e.unanswered();
        assert_eq!(un.len(), 1);
        assert_eq!((un[0].2, un[0].3), (1.0, 3));
        let c = e.observe(2.0, &dg(false, 3), b"qqq");
        assert!(c.contains("not the echo"), "{c}");
    }

    #[test]
    fn waiting_is_bounded() {
        let mut e = Echoes::new(7);
        for i in 0..(MAX_WAITING + 5) {
            e.observe(i as f64, &dg(true, 1), b"a");
        }
        assert_eq!(e.unanswered().len(), MAX_WAITING + 5);
        assert!(e.waiting.values().all(|q| q.len() <= MAX_WAITING));
    }
}
