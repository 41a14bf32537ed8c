//! The cost of growing a pool: a burst of [`BURST`] connections arriving at
//! once against a prefork or prethread server just started with its default
//! flags. The figures are how long until every connection had its first
//! answer, how many workers the pool then had (all started by the burst:
//! none retires that soon), and the server's CPU for all of it. The pool
//! starts what its accept queue shows in one batch, so the first figure is
//! about how fast workers can be forked or spawned, not a spawn rate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::setup::{Programs, Setup};
use crate::bench::{procstat, spawn};
use crate::error::{Error, Result};
use crate::serve::Model;

/// Connections in the burst.
pub(crate) const BURST: usize = 300;
/// Longest the burst may take to be served before the row is a failure.
const SERVED_WITHIN: Duration = Duration::from_secs(60);

/// What one burst cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Growth {
    /// From the first connect to the last first answer.
    pub(crate) served_after: Duration,
    /// Workers alive once all were served (processes or threads).
    pub(crate) workers: usize,
    /// Connections closed unanswered: over the default `--max-conns`.
    pub(crate) turned_away: usize,
    /// The server's CPU over the burst, forked children included.
    pub(crate) cpu: Duration,
}

/// Starts `model` with default flags, pinned like every cell, and serves it
/// one burst.
pub(crate) fn measure(model: Model, programs: &Programs, setup: &Setup) -> Result<Growth> {
    let args = super::cell::serve_args(model);
    let running = spawn::start(&programs.netecho, &args, setup.server_cpu)?;
    let result = burst(model, running.pid, running.addr, setup);
    let _ = spawn::stop(running);
    result
}

fn burst(model: Model, pid: i32, addr: std::net::SocketAddr, setup: &Setup) -> Result<Growth> {
    let fail = |what: &str, e: std::io::Error| Error::Measure(format!("{what}: {e}"));
    let cpu0 = procstat::tree_cpu_ns(pid, setup.clk_tck)?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        // The kernel completes the handshake from the listen backlog, so
        // every connect returns before any worker takes it.
        let mut s = TcpStream::connect(addr).map_err(|e| fail("connect", e))?;
        s.write_all(b"g").map_err(|e| fail("write", e))?;
        conns.push(s);
    }
    let mut turned_away = 0;
    for s in &mut conns {
        let left = SERVED_WITHIN.saturating_sub(start.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| fail("read timeout", e))?;
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => {}
            // Accepted and closed at once: over --max-conns, as in every model.
            Ok(_) => turned_away += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => turned_away += 1,
            Err(e) => return Err(fail("waiting for the pool to serve the burst", e)),
        }
    }
    let served_after = start.elapsed();
    let workers = workers_of(model, pid);
    let cpu1 = procstat::tree_cpu_ns(pid, setup.clk_tck)?;
    Ok(Growth {
        served_after,
        workers,
        turned_away,
        cpu: Duration::from_nanos(cpu1.saturating_sub(cpu0)),
    })
}

/// prefork: the server's child processes (the metrics and UDP helper, when
/// started, is one more); prethread: its threads.
fn workers_of(model: Model, pid: i32) -> usize {
    match model {
        Model::Prefork => crate::sys::proc::pids()
            .filter(|&p| crate::sys::proc::read_stat(p).is_some_and(|s| s.ppid == pid))
            .count(),
        _ => std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()),
    }
}

/// The table of the pooled servers' bursts.
pub(crate) fn table(rows: &[(Model, Result<Growth>)]) -> Vec<String> {
    let mut out = vec![
        format!("Pool growth: {BURST} connections at once against a fresh pool (default flags)"),
        format!(
            "{:<10} {:>16} {:>8} {:>10} {:>14} {:>12}",
            "server", "all served after", "workers", "workers/s", "server CPU ms", "turned away"
        ),
    ];
    for (model, r) in rows {
        out.push(match r {
            Ok(g) => {
                let secs = g.served_after.as_secs_f64();
                format!(
                    "{:<10} {:>14.2} s {:>8} {:>10.1} {:>14.1} {:>12}",
                    model.name(),
                    secs,
                    g.workers,
                    g.workers as f64 / secs.max(1e-9),
                    g.cpu.as_secs_f64() * 1000.0,
                    g.turned_away
                )
            }
            Err(e) => format!("{:<10} error: {e}", model.name()),
        });
    }
    out.push(
        "(workers: processes (prefork) or threads (prethread) once all were answered; \
         workers/s: that over the time it took; turned away: over the default --max-conns, \
         256 for prefork, accepted and closed at once)"
            .into(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_server_and_says_why_one_failed() {
        let ok = Growth {
            served_after: Duration::from_secs(2),
            workers: 302,
            turned_away: 0,
            cpu: Duration::from_millis(150),
        };
        let rows = vec![
            (Model::Prefork, Ok(ok)),
            (Model::Prethread, Err(Error::Measure("no".into()))),
        ];
        let t = table(&rows);
        assert!(t[2].starts_with("prefork") && t[2].contains("2.00 s") && t[2].contains("151.0"));
        assert!(t[3].contains("error: "));
    }
}
