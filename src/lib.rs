//! netecho: a toolkit around the echo service (RFC 862).
//!
//! # Layout
//! From the top down; a module only imports modules below it.
//! - [`run`] (here): the only place, with [`cli::Command`], that knows every
//!   subcommand;
//! - [`cli`]: the command line as a whole: subcommands, log options, how a
//!   parse error is reported;
//! - [`lab`]: `netecho lab`, the guided walkthrough built on watch and trace;
//! - [`bench`]: `netecho bench`, load with verified bytes and percentiles
//!   (and `--models`, which starts `serve`'s models);
//! - [`ping`]: `netecho ping`, per-probe round-trip times;
//! - [`client`]: `netecho client`, stdin to the server, echo to stdout;
//! - [`serve`]: `netecho serve`, the echo contract and one file per model;
//! - [`man`]: `netecho man`, the man pages from the clap definitions plus
//!   examples, exit status and environment;
//! - [`watch`]: `netecho watch`, socket states from netlink sock_diag;
//! - [`trace`]: `netecho trace`, segments from an AF_PACKET capture;
//! - [`net`]: resolve, connect, UDP sockets, size limits, the message
//!   pattern: what client, ping and bench share;
//! - [`sys`]: OS helpers the subcommands share: the Ctrl-C flag, the
//!   descriptor limit, `/proc`;
//! - [`args`]: value parsers for every subcommand's `Opt`; imports nothing;
//! - [`error`]: the typed errors `main` prints as one line.
//!
//! Each subcommand's module owns its `Opt` and a `run(opt) -> Result<()>`.
//!
//! # What is public
//! Everything is `pub(crate)` unless something outside the crate needs it:
//! the binary (`cli::Cli`, [`run`], [`Error`]), the model benchmark
//! (`bench::models`' suite) and the integration tests (`serve::Model`, the
//! `listening` line parser, `serve::uring::probe`). The fuzz targets' entry
//! points are `netecho-core`'s (its `fuzz` feature).
#![warn(unreachable_pub)]

pub(crate) mod args;
pub mod bench;
pub mod cli;
pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod lab;
pub(crate) mod man;
pub(crate) mod net;
pub(crate) mod ping;
pub mod serve;
pub(crate) mod sys;
pub(crate) mod trace;
pub(crate) mod watch;
pub(crate) mod words;

pub use error::{Error, Result};
/// Network namespaces joined as a path through routers, as `lab middlebox`
/// builds them, for the integration tests of `ping --inspect`: public,
/// hidden, and no API.
#[doc(hidden)]
pub use lab::netns::Line as NetnsPath;

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Serve(opt) => serve::run(opt),
        cli::Command::Client(opt) => client::run(opt),
        cli::Command::Completions { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            // Generated into memory first: the generator panics on a write
            // error, and a closed stdout must stay a clean exit.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "netecho", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map_err(Error::io("writing the completion script"))
        }
        cli::Command::Man(opt) => man::run(opt, <cli::Cli as clap::CommandFactory>::command()),
        cli::Command::Bench(opt) => bench::run(opt),
        cli::Command::Ping(opt) => ping::run(opt),
        cli::Command::Watch(opt) => watch::run(opt),
        cli::Command::Trace(opt) => trace::run(opt),
        cli::Command::Lab(opt) => lab::run(opt),
    }
}
