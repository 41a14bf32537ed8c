//! `--fault` and `--fault-file`: the faults this server applies on purpose,
//! loaded and checked before anything binds, picked per connection or
//! datagram, counted (`netecho_faults_total`) and logged with the peer.
//!
//! The grammar, the scopes and what each fault decides live in the
//! connection core ([`netecho_core::fault`]); this module reads the file,
//! keeps the server's start time (for `after=`) and the seed, and counts.
//!
//! A fault file is TOML, one table per named fault, its keys those of a
//! `--fault` SPEC:
//!
//! ```toml
//! [slow-office]
//! latency = "50ms"
//! jitter = "10ms"
//! from = "10.0.0.0/8"
//!
//! [lossy]
//! drop = "5%"
//! ```
//!
//! SIGHUP starts a new server with the same command line, which reads the
//! file again: an edited file takes effect with the hand-over, and a broken
//! one fails the new server's start, leaving this one serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use netecho_core::fault::{Effects, Fault, Faults, Kind, Proto, Rng, rng, roll};

use crate::error::{Error, Result};
use crate::serve::service::stats::Stats;

/// The faults a server applies, with what picking them needs.
#[derive(Debug)]
pub(crate) struct FaultSet {
    pub(crate) faults: Faults,
    /// When the server started: `after=` counts from here.
    started: Instant,
    /// `--fault-seed`, else drawn from the clock at start.
    seed: u64,
    /// Connections picked for so far: each gets its own random stream.
    picks: AtomicU64,
}

impl FaultSet {
    /// The faults of `--fault` and `--fault-file`, checked together;
    /// `None` when there are none. Every error is one line naming the bad
    /// part, a usage error (exit 2).
    pub(crate) fn load(
        cli: &[Fault],
        file: Option<&Path>,
        seed: Option<u64>,
    ) -> Result<Option<FaultSet>> {
        let mut list = cli.to_vec();
        if let Some(path) = file {
            list.extend(read_file(path)?);
        }
        if list.is_empty() {
            return Ok(None);
        }
        let faults = Faults::new(list).map_err(|e| Error::Usage(e.to_string()))?;
        let seed = seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        });
        Ok(Some(FaultSet {
            faults,
            started: Instant::now(),
            seed,
            picks: AtomicU64::new(0),
        }))
    }

    /// A random stream of its own for the next pick (a connection, or a
    /// UDP loop).
    pub(crate) fn rng(&self) -> Rng {
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        rng(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The effects for a new TCP connection from `peer` to `local`, with a
    /// seed for its own randomness; `None` to serve it normally.
    pub(crate) fn pick_tcp(&self, peer: SocketAddr, local: SocketAddr) -> Option<(Effects, u64)> {
        if !self.faults.any_tcp() {
            return None;
        }
        let mut r = self.rng();
        let e = self
            .faults
            .pick(Proto::Tcp, peer.ip(), local, self.started.elapsed(), || {
                roll(&mut r)
            })?;
        Some((e, (roll(&mut r) * u64::MAX as f64) as u64))
    }

    /// The effects for one datagram from `peer` to `local`.
    pub(crate) fn pick_udp(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        r: &mut Rng,
    ) -> Option<Effects> {
        self.faults
            .pick(Proto::Udp, peer.ip(), local, self.started.elapsed(), || {
                roll(r)
            })
    }

    /// Logs the active faults, one line each: what `serve` says at start.
    pub(crate) fn announce(&self) {
        for f in self.faults.iter() {
            tracing::info!(fault = %f, "fault active");
        }
    }
}

/// Counts and logs faults applied to `peer`'s connection or datagram.
pub(crate) fn count(stats: &Stats, peer: SocketAddr, kinds: &[Kind]) {
    for k in kinds {
        stats.faults[k.index()].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, fault = k.label(), "fault applied");
    }
}

/// Reads a fault file: one named fault per TOML table.
fn read_file(path: &Path) -> Result<Vec<Fault>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("--fault-file {shown}: {e}")))?;
    parse_file(&text).map_err(|e| Error::Usage(format!("--fault-file {shown}: {e}")))
}

/// The faults of a fault file's text.
fn parse_file(text: &str) -> std::result::Result<Vec<Fault>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().replace('\n', " "))?;
    let mut out = Vec::new();
    for (name, v) in table {
        let toml::Value::Table(t) = v else {
            return Err(format!(
                "'{name}' is not a table: write each fault as [name] then its keys"
            ));
        };
        let mut pairs = Vec::new();
        for (k, v) in t {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(format!(
                        "fault '{name}': '{k}' is a {}, not a value such as \"50ms\"",
                        other.type_str()
                    ));
                }
            };
            pairs.push((k, v));
        }
        out.push(
            Fault::from_pairs(Some(name.clone()), &pairs)
                .map_err(|e| format!("fault '{name}': {e}"))?,
        );
    }
    if out.is_empty() {
        return Err("no fault in it (write each as [name] then its keys)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_named_faults_parses_like_specs() {
        let faults = parse_file(
            "[slow]\nlatency = \"50ms\"\njitter = \"10ms\"\nfrom = \"10.0.0.0/8\"\n\n\
             [lossy]\ndrop = \"5%\"\ntruncate = 32\n",
        )
        .unwrap();
        let slow = faults
            .iter()
            .find(|f| f.name.as_deref() == Some("slow"))
            .unwrap();
        assert_eq!(
            slow.effects,
            Fault::parse("latency=50ms,jitter=10ms").unwrap().effects
        );
        let lossy = faults
            .iter()
            .find(|f| f.name.as_deref() == Some("lossy"))
            .unwrap();
        assert_eq!(lossy.effects.truncate, Some(32));
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_fault_and_key() {
        let e = parse_file("[slow]\nlatency = \"5 parsecs\"\n").unwrap_err();
        assert!(
            e.contains("fault 'slow'") && e.contains("'latency=5 parsecs'"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = parse_file("latency = \"50ms\"\n").unwrap_err();
        assert!(e.contains("'latency' is not a table"), "{e}");
        let e = parse_file("[x\n").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(parse_file("").unwrap_err().contains("no fault"));
    }
}
