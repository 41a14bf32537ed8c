//! The event-mode timeline of `watch`: each socket's current state and
//! since when, fed with parsed trace events, answering with the lines to
//! print. Pure code: the times are the events' own timestamps, and the one
//! question only the kernel's socket table can answer (did that socket
//! really enter TIME-WAIT?) is handed back to the caller as a [`Step`].
//!
//! ```text
//!    1.204 127.0.0.1:40522 -> 127.0.0.1:6666 ESTABLISHED => FIN-WAIT-1 after 1.204 s
//! ```
//!
//! # The TIME-WAIT trap
//! A socket entering TIME-WAIT is reported by `inet_sock_set_state` as
//! `FIN-WAIT-2 => CLOSE` (or `CLOSING => CLOSE`): the kernel swaps the full
//! socket for a small time-wait socket and closes the old one, and the
//! time-wait socket never goes through the tracepoint. So such a CLOSE
//! becomes [`Step::CheckTimeWait`]; the caller looks the 4-tuple up over
//! sock_diag and answers with [`Timeline::closed_or_time_wait`], and later
//! reports the time-wait socket's disappearance with
//! [`Timeline::time_wait_over`].

use std::collections::HashMap;
use std::net::SocketAddr;

use super::events::{Event, Kind};
use super::format::format_addr;
use super::snapshot::Key;
use super::state::State;

/// What the caller has to do after an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Print this line.
    Print(String),
    /// Look `key` up in the socket table: TIME-WAIT or gone? `left` is the
    /// state the tracepoint said was left, `ts` the event's time.
    CheckTimeWait { key: Key, left: State, ts: f64 },
}

/// Every socket seen on the port, and its state.
pub(crate) struct Timeline {
    /// The watched port: events on other ports are ignored (the kernel
    /// filters most of them already; `tcp_send_reset` it cannot).
    port: u16,
    /// The trace-clock time `watch` started; printed times count from it.
    start: f64,
    /// State and the time it was entered, per connection.
    states: HashMap<Key, (State, f64)>,
    /// SYN-SENT sockets whose port is not chosen yet (the tracepoint fires
    /// before `connect` picks it), by peer, oldest first: the next
    /// `SYN-SENT => X` towards that peer takes the oldest.
    unbound: Vec<(SocketAddr, f64)>,
}

impl Timeline {
    /// An empty timeline for `port`, counting from `start`.
    pub(crate) fn new(port: u16, start: f64) -> Timeline {
        Timeline {
            port,
            start,
            states: HashMap::new(),
            unbound: Vec::new(),
        }
    }

    /// `   1.204 127.0.0.1:40522 -> 127.0.0.1:6666 `
    fn head(&self, ts: f64, local: SocketAddr, remote: SocketAddr) -> String {
        let local = if local.port() == 0 && !local.ip().is_unspecified() {
            format!("{}:*", strip_port(local))
        } else {
            format_addr(local)
        };
        format!(
            "{:8.3} {} -> {}",
            ts - self.start,
            local,
            format_addr(remote)
        )
    }

    /// `old => new after 1.204 s`, the time since `old` began if known.
    fn moved(&mut self, key: Key, old: State, new: State, ts: f64) -> String {
        let since = self.states.get(&key).map(|&(_, t)| t);
        if new == State::Closed {
            self.states.remove(&key);
        } else {
            self.states.insert(key, (new, ts));
        }
        match since {
            Some(t) => format!("{old} => {new} after {}", human_secs(ts - t)),
            None => format!("{old} => {new}"),
        }
    }

    /// The steps for one event.
    pub(crate) fn on_event(&mut self, ev: &Event) -> Vec<Step> {
        if ev.local.port() != self.port && ev.remote.port() != self.port {
            return Vec::new();
        }
        let key = Key {
            local: ev.local,
            remote: ev.remote,
        };
        let line = match &ev.kind {
            Kind::State { old, new } => {
                if *new == State::SynSent && ev.local.port() == 0 {
                    self.unbound.push((ev.remote, ev.ts));
                    let h = self.head(ev.ts, ev.local, ev.remote);
                    return vec![Step::Print(format!("{h} {old} => {new}"))];
                }
                if *old == State::SynSent
                    && !self.states.contains_key(&key)
                    && let Some(i) = self.unbound.iter().position(|(r, _)| *r == ev.remote)
                {
                    let (_, t) = self.unbound.remove(i);
                    self.states.insert(key, (State::SynSent, t));
                }
                if *new == State::Closed && matches!(old, State::FinWait2 | State::Closing) {
                    return vec![Step::CheckTimeWait {
                        key,
                        left: *old,
                        ts: ev.ts,
                    }];
                }
                let h = self.head(ev.ts, ev.local, ev.remote);
                format!("{h} {}", self.moved(key, *old, *new, ev.ts))
            }
            Kind::SendReset { reason } => {
                let h = self.head(ev.ts, ev.local, ev.remote);
                format!("{h} RST sent ({reason})")
            }
            Kind::ReceiveReset => {
                let h = self.head(ev.ts, ev.local, ev.remote);
                format!("{h} RST received")
            }
            Kind::Retransmit { state } => {
                let h = self.head(ev.ts, ev.local, ev.remote);
                format!("{h} retransmission (in {state})")
            }
            Kind::RetransmitSynack => {
                let h = self.head(ev.ts, ev.local, ev.remote);
                format!("{h} SYN-ACK retransmission")
            }
        };
        vec![Step::Print(line)]
    }

    /// The answer to [`Step::CheckTimeWait`]: `in_time_wait` is what
    /// sock_diag showed for the key.
    pub(crate) fn closed_or_time_wait(
        &mut self,
        key: Key,
        left: State,
        ts: f64,
        in_time_wait: bool,
    ) -> String {
        let h = self.head(ts, key.local, key.remote);
        if in_time_wait {
            let m = self.moved(key, left, State::TimeWait, ts);
            format!("{h} {m} (the tracepoint says CLOSE; sock_diag shows TIME-WAIT)")
        } else {
            format!("{h} {}", self.moved(key, left, State::Closed, ts))
        }
    }

    /// The time-wait socket of `key` is gone from the table at `ts`.
    pub(crate) fn time_wait_over(&mut self, key: Key, ts: f64) -> String {
        let h = self.head(ts, key.local, key.remote);
        format!(
            "{h} {}",
            self.moved(key, State::TimeWait, State::Closed, ts)
        )
    }
}

/// A duration in seconds at the resolution it happened: `38 µs`,
/// `1.25 ms`, `312 ms`, `1.204 s` (three significant figures below a
/// second, milliseconds above), so a state that lasted microseconds does
/// not read `0.000 s`.
pub(crate) fn human_secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1e-2 {
        format!("{:.2} ms", s * 1e3)
    } else if s < 1e-1 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

/// The address part of `ip:port` as `watch` prints it (`[::1]` for v6).
fn strip_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.ip().to_string(),
        SocketAddr::V6(v) => format!("[{}]", v.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: f64, local: &str, remote: &str, old: State, new: State) -> Event {
        Event {
            ts,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            kind: Kind::State { old, new },
        }
    }

    fn printed(steps: Vec<Step>) -> String {
        match steps.as_slice() {
            [Step::Print(l)] => l.clone(),
            s => panic!("not one line: {s:?}"),
        }
    }

    #[test]
    fn times_in_the_state_left() {
        let mut t = Timeline::new(6666, 100.0);
        let c = "127.0.0.1:40522";
        let s = "127.0.0.1:6666";
        let l = printed(t.on_event(&ev(100.5, "127.0.0.1:0", s, State::Closed, State::SynSent)));
        assert_eq!(
            l,
            "   0.500 127.0.0.1:* -> 127.0.0.1:6666 CLOSED => SYN-SENT"
        );
        let l = printed(t.on_event(&ev(100.5001, c, s, State::SynSent, State::Established)));
        assert!(l.ends_with("SYN-SENT => ESTABLISHED after 100 µs"), "{l}");
        let l = printed(t.on_event(&ev(101.704, c, s, State::Established, State::FinWait1)));
        assert_eq!(
            l,
            "   1.704 127.0.0.1:40522 -> 127.0.0.1:6666 ESTABLISHED => FIN-WAIT-1 after 1.204 s"
        );
        printed(t.on_event(&ev(101.705, c, s, State::FinWait1, State::FinWait2)));
        let steps = t.on_event(&ev(101.805, c, s, State::FinWait2, State::Closed));
        let key = Key {
            local: c.parse().unwrap(),
            remote: s.parse().unwrap(),
        };
        assert_eq!(
            steps,
            [Step::CheckTimeWait {
                key,
                left: State::FinWait2,
                ts: 101.805
            }]
        );
        let l = t.closed_or_time_wait(key, State::FinWait2, 101.805, true);
        assert!(
            l.contains("FIN-WAIT-2 => TIME-WAIT after 100 ms (the tracepoint says CLOSE"),
            "{l}"
        );
        let l = t.time_wait_over(key, 161.905);
        assert!(l.ends_with("TIME-WAIT => CLOSED after 60.100 s"), "{l}");
        assert!(t.states.is_empty());
    }

    /// A state that lasted 38 µs says so, not `0.000 s`.
    #[test]
    fn durations_at_their_resolution() {
        assert_eq!(human_secs(38e-6), "38 µs");
        assert_eq!(human_secs(0.0), "0 µs");
        assert_eq!(human_secs(-1.0), "0 µs");
        assert_eq!(human_secs(0.00125), "1.25 ms");
        assert_eq!(human_secs(0.0381), "38.1 ms");
        assert_eq!(human_secs(0.312), "312 ms");
        assert_eq!(human_secs(1.2041), "1.204 s");
        let mut t = Timeline::new(6666, 0.0);
        let (c, s) = ("127.0.0.1:40522", "127.0.0.1:6666");
        printed(t.on_event(&ev(1.0, c, s, State::SynSent, State::Established)));
        let l = printed(t.on_event(&ev(1.000038, c, s, State::Established, State::FinWait1)));
        assert!(l.ends_with("ESTABLISHED => FIN-WAIT-1 after 38 µs"), "{l}");
    }

    #[test]
    fn a_close_not_in_time_wait_is_a_close() {
        let mut t = Timeline::new(6666, 0.0);
        let key = Key {
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:6666".parse().unwrap(),
        };
        let l = t.closed_or_time_wait(key, State::FinWait2, 1.0, false);
        assert!(l.ends_with("FIN-WAIT-2 => CLOSED"), "{l}");
    }

    #[test]
    fn other_ports_are_ignored_and_resets_shown() {
        let mut t = Timeline::new(6666, 0.0);
        let other = ev(
            1.0,
            "127.0.0.1:1",
            "127.0.0.1:2",
            State::Closed,
            State::Listen,
        );
        assert!(t.on_event(&other).is_empty());
        let rst = Event {
            ts: 2.0,
            local: "127.0.0.1:6666".parse().unwrap(),
            remote: "127.0.0.1:3".parse().unwrap(),
            kind: Kind::SendReset {
                reason: "NO_SOCKET".into(),
            },
        };
        assert!(printed(t.on_event(&rst)).ends_with("RST sent (NO_SOCKET)"));
    }
}
