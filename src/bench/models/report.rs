//! The suite's output, in its two layouts (see [`super::Layout`]): the
//! header that says how the run was measured, the rows, the footnotes that
//! say what the columns mean, and the chart's panels. Pure: it formats
//! [`Row`]s and prints nothing itself.

use std::process::{Command, Stdio};

use super::cell::{Cell, IDLE_SETTLE, Outcome, Skip};
use super::peer::{self, Peer};
use super::server::{C_EPOLL, CC_FLAGS, Server};
use super::workload::{Shape, Workload};
use super::{FD_MARGIN, Row, Suite};
use crate::bench::chart;
use crate::bench::report::thousands;

/// Width of the server column in the `--models` lines.
const LINE_LABEL: usize = 10;
/// Width of the server column in the benchmark's tables.
const TABLE_LABEL: usize = 13;

// ---------------------------------------------------------------------------
// Lines: `netecho bench --models`
// ---------------------------------------------------------------------------

/// The lines above the `--models` rows: how they were measured, and the
/// column heads.
pub(crate) fn lines_header(suite: &Suite) -> Vec<String> {
    let setup = &suite.setup;
    let mut lines = vec![format!(
        "netecho bench --models: {:.1} s per workload after {:.1} s warm-up; {}",
        setup.window.as_secs_f64(),
        setup.warmup.as_secs_f64(),
        if suite.machine.two_cpus() {
            format!(
                "server pinned to CPU {}, load to CPU {}",
                suite.machine.server_cpu(),
                suite.machine.load_cpu()
            )
        } else {
            "one CPU: server and load share it (figures compare, not absolute)".into()
        }
    )];
    lines.push(format!(
        "server: {} serve --listen 127.0.0.1:0 --model M --workers 1 --idle-timeout 0 --drain-timeout 1 (other flags in the note)",
        suite.programs.netecho.display()
    ));
    for w in &suite.workloads {
        lines.push(format!("  {:<8} {}", w.name, w.describe(setup.idle_conns)));
    }
    if setup.idle_conns < suite.machine.idle_asked {
        lines.push(format!(
            "  (idle reduced from {} to {} connections by the descriptor limit)",
            thousands(suite.machine.idle_asked as u64),
            thousands(setup.idle_conns as u64)
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<LINE_LABEL$} {:<8} {:>10} {:>9} {:>9} {:>11} {:>9}  note",
        "model", "workload", "req/s", "MB/s", "p99 us", "CPU us/req", "KiB/conn"
    ));
    lines
}

/// One `--models` row.
pub(crate) fn line(r: &Row) -> String {
    let head = format!("{:<LINE_LABEL$} {:<8}", r.server.label(), r.workload.name);
    match &r.cell {
        Err(skip) => format!("{head} {}", skipped(skip)),
        Ok(Cell {
            outcome: Outcome::Traffic(t),
            note,
        }) => format!(
            "{head} {:>10} {:>9} {:>9} {:>11} {:>9}  {note}",
            thousands(t.req_s.round() as u64),
            num(t.mb_s),
            num(t.p99_us),
            num(t.cpu_us),
            "-"
        ),
        Ok(Cell {
            outcome: Outcome::Memory(m),
            note,
        }) => {
            let mut extra = format!(
                "{:.0} process{}, PSS {:.0} -> {:.0} KiB",
                m.procs,
                if m.procs == 1.0 { "" } else { "es" },
                m.pss_before_kib,
                m.pss_after_kib
            );
            if !note.is_empty() {
                extra = format!("{note}; {extra}");
            }
            format!(
                "{head} {:>10} {:>9} {:>9} {:>11} {:>9}  {extra}",
                "-",
                "-",
                "-",
                "-",
                num(m.kib_per_conn)
            )
        }
    }
}

/// What the `--models` columns mean, printed under the rows.
pub(crate) fn lines_legend() -> String {
    format!(
        "(CPU us/req: the server's CPU per request, its threads and forked children included \
         (/proc/PID/stat utime+stime+cutime+cstime, live children's /proc/PID/task/*/schedstat); \
         KiB/conn: PSS of the server and its children (/proc/PID/smaps_rollup) {} ms after the \
         last idle connection opened, minus before the first, per connection; kernel socket \
         memory is not in PSS)",
        IDLE_SETTLE.as_millis()
    )
}

/// The `--chart` panels: server CPU per request for each throughput
/// workload, memory per idle connection for the idle one; a bar per
/// server, in row order.
pub(crate) fn chart_panels(rows: &[Row], workloads: &[Workload], idle: usize) -> Vec<chart::Panel> {
    workloads
        .iter()
        .map(|&w| {
            let bars = rows
                .iter()
                .filter(|r| r.workload == w)
                .map(|r| chart::Bar {
                    label: r.server.label().to_string(),
                    value: match &r.cell {
                        Ok(cell) => Ok(cell.outcome.primary()),
                        Err(Skip::NotApplicable(_)) => Err("n/a".to_string()),
                        Err(Skip::Failed(_)) => Err("error".to_string()),
                    },
                })
                .collect();
            let (title, unit) = match w.shape {
                Shape::Idle => (
                    format!(
                        "Memory per idle connection ({} connections)",
                        thousands(idle as u64)
                    ),
                    "KiB of server PSS per connection",
                ),
                Shape::Traffic { .. } => (
                    format!("Server CPU per request: {}", w.describe(idle)),
                    "server CPU µs per request",
                ),
            };
            chart::Panel {
                title,
                unit: unit.to_string(),
                bars,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tables: `cargo bench --bench models`
// ---------------------------------------------------------------------------

/// Date, machine, method, and `command`, which reproduces the run.
pub(crate) fn tables_header(suite: &Suite, command: &str) -> Vec<String> {
    let (setup, machine) = (&suite.setup, &suite.machine);
    let mut lines = vec![
        "netecho model benchmark (BENCHMARKING.md)".to_string(),
        format!("date:     {}", utc_now()),
        format!(
            "machine:  nproc {}, kernel {}, {}",
            machine.cpus.len(),
            kernel_release(),
            first_line("cc", &["--version"])
        ),
        format!(
            "commit:   {} (the working tree may differ)",
            first_line("git", &["rev-parse", "--short", "HEAD"])
        ),
        format!("command:  {command}"),
        format!(
            "method:   server pinned to CPU {} (sched_setaffinity), load generator on CPU {}; {:.1} s measured after {:.1} s warm-up; median of {}",
            machine.server_cpu(),
            machine.load_cpu(),
            setup.window.as_secs_f64(),
            setup.warmup.as_secs_f64(),
            suite.repeat
        ),
    ];
    if !machine.two_cpus() {
        lines.push(
            "WARNING:  one CPU only: server and load share it; figures are comparable, not absolute"
                .into(),
        );
    }
    lines.push(format!(
        "server:   {} serve --listen 127.0.0.1:0 --model M --workers 1 --idle-timeout 0 --drain-timeout 1 (extra flags in the note column)",
        suite.programs.netecho.display()
    ));
    lines.push(format!(
        "CPU:      server CPU per request = Δ over the window of the server's utime+stime+cutime+cstime (/proc/PID/stat, {} ticks/s) + its live children's run time (/proc/PID/task/*/schedstat, ns), / requests",
        setup.clk_tck
    ));
    lines.push(format!(
        "RLIMIT_NOFILE: soft {}, hard {}{}",
        machine.nofile.0,
        machine.nofile.1,
        if setup.idle_conns < machine.idle_asked {
            format!(
                "; workload 4 reduced to {} connections (limit minus {FD_MARGIN})",
                setup.idle_conns
            )
        } else {
            String::new()
        }
    ));
    let installed: Vec<&str> = Peer::ALL
        .into_iter()
        .filter(|p| p.program().is_some())
        .map(Peer::name)
        .collect();
    let asked: Vec<&str> = Peer::ALL
        .into_iter()
        .filter(|p| suite.servers.contains(&Server::Peer(*p)))
        .map(Peer::name)
        .collect();
    let missing: Vec<&str> = Peer::ALL
        .map(Peer::name)
        .into_iter()
        .filter(|p| !installed.contains(p))
        .collect();
    fn or_none(v: &[&str]) -> String {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    }
    lines.push(format!(
        "peers:    installed: {}; run: {}{}",
        or_none(&installed),
        or_none(&asked),
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; not installed: {} (scripts/install-peers.sh)",
                missing.join(", ")
            )
        }
    ));
    if !asked.is_empty() {
        lines.push(format!(
            "peer cmds: socat TCP-LISTEN:P,bind=127.0.0.1,fork,reuseaddr PIPE | ncat -l -k 127.0.0.1 P -e /bin/cat | xinetd -dontfork -f {} (internal echo-stream, UNLISTED, port P); P = a free port; pinned like the models; no TCP_NODELAY on their side (their defaults)",
            peer::xinetd_conf(&suite.programs.scratch).display()
        ));
    }
    for (spec, built) in &suite.programs.c {
        lines.push(match built {
            Ok(path) => format!(
                "{}:  {} (cc {} benches/c/{}{}), pinned like the models",
                spec.name,
                path.display(),
                CC_FLAGS.join(" "),
                spec.source,
                spec.libs
                    .iter()
                    .map(|l| format!(" {l}"))
                    .collect::<String>()
            ),
            Err(e) => format!("{}:  {e}", spec.name),
        });
    }
    lines.push(String::new());
    lines
}

/// One workload's table: heads, a row per server, the footnote, a blank line.
pub(crate) fn table(w: Workload, rows: &[Row], idle_conns: usize) -> Vec<String> {
    let mut lines = vec![format!("Workload {}: {}", w.number, w.describe(idle_conns))];
    let primary_of = |server: Server| {
        rows.iter()
            .find(|r| r.server == server)
            .and_then(|r| r.cell.as_ref().ok())
            .map(|c| c.outcome.primary())
    };
    let c_base = primary_of(Server::C(C_EPOLL));
    let floor = primary_of(Server::KernelFloor);
    lines.push(match w.shape {
        Shape::Idle => format!(
            "{:<TABLE_LABEL$} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>9} {:>11}  note",
            "server",
            "conns",
            "open s",
            "procs",
            "PSS0 KiB",
            "PSS1 KiB",
            "KiB/conn",
            "-C epoll",
            "CPU us/conn"
        ),
        Shape::Traffic { .. } => format!(
            "{:<TABLE_LABEL$} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>9}  note",
            "server",
            "req/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "CPU us/req",
            "xC epoll",
            "xfloor"
        ),
    });
    for r in rows {
        let label = r.server.label();
        lines.push(match &r.cell {
            Err(skip) => format!("{label:<TABLE_LABEL$} {}", skipped(skip)),
            Ok(Cell {
                outcome: Outcome::Traffic(t),
                note,
            }) => format!(
                "{label:<TABLE_LABEL$} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>9}  {note}",
                num(t.req_s),
                num(t.mb_s),
                num(t.p50_us),
                num(t.p99_us),
                num(t.p999_us),
                num(t.cpu_us),
                ratio(t.cpu_us, c_base),
                ratio(t.cpu_us, floor),
            ),
            Ok(Cell {
                outcome: Outcome::Memory(m),
                note,
            }) => format!(
                "{label:<TABLE_LABEL$} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>9} {:>11}  {note}",
                format!("{:.0}", m.conns),
                num(m.open_s),
                format!("{:.0}", m.procs),
                format!("{:.0}", m.pss_before_kib),
                format!("{:.0}", m.pss_after_kib),
                num(m.kib_per_conn),
                c_base.map_or("-".into(), |c| format!("{:+.2}", m.kib_per_conn - c)),
                num(m.cpu_us_per_conn),
            ),
        });
    }
    lines.push(match w.shape {
        Shape::Traffic {
            new_conn: false, ..
        } => "(CPU us/req is the server's; kernel floor = half a round trip's CPU of one thread owning both ends; xC epoll and xfloor divide CPU us/req)".into(),
        Shape::Traffic { new_conn: true, .. } => "(latency from connect to the last echoed byte; the client closes first; xC epoll divides CPU us/req)".into(),
        Shape::Idle => format!(
            "(PSS of the server and its children (/proc/PID/smaps_rollup) before = after one warm-up connection, after = all open + {} ms; KiB/conn = (PSS1 - PSS0) / conns; -C epoll = KiB/conn minus C epoll's (a ratio to a near-zero base would mean nothing); kernel socket memory is not in PSS; CPU us/conn = server CPU to accept, serve one round trip and keep each connection)",
            IDLE_SETTLE.as_millis()
        ),
    });
    lines.push(String::new());
    lines
}

/// `a / b` as a ratio, or "-" when there is no baseline to divide by.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

// ---------------------------------------------------------------------------
// Both
// ---------------------------------------------------------------------------

/// A skipped cell, after the server (and workload) columns.
fn skipped(skip: &Skip) -> String {
    match skip {
        Skip::NotApplicable(why) => format!("n/a: {why}"),
        Skip::Failed(e) => format!("ERROR: {e}"),
    }
}

/// A number with as many decimals as its size deserves.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------------------------------------------------------------------------
// The machine, for the header
// ---------------------------------------------------------------------------

/// The running kernel's release, as `uname -r` prints it.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// The current time in UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic
/// Gregorian calendar; UTC has no leap seconds in Unix time).
fn utc(secs: u64) -> String {
    const DAY: u64 = 86_400;
    let (days, rest) = (secs / DAY, secs % DAY);
    // Howard Hinnant's civil_from_days, on days since 0000-03-01: a year
    // that starts in March puts the leap day last.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The first line a command prints, or "?".
fn first_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::super::cell::Traffic;
    use super::*;
    use crate::serve::Model;

    #[test]
    fn utc_dates_are_those_of_the_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(11_016 * 86_400 + 3_661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc(20_788 * 86_400 + 86_399), "2026-12-01 23:59:59 UTC");
    }

    fn traffic(cpu_us: f64) -> Outcome {
        Outcome::Traffic(Traffic {
            req_s: 1000.0,
            mb_s: 0.06,
            p50_us: 10.0,
            p99_us: 20.0,
            p999_us: 30.0,
            cpu_us,
        })
    }

    fn row(server: Server, cpu_us: f64) -> Row {
        Row {
            server,
            workload: Workload::SMALL,
            cell: Ok(Cell {
                outcome: traffic(cpu_us),
                note: String::new(),
            }),
        }
    }

    #[test]
    fn tables_divide_by_c_epoll_and_the_floor() {
        let rows = [
            row(Server::KernelFloor, 2.0),
            row(Server::C(C_EPOLL), 4.0),
            row(Server::Netecho(Model::Epoll), 5.0),
        ];
        let lines = table(Workload::SMALL, &rows, 10);
        assert_eq!(
            lines[0],
            "Workload 1: 64 B messages, 50 connections, one in flight each"
        );
        let epoll: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(epoll[0], "epoll");
        assert_eq!(&epoll[6..9], ["5.00", "1.25x", "2.50x"]);
        assert!(lines[5].starts_with("(CPU us/req is the server's"));
    }

    #[test]
    fn lines_keep_their_columns() {
        let l = line(&row(Server::Netecho(Model::Thread), 12.5));
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f,
            ["thread", "small", "1,000", "0.06", "20.00", "12.50", "-"]
        );
        let skip = Row {
            server: Server::Netecho(Model::Iterative),
            workload: Workload::SMALL,
            cell: Err(Skip::NotApplicable("serves one client at a time".into())),
        };
        assert_eq!(
            line(&skip),
            "iterative  small    n/a: serves one client at a time"
        );
    }
}
