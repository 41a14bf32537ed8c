//! The options of `netecho serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use netecho_core::fault::Fault;

use crate::args::{
    parse_duration, parse_duration_nonzero, parse_positive, parse_rate_limit, parse_v6_prefix,
    size_between,
};
use crate::error::{Error, Result};
use crate::net::MAX_UDP_SIZE;
use crate::net::listen::{ListenAddr, parse_listen_all};
use crate::net::target::Family;
use crate::serve::model::Model;
use crate::serve::pool::sizing as pool;
use crate::serve::service::udp;
use crate::serve::transport::splice::ZeroCopy;

/// Options of `netecho serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeOpt {
    /// Address to listen on, repeatable: HOST:PORT, the host a name (each
    /// of its addresses is served: localhost:7000 is 127.0.0.1:7000 and
    /// [::1]:7000), an IPv4 address or [an IPv6 address]; port 0 picks a
    /// free port. Default: [::]:6666 as one dual-stack socket
    /// (0.0.0.0:6666 without IPv6).
    #[arg(long = "listen", short = 'l', value_name = "HOST:PORT", value_parser = parse_listen_all)]
    pub(crate) listen: Vec<ListenAddr>,

    /// Listen on IPv4 addresses only: a name keeps its IPv4 addresses, the
    /// default is 0.0.0.0:6666.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub(crate) ipv4: bool,

    /// Listen on IPv6 addresses only: a name keeps its IPv6 addresses, the
    /// default is [::]:6666 for IPv6 clients alone.
    #[arg(short = '6', long = "ipv6")]
    pub(crate) ipv6: bool,

    /// Serve TLS echo on this address, repeatable, beside --listen (which
    /// keeps its default, [::]:6666, unless given); printed as
    /// `listening tls ADDR`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen_all)]
    pub(crate) tls_listen: Vec<ListenAddr>,

    /// The TLS certificate chain, PEM (default: a self-signed certificate
    /// for localhost, 127.0.0.1 and ::1, made at start).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The certificate's private key, PEM: PKCS#8, PKCS#1 or SEC1.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Mutual TLS: require a client certificate signed by a CA in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// Close a TLS client whose handshake has not ended after this long
    /// (seconds, or with units: 500ms, 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = parse_duration_nonzero)]
    pub(crate) tls_handshake_timeout: Duration,

    /// Server model.
    #[arg(long, short = 'm', value_enum, default_value_t = Model::Auto)]
    pub(crate) model: Model,

    /// Worker processes (prefork) or threads (prethread, epoll, tokio, uring,
    /// and the UDP loops) (default: one per core); for prefork and
    /// prethread the pool's starting and least size.
    #[arg(long, short = 'w', value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) workers: Option<usize>,

    /// Most clients served at once; more are accepted, closed and counted
    /// (default: fork 1024, prefork 256, thread 4096, prethread 1024,
    /// epoll, tokio and uring 65536; iterative serves one at a time whatever
    /// this says, the rest wait).
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) max_conns: Option<usize>,

    /// prefork, prethread: keep at least this many workers idle, started
    /// at once as clients arrive (the pool's `--workers` is its starting
    /// and least size).
    #[arg(long, value_name = "N", default_value_t = pool::DEFAULT_MIN_SPARE, value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) min_spare: usize,

    /// prefork, prethread: retire idle workers, gradually, while more than
    /// this are idle.
    #[arg(long, value_name = "N", default_value_t = pool::DEFAULT_MAX_SPARE, value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) max_spare: usize,

    /// prefork, prethread: retire a worker idle this long (seconds, or
    /// 500ms, 1m), keeping --min-spare idle and --workers in all; 0 = never.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) worker_idle_timeout: Duration,

    /// Close a connection with no bytes in either direction for this long
    /// (seconds, or 30s, 5m...); 0 = never.
    #[arg(long, value_name = "DURATION", default_value = "300", value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) idle_timeout: Duration,

    /// Most clients served at once from one source address (default: no limit).
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub(crate) max_conns_per_ip: Option<usize>,

    /// --max-conns-per-ip counts IPv6 clients per network prefix of this
    /// many bits (1-128; 128 = each address apart): one host may own a
    /// whole /64 (default: 64).
    #[arg(long, value_name = "BITS", value_parser = parse_v6_prefix, allow_negative_numbers = true)]
    pub(crate) per_ip_v6_prefix: Option<u8>,

    /// Close a connection whose client stops reading while the server has
    /// bytes for it, after this long; 0 = only --idle-timeout applies.
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) stall_timeout: Duration,

    /// Move large transfers socket → pipe → socket with splice(2), never
    /// copied (epoll model): auto switches a connection once a read brings
    /// 16 KiB or more, on splices every connection, off never.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ZeroCopy::Auto)]
    pub(crate) zero_copy: ZeroCopy,

    /// Also serve UDP echo on each listen address (printed as `listening udp ADDR`).
    #[arg(long)]
    pub(crate) udp: bool,

    /// Largest UDP datagram echoed (bytes, or 1k, 8KiB...); larger ones are
    /// dropped and counted, never truncated.
    #[arg(long, value_name = "SIZE", default_value_t = MAX_UDP_SIZE,
          value_parser = size_between(0, MAX_UDP_SIZE, "the largest UDP payload"))]
    pub(crate) udp_max_size: usize,

    /// UDP datagrams per second answered per source address (burst: twice
    /// that): 100, 10k, 10k/s.
    #[arg(long, value_name = "RATE", default_value_t = udp::DEFAULT_RATE, value_parser = parse_rate_limit, allow_negative_numbers = true)]
    pub(crate) udp_rate: u32,

    /// UDP datagrams per second answered for all sources together (burst:
    /// twice that): 20000, 20k, 20k/s.
    #[arg(long, value_name = "RATE", default_value_t = udp::DEFAULT_GLOBAL_RATE, value_parser = parse_rate_limit, allow_negative_numbers = true)]
    pub(crate) udp_global_rate: u32,

    /// Serve the inspect port on this address, repeatable (off unless
    /// given): TCP and UDP on one port, each connection or datagram answered
    /// with one JSON report of what the server saw of it (the source
    /// address, the SYN's TTL, DSCP, ECN and options), read by `netecho
    /// ping --inspect`; printed as `listening inspect ADDR`. A UDP report is
    /// never larger than its request and --udp-rate applies.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen_all)]
    pub(crate) inspect_listen: Vec<ListenAddr>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics (a name: its
    /// first address).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen_all)]
    pub(crate) metrics: Option<ListenAddr>,

    /// Serve exactly one connection on stdin/stdout, as an inetd "nowait" service.
    #[arg(long)]
    pub(crate) inetd: bool,

    /// Misbehave on purpose, repeatable: comma-separated key=value pairs
    /// naming what goes wrong and for whom, e.g.
    /// latency=50ms,jitter=10ms,from=10.0.0.0/8. TCP (and TLS, on the
    /// plaintext): latency, jitter,
    /// bandwidth=1MiB/s, slice=16, slice-delay=5ms, reset-after=4KiB,
    /// close-after=4KiB, stall-after=4KiB, accept-delay=2s, corrupt-at=N,
    /// corrupt=1e-4. UDP: drop=5%, duplicate=1%, reorder=1%,
    /// reorder-delay=10ms, truncate=32, latency, jitter. Scope: from=CIDR,
    /// listen=ADDR:PORT, probability=0.1, after=10s.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    pub(crate) faults: Vec<Fault>,

    /// Faults from a TOML file, one [name] table per fault with the keys of
    /// --fault; read again on SIGHUP by the new server.
    #[arg(long, value_name = "FILE")]
    pub(crate) fault_file: Option<PathBuf>,

    /// Seed of the faults' randomness (jitter, probability, corrupt, drop...),
    /// to repeat a run exactly (default: from the clock).
    #[arg(long, value_name = "N")]
    pub(crate) fault_seed: Option<u64>,

    /// On SIGTERM/SIGINT, how long connections in flight may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) drain_timeout: Duration,
}

/// Parses a `--fault` SPEC; the error names the bad part.
fn parse_fault(s: &str) -> Result<Fault, String> {
    Fault::parse(s).map_err(|e| e.to_string())
}

impl ServeOpt {
    /// The family `-4`/`-6` asks for.
    pub(crate) fn family(&self) -> Family {
        Family::from_flags(self.ipv4, self.ipv6)
    }

    /// Every `--listen` address of that family, names resolved.
    pub(crate) fn listen_addrs(&self) -> Result<Vec<SocketAddr>> {
        of_family("--listen", &self.listen, self.family())
    }

    /// Every `--inspect-listen` address of that family, names resolved.
    pub(crate) fn inspect_listen_addrs(&self) -> Result<Vec<SocketAddr>> {
        of_family("--inspect-listen", &self.inspect_listen, self.family())
    }

    /// Every `--tls-listen` address of that family, names resolved.
    pub(crate) fn tls_listen_addrs(&self) -> Result<Vec<SocketAddr>> {
        of_family("--tls-listen", &self.tls_listen, self.family())
    }

    /// The `--metrics` address: a name's first address of that family.
    pub(crate) fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        let given = self.metrics.as_slice();
        Ok(of_family("--metrics", given, self.family())?
            .first()
            .copied())
    }
}

/// The addresses of `family` each of `given` stands for; a usage error when
/// one has none (`-4 --listen [::1]:7000` contradicts itself).
fn of_family(flag: &str, given: &[ListenAddr], family: Family) -> Result<Vec<SocketAddr>> {
    let mut kept = Vec::new();
    for l in given {
        let before = kept.len();
        kept.extend(l.addrs.iter().filter(|a| family.admits(a.ip())));
        if kept.len() == before {
            let (asked, other) = match family {
                Family::V6 => ("-6 asks for IPv6", "IPv4"),
                _ => ("-4 asks for IPv4", "IPv6"),
            };
            let what = if l.named {
                format!("has only {other} addresses")
            } else {
                format!("is an {other} address")
            };
            return Err(Error::Usage(format!(
                "{flag} {} {what}, and {asked}",
                l.shown
            )));
        }
    }
    Ok(kept)
}
