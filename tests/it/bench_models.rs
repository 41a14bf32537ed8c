//! `netecho bench --models`: the real binary starts real servers on
//! loopback (netecho's models and the C baselines it builds with `cc`),
//! measures them and the kernel floors, prints a row per (server, workload)
//! and draws the chart. Settings are the smallest that still measure
//! something (a fraction of a second per workload, a few workloads through
//! NETECHO_BENCH_WORKLOADS, 200 idle connections); the assertions are about
//! the shape and sanity of the figures, never about speed.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{self, Run, run_to_end};

/// A run that takes longer than this is stuck: it is killed and fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `netecho ARGS` to its end (or kills it at [`RUN_LIMIT`] and fails).
fn netecho(args: &[&str]) -> Run {
    run_to_end(util::netecho(args), None, RUN_LIMIT)
}

/// [`netecho`] on the workloads `list` (NETECHO_BENCH_WORKLOADS) only.
fn netecho_on(list: &str, args: &[&str]) -> Run {
    let mut cmd = util::netecho(args);
    cmd.env("NETECHO_BENCH_WORKLOADS", list);
    run_to_end(cmd, None, RUN_LIMIT)
}

/// The line of `server` (whose label may hold a space) on `workload`, its
/// fields after the label.
fn labelled<'a>(stdout: &'a str, server: &str, workload: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(server))
        .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&workload))
        .unwrap_or_else(|| panic!("no {server} {workload} row in:\n{stdout}"))
}

/// A scratch file path unique to this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("netecho-{}-{name}", std::process::id()))
}

/// The row of `model` on `workload`, split into whitespace-separated fields.
fn row<'a>(stdout: &'a str, model: &str, workload: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&model) && f.get(1) == Some(&workload))
        .unwrap_or_else(|| panic!("no {model} {workload} row in:\n{stdout}"))
}

/// A figure of the table, which may have thousands separators.
fn figure(field: &str) -> f64 {
    field
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("'{field}' is not a number"))
}

/// Checks that `text` is well-formed XML as far as elements go: every tag
/// opened is closed in order, quotes in attributes are balanced, and there
/// is one root element.
fn assert_well_formed(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        // The end of the tag: the first '>' outside quotes.
        let mut quote = None;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("a tag is never closed");
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().expect("a closing tag with nothing open");
            assert_eq!(top, name.trim(), "tags closed out of order");
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        assert!(!name.is_empty(), "a tag without a name: <{tag}>");
        if stack.is_empty() {
            roots += 1;
        }
        if !tag.ends_with('/') {
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "an XML document has one root element");
}

#[test]
fn models_are_measured_tabled_and_charted() {
    let chart = scratch("models.svg");
    let chart_arg = chart.to_str().expect("a UTF-8 temp path");
    let out = netecho_on(
        "small,large,connect,idle",
        &[
            "bench",
            "--models",
            "thread,epoll,iterative",
            "-d",
            "0.5",
            "--warmup",
            "0",
            "--idle-conns",
            "200",
            "--chart",
            chart_arg,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = out.stderr.as_str();
    assert!(
        out.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for model in ["thread", "epoll"] {
        for workload in ["small", "large", "connect"] {
            let f = row(&stdout, model, workload);
            // model, workload, req/s, MB/s, p99 us, CPU us/req, mach us/req, KiB/conn
            assert!(figure(f[2]) > 0.0, "{model} {workload}: req/s {}", f[2]);
            // The whole machine ran at least the server in the window.
            let machine = figure(f[6]);
            assert!(
                machine > 0.0 && machine.is_finite(),
                "{model} {workload}: mach us/req {machine}"
            );
            assert!(figure(f[4]) > 0.0, "{model} {workload}: p99 {}", f[4]);
            let cpu = figure(f[5]);
            assert!(
                cpu > 0.0 && cpu.is_finite(),
                "{model} {workload}: CPU us/req {cpu}"
            );
        }
        let idle = row(&stdout, model, "idle");
        assert!(figure(idle[7]).is_finite(), "{model} idle: {idle:?}");
    }
    // A model that cannot hold the load says so, with the reason.
    let skipped = row(&stdout, "iterative", "small");
    assert_eq!(skipped[2], "n/a:", "{skipped:?}");
    assert!(stdout.contains("serves one client at a time"));
    assert!(figure(row(&stdout, "iterative", "connect")[5]) > 0.0);

    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    let _ = std::fs::remove_file(&chart);
    assert!(svg.trim_start().starts_with("<svg"), "not an SVG document");
    assert_well_formed(&svg);
    for word in ["thread", "epoll", "iterative", "n/a", "per request"] {
        assert!(svg.contains(word), "the chart lacks '{word}'");
    }
}

/// `--workloads` picks the workloads, by name or number, and wins over
/// NETECHO_BENCH_WORKLOADS.
#[test]
fn workloads_flag_picks_the_workloads() {
    let out = netecho_on(
        "small",
        &[
            "bench",
            "--models",
            "epoll",
            "--workloads",
            "3",
            "-d",
            "0.3",
            "--warmup",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.success(), "stdout:\n{stdout}\nstderr:\n{}", out.stderr);
    assert!(
        figure(row(&stdout, "epoll", "connect")[2]) > 0.0,
        "{stdout}"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("epoll") && l.contains(" small ")),
        "the environment's workload ran too:\n{stdout}"
    );
}

#[test]
fn an_unknown_model_is_one_line_and_exit_2() {
    let out = netecho(&["bench", "--models", "thread,nosuch"]);
    let stderr = out.stderr.as_str();
    assert_eq!(out.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.contains("unknown model 'nosuch'") && stderr.contains("epoll"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn models_flags_do_not_mix_with_a_target() {
    for args in [
        &["bench", "127.0.0.1:7", "--models", "epoll"][..],
        &["bench", "--models", "epoll", "-c", "3"][..],
        &["bench", "127.0.0.1:7", "--chart", "/tmp/never.svg"][..],
        &["bench", "--idle-conns", "10"][..],
        &["bench", "127.0.0.1:7", "--workloads", "small"][..],
        &["bench", "--models", "epoll", "--workloads", "nosuch"][..],
        &["bench", "--models", "epoll", "--workloads", ","][..],
    ] {
        let out = netecho(args);
        let stderr = out.stderr.as_str();
        assert_eq!(out.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// Whether an executable `name` is on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Whether liburing's header and library are there (Debian: liburing-dev),
/// as the benchmark probes them.
fn liburing_installed() -> bool {
    let dir = std::env::temp_dir();
    let src = dir.join(format!("netecho-{}-probe-uring.c", std::process::id()));
    let bin = dir.join(format!("netecho-{}-probe-uring", std::process::id()));
    std::fs::write(
        &src,
        "#include <liburing.h>\nint main(void) { return 0; }\n",
    )
    .unwrap();
    let ok = std::process::Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-luring")
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&bin);
    ok
}

#[test]
fn baselines_and_the_stream_are_rows_and_reference_lines() {
    if !on_path("cc") {
        skipped!("SKIPPED: no cc on PATH: the C baselines cannot be built");
        return;
    }
    let chart = scratch("baselines.svg");
    let chart_arg = chart.to_str().expect("a UTF-8 temp path");
    let out = netecho_on(
        "many,stream",
        &[
            "bench",
            "--models",
            "floor,floor-2t,c-epoll,c-uring,epoll",
            "-d",
            "0.3",
            "--warmup",
            "0.1",
            "--chart",
            chart_arg,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = out.stderr.as_str();
    assert!(
        out.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // Both floors on 64 B x 300 (fields after the label: workload, req/s,
    // MB/s, p99 us, CPU us/req), n/a on the stream.
    for floor in ["kernel floor", "floor-2t"] {
        let f = labelled(&stdout, floor, "many");
        assert!(figure(f[1]) > 0.0 && figure(f[4]) > 0.0, "{floor}: {f:?}");
        assert_eq!(labelled(&stdout, floor, "stream")[1], "n/a:", "{floor}");
    }
    // The stream's figure is CPU per MiB echoed, for C epoll and netecho.
    let mut per_mib = vec!["c-epoll", "epoll"];
    if liburing_installed() {
        per_mib.push("c-uring");
        let f = row(&stdout, "c-uring", "many");
        assert!(figure(f[5]) > 0.0, "c-uring many: {f:?}");
    } else {
        skipped!("SKIPPED: liburing-dev is not installed: c-uring is not measured");
        let f = row(&stdout, "c-uring", "many");
        assert_eq!(f[2], "n/a:", "{f:?}");
        assert!(stdout.contains("liburing.h or -luring not found: install liburing-dev"));
    }
    for server in per_mib {
        let f = row(&stdout, server, "stream");
        // server, workload, req/s (-), MB/s, p99 (-), CPU us per MiB, the
        // machine's per MiB
        let per_mib = |i: usize| {
            f[i].strip_suffix("/MiB")
                .unwrap_or_else(|| panic!("{server} stream: no per-MiB figure: {f:?}"))
        };
        assert!(
            figure(per_mib(5)) > 0.0 && figure(f[3]) > 0.0,
            "{server}: {f:?}"
        );
        assert!(figure(per_mib(6)) > 0.0, "{server}: {f:?}");
        assert!(f.contains(&"echoed"), "{server}: {f:?}");
    }
    assert!(stdout.contains("N/MiB is the server's CPU per MiB echoed"));

    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    let _ = std::fs::remove_file(&chart);
    assert_well_formed(&svg);
    for word in [
        "kernel floor",
        "floor-2t",
        "c-epoll",
        "c-uring",
        "epoll",
        "per MiB echoed",
    ] {
        assert!(svg.contains(word), "the chart lacks '{word}'");
    }
    // The first reference line's colour, in its dashes and its dot: the
    // floors are lines, not bars.
    assert!(
        svg.matches("stroke=\"#1E1E1E\"").count() >= 8,
        "no dashed reference line in the chart"
    );
    assert!(svg.contains("<circle"), "no reference dot in the chart");
}
