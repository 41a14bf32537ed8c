//! The command line: one `Opt` per subcommand, parsed by clap's derive.
//!
//! Values are checked with the parsers of [`crate::args`], which say what
//! is wrong in one line, so the library only ever sees values it can use.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::args::{
    parse_listen, parse_positive, parse_rate_limit, parse_secs, parse_secs_nonzero, parse_target,
    udp_size_at_most,
};
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
    #[arg(long, value_name = "BYTES", default_value_t = crate::net::MAX_UDP_SIZE, value_parser = udp_size_at_most(crate::net::MAX_UDP_SIZE))]
    pub udp_max_size: usize,

    /// UDP datagrams per second answered per source address (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = crate::serve::udp::DEFAULT_RATE, value_parser = parse_rate_limit, allow_negative_numbers = true)]
    pub udp_rate: u32,

    /// UDP datagrams per second answered for all sources together (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = crate::serve::udp::DEFAULT_GLOBAL_RATE, value_parser = parse_rate_limit, allow_negative_numbers = true)]
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
