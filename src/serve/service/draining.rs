//! The clients older processes still drain after a SIGHUP hand-over, counted
//! toward this process's `--max-conns` and `--max-conns-per-ip`: without
//! them the old process drained its clients while the new one admitted a
//! full `--max-conns` more.
//!
//! # How
//! Every process keeps its counters ([`Stats`]) in a memfd, and holds the
//! write end of a pipe, its *life line*, for as long as it lives; every
//! process forked from it (fork children serving its clients, prefork
//! workers, the sidecar) inherits a copy, and no program it execs does
//! (close-on-exec). A hand-over passes the new process the memfd and the
//! read end of the life line: this process's, and those of the processes
//! before it still alive (a SIGHUP during a drain makes a chain). The new
//! process maps each one and admits a client only while its own count plus
//! theirs is under the limit.
//!
//! # Why each process keeps its own counters
//! One set of counters shared by old and new would need nothing read
//! across, but a process that dies (SIGKILL at the drain deadline, a crash,
//! the OOM killer) would leave its clients counted there for good. Here the
//! counts of a process are in its own mapping, which only it and its
//! children change, and once its life line reads end-of-file (every process
//! that could hold one of its clients is gone) they are no longer looked
//! at: nothing has to be given back, so nothing can be given back wrong.
//! Its flags (`stopping`, `handed_over`) stay its own for the same reason.
//!
//! The life line is polled only while an older process still counts
//! clients, once per admission then ([`Draining::held`] reads both limits'
//! counts in one pass): one `poll(2)` on a pipe per accept during a drain,
//! none after.
//!
//! # Limits of the scheme
//! - For the few milliseconds between the new process's readiness and the
//!   old one's stop, both admit: the old one's admissions are then seen by
//!   the new one only as they happen, so together they may pass the limit
//!   by what both accept in that instant.
//! - A newer build whose counters are laid out differently
//!   ([`Stats::layout`]) is not read: it is logged, and its clients are not
//!   counted (the limits restart from zero for that hand-over, as before).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::warn;

use crate::serve::service::stats::Stats;

/// The variable a hand-over names the older processes' descriptors in:
/// `MEMFD:LIFE` pairs, comma-separated.
pub(crate) const FDS_VAR: &str = "NETECHO_DRAINING_FDS";

/// What this process knows of the processes before it, and what it passes
/// on at its own hand-over.
#[derive(Debug, Default)]
pub(crate) struct Draining {
    /// This process's counters (memfd) and its life line's read end: `None`
    /// in a server started inside a test, which never hands over.
    mine: Option<(OwnedFd, OwnedFd)>,
    /// The processes before a hand-over to this one, oldest first.
    earlier: Vec<Earlier>,
}

/// One process a hand-over replaced.
#[derive(Debug)]
struct Earlier {
    /// Its counters, as it and its children keep them.
    stats: &'static Stats,
    /// The memfd they live in, passed on at our own hand-over.
    memfd: OwnedFd,
    /// The read end of its life line.
    life: OwnedFd,
    /// Set once the life line ended: its counts are no longer read.
    gone: AtomicBool,
}

impl Earlier {
    /// Maps a passed memfd, refusing one this build cannot read.
    fn map(memfd: OwnedFd, life: OwnedFd) -> io::Result<Earlier> {
        let len = nix::sys::stat::fstat(&memfd)?.st_size;
        if len != std::mem::size_of::<Stats>() as libc::off_t {
            return Err(other_build());
        }
        // The first word, read before the rest is trusted (`Stats::layout`
        // stays first in every build).
        let mut word = [0u8; 8];
        if nix::sys::uio::pread(&memfd, &mut word, 0)? != word.len() {
            return Err(other_build());
        }
        let layout = u64::from_ne_bytes(word);
        if layout != Stats::layout() {
            return Err(other_build());
        }
        // SAFETY: same length and layout word: made by a build that lays
        // out `Stats` as this one does, so every field holds a value it
        // wrote (atomics, booleans 0 or 1).
        let stats = unsafe { crate::sys::shm::map_passed::<Stats>(&memfd) }?;
        Ok(Earlier {
            stats,
            memfd,
            life,
            gone: AtomicBool::new(false),
        })
    }

    /// True while the process, or one forked from it, may still hold a
    /// client: its life line has not ended.
    fn alive(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return false;
        }
        let mut fds = [PollFd::new(self.life.as_fd(), PollFlags::POLLIN)];
        // Nobody writes on a life line: any event is its end (POLLHUP).
        let ended = match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => n > 0,
            // EINTR and the like: ask again at the next admission.
            Err(_) => false,
        };
        if ended {
            self.gone.store(true, Ordering::Relaxed);
        }
        !ended
    }
}

/// What older processes still serve, read once for one admission.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Their clients, for `--max-conns`.
    pub(crate) active: u64,
    /// Their clients from one address (its IPv6 prefix), for
    /// `--max-conns-per-ip`.
    pub(crate) from_ip: u64,
}

fn other_build() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "its counters are laid out by another build",
    )
}

impl Draining {
    /// At start: makes this process's life line (held open until it exits,
    /// inherited by its children) and maps the older processes' counters
    /// passed in [`FDS_VAR`]. `stats` is this process's counters' memfd.
    pub(crate) fn start(stats: OwnedFd, passed: Vec<(OwnedFd, OwnedFd)>) -> io::Result<Draining> {
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Open until this process and every child forked from it are gone:
        // that end of file is what the next process waits for.
        let _ = wr.into_raw_fd();
        let earlier = passed
            .into_iter()
            .filter_map(|(memfd, life)| match Earlier::map(memfd, life) {
                Ok(e) => Some(e),
                Err(why) => {
                    warn!(
                        "the clients of the process before the hand-over are not counted toward \
                         the limits: {why}"
                    );
                    None
                }
            })
            .collect();
        Ok(Draining {
            mine: Some((stats, rd)),
            earlier,
        })
    }

    /// Clients older processes still serve: all of them if `active`, and
    /// those from `ip` if given. Each older process that counts any is
    /// asked once whether it lives (one `poll(2)` of its life line), the
    /// others not at all.
    pub(crate) fn held(&self, ip: Option<IpAddr>, active: bool) -> Held {
        let mut held = Held::default();
        for e in &self.earlier {
            let n = if active { e.stats.active() } else { 0 };
            let from_ip = ip.map_or(0, |ip| e.stats.per_ip.count(ip));
            if (n > 0 || from_ip > 0) && e.alive() {
                held.active += n;
                held.from_ip += from_ip;
            }
        }
        held
    }

    /// What a hand-over passes on, `(memfd, life line)` per process: this
    /// one's, then the older ones still alive.
    pub(crate) fn to_pass(&self) -> Vec<(RawFd, RawFd)> {
        let live = self
            .earlier
            .iter()
            .filter(|e| e.alive())
            .map(|e| (e.memfd.as_raw_fd(), e.life.as_raw_fd()));
        self.mine
            .iter()
            .map(|(m, l)| (m.as_raw_fd(), l.as_raw_fd()))
            .chain(live)
            .collect()
    }
}

/// In the new process, at start: takes the descriptors [`FDS_VAR`] names
/// (and removes it). A pair that is not a memfd and a pipe is dropped with
/// a warning: a stray variable must not make us map some other file.
pub(crate) fn take_passed() -> Vec<(OwnedFd, OwnedFd)> {
    let Some(v) = std::env::var_os(FDS_VAR) else {
        return Vec::new();
    };
    // SAFETY: called at start-up, before this program starts any thread.
    unsafe { std::env::remove_var(FDS_VAR) };
    take_pairs(&v.to_string_lossy())
}

/// The descriptor pairs `v` names ("memfd:pipe,..."), each descriptor taken
/// once: a number repeated (within a pair or across pairs) is dropped with
/// a warning, since owning one descriptor twice would close it twice, the
/// second time perhaps under another file opened since.
fn take_pairs(v: &str) -> Vec<(OwnedFd, OwnedFd)> {
    let mut taken = std::collections::HashSet::new();
    let mut out = Vec::new();
    for pair in v.split(',').filter(|p| !p.is_empty()) {
        let parsed = pair
            .split_once(':')
            .and_then(|(m, l)| Some((m.parse::<RawFd>().ok()?, l.parse::<RawFd>().ok()?)));
        let Some((m, l)) = parsed.filter(|&(m, l)| {
            m > 2
                && l > 2
                && m != l
                && !taken.contains(&m)
                && !taken.contains(&l)
                && is_kind(m, libc::S_IFREG)
                && is_kind(l, libc::S_IFIFO)
        }) else {
            warn!("{FDS_VAR}: {pair} is not a memfd and a pipe we inherited; ignored");
            continue;
        };
        taken.extend([m, l]);
        // SAFETY: descriptors the process that handed over passed to us
        // (checked open and of the right kind), owned by nothing else here;
        // each is wrapped once (`taken`).
        let (m, l) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(l)) };
        for fd in [&m, &l] {
            // Our own children must not inherit them across exec.
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
        out.push((m, l));
    }
    out
}

/// True when `fd` is open and of file type `kind` (`S_IFREG`, `S_IFIFO`).
fn is_kind(fd: RawFd, kind: libc::mode_t) -> bool {
    // SAFETY: fstat writes into the zeroed struct it is given; a closed
    // descriptor gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) }) == 0 && (st.st_mode & libc::S_IFMT) == kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::waitpid;
    use nix::unistd::{ForkResult, fork};

    /// An older process as a hand-over passes it: its counters in a memfd,
    /// and its life line.
    fn older() -> (&'static Stats, OwnedFd, OwnedFd, OwnedFd) {
        let (stats, memfd) = Stats::passable().unwrap();
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        (stats, memfd, rd, wr)
    }

    #[test]
    fn an_older_process_counts_until_its_life_line_ends() {
        let (old, memfd, life, wr) = older();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(old.try_admit(10));
        assert!(old.per_ip.admit(ip, 10));
        let (_, mine) = Stats::passable().unwrap();
        let d = Draining::start(mine, vec![(memfd, life)]).unwrap();
        let held = |ip: &str| d.held(Some(ip.parse().unwrap()), true);
        let one = Held {
            active: 1,
            from_ip: 1,
        };
        assert_eq!(held("127.0.0.9"), one);
        assert_eq!(held("127.0.0.10"), Held { from_ip: 0, ..one });
        assert_eq!(d.held(None, false), Held::default(), "nothing asked");
        assert_eq!(d.to_pass().len(), 2, "ours and the older one");
        old.release();
        assert_eq!(
            held("127.0.0.10"),
            Held::default(),
            "it gave the client back"
        );
        assert!(old.try_admit(10));
        // Killed with a client counted: its counts stop counting.
        drop(wr);
        assert_eq!(old.active(), 1);
        assert_eq!(
            held("127.0.0.9"),
            Held::default(),
            "a dead process's clients still counted"
        );
        assert_eq!(d.to_pass().len(), 1, "a dead process is not passed on");
    }

    #[test]
    fn a_forked_child_keeps_the_life_line_open() {
        let (old, memfd, life, wr) = older();
        assert!(old.try_admit(10));
        let (_, mine) = Stats::passable().unwrap();
        let d = Draining::start(mine, vec![(memfd, life)]).unwrap();
        let (go_rd, go_wr) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only reads a pipe and `_exit`s.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(go_wr);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&go_rd, &mut b);
                // SAFETY: `_exit` skips destructors, as a forked child must.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(go_rd);
                // The parent is gone; its child may still serve a client.
                drop(wr);
                let active = || d.held(None, true).active;
                assert_eq!(active(), 1, "the child's copy keeps it counted");
                drop(go_wr);
                waitpid(child, None).unwrap();
                assert_eq!(active(), 0);
            }
        }
    }

    #[test]
    fn a_descriptor_named_twice_is_taken_once() {
        use std::os::fd::IntoRawFd;
        let (_old, memfd, life, _wr) = older();
        let (m, l) = (memfd.into_raw_fd(), life.into_raw_fd());
        let pairs = take_pairs(&format!("{m}:{l},{m}:{l},{l}:{m},{m}:{m}"));
        assert_eq!(pairs.len(), 1, "each descriptor owned once");
        assert_eq!(
            (pairs[0].0.as_raw_fd(), pairs[0].1.as_raw_fd()),
            (m, l),
            "the first naming wins"
        );
    }

    #[test]
    fn counters_of_another_layout_are_not_read() {
        let (old, memfd, life, _wr) = older();
        assert!(old.try_admit(10));
        old.layout.store(Stats::layout() ^ 2, Ordering::Relaxed);
        let (_, mine) = Stats::passable().unwrap();
        let d = Draining::start(mine, vec![(memfd, life)]).unwrap();
        assert_eq!(d.held(None, true), Held::default());
        assert_eq!(d.to_pass().len(), 1);
    }
}
