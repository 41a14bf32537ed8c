//! The command line as a whole: the subcommands, the log options every one
//! of them takes, and how a parse error is reported.
//!
//! Each subcommand owns its `Opt` (next to the code that uses it) and checks
//! its values with the parsers of [`crate::args`]; only [`Command`] and
//! [`crate::run`] know every subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// netecho: the echo service (RFC 862) done right: server, client, and tools
/// to see a TCP connection's life.
#[derive(Debug, Parser)]
#[command(name = "netecho", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Less log output on stderr (-q: warnings and errors only, -qq: errors).
    #[arg(long, short = 'q', global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub(crate) quiet: u8,

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
pub(crate) enum Command {
    /// Run an echo server (default: port 6666 on every address, IPv4 and IPv6).
    Serve(crate::serve::ServeOpt),
    /// Copy stdin to an echo server and its echo to stdout, losing nothing.
    Client(crate::client::ClientOpt),
    /// Load an echo server and measure throughput and latency percentiles.
    Bench(crate::bench::Opt),
    /// Probe an echo server's round-trip time, one line per probe.
    Ping(crate::ping::Opt),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) generated from these definitions, or write
    /// them all with --dir.
    Man(crate::man::ManOpt),
    /// Show TCP sockets on a port change state, live, with their processes.
    Watch(crate::watch::Opt),
    /// Capture a port's TCP segments and annotate the handshake and close.
    Trace(crate::trace::Opt),
    /// A guided walkthrough of a TCP connection's life on loopback.
    Lab(crate::lab::Opt),
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
