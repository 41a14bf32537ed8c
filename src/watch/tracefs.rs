//! A tracefs instance of `watch`'s own: `instances/netecho-<pid>`, with its
//! own ring buffer, its own events enabled and filtered, and its own
//! `trace_pipe`. The global buffer and every other instance are never
//! written to, so `watch` can run beside `perf`, `trace-cmd` or a second
//! `watch`.
//!
//! [`Instance`] is a guard: dropping it (at the end, after Ctrl-C or
//! SIGTERM, which only set the stop flag, or on an error unwinding through
//! `?`) closes the pipe, disables the events and removes the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where tracefs lives on current systems.
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
/// The prefix of netecho's instance names, so a leftover one is
/// recognisably netecho's (and the tests can look for them).
pub(crate) const PREFIX: &str = "netecho-";

/// Why event mode is not available, in words for the header line.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

/// Makes sure tracefs is mounted at [`TRACEFS`], mounting it as root when
/// it is not (a bare container or a minimal VM does not mount it).
pub(crate) fn ensure_mounted() -> Result<(), Unavailable> {
    let root = Path::new(TRACEFS);
    if root.join("instances").is_dir() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Unavailable(
            "kernel events need root (tracefs instances)".into(),
        ));
    }
    if !root.is_dir() {
        return Err(Unavailable(format!("{TRACEFS} does not exist")));
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are NUL-terminated C strings that outlive the
    // call; a NULL data argument is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Unavailable(format!(
            "cannot mount tracefs at {TRACEFS}: {}",
            io::Error::last_os_error()
        )));
    }
    if root.join("instances").is_dir() {
        Ok(())
    } else {
        Err(Unavailable("tracefs has no instances directory".into()))
    }
}

/// Removes the instances left by earlier `watch` runs that could not
/// clean up (killed with SIGKILL, or the machine's OOM killer): every
/// `netecho-<pid>` whose pid is no longer a netecho process. Its events
/// stop with it. Returns the names removed, for a note; one that cannot
/// be removed (another program holds its pipe open) is left alone.
pub(crate) fn remove_leftovers() -> Vec<String> {
    let Ok(dir) = fs::read_dir(Path::new(TRACEFS).join("instances")) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !is_leftover(pid) {
            continue;
        }
        if fs::remove_dir(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Whether the instance of `pid` has no netecho process behind it any
/// more: the pid is gone, or was reused by another program.
fn is_leftover(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() != "netecho",
        Err(_) => true,
    }
}

/// One event to enable, with its kernel-side filter (empty: none).
pub(crate) struct EventSpec {
    /// `group/name` under `events/`.
    pub(crate) name: &'static str,
    /// The filter expression, e.g. `sport == 6666 || dport == 6666`.
    pub(crate) filter: String,
}

/// netecho's tracefs instance, removed when dropped.
pub(crate) struct Instance {
    /// `…/instances/netecho-<pid>`.
    dir: PathBuf,
    /// The events enabled so far, to disable before the directory goes.
    enabled: Vec<PathBuf>,
    /// The open `trace_pipe`; closed first on drop (an open pipe keeps the
    /// instance busy and `rmdir` would fail with EBUSY).
    pipe: Option<File>,
}

impl Instance {
    /// Creates the instance, sets its clock to CLOCK_MONOTONIC and its
    /// wake-up to "any data", enables `events` with their filters, and
    /// opens its trace pipe (non-blocking: `watch` waits in `poll`).
    pub(crate) fn create(events: &[EventSpec]) -> Result<Instance, Unavailable> {
        let dir = Path::new(TRACEFS)
            .join("instances")
            .join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let mut inst = Instance {
            dir,
            enabled: Vec::new(),
            pipe: None,
        };
        // `mono`: timestamps comparable with CLOCK_MONOTONIC, so sock_diag
        // look-ups and the printed times share one clock.
        inst.write("trace_clock", "mono")?;
        // 0: wake the reader on every event, not when the buffer is half
        // full (the default, 50, would hold events back for minutes).
        inst.write("buffer_percent", "0")?;
        for ev in events {
            let evdir = inst.dir.join("events").join(ev.name);
            if !evdir.is_dir() {
                // An older kernel without this tracepoint: go on without it.
                continue;
            }
            if !ev.filter.is_empty() {
                inst.write(&format!("events/{}/filter", ev.name), &ev.filter)?;
            }
            inst.write(&format!("events/{}/enable", ev.name), "1")?;
            inst.enabled.push(evdir.join("enable"));
        }
        if inst.enabled.is_empty() {
            return Err(Unavailable("no TCP tracepoint in this kernel".into()));
        }
        let pipe = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(inst.dir.join("trace_pipe"))
            .map_err(|e| Unavailable(format!("cannot open the trace pipe: {e}")))?;
        inst.pipe = Some(pipe);
        Ok(inst)
    }

    /// The instance's name (`netecho-<pid>`), for the header line.
    pub(crate) fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Writes one control file of the instance.
    fn write(&self, file: &str, value: &str) -> Result<(), Unavailable> {
        fs::write(self.dir.join(file), value)
            .map_err(|e| Unavailable(format!("cannot set {file} of the tracefs instance: {e}")))
    }

    /// The pipe's descriptor, to wait on.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(|p| p.as_fd())
    }

    /// Reads what the pipe holds now; empty when nothing (EAGAIN).
    pub(crate) fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(p) = self.pipe.as_mut() else {
            return Ok(0);
        };
        match p.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.pipe = None;
        for enable in &self.enabled {
            // Best effort: the directory removal below is what matters, and
            // rmdir of an instance also disables its events.
            let _ = fs::write(enable, "0");
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!(
                "netecho: cannot remove the tracefs instance {}: {e}",
                self.dir.display()
            );
        }
    }
}
