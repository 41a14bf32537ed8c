//! Faults on purpose: an echo that misbehaves exactly as told, per
//! connection or datagram, with no I/O.
//!
//! A fault is written `key=value,key=value` (`--fault`), or as a named
//! table of a TOML file (`--fault-file`, read by the `netecho` crate and
//! handed here as pairs). Its keys say what goes wrong ([`Effects`]) and to
//! whom ([`Scope`]); [`Faults::pick`] chooses, for one new connection or
//! datagram, the effects that apply to it. What each effect then does to
//! the bytes is decided in [`tcp`] (the connection core's shaper: what may
//! be sent now, when next, when to end) and [`udp`] (what becomes of one
//! datagram), both with the clock and the random source passed in.
//!
//! Parsing here keeps the command line's one grammar: a duration is
//! seconds or has units (`50ms`, [`crate::duration`]), a size is bytes or
//! has a binary unit (`4KiB`), a rate is a size per second (`1MiB/s`, both
//! [`crate::size`]), a share is a fraction or a percentage (`0.05`, `5%`,
//! `1e-4`).

pub mod tcp;
pub mod udp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// The random source of jitter, probabilities and corruption: small and
/// fast, seeded, so a run can be repeated (`--fault-seed`).
pub type Rng = SmallRng;

/// A random source from `seed`.
pub fn rng(seed: u64) -> Rng {
    SmallRng::seed_from_u64(seed)
}

/// A uniform number in [0, 1).
pub fn roll(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

/// The delay a reordered datagram is held when `reorder-delay` is not given.
pub const DEFAULT_REORDER_DELAY: Duration = Duration::from_millis(10);

/// What goes wrong. Every field is one key; `None` leaves that part of the
/// echo alone.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effects {
    /// `latency`: each echo (TCP) or datagram (UDP) held this long from its arrival.
    pub latency: Option<Duration>,
    /// `jitter`: the hold varies uniformly by up to this much either way.
    pub jitter: Option<Duration>,
    /// `bandwidth`: bytes per second echoed on one connection.
    pub bandwidth: Option<u64>,
    /// `slice`: the echo written in pieces of at most this many bytes.
    pub slice: Option<usize>,
    /// `slice-delay`: the pause after each piece.
    pub slice_delay: Option<Duration>,
    /// How the connection ends after so many echoed bytes, if it does.
    pub end_after: Option<(EndAfter, u64)>,
    /// `accept-delay`: a connection is left waiting this long before its
    /// first byte is read.
    pub accept_delay: Option<Duration>,
    /// `corrupt-at`: one bit of the echoed byte at this offset flipped
    /// (counting from 0, as the client's `mismatch at byte N`).
    pub corrupt_at: Option<u64>,
    /// `corrupt`: each echoed byte has one bit flipped with this probability.
    pub corrupt: Option<f64>,
    /// `drop`: share of datagrams not echoed.
    pub drop: Option<f64>,
    /// `duplicate`: share of datagrams echoed twice.
    pub duplicate: Option<f64>,
    /// `reorder`: share of datagrams held back by `reorder-delay`, so later
    /// ones overtake them.
    pub reorder: Option<f64>,
    /// `reorder-delay`: how long a reordered datagram is held.
    pub reorder_delay: Option<Duration>,
    /// `truncate`: datagrams echoed at most this long.
    pub truncate: Option<usize>,
}

/// The three ways a connection can be ended after N echoed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAfter {
    /// `reset-after`: a reset (RST), as SO_LINGER 0 gives.
    Reset,
    /// `close-after`: our FIN.
    Close,
    /// `stall-after`: neither read nor write any more; the connection stays open.
    Stall,
}

impl EndAfter {
    /// The key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            EndAfter::Reset => "reset-after",
            EndAfter::Close => "close-after",
            EndAfter::Stall => "stall-after",
        }
    }
}

/// Which faults were applied, as counted: the `fault` label of
/// `netecho_faults_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Latency,
    Bandwidth,
    Slice,
    Reset,
    Close,
    Stall,
    AcceptDelay,
    Corrupt,
    Drop,
    Duplicate,
    Reorder,
    Truncate,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 12] = [
        Kind::Latency,
        Kind::Bandwidth,
        Kind::Slice,
        Kind::Reset,
        Kind::Close,
        Kind::Stall,
        Kind::AcceptDelay,
        Kind::Corrupt,
        Kind::Drop,
        Kind::Duplicate,
        Kind::Reorder,
        Kind::Truncate,
    ];

    /// The metrics label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Bandwidth => "bandwidth",
            Kind::Slice => "slice",
            Kind::Reset => "reset",
            Kind::Close => "close",
            Kind::Stall => "stall",
            Kind::AcceptDelay => "accept_delay",
            Kind::Corrupt => "corrupt",
            Kind::Drop => "drop",
            Kind::Duplicate => "duplicate",
            Kind::Reorder => "reorder",
            Kind::Truncate => "truncate",
        }
    }

    /// Position in [`Kind::ALL`], which lists the kinds in declaration
    /// order (a test checks it), so the discriminant is the position.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Effects {
    /// How long to hold one echo (TCP) or datagram (UDP) under `latency`
    /// and `jitter`: uniform in [latency - jitter, latency + jitter] (the
    /// parser keeps jitter <= latency); `None` without `latency`.
    pub fn hold(&self, rng: &mut Rng) -> Option<Duration> {
        let latency = self.latency?;
        Some(match self.jitter.filter(|j| !j.is_zero()) {
            None => latency,
            Some(j) => (latency - j) + j.mul_f64(2.0 * roll(rng)),
        })
    }

    /// True when something here changes a TCP echo.
    pub fn touches_tcp(&self) -> bool {
        self.latency.is_some()
            || self.bandwidth.is_some()
            || self.slice.is_some()
            || self.end_after.is_some()
            || self.accept_delay.is_some()
            || self.corrupt_at.is_some()
            || self.corrupt.is_some()
    }

    /// True when something here changes a UDP echo.
    pub fn touches_udp(&self) -> bool {
        self.latency.is_some()
            || self.drop.is_some()
            || self.duplicate.is_some()
            || self.reorder.is_some()
            || self.truncate.is_some()
    }

    /// The keys set, as a group name each: two faults whose scopes overlap
    /// may not share one (the three `*-after` keys are one group, `end`).
    fn groups(&self) -> Vec<&'static str> {
        let mut g = Vec::new();
        let mut add = |set: bool, name| {
            if set {
                g.push(name)
            }
        };
        add(self.latency.is_some(), "latency");
        add(self.bandwidth.is_some(), "bandwidth");
        add(self.slice.is_some(), "slice");
        add(
            self.end_after.is_some(),
            "reset-after/close-after/stall-after",
        );
        add(self.accept_delay.is_some(), "accept-delay");
        add(self.corrupt_at.is_some(), "corrupt-at");
        add(self.corrupt.is_some(), "corrupt");
        add(self.drop.is_some(), "drop");
        add(self.duplicate.is_some(), "duplicate");
        add(self.reorder.is_some(), "reorder");
        add(self.truncate.is_some(), "truncate");
        g
    }

    /// `self` with every key `other` sets and `self` does not.
    fn merge(self, o: Effects) -> Effects {
        Effects {
            latency: self.latency.or(o.latency),
            jitter: if self.latency.is_some() {
                self.jitter
            } else {
                self.jitter.or(o.jitter)
            },
            bandwidth: self.bandwidth.or(o.bandwidth),
            slice: self.slice.or(o.slice),
            slice_delay: if self.slice.is_some() {
                self.slice_delay
            } else {
                self.slice_delay.or(o.slice_delay)
            },
            end_after: self.end_after.or(o.end_after),
            accept_delay: self.accept_delay.or(o.accept_delay),
            corrupt_at: self.corrupt_at.or(o.corrupt_at),
            corrupt: self.corrupt.or(o.corrupt),
            drop: self.drop.or(o.drop),
            duplicate: self.duplicate.or(o.duplicate),
            reorder: self.reorder.or(o.reorder),
            reorder_delay: if self.reorder.is_some() {
                self.reorder_delay
            } else {
                self.reorder_delay.or(o.reorder_delay)
            },
            truncate: self.truncate.or(o.truncate),
        }
    }
}

/// To whom a fault applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scope {
    /// `from`: clients in this network only.
    pub from: Option<IpNet>,
    /// `listen`: connections or datagrams to this local address only (an
    /// unspecified address, `0.0.0.0` or `[::]`, matches any on its port).
    pub listen: Option<SocketAddr>,
    /// `probability`: the share of connections (or datagrams) it applies to.
    pub probability: f64,
    /// `after`: applies only from this long after the server started.
    pub after: Duration,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            from: None,
            listen: None,
            probability: 1.0,
            after: Duration::ZERO,
        }
    }
}

impl Scope {
    /// Whether a client at `peer`, reaching this server at `local`, is in
    /// scope at `since_start` (the probability is rolled by the caller).
    pub fn matches(&self, peer: IpAddr, local: SocketAddr, since_start: Duration) -> bool {
        if since_start < self.after {
            return false;
        }
        if let Some(net) = self.from
            && !net.contains(&peer.to_canonical())
        {
            return false;
        }
        if let Some(l) = self.listen {
            if l.port() != local.port() {
                return false;
            }
            // A wildcard socket (UDP on [::]) does not know which of its
            // addresses a datagram came to: only the port is compared.
            if !l.ip().is_unspecified()
                && !local.ip().is_unspecified()
                && l.ip().to_canonical() != local.ip().to_canonical()
            {
                return false;
            }
        }
        true
    }

    /// Whether some client could be in both scopes at once.
    fn overlaps(&self, o: &Scope) -> bool {
        let from = match (self.from, o.from) {
            (Some(a), Some(b)) => a.contains(&b) || b.contains(&a),
            _ => true,
        };
        let listen = match (self.listen, o.listen) {
            (Some(a), Some(b)) => {
                a.port() == b.port()
                    && (a.ip().is_unspecified()
                        || b.ip().is_unspecified()
                        || a.ip().to_canonical() == b.ip().to_canonical())
            }
            _ => true,
        };
        from && listen
    }
}

/// One fault: what, to whom, and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Its name in a fault file; `None` on the command line.
    pub name: Option<String>,
    pub effects: Effects,
    pub scope: Scope,
}

/// A fault that cannot be used: one line naming the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError(pub String);

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultError {}

/// Parses a duration with the grammar of every flag ([`crate::duration`]).
fn duration(v: &str) -> Result<Duration, String> {
    crate::duration::parse(v).map_err(|e| e.to_string())
}

/// Parses a size with the grammar of every flag ([`crate::size`]).
fn size(v: &str) -> Result<u64, String> {
    crate::size::parse(v).map_err(|e| e.to_string())
}

/// Parses a size that must be above zero.
fn size_nonzero(v: &str) -> Result<u64, String> {
    crate::size::parse_nonzero(v).map_err(|e| e.to_string())
}

/// Parses a rate of bytes per second ([`crate::size::parse_rate`]).
fn rate(v: &str) -> Result<u64, String> {
    crate::size::parse_rate(v).map_err(|e| e.to_string())
}

/// Parses a share: a fraction from 0 to 1 (`0.05`, `1e-4`) or a percentage
/// (`5%`).
fn share(v: &str) -> Result<f64, String> {
    let (num, scale) = match v.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (v, 1.0),
    };
    let p = num
        .trim()
        .parse::<f64>()
        .map_err(|_| "is not a share (0.05, 5%, 1e-4)".to_string())?
        / scale;
    if !(0.0..=1.0).contains(&p) || !p.is_finite() {
        return Err("is not a share from 0 to 1 (or 0% to 100%)".into());
    }
    Ok(p)
}

/// Parses `from`: a network (`10.0.0.0/8`) or one address.
fn network(v: &str) -> Result<IpNet, String> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    v.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "is not a network (10.0.0.0/8, 127.0.0.2, ::1/128)".to_string())
}

/// Every key a fault takes, for the error that names an unknown one.
const KEYS: &str = "latency, jitter, bandwidth, slice, slice-delay, reset-after, close-after, \
     stall-after, accept-delay, corrupt-at, corrupt, drop, duplicate, reorder, reorder-delay, \
     truncate, from, listen, probability, after";

impl Fault {
    /// Parses a `--fault` SPEC: comma-separated `key=value` pairs.
    pub fn parse(spec: &str) -> Result<Fault, FaultError> {
        let mut pairs = Vec::new();
        for part in spec.split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(FaultError(format!(
                    "fault '{spec}': '{part}' is not key=value"
                )));
            };
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        Fault::from_pairs(None, &pairs).map_err(|e| FaultError(format!("fault '{spec}': {e}")))
    }

    /// Builds a fault from its keys and values (a `--fault` SPEC split, or
    /// a fault file's table). The error names the bad key, not the fault:
    /// the caller says which fault it was.
    pub fn from_pairs(
        name: Option<String>,
        pairs: &[(String, String)],
    ) -> Result<Fault, FaultError> {
        let mut e = Effects::default();
        let mut s = Scope::default();
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            if seen.contains(&k.as_str()) {
                return Err(FaultError(format!("'{k}' is given twice")));
            }
            seen.push(k);
            let bad = |why: String| FaultError(format!("'{k}={v}' {why}"));
            let mut end = |how: EndAfter| -> Result<(), FaultError> {
                if let Some((other, _)) = e.end_after {
                    return Err(FaultError(format!(
                        "'{}' and '{}' contradict: a connection ends one way",
                        other.key(),
                        how.key()
                    )));
                }
                e.end_after = Some((how, size_nonzero(v).map_err(bad)?));
                Ok(())
            };
            match k.as_str() {
                "latency" => e.latency = Some(duration(v).map_err(bad)?),
                "jitter" => e.jitter = Some(duration(v).map_err(bad)?),
                "bandwidth" => e.bandwidth = Some(rate(v).map_err(bad)?),
                "slice" => {
                    e.slice =
                        Some(usize::try_from(size_nonzero(v).map_err(bad)?).unwrap_or(usize::MAX))
                }
                "slice-delay" => e.slice_delay = Some(duration(v).map_err(bad)?),
                "reset-after" => end(EndAfter::Reset)?,
                "close-after" => end(EndAfter::Close)?,
                "stall-after" => end(EndAfter::Stall)?,
                "accept-delay" => e.accept_delay = Some(duration(v).map_err(bad)?),
                "corrupt-at" => e.corrupt_at = Some(size(v).map_err(bad)?),
                "corrupt" => e.corrupt = Some(share(v).map_err(bad)?),
                "drop" => e.drop = Some(share(v).map_err(bad)?),
                "duplicate" => e.duplicate = Some(share(v).map_err(bad)?),
                "reorder" => e.reorder = Some(share(v).map_err(bad)?),
                "reorder-delay" => e.reorder_delay = Some(duration(v).map_err(bad)?),
                "truncate" => {
                    e.truncate = Some(usize::try_from(size(v).map_err(bad)?).unwrap_or(usize::MAX))
                }
                "from" => s.from = Some(network(v).map_err(bad)?),
                "listen" => {
                    s.listen = Some(v.parse::<SocketAddr>().map_err(|_| {
                        bad("is not an address (127.0.0.1:7000, [::1]:7000)".into())
                    })?)
                }
                "probability" => {
                    let p = share(v).map_err(bad)?;
                    if p == 0.0 {
                        return Err(bad("would never apply: give a share above 0".into()));
                    }
                    s.probability = p;
                }
                "after" => s.after = duration(v).map_err(bad)?,
                _ => {
                    return Err(FaultError(format!("unknown key '{k}' (one of: {KEYS})")));
                }
            }
        }
        let needs = |set: bool, key: &str, on: Option<()>, other: &str| {
            if set && on.is_none() {
                Err(FaultError(format!("'{key}' needs '{other}'")))
            } else {
                Ok(())
            }
        };
        needs(e.jitter.is_some(), "jitter", e.latency.map(drop), "latency")?;
        needs(
            e.slice_delay.is_some(),
            "slice-delay",
            e.slice.map(drop),
            "slice",
        )?;
        needs(
            e.reorder_delay.is_some(),
            "reorder-delay",
            e.reorder.map(drop),
            "reorder",
        )?;
        if let (Some(l), Some(j)) = (e.latency, e.jitter)
            && j > l
        {
            return Err(FaultError(format!(
                "'jitter={}' is above 'latency={}': a hold cannot be negative",
                humantime::format_duration(j),
                humantime::format_duration(l)
            )));
        }
        if !e.touches_tcp() && !e.touches_udp() {
            return Err(FaultError(format!(
                "names no fault, only a scope (a fault is one of: {KEYS})"
            )));
        }
        Ok(Fault {
            name,
            effects: e,
            scope: s,
        })
    }

    /// How the fault is called in messages: its name, else its spec.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("'{n}'"),
            None => format!("'{self}'"),
        }
    }
}

impl fmt::Display for Fault {
    /// The fault as a SPEC, keys in a fixed order: what `serve` prints at start.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.effects;
        let s = &self.scope;
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut parts: Vec<String> = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        };
        put("latency", e.latency.map(d));
        put("jitter", e.jitter.map(d));
        put("bandwidth", e.bandwidth.map(|b| format!("{b}/s")));
        put("slice", e.slice.map(|n| n.to_string()));
        put("slice-delay", e.slice_delay.map(d));
        put(
            e.end_after.map_or("", |(how, _)| how.key()),
            e.end_after.map(|(_, n)| n.to_string()),
        );
        put("accept-delay", e.accept_delay.map(d));
        put("corrupt-at", e.corrupt_at.map(|n| n.to_string()));
        put("corrupt", e.corrupt.map(|p| p.to_string()));
        put("drop", e.drop.map(|p| p.to_string()));
        put("duplicate", e.duplicate.map(|p| p.to_string()));
        put("reorder", e.reorder.map(|p| p.to_string()));
        put("reorder-delay", e.reorder_delay.map(d));
        put("truncate", e.truncate.map(|n| n.to_string()));
        put("from", s.from.map(|n| n.to_string()));
        put("listen", s.listen.map(|a| a.to_string()));
        put(
            "probability",
            (s.probability < 1.0).then(|| s.probability.to_string()),
        );
        put("after", (!s.after.is_zero()).then(|| d(s.after)));
        if let Some(n) = &self.name {
            write!(f, "{n}: ")?;
        }
        f.write_str(&parts.join(","))
    }
}

/// The faults a server applies, checked against each other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    list: Vec<Fault>,
}

/// Which traffic a pick is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Faults {
    /// The faults, refused if two whose scopes overlap set the same key
    /// (which one would win is not for a server to guess).
    pub fn new(list: Vec<Fault>) -> Result<Faults, FaultError> {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if !a.scope.overlaps(&b.scope) {
                    continue;
                }
                let (ga, gb) = (a.effects.groups(), b.effects.groups());
                if let Some(key) = ga.iter().find(|k| gb.contains(k)) {
                    return Err(FaultError(format!(
                        "faults {} and {} both set {key} for overlapping scopes: \
                         narrow one with from= or listen=",
                        a.label(),
                        b.label()
                    )));
                }
            }
        }
        Ok(Faults { list })
    }

    /// True when no fault is set: the common case, which costs nothing.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every fault, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Fault> {
        self.list.iter()
    }

    /// The effects for one new connection (or datagram) of `proto` from
    /// `peer` to `local`, `since_start` after the server started; `roll`
    /// gives a uniform number in [0, 1) for each fault with a probability.
    /// `None`: served normally.
    pub fn pick(
        &self,
        proto: Proto,
        peer: IpAddr,
        local: SocketAddr,
        since_start: Duration,
        mut roll: impl FnMut() -> f64,
    ) -> Option<Effects> {
        let mut out: Option<Effects> = None;
        for f in &self.list {
            let relevant = match proto {
                Proto::Tcp => f.effects.touches_tcp(),
                Proto::Udp => f.effects.touches_udp(),
            };
            if !relevant || !f.scope.matches(peer, local, since_start) {
                continue;
            }
            if f.scope.probability < 1.0 && roll() >= f.scope.probability {
                continue;
            }
            out = Some(match out {
                None => f.effects,
                Some(e) => e.merge(f.effects),
            });
        }
        out
    }

    /// True when some fault touches TCP.
    pub fn any_tcp(&self) -> bool {
        self.list.iter().any(|f| f.effects.touches_tcp())
    }

    /// True when some fault touches UDP.
    pub fn any_udp(&self) -> bool {
        self.list.iter().any(|f| f.effects.touches_udp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_index_is_its_place_in_all() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{}", k.label());
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn err(spec: &str) -> String {
        Fault::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses_with_its_scope() {
        let f = Fault::parse("latency=50ms,jitter=10ms,from=10.0.0.0/8").unwrap();
        assert_eq!(f.effects.latency, Some(ms(50)));
        assert_eq!(f.effects.jitter, Some(ms(10)));
        assert_eq!(f.scope.from, Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(f.to_string(), "latency=50ms,jitter=10ms,from=10.0.0.0/8");
    }

    #[test]
    fn every_unit_of_the_grammar() {
        let f = Fault::parse(
            "bandwidth=1MiB/s,slice=16,slice-delay=5ms,reset-after=4KiB,accept-delay=2,\
             corrupt-at=100,corrupt=1e-4,probability=10%,after=10s,listen=127.0.0.1:7000",
        )
        .unwrap();
        let e = f.effects;
        assert_eq!(e.bandwidth, Some(1 << 20));
        assert_eq!(e.slice, Some(16));
        assert_eq!(e.slice_delay, Some(ms(5)));
        assert_eq!(e.end_after, Some((EndAfter::Reset, 4096)));
        assert_eq!(e.accept_delay, Some(Duration::from_secs(2)));
        assert_eq!(e.corrupt_at, Some(100));
        assert_eq!(e.corrupt, Some(1e-4));
        assert!((f.scope.probability - 0.1).abs() < 1e-12);
        assert_eq!(f.scope.after, Duration::from_secs(10));
        let u = Fault::parse("drop=5%,duplicate=0.01,reorder=1%,reorder-delay=20ms,truncate=32")
            .unwrap()
            .effects;
        assert_eq!(u.drop, Some(0.05));
        assert_eq!(u.reorder_delay, Some(ms(20)));
        assert_eq!(u.truncate, Some(32));
        assert!(u.touches_udp() && !u.touches_tcp());
    }

    #[test]
    fn a_bad_spec_is_one_line_naming_the_bad_part() {
        let e = err("latency=50ms,wobble=3");
        assert!(e.contains("unknown key 'wobble'"), "{e}");
        let e = err("latency=5parsecs");
        assert!(
            e.contains("'latency=5parsecs'") && e.contains("not a duration"),
            "{e}"
        );
        let e = err("bandwidth=fast");
        assert!(e.contains("'bandwidth=fast'"), "{e}");
        let e = err("drop=150%");
        assert!(e.contains("'drop=150%'"), "{e}");
        let e = err("reset-after=4KiB,close-after=1KiB");
        assert!(e.contains("contradict"), "{e}");
        assert!(err("jitter=5ms").contains("'jitter' needs 'latency'"));
        assert!(err("latency=5ms,jitter=10ms").contains("above"));
        assert!(err("from=10.0.0.0/8").contains("names no fault"));
        assert!(err("from=10.0.0.300/8,drop=1%").contains("'from=10.0.0.300/8'"));
        assert!(err("drop").contains("'drop' is not key=value"));
        assert!(err("drop=1%,drop=2%").contains("given twice"));
        assert!(err("drop=1%,probability=0").contains("never apply"));
        for spec in ["wobble=3", "latency=x", "drop=1%,probability=0"] {
            assert!(!err(spec).contains('\n'), "{spec}");
        }
    }

    #[test]
    fn overlapping_scopes_may_not_set_the_same_key() {
        let p = |s| Fault::parse(s).unwrap();
        let e = Faults::new(vec![p("latency=50ms"), p("latency=10ms,from=10.0.0.0/8")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("both set latency"), "{e}");
        let e = Faults::new(vec![
            p("reset-after=1k"),
            p("stall-after=2k,from=127.0.0.2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("reset-after/close-after/stall-after"), "{e}");
        // Disjoint sources, or different keys, are fine side by side.
        Faults::new(vec![
            p("latency=50ms,from=10.0.0.0/8"),
            p("latency=10ms,from=192.168.0.0/16"),
            p("drop=5%"),
        ])
        .unwrap();
    }

    #[test]
    fn pick_honours_source_listen_time_and_probability() {
        let p = |s| Fault::parse(s).unwrap();
        let faults = Faults::new(vec![
            p("latency=50ms,from=127.0.0.2/32"),
            p("drop=50%,listen=0.0.0.0:7000"),
            p("corrupt-at=5,after=10s"),
            p("bandwidth=1k,probability=0.5"),
        ])
        .unwrap();
        let l: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let t0 = Duration::ZERO;
        assert_eq!(faults.pick(Proto::Tcp, a, l, t0, || 0.9), None);
        let e = faults.pick(Proto::Tcp, b, l, t0, || 0.9).unwrap();
        assert_eq!(e.latency, Some(ms(50)));
        assert_eq!(e.bandwidth, None);
        let e = faults
            .pick(Proto::Tcp, a, l, Duration::from_secs(11), || 0.1)
            .unwrap();
        assert_eq!((e.corrupt_at, e.bandwidth), (Some(5), Some(1024)));
        assert!(
            faults
                .pick(Proto::Udp, a, l, t0, || 0.9)
                .unwrap()
                .drop
                .is_some()
        );
        assert_eq!(faults.pick(Proto::Udp, a, other, t0, || 0.9), None);
    }
}
