//! The workloads of `BENCHMARKING.md`, each written once: its number, its
//! name and its [`Shape`]. Everything else (the load, the flags a model
//! gets, whether the kernel floor or a peer applies, the table's heads and
//! footnote, the chart's panel, the ratio columns) is derived from the shape, so a new workload
//! is one constant here and one entry in [`Workload::ALL`].

use crate::bench::text::thousands;

/// Workload 1's (and 5's) message: one small request, where syscalls dominate.
pub const SMALL_MSG: usize = 64;
/// Workload 2's message: where copying dominates.
pub const LARGE_MSG: usize = 64 * 1024;
/// Workload 1's connections, one message in flight on each.
pub const SMALL_CONNS: usize = 50;
/// Workload 2's (and 6's) connections.
pub const LARGE_CONNS: usize = 8;
/// Workload 3's connections open at once.
pub const CONNECT_PARALLEL: usize = 4;
/// Workload 5's connections: many, where io_uring's batching should pay.
pub(crate) const MANY_CONNS: usize = 300;
/// Workload 6's message: the bandwidth-reflector use, where `--zero-copy`
/// pays (a splice moves page references, a copy grows with the size).
pub(crate) const BULK_MSG: usize = 1024 * 1024;
/// Workload 4's idle connections (fewer if the descriptor limit is lower).
pub const IDLE_CONNS: usize = 10_000;

/// What a workload asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `conns` connections with one `size`-byte message in flight on each,
    /// echoed and checked; figures per request.
    Traffic {
        conns: usize,
        size: usize,
        /// A new connection per request (connect, one message, close).
        new_conn: bool,
    },
    /// Connections opened, used once with one [`SMALL_MSG`] round trip and
    /// held idle; the figure is server memory per connection.
    Idle,
    /// `conns` connections each writing continuously while reading its
    /// echo back (`netecho bench --stream`, every byte checked); the figure
    /// is server CPU per MiB echoed.
    Stream { conns: usize },
}

/// One workload of `BENCHMARKING.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The number `BENCHMARKING.md` gives it.
    pub(crate) number: usize,
    /// Its one-word name, in tables and in `NETECHO_BENCH_WORKLOADS`.
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
}

impl Workload {
    /// 64 B messages, 50 connections, one message in flight on each.
    pub(crate) const SMALL: Workload = Workload {
        number: 1,
        name: "small",
        shape: Shape::Traffic {
            conns: SMALL_CONNS,
            size: SMALL_MSG,
            new_conn: false,
        },
    };
    /// 64 KiB messages, 8 connections.
    pub(crate) const LARGE: Workload = Workload {
        number: 2,
        name: "large",
        shape: Shape::Traffic {
            conns: LARGE_CONNS,
            size: LARGE_MSG,
            new_conn: false,
        },
    };
    /// A new connection per 64 B request, 4 at a time.
    pub(crate) const CONNECT: Workload = Workload {
        number: 3,
        name: "connect",
        shape: Shape::Traffic {
            conns: CONNECT_PARALLEL,
            size: SMALL_MSG,
            new_conn: true,
        },
    };
    /// Connections used once, then held idle: memory per connection.
    pub(crate) const IDLE: Workload = Workload {
        number: 4,
        name: "idle",
        shape: Shape::Idle,
    };

    /// 64 B messages, 300 connections.
    pub(crate) const MANY: Workload = Workload {
        number: 5,
        name: "many",
        shape: Shape::Traffic {
            conns: MANY_CONNS,
            size: SMALL_MSG,
            new_conn: false,
        },
    };
    /// 1 MiB messages, 8 connections (request/response).
    pub(crate) const BULK: Workload = Workload {
        number: 6,
        name: "bulk",
        shape: Shape::Traffic {
            conns: LARGE_CONNS,
            size: BULK_MSG,
            new_conn: false,
        },
    };

    /// A full-duplex stream on each of 8 connections: the second half of
    /// BENCHMARKING.md's workload 6 (the bandwidth reflector), numbered 7
    /// here because TLS (its 7) is rows of servers, not a workload.
    pub(crate) const STREAM: Workload = Workload {
        number: 7,
        name: "stream",
        shape: Shape::Stream { conns: LARGE_CONNS },
    };

    /// All of them, in table order.
    pub const ALL: [Workload; 7] = [
        Workload::SMALL,
        Workload::LARGE,
        Workload::CONNECT,
        Workload::IDLE,
        Workload::MANY,
        Workload::BULK,
        Workload::STREAM,
    ];

    /// Accepts the number or the one-word name.
    pub fn parse(s: &str) -> Option<Workload> {
        let s = s.trim();
        Workload::ALL
            .into_iter()
            .find(|w| s == w.name || s == w.number.to_string())
    }

    /// The names [`Workload::parse`] accepts, for an error message:
    /// `1-4 or small, large, connect, idle`.
    pub fn known() -> String {
        let numbers: Vec<usize> = Workload::ALL.iter().map(|w| w.number).collect();
        let contiguous = numbers.windows(2).all(|p| p[1] == p[0] + 1);
        let numbers = match (numbers.first(), numbers.last()) {
            (Some(a), Some(b)) if contiguous => format!("{a}-{b}"),
            _ => numbers
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name).collect();
        format!("{numbers} or {}", names.join(", "))
    }

    /// Connections the server must serve at once.
    pub(crate) fn conns(self, idle_conns: usize) -> usize {
        match self.shape {
            Shape::Traffic { conns, .. } | Shape::Stream { conns } => conns,
            Shape::Idle => idle_conns,
        }
    }

    /// The message size of a workload that keeps its connections open (the
    /// size the kernel floor is measured at); `None` for the others.
    pub(crate) fn kept_open_size(self) -> Option<usize> {
        match self.shape {
            Shape::Traffic {
                size,
                new_conn: false,
                ..
            } => Some(size),
            _ => None,
        }
    }

    /// What it does, in a few words.
    pub(crate) fn describe(self, idle_conns: usize) -> String {
        match self.shape {
            Shape::Traffic {
                conns,
                size,
                new_conn: false,
            } => format!(
                "{} messages, {conns} connections, one in flight each",
                bytes(size)
            ),
            Shape::Traffic {
                conns,
                size,
                new_conn: true,
            } => format!(
                "a new connection per request ({}), {conns} at a time",
                bytes(size)
            ),
            Shape::Idle => format!(
                "{} connections used once ({} round trip), then idle",
                thousands(idle_conns as u64),
                bytes(SMALL_MSG)
            ),
            Shape::Stream { conns } => {
                format!("a full-duplex stream on each of {conns} connections, every byte checked")
            }
        }
    }
}

/// A message size as `64 B`, `64 KiB` or `1 MiB`.
fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_by_number_or_name() {
        assert_eq!(Workload::parse("2"), Some(Workload::LARGE));
        assert_eq!(Workload::parse(" idle "), Some(Workload::IDLE));
        assert_eq!(Workload::parse("6"), Some(Workload::BULK));
        assert_eq!(Workload::parse("7"), Some(Workload::STREAM));
        assert_eq!(Workload::parse("8"), None);
        assert_eq!(
            Workload::known(),
            "1-7 or small, large, connect, idle, many, bulk, stream"
        );
    }

    #[test]
    fn descriptions_are_those_of_benchmarking_md() {
        let d: Vec<String> = Workload::ALL.iter().map(|w| w.describe(10_000)).collect();
        assert_eq!(
            d,
            [
                "64 B messages, 50 connections, one in flight each",
                "64 KiB messages, 8 connections, one in flight each",
                "a new connection per request (64 B), 4 at a time",
                "10,000 connections used once (64 B round trip), then idle",
                "64 B messages, 300 connections, one in flight each",
                "1 MiB messages, 8 connections, one in flight each",
                "a full-duplex stream on each of 8 connections, every byte checked",
            ]
        );
        assert_eq!(bytes(1024 * 1024), "1 MiB");
    }

    #[test]
    fn numbers_and_names_are_unique() {
        for (i, a) in Workload::ALL.iter().enumerate() {
            for b in &Workload::ALL[i + 1..] {
                assert!(a.number != b.number && a.name != b.name, "{a:?} {b:?}");
            }
        }
    }
}
