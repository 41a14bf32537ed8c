//! The suite's output, in its two layouts (see [`super::Layout`]): the
//! header that says how the run was measured, the rows, the footnotes that
//! say what the columns mean, and the chart's panels. Pure: it formats
//! [`Row`]s and prints nothing itself.

use std::process::{Command, Stdio};

use super::cell::{Cell, IDLE_SETTLE, Outcome};
use super::peer::{self, Peer};
use super::server::{C_EPOLL, C_SPLICE, C_URING, CC_FLAGS, Server};
use super::setup::{FD_MARGIN, Skip};
use super::suite::{Row, Suite};
use super::workload::{MANY_CONNS, Shape, Workload};
use crate::bench::chart;
use crate::bench::text::{num, thousands};

/// Width of the server column in the `--models` lines: `kernel floor`.
const LINE_LABEL: usize = 12;
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
        "{:<LINE_LABEL$} {:<8} {:>10} {:>9} {:>9} {:>11} {:>11} {:>9}  note",
        "model", "workload", "req/s", "MB/s", "p99 us", "CPU us/req", "mach us/req", "KiB/conn"
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
            "{head} {:>10} {:>9} {:>9} {:>11} {:>11} {:>9}  {note}",
            thousands(t.req_s.round() as u64),
            num(t.mb_s),
            num(t.p99_us),
            num(t.cpu_us),
            num(t.machine_us),
            "-"
        ),
        Ok(Cell {
            outcome: Outcome::Stream(st),
            note,
        }) => format!(
            "{head} {:>10} {:>9} {:>9} {:>11} {:>11} {:>9}  {}",
            "-",
            num(st.mib_s * MIB_IN_MB),
            "-",
            format!("{}/MiB", num(st.cpu_us_per_mib)),
            format!("{}/MiB", num(st.machine_us_per_mib)),
            "-",
            join_note(note, &format!("{:.0} MiB echoed", st.mib))
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
                "{head} {:>10} {:>9} {:>9} {:>11} {:>11} {:>9}  {extra}",
                "-",
                "-",
                "-",
                "-",
                "-",
                num(m.kib_per_conn)
            )
        }
    }
}

/// Megabytes (10^6) in a MiB: the stream's MB/s column is comparable
/// with the other workloads'.
const MIB_IN_MB: f64 = 1.048_576;

/// `note` and `more`, joined with "; " when both say something.
fn join_note(note: &str, more: &str) -> String {
    match (note.is_empty(), more.is_empty()) {
        (true, _) => more.to_string(),
        (false, true) => note.to_string(),
        (false, false) => format!("{note}; {more}"),
    }
}

/// What the `--models` columns mean, printed under the rows.
pub(crate) fn lines_legend() -> String {
    format!(
        "(CPU us/req: the server's CPU per request, its threads and forked children included \
         (each live process's CPU-time clock, ns, exited threads included; reaped children's cutime+cstime); \
         mach us/req: the whole machine's busy CPU per request, every core and the load \
         included (/proc/stat), so work a server only pushes onto its client is no gain there; \
         on stream rows N/MiB is the server's CPU per MiB echoed (and the machine's), MB/s one direction; \
         kernel floor: half a round trip's CPU of one thread owning both ends; floor-2t: the \
         echoing thread's CPU per round trip, one thread per core; KiB/conn: PSS of the server and its children (/proc/PID/smaps_rollup) {} ms after the \
         last idle connection opened, minus before the first, per connection; kernel socket \
         memory is not in PSS)",
        IDLE_SETTLE.as_millis()
    )
}

/// The `--chart` panels: server CPU per request for each request/response
/// workload, per MiB for the stream, memory per idle connection for the
/// idle one; a bar per model (and peer), in row order, and a reference line
/// per baseline (the floors and the C servers) run on the workload.
pub(crate) fn chart_panels(rows: &[Row], workloads: &[Workload], idle: usize) -> Vec<chart::Panel> {
    let value = |r: &Row| match &r.cell {
        Ok(cell) => Ok(cell.outcome.primary()),
        Err(Skip::NotApplicable(_)) => Err("n/a".to_string()),
        Err(Skip::Failed(_)) => Err("error".to_string()),
    };
    workloads
        .iter()
        .map(|&w| {
            // A floor that does not apply to the workload draws nothing.
            let (refs, bars): (Vec<&Row>, Vec<&Row>) = rows
                .iter()
                .filter(|r| r.workload == w)
                .filter(|r| !(r.server.is_floor() && matches!(r.cell, Err(Skip::NotApplicable(_)))))
                .partition(|r| r.server.is_baseline());
            let as_bars = |list: Vec<&Row>| -> Vec<chart::Bar> {
                list.into_iter()
                    .map(|r| chart::Bar {
                        label: r.server.label().to_string(),
                        value: value(r),
                    })
                    .collect()
            };
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
                Shape::Stream { conns } => (
                    format!(
                        "Server CPU per MiB echoed: a full-duplex stream on {conns} connections"
                    ),
                    "server CPU µs per MiB echoed",
                ),
            };
            chart::Panel {
                title,
                unit: unit.to_string(),
                bars: as_bars(bars),
                refs: as_bars(refs),
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
        "CPU:      server CPU per request = Δ over the window of the CPU-time clock (clock_getcpuclockid, ns, exited threads included) of the server and each live child, + its reaped children's cutime+cstime (/proc/PID/stat, {} ticks/s), / requests",
        setup.clk_tck
    ));
    lines.push(
        "machine:  machine CPU per request = Δ over the same window of every core's busy time (/proc/stat cpu line: user+nice+system+irq+softirq+steal), / requests: the load generator and anything else running included".into()
    );
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
            Err(e) => format!("{}:  {}", spec.name, skipped(e)),
        });
    }
    lines.push(String::new());
    lines
}

/// The ratio columns of a workload's table: each head and the baseline it
/// divides by. Every table divides by C epoll; those of messages on kept
/// connections by both floors; the one of many connections by C io_uring
/// too (its bar); the stream's by C splice (the bar for large transfers).
fn ratio_columns(w: Workload) -> Vec<(&'static str, Server)> {
    let c_epoll = ("xC epoll", Server::C(C_EPOLL));
    match w.shape {
        Shape::Traffic {
            conns,
            new_conn: false,
            ..
        } => {
            let mut cols = vec![c_epoll];
            if conns >= MANY_CONNS {
                cols.push(("xC uring", Server::C(C_URING)));
            }
            cols.extend([
                ("xfloor", Server::KernelFloor),
                ("xfloor-2t", Server::Floor2t),
            ]);
            cols
        }
        Shape::Traffic { new_conn: true, .. } | Shape::Idle => vec![c_epoll],
        Shape::Stream { .. } => vec![c_epoll, ("xC splice", Server::C(C_SPLICE))],
    }
}

/// Width of a ratio column.
const RATIO: usize = 9;

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
    let c_machine = rows
        .iter()
        .find(|r| r.server == Server::C(C_EPOLL))
        .and_then(|r| r.cell.as_ref().ok())
        .and_then(|c| c.outcome.machine());
    let cols: Vec<(&str, Option<f64>)> = ratio_columns(w)
        .into_iter()
        .map(|(head, base)| (head, primary_of(base)))
        .collect();
    let ratio_heads: String = cols
        .iter()
        .map(|(head, _)| format!(" {head:>RATIO$}"))
        .collect();
    let ratios = |v: f64| -> String {
        cols.iter()
            .map(|(_, base)| format!(" {:>RATIO$}", ratio(v, *base)))
            .collect()
    };
    lines.push(match w.shape {
        Shape::Idle => format!(
            "{:<TABLE_LABEL$} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>7} {:>9} {:>11} {:>12}  note",
            "server",
            "conns",
            "open s",
            "procs",
            "PSS0 KiB",
            "PSS1 KiB",
            "KiB/conn",
            "B/conn",
            "-C epoll",
            "CPU us/conn",
            "mach us/conn"
        ),
        Shape::Traffic { .. } => format!(
            "{:<TABLE_LABEL$} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11}{ratio_heads} {:>11} {:>RATIO$}  note",
            "server", "req/s", "MB/s", "p50 us", "p99 us", "p99.9 us", "CPU us/req", "mach us/req", "mach xC",
        ),
        Shape::Stream { .. } => format!(
            "{:<TABLE_LABEL$} {:>9} {:>9} {:>11} {:>10}{ratio_heads} {:>11} {:>RATIO$}  note",
            "server", "MiB/s", "MiB", "CPU us/MiB", "MiB/CPU-s", "mach us/MiB", "mach xC",
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
                "{label:<TABLE_LABEL$} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11}{} {:>11} {:>RATIO$}  {note}",
                num(t.req_s),
                num(t.mb_s),
                num(t.p50_us),
                num(t.p99_us),
                num(t.p999_us),
                num(t.cpu_us),
                ratios(t.cpu_us),
                num(t.machine_us),
                ratio(t.machine_us, c_machine),
            ),
            Ok(Cell {
                outcome: Outcome::Stream(st),
                note,
            }) => format!(
                "{label:<TABLE_LABEL$} {:>9} {:>9} {:>11} {:>10}{} {:>11} {:>RATIO$}  {note}",
                num(st.mib_s),
                num(st.mib),
                num(st.cpu_us_per_mib),
                num(1e6 / st.cpu_us_per_mib),
                ratios(st.cpu_us_per_mib),
                num(st.machine_us_per_mib),
                ratio(st.machine_us_per_mib, c_machine),
            ),
            Ok(Cell {
                outcome: Outcome::Memory(m),
                note,
            }) => format!(
                "{label:<TABLE_LABEL$} {:>6} {:>7} {:>6} {:>11} {:>11} {:>9} {:>7} {:>9} {:>11} {:>12}  {note}",
                format!("{:.0}", m.conns),
                num(m.open_s),
                format!("{:.0}", m.procs),
                format!("{:.0}", m.pss_before_kib),
                format!("{:.0}", m.pss_after_kib),
                num(m.kib_per_conn),
                format!("{:.0}", m.kib_per_conn * 1024.0),
                c_base.map_or("-".into(), |c| format!("{:+.2}", m.kib_per_conn - c)),
                num(m.cpu_us_per_conn),
                num(m.machine_us_per_conn),
            ),
        });
    }
    let heads: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    lines.push(match w.shape {
        Shape::Traffic {
            new_conn: false, ..
        } => format!(
            "(CPU us/req is the server's; mach us/req the whole machine's busy CPU (/proc/stat, every core, the load included) over the same window, mach xC that divided by C epoll's; kernel floor = half a round trip's CPU of one thread owning both ends; floor-2t = the echoing thread's CPU per round trip, one thread per core (echo on the server's CPU, sender on the load's); {} divide CPU us/req)",
            heads.join(", ")
        ),
        Shape::Traffic { new_conn: true, .. } => "(latency from connect to the last echoed byte; the client closes first, from 64 loopback source addresses (127.0.1.1-64) so ports in TIME_WAIT never run out; xC epoll divides CPU us/req; mach us/req: the whole machine's busy CPU (/proc/stat, every core, the load included), mach xC that divided by C epoll's)".into(),
        Shape::Stream { .. } => format!(
            "(each connection writes 64 KiB chunks continuously while it reads its echo, every byte checked; MiB/s and MiB: echoed back in the window, one direction; CPU us/MiB: the server's CPU per MiB echoed, the figure that counts; MiB/CPU-s = MiB echoed per second of server CPU; {} divide CPU us/MiB; mach us/MiB: the whole machine's busy CPU per MiB (/proc/stat, every core, the load included), mach xC that divided by C epoll's; the floors are for request/response only)",
            heads.join(", ")
        ),
        Shape::Idle => format!(
            "(PSS of the server and its children (/proc/PID/smaps_rollup) before = after one warm-up connection, after = all open + {} ms; KiB/conn = (PSS1 - PSS0) / conns; B/conn = the same in bytes (PSS is read in whole KiB, so at 10,000 connections it moves in steps of about 0.1 B); -C epoll = KiB/conn minus C epoll's (a ratio to a near-zero base would mean nothing); kernel socket memory is not in PSS; CPU us/conn = server CPU to accept, serve one round trip and keep each connection; mach us/conn the whole machine's (/proc/stat))",
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
    use super::super::traffic::Traffic;
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
            machine_us: 3.0 * cpu_us,
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
        // No floor-2t row: its ratio is "-".
        assert_eq!(
            &epoll[6..12],
            ["5.00", "1.25x", "2.50x", "-", "15.00", "1.25x"]
        );
        assert!(lines[1].contains("mach us/req") && lines[1].contains("mach xC"));
        assert!(lines[5].starts_with("(CPU us/req is the server's"));
    }

    fn stream_row(server: Server, cpu_us_per_mib: f64) -> Row {
        Row {
            server,
            workload: Workload::STREAM,
            cell: Ok(Cell {
                outcome: Outcome::Stream(super::super::cell::Stream {
                    conns: 8,
                    mib_s: 500.0,
                    mib: 1500.0,
                    cpu_us_per_mib,
                    machine_us_per_mib: 2.0 * cpu_us_per_mib,
                }),
                note: String::new(),
            }),
        }
    }

    #[test]
    fn the_many_table_divides_by_c_uring_and_both_floors() {
        let at = |w: Workload, r: Row| Row { workload: w, ..r };
        let rows = [
            at(Workload::MANY, row(Server::KernelFloor, 2.0)),
            at(Workload::MANY, row(Server::Floor2t, 4.0)),
            at(Workload::MANY, row(Server::C(C_EPOLL), 8.0)),
            at(Workload::MANY, row(Server::C(C_URING), 5.0)),
            at(Workload::MANY, row(Server::Netecho(Model::Uring), 4.0)),
        ];
        let lines = table(Workload::MANY, &rows, 10);
        let heads: Vec<&str> = lines[1].split_whitespace().collect();
        assert!(
            lines[1].contains("xC epoll  xC uring    xfloor xfloor-2t"),
            "{heads:?}"
        );
        let uring: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(uring[0], "uring");
        assert_eq!(&uring[6..11], ["4.00", "0.50x", "0.80x", "2.00x", "1.00x"]);
        // Workload 1 has no C uring column.
        assert!(!table(Workload::SMALL, &rows, 10)[1].contains("xC uring"));
    }

    #[test]
    fn the_stream_table_is_per_mib_against_c_epoll() {
        let rows = [
            stream_row(Server::C(C_EPOLL), 400.0),
            stream_row(Server::Netecho(Model::Epoll), 200.0),
            Row {
                server: Server::C(C_URING),
                workload: Workload::STREAM,
                cell: Err(Skip::NotApplicable(
                    "liburing.h or -luring not found".into(),
                )),
            },
        ];
        let lines = table(Workload::STREAM, &rows, 10);
        assert!(lines[1].contains("CPU us/MiB") && lines[1].contains("MiB/CPU-s"));
        let epoll: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            &epoll[..6],
            ["epoll", "500.0", "1500", "200.0", "5000", "0.50x"]
        );
        assert!(lines[4].starts_with("c-uring") && lines[4].contains("n/a: liburing.h"));
        assert!(lines[5].contains("CPU us/MiB: the server's CPU per MiB echoed"));
        let l = line(&rows[1]);
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f[..7],
            [
                "epoll",
                "stream",
                "-",
                "524.3",
                "-",
                "200.0/MiB",
                "400.0/MiB"
            ]
        );
        assert_eq!(&epoll[7..9], ["400.0", "0.50x"]);
    }

    #[test]
    fn chart_panels_draw_baselines_as_references_and_drop_floors_that_do_not_apply() {
        let rows = [
            row(Server::KernelFloor, 2.0),
            row(Server::C(C_EPOLL), 4.0),
            row(Server::Netecho(Model::Epoll), 5.0),
            Row {
                server: Server::KernelFloor,
                workload: Workload::STREAM,
                cell: Err(Skip::NotApplicable("request/response only".into())),
            },
            stream_row(Server::C(C_EPOLL), 400.0),
            stream_row(Server::Netecho(Model::Epoll), 200.0),
        ];
        let panels = chart_panels(&rows, &[Workload::SMALL, Workload::STREAM], 10);
        let labels = |b: &[chart::Bar]| b.iter().map(|b| b.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&panels[0].refs), ["kernel floor", "c-epoll"]);
        assert_eq!(labels(&panels[0].bars), ["epoll"]);
        assert_eq!(labels(&panels[1].refs), ["c-epoll"]);
        assert!(panels[1].unit.contains("per MiB"));
    }

    #[test]
    fn lines_keep_their_columns() {
        let l = line(&row(Server::Netecho(Model::Thread), 12.5));
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f,
            [
                "thread", "small", "1,000", "0.06", "20.00", "12.50", "37.50", "-"
            ]
        );
        let skip = Row {
            server: Server::Netecho(Model::Iterative),
            workload: Workload::SMALL,
            cell: Err(Skip::NotApplicable("serves one client at a time".into())),
        };
        assert_eq!(
            line(&skip),
            "iterative    small    n/a: serves one client at a time"
        );
    }
}
