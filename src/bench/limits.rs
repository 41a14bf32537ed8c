//! What a run asks of this machine, checked before anything is opened or
//! allocated: descriptors, local ports, threads and memory. A command line
//! beyond them is one line naming the limit (exit 2), not an abort midway
//! (`-c 99999999999` used to die in the allocator with a backtrace).
//!
//! The check is pure ([`check`] takes what the run asks and what the
//! machine offers); [`Room::of_this_machine`] reads the latter.

use std::fmt;

/// Most generator threads a run starts: far more than any machine has
/// cores, few enough that their stacks cannot exhaust memory.
pub(crate) const MAX_THREADS: usize = 1024;
/// Descriptors kept aside for everything that is not a connection:
/// stdio, the TLS files, `--hist-out`, `/proc` reads.
const FD_RESERVE: u64 = 32;
/// The descriptor limit assumed if it cannot be read: Linux's default
/// `fs.nr_open`, the most any process may have.
const FALLBACK_NOFILE: u64 = 1 << 20;
/// Descriptors per generator thread: its epoll instance and its timer.
const FD_PER_THREAD: u64 = 2;
/// Memory per connection besides its message: its bookkeeping, the
/// socket's user-space state and the allocator's share.
const CONN_OVERHEAD: u64 = 1024;
/// Per TLS connection: rustls' record buffers and session state, on top
/// of a second copy of the message it holds while encrypting.
const TLS_OVERHEAD: u64 = 40 * 1024;
/// Each generator thread's read buffer.
const THREAD_BUFFER: u64 = 64 * 1024;

/// What a run asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    /// Connections (UDP sockets), each open at once (`--new-conn`: in
    /// flight at once).
    pub(crate) conns: usize,
    pub(crate) size: usize,
    pub(crate) threads: usize,
    pub(crate) tls: bool,
    /// `--source-addrs` spreads the connections over more local ports.
    pub(crate) sources: bool,
}

/// What this machine offers; `None` where it could not be read (that
/// limit is then not checked: the run meets it, if ever, as an error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    /// The descriptor limit (RLIMIT_NOFILE, soft raised to hard).
    pub(crate) nofile: Option<u64>,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub(crate) memory: Option<u64>,
    /// Local ports the kernel hands out (`ip_local_port_range`).
    pub(crate) ports: Option<u64>,
}

impl Room {
    /// Reads the limits in force, after raising the soft descriptor limit
    /// to the hard one (as the run needs it anyway).
    pub(crate) fn of_this_machine() -> Room {
        let (soft, _hard) = crate::sys::raise_nofile_limit();
        Room {
            // Unreadable (never seen): the kernel's default ceiling
            // (fs.nr_open), so that nothing is left unbounded.
            nofile: Some(if soft > 0 { soft } else { FALLBACK_NOFILE }),
            memory: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| mem_available(&t)),
            ports: std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|t| port_count(&t)),
        }
    }
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
pub(crate) fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// How many ports `ip_local_port_range` ("32768\t60999") holds.
pub(crate) fn port_count(range: &str) -> Option<u64> {
    let mut it = range.split_whitespace().map(str::parse::<u64>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Bytes the run's buffers need, about.
pub(crate) fn memory_needed(ask: &Ask) -> u64 {
    let per_conn = (ask.size as u64)
        .saturating_add(CONN_OVERHEAD)
        .saturating_add(if ask.tls {
            (ask.size as u64).saturating_add(TLS_OVERHEAD)
        } else {
            0
        });
    (ask.conns as u64)
        .saturating_mul(per_conn)
        .saturating_add((ask.threads as u64).saturating_mul(THREAD_BUFFER))
}

/// Descriptors the run holds at once.
pub(crate) fn descriptors_needed(ask: &Ask) -> u64 {
    (ask.conns as u64)
        .saturating_add((ask.threads as u64).saturating_mul(FD_PER_THREAD))
        .saturating_add(FD_RESERVE)
}

/// The first limit the run would break, as one line; `Ok` if none.
pub(crate) fn check(ask: &Ask, room: &Room) -> Result<(), String> {
    if ask.threads > MAX_THREADS {
        return Err(format!(
            "--threads {} is above the most bench starts, {MAX_THREADS}",
            ask.threads
        ));
    }
    if let Some(nofile) = room.nofile {
        let need = descriptors_needed(ask);
        if need > nofile {
            return Err(format!(
                "-c {} needs {} file descriptors, but this process may open only {} \
                 (ulimit -n, already raised to its hard limit): lower -c or raise the limit",
                ask.conns, need, nofile
            ));
        }
    }
    if let Some(ports) = room.ports
        && !ask.sources
        && ask.conns as u64 > ports
    {
        return Err(format!(
            "-c {} connections to one server address need as many local ports, but \
             net.ipv4.ip_local_port_range offers {ports}: lower -c, or spread them \
             over more local addresses with --source-addrs",
            ask.conns
        ));
    }
    if let Some(memory) = room.memory {
        let need = memory_needed(ask);
        // Half: the server under test, often on this machine, and the
        // kernel's socket buffers need the rest.
        if need > memory / 2 {
            return Err(format!(
                "-c {} with -s {} needs about {} of memory for its messages, more than \
                 half the {} this machine has available: lower -c or -s",
                ask.conns,
                ask.size,
                Bytes(need),
                Bytes(memory)
            ));
        }
    }
    Ok(())
}

/// A byte count for people: `1.5 GiB`.
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(conns: usize, size: usize) -> Ask {
        Ask {
            conns,
            size,
            threads: 2,
            tls: false,
            sources: false,
        }
    }

    const ROOM: Room = Room {
        nofile: Some(1 << 20),
        memory: Some(8 << 30),
        ports: Some(28232),
    };

    #[test]
    fn a_usual_run_fits() {
        assert_eq!(check(&ask(50, 64), &ROOM), Ok(()));
        assert_eq!(check(&ask(8, 16 << 20), &ROOM), Ok(()));
    }

    #[test]
    fn each_limit_is_named() {
        let e = check(&ask(99_999_999_999, 64), &ROOM).unwrap_err();
        assert!(
            e.contains("file descriptors") && e.contains("1048576"),
            "{e}"
        );
        let e = check(&ask(30_000, 64), &ROOM).unwrap_err();
        assert!(e.contains("ip_local_port_range offers 28232"), "{e}");
        assert_eq!(check(&ask(200, 16 << 20), &ROOM), Ok(()));
        let e = check(&ask(300, 16 << 20), &ROOM).unwrap_err();
        assert!(e.contains("memory") && e.contains("8.0 GiB"), "{e}");
        let mut many = ask(10, 64);
        many.threads = MAX_THREADS + 1;
        assert!(check(&many, &ROOM).unwrap_err().contains("--threads"));
    }

    #[test]
    fn source_addresses_lift_the_port_limit() {
        let mut a = ask(30_000, 64);
        a.sources = true;
        assert_eq!(check(&a, &ROOM), Ok(()));
    }

    #[test]
    fn an_unreadable_limit_is_not_checked() {
        let room = Room {
            nofile: None,
            memory: None,
            ports: None,
        };
        assert_eq!(check(&ask(1 << 40, 64), &room), Ok(()));
    }

    #[test]
    fn proc_files_parse() {
        let meminfo = "MemTotal:       16318404 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(8_000_000 * 1024));
        assert_eq!(port_count("32768\t60999\n"), Some(28232));
        assert_eq!(port_count("garbage"), None);
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
    }
}
