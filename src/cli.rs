//! The command line as a whole: the subcommands, the log options every one
//! of them takes, and how a parse error is reported.
//!
//! Each subcommand owns its `Opt` (next to the code that uses it) and checks
//! its values with the parsers of [`crate::args`]; only [`Command`] and
//! [`crate::run`] know every subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit status rule of every subcommand, shown at the end of the
/// top-level `--help`.
const EXIT_STATUS: &str = "EXIT STATUS
  0  success
  1  the check failed: a mismatch, loss, errors, nothing answered, an
     interrupted measurement, or a failure while running
  2  usage error: a bad flag or value, flags that do not go together, or a
     value checked before running (a file, an interface) that cannot be used

Durations take units everywhere (250ms, 2s, 1m; a bare number is seconds);
sizes take units (64, 1k = 1KiB = 1024, 64KiB, 1MiB); counts and rates take
decimal units (10k, 1.5M; rates also 10k/s). Addresses are HOST:PORT, the
host a name, an IPv4 address or [an IPv6 address].";

const EXIT_SERVE: &str = "EXIT STATUS
  0  stopped by SIGTERM or SIGINT, connections drained
  1  could not start or keep serving: an address in use, no permission to
     bind, a worker or listener that could not start (then no `listening`
     line was printed)
  2  usage error: a bad flag or value, flags that do not go together, a TLS
     file that cannot be used";

const EXIT_WATCH: &str = "EXIT STATUS
  0  ran until --duration ended or Ctrl-C/SIGTERM stopped it
  1  the socket table or the kernel's events could not be read
  2  usage error: a bad flag or value, a --mode this kernel cannot give";

const EXIT_TRACE: &str = "EXIT STATUS
  0  stopped after --count segments or by Ctrl-C/SIGTERM
  1  the capture failed (no CAP_NET_RAW, a write error)
  2  usage error: a bad flag or value, an interface that does not exist";

const EXIT_LAB: &str = "EXIT STATUS
  0  every step of the scenario ran and showed what it should
  1  a step failed
  2  usage error: a bad flag, an unknown scenario";

const EXIT_PRINT: &str = "EXIT STATUS
  0  printed
  1  stdout could not be written
  2  usage error";

/// netecho: the echo service (RFC 862) done right: server, client, and tools
/// to see a TCP connection's life.
#[derive(Debug, Parser)]
#[command(name = "netecho", version, about, propagate_version = true,
          after_long_help = EXIT_STATUS)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count,
          display_order = 900)]
    pub(crate) verbose: u8,

    /// Less log output on stderr (-q: warnings and errors only, -qq: errors).
    #[arg(long, short = 'q', global = true, action = clap::ArgAction::Count, conflicts_with = "verbose",
          display_order = 901)]
    pub(crate) quiet: u8,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          value_name = "FORMAT", display_order = 902)]
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
    #[command(after_long_help = EXIT_SERVE)]
    Serve(crate::serve::ServeOpt),
    /// Copy stdin to an echo server and its echo to stdout, losing nothing.
    Client(crate::client::ClientOpt),
    /// Load an echo server and measure throughput and latency percentiles.
    Bench(crate::bench::Opt),
    /// Probe an echo server's round-trip time, one line per probe.
    Ping(crate::ping::Opt),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = EXIT_PRINT)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) generated from these definitions, or write
    /// them all with --dir.
    #[command(after_long_help = EXIT_PRINT)]
    Man(crate::man::ManOpt),
    /// Show TCP sockets on a port change state, live, with their processes.
    #[command(after_long_help = EXIT_WATCH)]
    Watch(crate::watch::Opt),
    /// Capture a port's TCP segments and annotate the handshake and close.
    #[command(after_long_help = EXIT_TRACE)]
    Trace(crate::trace::Opt),
    /// A guided walkthrough of a TCP connection's life on loopback.
    #[command(after_long_help = EXIT_LAB)]
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
