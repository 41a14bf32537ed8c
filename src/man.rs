//! `netecho man`: the manual pages, rendered from the clap definitions
//! (clap_mangen) with the sections clap does not know: EXAMPLES, EXIT
//! STATUS, ENVIRONMENT and SEE ALSO. One page for `netecho` itself, which
//! names the others, and one per subcommand (`netecho-serve(1)`, …,
//! `netecho-bench-merge(1)`), as git and cargo ship theirs.
//!
//! The command is passed in by [`crate::run`], so this module imports
//! nothing of the crate but the error type.

use std::io::Write;
use std::path::{Path, PathBuf};

use roff::{Roff, bold, italic, roman};

use crate::error::{Error, Result};

/// `netecho man [SUBCOMMAND] [--dir DIR]`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManOpt {
    /// Print the page of this subcommand (`serve`, `bench merge` as
    /// `bench-merge`) instead of netecho(1).
    #[arg(value_name = "SUBCOMMAND")]
    page: Option<String>,

    /// Write every page (netecho.1, netecho-serve.1, ...) into DIR instead
    /// of printing one; DIR is created if missing.
    #[arg(long, value_name = "DIR", conflicts_with = "page")]
    dir: Option<PathBuf>,
}

/// One example: what it does, and the command line.
type Example = (&'static str, &'static str);

/// The examples of each page, by page name. The test suite parses every
/// command line here with the real parser, so none can drift.
const EXAMPLES: &[(&str, &[Example])] = &[
    (
        "netecho",
        &[
            (
                "Run an echo server on port 7000 of loopback:",
                "netecho serve --listen 127.0.0.1:7000",
            ),
            (
                "Check that it echoes every byte of a file:",
                "netecho client 127.0.0.1:7000 < big.bin | cmp - big.bin",
            ),
            (
                "Measure its latency under load:",
                "netecho bench 127.0.0.1:7000 -c 50 -d 10",
            ),
            ("Watch a connection's life, as root:", "netecho lab"),
        ],
    ),
    (
        "netecho-serve",
        &[
            (
                "TCP echo on port 7000 of loopback:",
                "netecho serve --listen 127.0.0.1:7000",
            ),
            (
                "TCP and UDP echo on port 6666 of every address, with Prometheus metrics:",
                "netecho serve --udp --metrics 127.0.0.1:9100",
            ),
            (
                "TLS echo beside plain TCP, with a self-signed certificate made at start:",
                "netecho serve --tls-listen 0.0.0.0:6667",
            ),
            (
                "The classic server, a process per client:",
                "netecho serve --model fork --listen 127.0.0.1:7000",
            ),
            (
                "Port 0: the kernel picks a free port, printed on the first line:",
                "netecho serve --listen 127.0.0.1:0",
            ),
            (
                "Beside the echo, a port that reports what the path did to each connection:",
                "netecho serve --listen 0.0.0.0:7000 --inspect-listen 0.0.0.0:7007",
            ),
        ],
    ),
    (
        "netecho-client",
        &[
            (
                "Send a line and print its echo:",
                "printf 'hello\\n' | netecho client 127.0.0.1:7000",
            ),
            (
                "Check that a file comes back identical:",
                "netecho client 127.0.0.1:7000 < big.bin | cmp - big.bin",
            ),
            (
                "Over TLS, trusting a private CA:",
                "netecho client --tls --tls-ca ca.pem localhost:6667",
            ),
        ],
    ),
    (
        "netecho-bench",
        &[
            (
                "A closed loop: 50 connections, 64 B messages, 10 s:",
                "netecho bench 127.0.0.1:7000",
            ),
            (
                "An open loop at 10,000 requests per second, one JSON object on stdout:",
                "netecho bench 127.0.0.1:7000 -c 20 --rate 10000 --json",
            ),
            (
                "A new connection per request:",
                "netecho bench 127.0.0.1:7000 --new-conn -c 4 -d 5",
            ),
            (
                "Save the latency histogram to merge it with other machines' later:",
                "netecho bench 127.0.0.1:7000 --hist-out a.hlog",
            ),
        ],
    ),
    (
        "netecho-bench-merge",
        &[(
            "Combine two runs' histograms into one exact summary:",
            "netecho bench merge a.hlog b.hlog --json",
        )],
    ),
    (
        "netecho-ping",
        &[
            (
                "Three probes, 200 ms apart:",
                "netecho ping 127.0.0.1:7000 -c 3 -i 0.2",
            ),
            ("Over UDP:", "netecho ping 127.0.0.1:7000 --udp -c 3"),
            (
                "A connection and a TLS handshake per probe:",
                "netecho ping localhost:6667 --tls --new-conn -c 3",
            ),
            (
                "What the path did (NAT, hops, MSS, DSCP), sending DSCP 46 (EF):",
                "netecho ping --inspect server.example:7007 --tos 0xb8",
            ),
        ],
    ),
    (
        "netecho-watch",
        &[
            (
                "Every state change of port 7000's sockets, with their processes:",
                "netecho watch --port 7000",
            ),
            (
                "With the kernel's RTT and congestion window, for 10 s:",
                "netecho watch --port 7000 --info --duration 10",
            ),
        ],
    ),
    (
        "netecho-trace",
        &[
            (
                "Every segment of port 7000, annotated (as root):",
                "netecho trace --port 7000",
            ),
            (
                "Save a pcap and draw the sequence diagram:",
                "netecho trace --port 7000 --write conn.pcap --svg conn.svg",
            ),
        ],
    ),
    (
        "netecho-lab",
        &[
            ("List the scenarios:", "netecho lab --list"),
            (
                "The 40 ms delayed-ACK stall of Nagle's algorithm:",
                "netecho lab nagle",
            ),
        ],
    ),
    (
        "netecho-completions",
        &[(
            "Install the bash completion:",
            "netecho completions bash > /etc/bash_completion.d/netecho",
        )],
    ),
    (
        "netecho-man",
        &[
            (
                "Read a page without installing it:",
                "netecho man serve | man -l -",
            ),
            (
                "Write every page where man finds them:",
                "netecho man --dir /usr/local/share/man/man1",
            ),
        ],
    ),
];

/// The environment each page documents: (variable, pages it applies to,
/// meaning). `*` applies to every page.
const ENVIRONMENT: &[(&str, &[&str], &str)] = &[
    (
        "NETECHO_LOG",
        &["*"],
        "A log filter (debug, warn, netecho=trace) that overrides -v and -q.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        &["netecho", "netecho-serve"],
        "systemd socket activation: serve on the passed sockets instead of binding (names tcp, udp, tls, metrics).",
    ),
    (
        "NOTIFY_SOCKET",
        &["netecho", "netecho-serve"],
        "systemd's notification socket: READY=1 once serving, MAINPID= after a restart hand-over (SIGHUP).",
    ),
    (
        "NETECHO_URING_BUFS, NETECHO_URING_BUF_SIZE",
        &["netecho", "netecho-serve"],
        "The uring model's provided buffers per worker (a power of two, default 64) and their size (default 64 KiB).",
    ),
    (
        "NETECHO_READY_FD",
        &["netecho-serve"],
        "Set by a server for the process it hands its sockets to on SIGHUP; not for users.",
    ),
    (
        "NETECHO_BENCH_WORKLOADS",
        &["netecho-bench"],
        "With --models: the workloads to run when --workloads is not given.",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        &["netecho", "netecho-client", "netecho-ping", "netecho-bench"],
        "Where the system's trusted roots are, for --tls without --tls-ca.",
    ),
];

/// Every page: (file name, roff), the top page first, then the
/// subcommands depth first.
pub(crate) fn pages(mut cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    collect(&cmd, &mut out);
    out
}

fn collect(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    out.push((format!("{name}.1"), render(cmd, &name)));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

/// One page: clap_mangen's sections, then ours.
fn render(cmd: &clap::Command, name: &str) -> Vec<u8> {
    let version = cmd.get_version().unwrap_or_default().to_string();
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("netecho {version}"));
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        let _ = man.render_options_section(&mut page);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        let _ = man.render_subcommands_section(&mut page);
    }
    let mut roff = Roff::new();
    examples(&mut roff, name);
    exit_status(&mut roff, name);
    environment(&mut roff, name);
    see_also(&mut roff, cmd, name);
    let _ = roff.to_writer(&mut page);
    let _ = man.render_version_section(&mut page);
    page
}

fn examples(roff: &mut Roff, name: &str) {
    let Some((_, list)) = EXAMPLES.iter().find(|(page, _)| *page == name) else {
        return;
    };
    roff.control("SH", ["EXAMPLES"]);
    for (what, command) in *list {
        roff.control("TP", []);
        roff.text([roman(*what)]);
        roff.text([bold(*command)]);
    }
}

fn exit_status(roff: &mut Roff, name: &str) {
    let failed = match name {
        "netecho-serve" => {
            "The server could not start or serve (an address in use, a bad certificate)."
        }
        "netecho-client" => {
            "A byte came back different, the server closed early or reset, or nothing answered."
        }
        "netecho-bench" | "netecho-bench-merge" => {
            "A request failed, mismatched or was lost, none completed, or the run was interrupted."
        }
        "netecho-ping" => "A probe failed or went unanswered, or the run was interrupted.",
        _ => "The check failed (a mismatch, a loss, an error, nothing answered, interrupted).",
    };
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success."),
        ("1", failed),
        (
            "2",
            "A usage error: an unknown flag, a value out of range, flags that do not go together.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
    roff.control("PP", []);
    roff.text([roman(
        "Every error is one line on standard error, starting with \"netecho:\".",
    )]);
}

fn environment(roff: &mut Roff, name: &str) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, pages, meaning) in ENVIRONMENT {
        if pages.contains(&"*") || pages.contains(&name) {
            roff.control("TP", []);
            roff.text([bold(*var)]);
            roff.text([roman(*meaning)]);
        }
    }
}

fn see_also(roff: &mut Roff, cmd: &clap::Command, name: &str) {
    let mut refs: Vec<String> = Vec::new();
    if name != "netecho" {
        refs.push("netecho(1)".into());
    }
    refs.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("{name}-{}(1)", s.get_name())),
    );
    refs.extend(
        ["ss(8)", "tcpdump(8)", "socat(1)", "ncat(1)", "iperf3(1)"]
            .iter()
            .map(|s| s.to_string()),
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(refs.join(", "))]);
    roff.control("PP", []);
    roff.text([
        roman("The guide and the reference of every flag: "),
        italic("docs/"),
        roman(" in the source, as a book built with mdbook."),
    ]);
}

/// Runs `netecho man`: one page on stdout, or every page into `--dir`.
pub(crate) fn run(opt: ManOpt, cmd: clap::Command) -> Result<()> {
    let pages = pages(cmd);
    if let Some(dir) = &opt.dir {
        return write_all(dir, &pages);
    }
    let file = match &opt.page {
        None => "netecho.1".to_string(),
        Some(p) => format!("netecho-{}.1", p.replace(' ', "-")),
    };
    let Some((_, roff)) = pages.iter().find(|(name, _)| *name == file) else {
        let names: Vec<&str> = pages
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("netecho-")?.strip_suffix(".1"))
            .collect();
        return Err(Error::Usage(format!(
            "no man page for '{}'; the pages: {}",
            opt.page.unwrap_or_default(),
            names.join(", ")
        )));
    };
    std::io::stdout()
        .write_all(roff)
        .map_err(Error::io("writing the man page"))
}

fn write_all(dir: &Path, pages: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating the man page directory"))?;
    for (name, roff) in pages {
        std::fs::write(dir.join(name), roff).map_err(Error::io("writing a man page"))?;
    }
    Ok(())
}
