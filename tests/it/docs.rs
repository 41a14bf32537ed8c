//! The user documentation is checked against the binary, so it cannot drift:
//! - the flag reference (`docs/src/reference/*.md`) is rendered from the clap
//!   definitions and compared with the committed pages
//!   (`NETECHO_BLESS=1 cargo test --test it docs::` rewrites them);
//! - every command shown in README.md and the guide runs here, its output
//!   compared with the example's (snapbox, `[..]` and `...` wildcards);
//! - every man page renders (`man -l`) and has EXAMPLES, EXIT STATUS and
//!   ENVIRONMENT, and every example in it parses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use netecho::cli::Cli;

/// The repository root (where Cargo.toml is).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `NETECHO_BLESS=1`: rewrite the generated files instead of failing.
fn bless() -> bool {
    std::env::var_os("NETECHO_BLESS").is_some_and(|v| v == "1")
}

// ---------------------------------------------------------------------------
// The flag reference, rendered from clap
// ---------------------------------------------------------------------------

/// One argument as a markdown section: its flags and value, the long help,
/// the default and the possible values.
fn render_arg(out: &mut String, arg: &clap::Arg) {
    let value = arg
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
    let takes_value = arg.get_action().takes_values();
    let mut head = Vec::new();
    if let Some(s) = arg.get_short() {
        head.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        head.push(format!("--{l}"));
    }
    let head = if head.is_empty() {
        value.clone()
    } else if takes_value {
        format!("{} {value}", head.join(", "))
    } else {
        head.join(", ")
    };
    let _ = writeln!(out, "### `{head}`\n");
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    if !help.is_empty() {
        let _ = writeln!(out, "{}\n", help.trim_end());
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if takes_value && !defaults.is_empty() {
        let _ = writeln!(out, "Default: `{}`.\n", defaults.join(","));
    }
    let possible: Vec<_> = arg
        .get_possible_values()
        .into_iter()
        .filter(|p| !p.is_hide_set())
        .collect();
    if takes_value && !possible.is_empty() {
        let _ = writeln!(out, "Possible values:\n");
        for p in possible {
            match p.get_help() {
                Some(h) => {
                    let _ = writeln!(out, "- `{}`: {h}", p.get_name());
                }
                None => {
                    let _ = writeln!(out, "- `{}`", p.get_name());
                }
            }
        }
        out.push('\n');
    }
}

/// A subcommand's page: what it does, its usage, its arguments and options,
/// then its own subcommands (`bench merge`) the same way one level down.
fn render_command(out: &mut String, path: &str, cmd: &mut clap::Command, level: usize) {
    let hashes = "#".repeat(level);
    let _ = writeln!(out, "{hashes} {path}\n");
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim_end());
    }
    let usage = cmd.render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    let _ = writeln!(out, "```text\n{}\n```\n", usage.trim_end());
    let positionals: Vec<_> = cmd
        .get_positionals()
        .filter(|a| !a.is_hide_set())
        .cloned()
        .collect();
    let options: Vec<_> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned()
        .collect();
    if !positionals.is_empty() {
        let _ = writeln!(out, "{hashes}# Arguments\n");
        for a in &positionals {
            render_arg(out, a);
        }
    }
    if !options.is_empty() {
        let _ = writeln!(out, "{hashes}# Options\n");
        for a in &options {
            render_arg(out, a);
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        if let Some(sub) = cmd.find_subcommand_mut(&name) {
            render_command(out, &format!("{path} {name}"), sub, level + 1);
        }
    }
}

/// Every generated page: `cli.md` (the global options and the list of
/// subcommands) and one `netecho-NAME.md` per subcommand.
fn reference_pages() -> Vec<(String, String)> {
    let mut cli = Cli::command();
    cli.build();
    let note = "<!-- Generated from the command-line definitions by the test suite; \
                do not edit (NETECHO_BLESS=1 cargo test --test it docs:: rewrites it). -->\n\n";
    let mut pages = Vec::new();
    let mut top = String::from(note);
    top.push_str("# Command line\n\n");
    let _ = writeln!(
        top,
        "Every flag of every subcommand, as `netecho SUBCOMMAND --help` prints it. \
         Durations take units (`250ms`, `2s`, `1m`; a bare number is seconds) and \
         sizes too (`64`, `1k`, `64KiB`). Exit status: 0 success, 1 the check \
         failed, 2 a usage error ([details](exit-status.md)).\n"
    );
    let _ = writeln!(top, "## Subcommands\n");
    let names: Vec<(String, String)> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| {
            (
                s.get_name().to_string(),
                s.get_about().map(|a| a.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    for (name, about) in &names {
        let _ = writeln!(top, "- [`netecho {name}`](netecho-{name}.md): {about}");
    }
    let _ = writeln!(top, "\n## Options of every subcommand\n");
    let globals: Vec<_> = cli
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned()
        .collect();
    for a in &globals {
        render_arg(&mut top, a);
    }
    pages.push(("cli.md".to_string(), top.trim_end().to_string() + "\n"));
    for (name, _) in &names {
        let sub = cli.find_subcommand_mut(name).expect("listed above");
        let mut page = String::from(note);
        render_command(&mut page, &format!("netecho {name}"), sub, 1);
        pages.push((
            format!("netecho-{name}.md"),
            page.trim_end().to_string() + "\n",
        ));
    }
    pages
}

/// Compares (or with NETECHO_BLESS=1 writes) generated files; names every
/// page that drifted in one failure.
fn check_generated(dir: &Path, pages: &[(String, String)]) {
    let mut drifted = Vec::new();
    for (name, want) in pages {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if &have == want {
            continue;
        }
        if bless() {
            std::fs::create_dir_all(dir).expect("creating the reference directory");
            std::fs::write(&path, want).expect("writing a reference page");
        } else {
            drifted.push(path.display().to_string());
        }
    }
    assert!(
        drifted.is_empty(),
        "these pages no longer match the command-line definitions: {}\n\
         rewrite them with: NETECHO_BLESS=1 cargo test --test it docs::",
        drifted.join(", ")
    );
}

#[test]
fn reference_pages_match_the_command_line_definitions() {
    let pages = reference_pages();
    assert!(
        pages
            .iter()
            .any(|(n, p)| n == "netecho-serve.md" && p.contains("--listen")),
        "the serve page has no --listen: the renderer lost the options"
    );
    check_generated(&root().join("docs/src/reference"), &pages);
}

#[test]
fn every_reference_page_is_in_the_summary() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    for (name, _) in reference_pages() {
        assert!(
            summary.contains(&format!("reference/{name}")),
            "docs/src/SUMMARY.md does not link reference/{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// The examples of README.md and the guide, run
// ---------------------------------------------------------------------------

/// One `$ command` of a console block and the output shown under it.
#[derive(Debug)]
struct Step {
    /// Where it is, `README.md:42`, for failure messages.
    at: String,
    command: String,
    expected: String,
}

/// The ` ```console ` blocks of a markdown file, each a list of steps; and
/// every `$ ` command line found in a fence of another kind (shown as a
/// command but not run), which is an error: a dated measurement may be kept
/// as a record in a plain fence, but not the command that made it.
fn console_blocks(file: &str, text: &str) -> (Vec<Vec<Step>>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut unchecked = Vec::new();
    let mut fence: Option<String> = None;
    let mut steps: Vec<Step> = Vec::new();
    // A fence inside a list item is indented; so are its lines.
    let mut indent = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match fence.take() {
                None => {
                    fence = Some(info.trim().to_string());
                    indent = line.len() - trimmed.len();
                }
                Some(kind) => {
                    if kind == "console" {
                        blocks.push(std::mem::take(&mut steps));
                    }
                }
            }
            continue;
        }
        match fence.as_deref() {
            Some("console") => {
                let line = match (line.get(..indent), line.get(indent..)) {
                    (Some(pad), Some(rest)) if pad.trim().is_empty() => rest,
                    _ => line,
                };
                if let Some(cmd) = line.strip_prefix("$ ") {
                    steps.push(Step {
                        at: format!("{file}:{}", i + 1),
                        command: cmd.to_string(),
                        expected: String::new(),
                    });
                } else if let Some(step) = steps.last_mut() {
                    step.expected.push_str(line);
                    step.expected.push('\n');
                }
            }
            Some(_) if trimmed.starts_with("$ ") => {
                unchecked.push(format!("{file}:{}: {line}", i + 1));
            }
            _ => {}
        }
    }
    (blocks, unchecked)
}

/// Blocks run at once, each thread in its own network namespace: most of
/// an example's time is a server starting or a run's fixed length, not CPU.
const EXAMPLE_THREADS: usize = 4;

/// The markdown files whose examples run: README.md and every page of the
/// book (docs/src and its folders).
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut pages = Vec::new();
    walk(&root().join("docs/src"), &mut pages);
    pages.sort();
    assert!(pages.len() > 10, "docs/src has only {} pages", pages.len());
    let mut files = vec![root().join("README.md")];
    files.extend(pages);
    files
}

/// A command started with `&`: stopped (its process group) when the block
/// ends, killed if it does not stop.
struct Background {
    child: std::process::Child,
}

impl Drop for Background {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A shell command with the built binary first on PATH, in `dir`.
fn shell(dir: &Path, script: &str) -> std::process::Command {
    let bin_dir = Path::new(crate::util::BIN)
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("NETECHO_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// The port a background peer listens on: the number after `LISTEN:`
/// (socat) or after the last `:` of an address.
fn listen_port(cmd: &str) -> Option<u16> {
    let at = cmd.find("LISTEN:").map(|i| i + "LISTEN:".len())?;
    let digits: String = cmd[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The programs a block runs besides netecho and the shell's own, which
/// must be installed for the block to run (CI installs them).
fn missing_tools(steps: &[Step]) -> Vec<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut missing = Vec::new();
    for step in steps {
        // Quoted text (an awk program, a grep pattern) names no program.
        let mut unquoted = String::new();
        let mut quote = None;
        for c in step.command.chars() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) => unquoted.push(c),
                _ => {}
            }
        }
        for part in unquoted.split(['|', ';', '&']) {
            let Some(word) = part.split_whitespace().next() else {
                continue;
            };
            if matches!(
                word,
                "netecho"
                    | "echo"
                    | "printf"
                    | "cd"
                    | "test"
                    | "["
                    | "exec"
                    | "true"
                    | "false"
                    | "sudo"
                    | "wait"
                    | "sleep"
                    | "kill"
            ) {
                continue;
            }
            // `2>&1` splits into `2>` and `1`: a descriptor, no program.
            if word.contains(['=', '>', '<', '(', ')'])
                || word.is_empty()
                || word.starts_with(|c: char| c.is_ascii_digit())
            {
                continue;
            }
            let found = path.split(':').any(|d| Path::new(d).join(word).is_file());
            if !found && !missing.contains(&word.to_string()) {
                missing.push(word.to_string());
            }
        }
    }
    missing
}

/// What the kernel lacks for a block, if anything: the `tc netem` recipe
/// needs the `sch_netem` qdisc, which minimal and virtual-machine kernels
/// leave out (`tc` then says `Specified qdisc kind is unknown`). Probed on
/// the loopback of the calling thread's own network namespace, and removed.
fn missing_kernel_feature(steps: &[Step]) -> Option<String> {
    if !steps.iter().any(|s| s.command.contains(" netem ")) {
        return None;
    }
    let add = std::process::Command::new("tc")
        .args(["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        .output();
    match add {
        Ok(out) if out.status.success() => {
            let _ = std::process::Command::new("tc")
                .args(["qdisc", "del", "dev", "lo", "root"])
                .output();
            None
        }
        Ok(out) => Some(format!(
            "the kernel's sch_netem (tc: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("tc ({e})")),
    }
}

/// Runs one block's steps in a fresh directory; returns the failures.
fn run_block(steps: &[Step]) -> Vec<String> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!(
        "netecho-docs-{}-{}",
        std::process::id(),
        steps
            .first()
            .map(|s| s.at.replace(['/', ':', '.'], "-"))
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    // Examples that read the repository's sample captures name them as from
    // the source tree (`tests/data/echo.pcap`).
    std::fs::create_dir_all(dir.join("tests")).expect("scratch tests/");
    let _ = std::os::unix::fs::symlink(root().join("tests/data"), dir.join("tests/data"));
    // And the scripts (`scripts/c1m.sh`, `scripts/soak.sh`), run from there.
    let _ = std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts"));
    let assert = snapbox::Assert::new().palette(snapbox::report::Palette::plain());
    let mut failures = Vec::new();
    let mut background = Vec::new();
    for step in steps {
        // The examples run as root (in a namespace of their own): `sudo`, as
        // a reader types it, is not needed and may not be installed.
        let command = step.command.strip_prefix("sudo ").unwrap_or(&step.command);
        let actual = if let Some(cmd) = command.trim_end().strip_suffix('&') {
            // Started in the background: its first stdout lines are checked
            // (as many as the example shows); its logs on stderr are not.
            let mut child = match shell(&dir, &format!("exec {cmd}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
            {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{}: cannot start `{}`: {e}", step.at, step.command));
                    break;
                }
            };
            let want = step.expected.lines().count();
            let out = child.stdout.take().expect("piped stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            background.push(Background { child });
            if want == 0 {
                // A peer that prints nothing (socat): ready once its port
                // takes a connection.
                if let Some(port) = listen_port(cmd) {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let ready = crate::util::eventually(Duration::from_secs(10), || {
                        std::net::TcpStream::connect(addr).is_ok()
                    });
                    if !ready {
                        failures.push(format!(
                            "{}: `{}` never listened on {addr}",
                            step.at, step.command
                        ));
                        break;
                    }
                }
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut got = String::new();
            for _ in 0..want {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        got.push_str(&line);
                        got.push('\n');
                    }
                    Err(_) => break,
                }
            }
            got
        } else {
            let run =
                crate::util::Running::spawn(shell(&dir, &format!("exec 2>&1\n{command}")), None)
                    .wait(Duration::from_secs(60));
            let out = String::from_utf8_lossy(&run.stdout).into_owned();
            if !run.success() {
                failures.push(format!(
                    "{}: `{}` exited with {:?} (an example must exit 0; show a failure with `; echo \"exit $?\"`); output:\n{out}",
                    step.at, step.command, run.status
                ));
                continue;
            }
            out
        };
        if let Err(e) = assert.try_eq(
            Some(&step.at),
            snapbox::Data::text(actual),
            snapbox::Data::text(step.expected.clone()),
        ) {
            failures.push(format!(
                "{}: `{}` printed something else:\n{e}",
                step.at, step.command
            ));
        }
    }
    drop(background);
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

#[test]
fn every_example_in_the_readme_and_the_guide_runs_as_shown() {
    let mut blocks = Vec::new();
    let mut unchecked = Vec::new();
    for path in example_files() {
        let name = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (b, u) = console_blocks(&name, &text);
        blocks.extend(b);
        unchecked.extend(u);
    }
    assert!(
        unchecked.is_empty(),
        "commands shown but not run (put them in a ```console block; a dated record \
         keeps its output in a plain fence, without the $ lines):\n{}",
        unchecked.join("\n")
    );
    let total: usize = blocks.iter().map(Vec::len).sum();
    assert!(
        total >= 10,
        "only {total} example commands found: the parser lost them"
    );
    if !crate::util::is_root() {
        // The examples use fixed ports (7000, 7001); only in a network
        // namespace of the test's own are they sure to be free.
        skipped!(
            "SKIPPED: running the {total} documented commands needs root (a network namespace of its own)"
        );
        return;
    }
    // A few threads, each in a network namespace of its own: every process
    // a thread starts (the servers and clients of the examples) is in its
    // namespace too, so the fixed ports of two blocks running at once never
    // meet, and the rest of the suite never sees them.
    let queue = std::sync::Mutex::new(blocks.into_iter());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..EXAMPLE_THREADS {
            s.spawn(|| {
                crate::util::own_netns_with_loopback()
                    .expect("a network namespace with loopback up");
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(block) = next else { break };
                    let missing = missing_tools(&block);
                    let kernel = if missing.is_empty() {
                        missing_kernel_feature(&block)
                    } else {
                        None
                    };
                    let found = if let Some(lacks) = kernel {
                        if let Some(first) = block.first() {
                            skipped!(
                                "SKIPPED: the example at {} needs {lacks}, which this kernel lacks",
                                first.at
                            );
                        }
                        Vec::new()
                    } else if missing.is_empty() {
                        run_block(&block)
                    } else {
                        if let Some(first) = block.first() {
                            skipped!(
                                "SKIPPED: the example at {} needs {} (installed by .ci/run)",
                                first.at,
                                missing.join(", ")
                            );
                        }
                        Vec::new()
                    };
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(found);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} of {total} documented commands drifted from the binary:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The man pages
// ---------------------------------------------------------------------------

/// Every page `netecho man --dir` must write: netecho.1 and one per
/// subcommand, nested ones (`bench merge`) included.
fn expected_man_pages() -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{prefix}-{}", sub.get_name());
            out.push(format!("{name}.1"));
            walk(sub, &name, out);
        }
    }
    let mut out = vec!["netecho.1".to_string()];
    walk(&Cli::command(), "netecho", &mut out);
    out.sort();
    out
}

/// The command lines of a page's EXAMPLES section, unescaped, from where
/// `netecho` starts to the first pipe or redirection.
fn man_examples(roff: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in roff.lines() {
        if line.starts_with(".SH") {
            inside = line.contains("EXAMPLES");
            continue;
        }
        if !inside {
            continue;
        }
        let text = line
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\-", "-");
        if let Some(at) = text.find("netecho ") {
            let cmd = &text[at..];
            let end = cmd.find(['|', '<', '>']).unwrap_or(cmd.len());
            out.push(cmd[..end].trim().to_string());
        }
    }
    out
}

#[test]
fn man_pages_render_with_examples_exit_status_and_environment() {
    let dir = std::env::temp_dir().join(format!("netecho-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = crate::util::run_to_end(
        crate::util::netecho(&["man", "--dir", dir.to_str().unwrap()]),
        None,
        std::time::Duration::from_secs(30),
    );
    run.assert_code(0, "netecho man --dir");
    let mut got: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, expected_man_pages(), "the pages written by man --dir");

    let man = std::process::Command::new("man").arg("--version").output();
    let have_man = man.is_ok_and(|o| o.status.success());
    if !have_man {
        skipped!(
            "SKIPPED: rendering the man pages with `man -l` (no man here); the roff is still checked"
        );
    }
    let top = std::fs::read_to_string(dir.join("netecho.1"))
        .unwrap()
        .replace("\\-", "-");
    let mut examples = 0;
    for file in &got {
        let name = file.strip_suffix(".1").unwrap();
        let roff = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            roff.contains(&format!(".TH {name} 1")),
            "{file}: no .TH {name} 1"
        );
        for section in [
            "NAME",
            "SYNOPSIS",
            "EXAMPLES",
            "\"EXIT STATUS\"",
            "ENVIRONMENT",
        ] {
            assert!(
                roff.lines().any(|l| l == format!(".SH {section}")),
                "{file}: no {section} section"
            );
        }
        assert!(
            roff.contains("NETECHO_LOG"),
            "{file}: ENVIRONMENT lacks NETECHO_LOG"
        );
        if name != "netecho" && name.matches('-').count() == 1 {
            assert!(
                top.contains(&format!("{name}(1)")),
                "netecho.1 does not name {name}(1)"
            );
        }
        // Every example is a command line the real parser accepts.
        for example in man_examples(&roff) {
            let words: Vec<String> = example
                .split_whitespace()
                .map(|w| w.trim_matches('\'').to_string())
                .collect();
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("{file}: the example `{example}` does not parse: {e}");
            }
            examples += 1;
        }
        if have_man {
            let out = std::process::Command::new("man")
                .arg("-l")
                .arg(dir.join(file))
                .env("MANWIDTH", "80")
                .env_remove("MANPAGER")
                .env("PAGER", "cat")
                .output()
                .expect("running man -l");
            // Without a terminal man emboldens by overstriking: `X\bX`.
            let mut text = String::new();
            for c in String::from_utf8_lossy(&out.stdout).chars() {
                if c == '\u{8}' {
                    text.pop();
                } else {
                    text.push(c);
                }
            }
            assert!(
                out.status.success(),
                "man -l {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stderr.is_empty(),
                "man -l {file} warned: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("EXIT STATUS") && text.contains("EXAMPLES"),
                "man -l {file} rendered without its sections:\n{text}"
            );
        }
    }
    assert!(
        examples >= got.len(),
        "only {examples} examples over {} pages",
        got.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// What the user docs may say
// ---------------------------------------------------------------------------

/// README.md and every page of the book, for the checks below.
fn user_docs() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut paths = vec![root().join("README.md")];
    walk(&root().join("docs/src"), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_readme_is_short() {
    let lines = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; the rest belongs in docs/"
    );
}

#[test]
fn user_docs_speak_of_neither_issues_nor_ci_nor_test_files() {
    let mut found = Vec::new();
    for (name, text) in user_docs() {
        for (i, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let issue_number = lower.match_indices("issue").any(|(at, _)| {
                let rest = lower[at + "issue".len()..].trim_start_matches(['s', ' ', '#']);
                rest.starts_with(|c: char| c.is_ascii_digit())
            });
            if issue_number || line.contains(".ci/") || line.contains("tests/it/") {
                found.push(format!("{name}:{}: {line}", i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "user docs must not speak of issues, CI or test files (CONTRIBUTING.md is the place):\n{}",
        found.join("\n")
    );
}
