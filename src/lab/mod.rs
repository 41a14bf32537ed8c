//! `netecho lab [SCENARIO]`: TCP's behaviour shown live on loopback. With
//! no scenario, the walkthrough of a connection's life ([`walkthrough`]);
//! each scenario is a module of its own that prints what to expect, the
//! live evidence, and one `conclusion:` line computed from this run.
//!
//! Every scenario uses only 127.0.0.1 and its own ports (port 0: the
//! kernel picks), or, for `middlebox`, network namespaces of its own
//! ([`netns`]); every loop in it is bounded in count and time.

pub(crate) mod backlog;
pub(crate) mod close;
pub(crate) mod middlebox;
pub(crate) mod nagle;
pub(crate) mod netns;
pub(crate) mod rst;
pub(crate) mod textbook;
pub(crate) mod walkthrough;

use clap::Args;

use crate::error::{Error, Result};
use crate::sys::stop;
use walkthrough::{conclusion, emit};

/// Options of `netecho lab`.
#[derive(Debug, Args)]
pub(crate) struct Opt {
    /// The scenario to run (see --list); without one, the walkthrough.
    #[arg(value_name = "SCENARIO")]
    pub(crate) scenario: Option<String>,

    /// Print the scenarios, one per line, and exit.
    #[arg(long, conflicts_with = "scenario")]
    pub(crate) list: bool,
}

/// What runs one scenario.
type Scenario = fn() -> Result<()>;

/// The scenarios: name, one-line summary, and what runs it.
pub(crate) const SCENARIOS: [(&str, &str, Scenario); 8] = [
    (
        "walkthrough",
        "a connection's life: LISTEN, handshake, echo, close, TIME-WAIT, zombies (the default)",
        walkthrough::run,
    ),
    (
        "nagle",
        "write-write-read with Nagle on, then TCP_NODELAY: the 40 ms delayed-ACK stall",
        nagle::run,
    ),
    (
        "textbook-client",
        "the stop-and-wait and select-based textbook clients in batch mode beside netecho's client",
        textbook::run,
    ),
    (
        "rst",
        "resets: a refused connect, a close with SO_LINGER 0, a write to a peer that has gone",
        rst::run,
    ),
    (
        "backlog",
        "a listener that never accepts: the accept queue fills, SYNs go unanswered and are retried",
        backlog::run,
    ),
    (
        "close",
        "a simultaneous close, TIME-WAIT on the active closer, a restart with and without SO_REUSEADDR",
        close::run,
    ),
    (
        "middlebox",
        "(root) routers that NAT, clamp the MSS and rewrite DSCP, each named by ping --inspect",
        middlebox::run,
    ),
    (
        "zombie",
        "a child that exits and is not reaped, then reaped",
        zombie,
    ),
];

/// Runs `netecho lab`.
pub(crate) fn run(opt: Opt) -> Result<()> {
    if opt.list {
        for (name, summary, _) in SCENARIOS {
            emit(&format!("{name:<16} {summary}"));
        }
        return Ok(());
    }
    stop::install().map_err(Error::io("installing the SIGINT/SIGTERM handler"))?;
    let name = opt.scenario.as_deref().unwrap_or("walkthrough");
    let Some((_, _, run)) = SCENARIOS.iter().find(|(n, _, _)| *n == name) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|(n, _, _)| *n).collect();
        return Err(Error::Usage(format!(
            "no lab scenario '{name}' (there are: {})",
            names.join(", ")
        )));
    };
    run()
}

/// The `zombie` scenario: the walkthrough's zombie step on its own.
fn zombie() -> Result<()> {
    walkthrough::step(
        1,
        "a zombie: a child that exits and is not reaped",
        "A process that exits stays in the process table, state Z, until its \
         parent calls wait(): expect /proc to show Z, then nothing after waitpid.",
    );
    let (was_zombie, gone) = walkthrough::zombie_demo()?;
    conclusion(&format!(
        "the child {} a zombie before waitpid and {} after it",
        if was_zombie { "was" } else { "was not seen as" },
        if gone { "was gone" } else { "was still there" }
    ))
}
