//! The polling state of `watch` (sockets over sock_diag, the `--pid`
//! process tree), also driven step by step by `lab`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::diag;
use super::format::{format_change, format_proc_change};
use super::info;
use super::procs::{self, Owner, Owners, ProcInfo};
use super::snapshot::{self, Snapshot};
use crate::error::Result;

/// How often `--pid` looks through all of `/proc` for new processes in the
/// tree; polls in between re-read only the processes already known, so a
/// 10 ms interval does not read every process on the host 100 times a second.
pub(crate) const PROC_SCAN_EVERY: Duration = Duration::from_millis(100);

/// The polling state of `watch`, also driven step by step by `lab`.
pub(crate) struct Watcher {
    /// When watching began; timestamps count from here.
    pub(crate) start: Instant,
    /// The watched port.
    port: u16,
    /// The process tree's root, with `--pid`.
    pid: Option<i32>,
    /// The netlink socket.
    diag: diag::Diag,
    /// Inode → process cache.
    owners: Owners,
    /// The previous poll's sockets.
    prev: Snapshot,
    /// The previous poll's process tree.
    prev_procs: BTreeMap<i32, ProcInfo>,
    /// When `/proc` was last scanned in full for the tree.
    last_scan: Option<Instant>,
}

impl Watcher {
    /// Opens the netlink socket; the first [`Watcher::poll`] shows every
    /// existing socket as new.
    pub(crate) fn new(port: u16, pid: Option<i32>) -> Result<Watcher> {
        Ok(Watcher {
            start: Instant::now(),
            port,
            pid,
            diag: diag::Diag::open()?,
            owners: Owners::default(),
            prev: Snapshot::new(),
            prev_procs: BTreeMap::new(),
            last_scan: None,
        })
    }

    /// The sockets on the port right now, without printing anything.
    pub(crate) fn sockets(&mut self) -> Result<Snapshot> {
        self.diag.snapshot(self.port)
    }

    /// The processes holding a socket.
    pub(crate) fn owners_of(&mut self, inode: u32) -> Vec<Owner> {
        self.owners.of(inode)
    }

    /// Reads the table (and the tree) once and returns the lines to print
    /// for what changed since the last poll.
    pub(crate) fn poll(&mut self) -> Result<Vec<String>> {
        let snap = self.diag.snapshot(self.port)?;
        let t = self.start.elapsed().as_secs_f64();
        let changes = snapshot::diff(&self.prev, &snap);
        let mut lines = Vec::new();
        if !changes.is_empty() {
            let inodes: Vec<u32> = snap.values().map(|s| s.inode).collect();
            self.owners.refresh_for(&inodes);
        }
        for c in &changes {
            let owners = self.owners.of(c.sock.inode);
            lines.push(format!("{t:8.3} {}", format_change(c, &owners)));
        }
        self.prev = snap;
        lines.extend(self.poll_procs(t));
        Ok(lines)
    }

    /// `--info`: the tcp_info lines of the sockets whose figures changed.
    pub(crate) fn info_lines(&mut self, info: &mut info::InfoWatch) -> Result<Vec<String>> {
        let t = self.start.elapsed().as_secs_f64();
        let now = self.diag.tcp_infos(self.port)?;
        Ok(info.update(t, &now))
    }

    /// With `--pid`, the lines for what changed in the process tree;
    /// nothing without.
    pub(crate) fn poll_procs(&mut self, t: f64) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(root) = self.pid {
            let now = Instant::now();
            let tree = if self.last_scan.is_none_or(|t| now - t >= PROC_SCAN_EVERY) {
                self.last_scan = Some(now);
                procs::tree(root)
            } else {
                procs::refresh(&self.prev_procs)
            };
            for c in procs::diff_procs(&self.prev_procs, &tree) {
                lines.push(format!("{t:8.3} {}", format_proc_change(&c)));
            }
            self.prev_procs = tree;
        }
        lines
    }
}
