//! The command line: one `Opt` per subcommand, parsed by clap's derive.
//!
//! Values are checked here with parsers that say what is wrong in one line
//! (`invalid address '127.0.0.1:99999': port must be 0-65535`), so the
//! library only ever sees values it can use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::serve::Model;

/// netecho: the echo service (RFC 862) done right: server, client, and tools
/// to see a TCP connection's life.
#[derive(Debug, Parser)]
#[command(name = "netecho", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output on stderr (-q: warnings and errors only, -qq: errors).
    #[arg(long, short = 'q', global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Cli {
    /// The log level the -v/-q counts ask for (NETECHO_LOG overrides it).
    pub fn log_level(&self) -> &'static str {
        match (self.verbose, self.quiet) {
            (0, 0) => "info",
            (1, _) => "debug",
            (v, _) if v >= 2 => "trace",
            (_, 1) => "warn",
            _ => "error",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an echo server (default: port 6666 on every address, IPv4 and IPv6).
    Serve(ServeOpt),
    /// Copy stdin to an echo server and its echo to stdout, losing nothing.
    Client(ClientOpt),
    /// Load an echo server and measure throughput and latency percentiles.
    Bench(crate::bench::Opt),
    /// Probe an echo server's round-trip time, one line per probe.
    Ping(crate::ping::Opt),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from these definitions.
    Man,
    /// Show TCP sockets on a port change state, live, with their processes.
    Watch(crate::watch::Opt),
    /// Capture a port's TCP segments and annotate the handshake and close.
    Trace(crate::trace::Opt),
    /// A guided walkthrough of a TCP connection's life on loopback.
    Lab(crate::lab::Opt),
}

/// Options of `netecho serve`.
#[derive(Debug, Args)]
pub struct ServeOpt {
    /// Address to listen on, repeatable; port 0 picks a free port.
    /// Default: [::]:6666 as one dual-stack socket (0.0.0.0:6666 without IPv6).
    #[arg(long = "listen", short = 'l', value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,

    /// Server model.
    #[arg(long, short = 'm', value_enum, default_value_t = Model::Auto)]
    pub model: Model,

    /// Worker processes (prefork) or threads (prethread, epoll, tokio, uring,
    /// and the UDP loops) (default: one per core).
    #[arg(long, short = 'w', value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub workers: Option<usize>,

    /// Most clients served at once; more are accepted, closed and counted
    /// (default depends on the model, see README).
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_conns: Option<usize>,

    /// Close a connection with no bytes in either direction for this long; 0 = never.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_secs, allow_negative_numbers = true)]
    pub idle_timeout: Duration,

    /// Most clients served at once from one source address (default: no limit).
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_conns_per_ip: Option<usize>,

    /// Close a connection whose client stops reading while the server has
    /// bytes for it, after this long; 0 = only --idle-timeout applies.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs, allow_negative_numbers = true)]
    pub stall_timeout: Duration,

    /// Also serve UDP echo on each listen address (printed as `listening udp ADDR`).
    #[arg(long)]
    pub udp: bool,

    /// Largest UDP datagram echoed; larger ones are dropped and counted, never truncated.
    #[arg(long, value_name = "BYTES", default_value_t = crate::serve::udp::MAX_DATAGRAM, value_parser = parse_udp_size)]
    pub udp_max_size: usize,

    /// UDP datagrams per second answered per source address (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = crate::serve::udp::DEFAULT_RATE, value_parser = parse_rate, allow_negative_numbers = true)]
    pub udp_rate: u32,

    /// UDP datagrams per second answered for all sources together (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = crate::serve::udp::DEFAULT_GLOBAL_RATE, value_parser = parse_rate, allow_negative_numbers = true)]
    pub udp_global_rate: u32,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub metrics: Option<SocketAddr>,

    /// Serve exactly one connection on stdin/stdout, as an inetd "nowait" service.
    #[arg(long)]
    pub inetd: bool,

    /// On SIGTERM/SIGINT, how long connections in flight may take to finish.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs, allow_negative_numbers = true)]
    pub drain_timeout: Duration,
}

/// Options of `netecho client`.
#[derive(Debug, Args)]
pub struct ClientOpt {
    /// The echo server, as HOST:PORT ([v6addr]:PORT for IPv6 literals).
    #[arg(value_name = "HOST:PORT", value_parser = parse_target)]
    pub target: String,

    /// Give up connecting after this long.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs_nonzero, allow_negative_numbers = true)]
    pub connect_timeout: Duration,
}

/// Parses `ADDR:PORT` or `[V6ADDR]:PORT`, naming the part that is wrong.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected ADDR:PORT, e.g. 127.0.0.1:6666 or [::1]:6666".into());
    };
    match port.parse::<u32>() {
        Ok(p) if p > 65535 => return Err(format!("port {p} is out of range 0-65535")),
        Ok(_) => {}
        Err(_) => return Err(format!("port '{port}' is not a number 0-65535")),
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses go in brackets, e.g. [::1]:6666".into());
    }
    Err(format!(
        "'{host}' is not an IP address (use a numeric address such as 127.0.0.1 or [::1])"
    ))
}

/// Checks the shape of a `HOST:PORT` target (resolving the name is left to
/// connect time): a host, a colon, a port 0-65535.
pub fn parse_target(s: &str) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:6666 or [::1]:6666".into());
    };
    if host.is_empty() {
        return Err("the host is missing (expected HOST:PORT)".into());
    }
    match port.parse::<u32>() {
        Ok(p) if p > 65535 => Err(format!("port {p} is out of range 0-65535")),
        Ok(_) => Ok(s.to_string()),
        Err(_) => Err(format!("port '{port}' is not a number 0-65535")),
    }
}

/// Parses a whole number of at least 1.
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// Parses a UDP size limit: 0 to 65,507 bytes.
pub fn parse_udp_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= crate::serve::udp::MAX_DATAGRAM => Ok(n),
        Ok(n) => Err(format!("{n} is larger than the largest UDP payload, 65507")),
        Err(_) => Err(format!("'{s}' is not a whole number of bytes")),
    }
}

/// Parses a rate: a whole number of at least 1 per second.
pub fn parse_rate(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 per second".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

/// Parses a non-negative number of seconds (fractions allowed).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("'{s}' must be a number of seconds >= 0"));
    }
    if v > 1e9 {
        return Err(format!("'{s}' seconds is too long"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Like [`parse_secs`] but 0 is refused.
pub fn parse_secs_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(d)
}

/// Turns a clap error into the house style: help and version print as clap
/// prints them; any other error becomes one line on stderr and exit code 2.
pub fn report_parse_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can only fail on a closed stdout; nothing to add.
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let text = err.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("netecho: {line}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_why() {
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:6666").unwrap(),
            "[::1]:6666".parse().unwrap()
        );
        assert!(
            parse_listen("127.0.0.1:99999")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_listen("127.0.0.1:x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_listen("::1:80").unwrap_err().contains("brackets"));
        assert!(
            parse_listen("localhost:80")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(parse_listen("6666").unwrap_err().contains("ADDR:PORT"));
    }

    #[test]
    fn targets_need_a_host_and_a_port() {
        assert_eq!(parse_target("localhost:6666").unwrap(), "localhost:6666");
        assert_eq!(parse_target("[::1]:7").unwrap(), "[::1]:7");
        assert!(
            parse_target("127.0.0.1:99999")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_target("nohost").unwrap_err().contains("HOST:PORT"));
        assert!(parse_target(":80").unwrap_err().contains("host is missing"));
    }

    #[test]
    fn limits_refuse_negative_and_garbage() {
        assert_eq!(parse_positive("8").unwrap(), 8);
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("-1").is_err());
        assert!(parse_positive("ten").is_err());
        assert_eq!(parse_secs("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_secs("-3").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs_nonzero("0").is_err());
    }
}
