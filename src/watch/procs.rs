//! Who owns a socket and what a process is doing, from `/proc`.
//!
//! A socket's owner is found by its inode: every process's `/proc/PID/fd/N`
//! is a symlink reading `socket:[INODE]` for a socket. Scanning every fd of
//! every process is the costly part of `watch`, so [`Owners`] caches the
//! map and rescans only when an inode it has never seen shows up.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use crate::sys::proc::{self, comm_of, pids, wchan_of};

/// Most processes looked at in one scan of `/proc`: a bound on the loop.
const MAX_PROCS: usize = 1 << 20;
/// Most descriptors looked at in one process.
const MAX_FDS: usize = 1 << 20;

/// One process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Its pid.
    pub(crate) pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub(crate) comm: String,
}

/// The inode → owners map, refreshed lazily.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    /// What the last scan found.
    map: HashMap<u32, Vec<Owner>>,
    /// Scans done; shown nowhere, kept for tests and the cost figure.
    pub(crate) scans: u64,
}

impl Owners {
    /// Makes sure every inode in `inodes` has been looked for: one full
    /// scan if any non-zero inode is unknown, none otherwise.
    /// Inodes no process was found holding are remembered as owned by
    /// nobody, so they do not cause a rescan on every poll.
    pub(crate) fn refresh_for(&mut self, inodes: &[u32]) {
        if inodes.iter().any(|i| *i != 0 && !self.map.contains_key(i)) {
            self.scan();
            for i in inodes.iter().filter(|i| **i != 0) {
                self.map.entry(*i).or_default();
            }
        }
    }

    /// The processes holding `inode`, as of the last scan, checked against
    /// each cached process's descriptors now (cheap: one directory), so a
    /// parent that closed its copy after `fork` is no longer shown. If none
    /// of them still hold it, one full rescan finds where it went.
    pub(crate) fn of(&mut self, inode: u32) -> Vec<Owner> {
        if inode == 0 {
            return Vec::new();
        }
        let still: Vec<Owner> = self
            .map
            .get(&inode)
            .map(|v| {
                v.iter()
                    .filter(|o| pid_holds(o.pid, inode))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !still.is_empty() {
            self.map.insert(inode, still.clone());
            return still;
        }
        self.scan();
        self.map.get(&inode).cloned().unwrap_or_default()
    }

    /// Reads every `/proc/PID/fd` and rebuilds the map.
    fn scan(&mut self) {
        self.scans += 1;
        self.map.clear();
        for pid in pids().take(MAX_PROCS) {
            let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                // Gone meanwhile, or not ours to read: skip it.
                continue;
            };
            let mut comm = None;
            for entry in dir.flatten().take(MAX_FDS) {
                let Ok(target) = fs::read_link(entry.path()) else {
                    continue;
                };
                let Some(inode) = target.to_str().and_then(parse_socket_link) else {
                    continue;
                };
                let comm = comm.get_or_insert_with(|| comm_of(pid)).clone();
                let owners = self.map.entry(inode).or_default();
                if !owners.iter().any(|o| o.pid == pid) {
                    owners.push(Owner { pid, comm });
                }
            }
        }
    }
}

/// Does `pid` hold a descriptor for socket `inode`?
fn pid_holds(pid: i32, inode: u32) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().take(MAX_FDS).any(|e| {
        fs::read_link(e.path())
            .ok()
            .and_then(|t| t.to_str().and_then(parse_socket_link))
            == Some(inode)
    })
}

/// `socket:[12345]` → 12345; anything else → `None`.
pub(crate) fn parse_socket_link(s: &str) -> Option<u32> {
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// What `/proc/PID/stat` and `/proc/PID/wchan` say about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    /// Its parent.
    pub(crate) ppid: i32,
    /// Its command name.
    pub(crate) comm: String,
    /// R running, S sleeping, D disk sleep, Z zombie, T stopped...
    pub(crate) state: char,
    /// The kernel function it sleeps in, `-` when running or not shown.
    pub(crate) wchan: String,
}

/// One process's state and wait channel, `None` if it is gone.
pub(crate) fn proc_info(pid: i32) -> Option<ProcInfo> {
    let mut info = proc_info_light(pid)?;
    info.wchan = wchan_of(pid);
    Some(info)
}

/// `root` and every process below it, by pid. One pass over `/proc` reads
/// each process's parent; the tree is then walked from `root` (each pid is
/// visited once, so the walk ends even on a corrupt parent chain).
pub(crate) fn tree(root: i32) -> BTreeMap<i32, ProcInfo> {
    let mut all = BTreeMap::new();
    for pid in pids().take(MAX_PROCS) {
        if let Some(info) = proc_info_light(pid) {
            all.insert(pid, info);
        }
    }
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let Some(mut info) = all.remove(&pid) else {
            continue;
        };
        info.wchan = wchan_of(pid);
        todo.extend(all.iter().filter(|(_, i)| i.ppid == pid).map(|(p, _)| *p));
        out.insert(pid, info);
    }
    out
}

/// The processes of an earlier [`tree`] re-read, without looking for new
/// ones: a handful of reads instead of one per process on the host, for
/// the polls between two full scans. Gone processes drop out.
pub(crate) fn refresh(prev: &BTreeMap<i32, ProcInfo>) -> BTreeMap<i32, ProcInfo> {
    prev.keys()
        .filter_map(|pid| proc_info(*pid).map(|i| (*pid, i)))
        .collect()
}

/// Like [`proc_info`] without the wait channel (read later, only for the
/// processes in the tree).
fn proc_info_light(pid: i32) -> Option<ProcInfo> {
    let stat = proc::read_stat(pid)?;
    Some(ProcInfo {
        ppid: stat.ppid,
        comm: stat.comm,
        state: stat.state,
        wchan: String::new(),
    })
}

/// One change in the process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcChange {
    /// Which process.
    pub(crate) pid: i32,
    /// Before; `None` for a process that just appeared.
    pub(crate) from: Option<ProcInfo>,
    /// After; `None` for a process that is gone (reaped).
    pub(crate) to: Option<ProcInfo>,
}

/// The changes in state or wait channel between two views of the tree.
pub(crate) fn diff_procs(
    old: &BTreeMap<i32, ProcInfo>,
    new: &BTreeMap<i32, ProcInfo>,
) -> Vec<ProcChange> {
    let mut out = Vec::new();
    for (pid, now) in new {
        let before = old.get(pid);
        if before.is_none_or(|b| b.state != now.state || b.wchan != now.wchan) {
            out.push(ProcChange {
                pid: *pid,
                from: before.cloned(),
                to: Some(now.clone()),
            });
        }
    }
    for (pid, before) in old {
        if !new.contains_key(pid) {
            out.push(ProcChange {
                pid: *pid,
                from: Some(before.clone()),
                to: None,
            });
        }
    }
    out.sort_by_key(|c| c.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link("pipe:[12345]"), None);
        assert_eq!(parse_socket_link("socket:[]"), None);
        assert_eq!(parse_socket_link("socket:[99999999999]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn our_own_process_is_found() {
        let me = std::process::id() as i32;
        let info = proc_info(me).expect("we exist");
        assert!(info.state == 'R' || info.state == 'S');
        assert!(tree(me).contains_key(&me));
    }

    #[test]
    fn zombie_and_reaped_changes() {
        let info = |state| ProcInfo {
            ppid: 1,
            comm: "x".into(),
            state,
            wchan: "-".into(),
        };
        let a = BTreeMap::from([(10, info('S')), (11, info('S'))]);
        let b = BTreeMap::from([(10, info('S')), (12, info('Z'))]);
        let c = diff_procs(&a, &b);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].pid, c[0].to.clone()), (11, None));
        assert_eq!(c[1].pid, 12);
        assert!(c[1].from.is_none());
        assert_eq!(c[1].to.as_ref().map(|i| i.state), Some('Z'));
    }
}
