//! The `netecho` binary: parse, set up logging, run, turn the outcome into
//! an exit code. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use netecho::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETECHO_LOG").unwrap_or_else(|_| {
        // rustls logs its own view of a failed handshake at warn level,
        // in its internal terms; netecho's one-line error already says
        // what happened, so its lines show only from -v on.
        let level = cli.log_level();
        let rustls = if matches!(level, "debug" | "trace") {
            ""
        } else {
            ",rustls=error"
        };
        tracing_subscriber::EnvFilter::new(format!("{level}{rustls}"))
    });
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match cli.log_format {
        cli::LogFormat::Json => logs.json().init(),
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    match netecho::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netecho: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
