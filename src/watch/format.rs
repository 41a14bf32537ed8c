//! How `watch` prints what it saw: addresses, owners, socket and process
//! changes (pure), and the writer that ends quietly when stdout closes.

use std::io::Write;
use std::net::SocketAddr;

use super::procs::{Owner, ProcChange, ProcInfo};
use super::snapshot::Change;
use super::state::State;

/// ` and the processes under pid 42` with `--pid`.
pub(crate) fn pid_note(pid: Option<i32>) -> String {
    pid.map(|p| format!(" and the processes under pid {p}"))
        .unwrap_or_default()
}

/// Writes lines; false when stdout is closed (`| head`), which ends the
/// run quietly.
pub(crate) fn emit(out: &mut impl Write, lines: &[String]) -> bool {
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

/// `127.0.0.1:6666`, or `0.0.0.0:*` for a listener's empty peer.
pub(crate) fn format_addr(a: SocketAddr) -> String {
    if a.port() == 0 && a.ip().is_unspecified() {
        match a {
            SocketAddr::V4(_) => "0.0.0.0:*".into(),
            SocketAddr::V6(_) => "[::]:*".into(),
        }
    } else {
        a.to_string()
    }
}

/// `(pid 4242 netecho)`, several comma-separated, or `(no process)`.
pub(crate) fn format_owners(owners: &[Owner]) -> String {
    if owners.is_empty() {
        return "(no process)".into();
    }
    let list: Vec<String> = owners
        .iter()
        .map(|o| format!("pid {} {}", o.pid, o.comm))
        .collect();
    format!("({})", list.join(", "))
}

/// One socket change as `watch` prints it (without the timestamp).
pub(crate) fn format_change(c: &Change, owners: &[Owner]) -> String {
    let ends = format!(
        "{} -> {}",
        format_addr(c.key.local),
        format_addr(c.key.remote)
    );
    let what = match c.from {
        None => format!("(new) => {}", c.to),
        Some(from) if c.is_owner_change() => format!("{from}, now held by"),
        Some(from) => format!("{from} => {}", c.to),
    };
    let owners = if c.to == State::Closed {
        String::new()
    } else {
        format!(" {}", format_owners(owners))
    };
    format!("{ends} {what}{owners} rq={} wq={}", c.sock.rq, c.sock.wq)
}

/// `R`, `S`... with their meaning, for people who do not know the letters.
pub(crate) fn state_word(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'Z' => "zombie",
        'T' => "stopped",
        't' => "traced",
        'X' => "dead",
        'I' => "idle",
        _ => "?",
    }
}

/// One process change as `watch --pid` prints it (without the timestamp).
pub(crate) fn format_proc_change(c: &ProcChange) -> String {
    let describe = |i: &ProcInfo| {
        if i.state == 'Z' {
            format!("Z ZOMBIE (exited, parent {} has not reaped it)", i.ppid)
        } else {
            format!("{} ({}) wchan={}", i.state, state_word(i.state), i.wchan)
        }
    };
    match (&c.from, &c.to) {
        (None, Some(to)) => format!(
            "process {} {} (parent {}) (new) => {}",
            c.pid,
            to.comm,
            to.ppid,
            describe(to)
        ),
        (Some(from), Some(to)) => format!(
            "process {} {} {} => {}",
            c.pid,
            to.comm,
            short(from),
            describe(to)
        ),
        (Some(from), None) => format!(
            "process {} {} {} => gone{}",
            c.pid,
            from.comm,
            short(from),
            if from.state == 'Z' { " (reaped)" } else { "" }
        ),
        (None, None) => format!("process {}", c.pid),
    }
}

/// The state before a change, briefly.
fn short(i: &ProcInfo) -> String {
    if i.state == 'Z' {
        "Z".into()
    } else {
        format!("{} wchan={}", i.state, i.wchan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::snapshot::{Key, Sock};

    #[test]
    fn change_lines_read_like_the_issue_says() {
        let c = Change {
            key: Key {
                local: "127.0.0.1:54260".parse().unwrap(),
                remote: "127.0.0.1:6666".parse().unwrap(),
            },
            from: Some(State::Established),
            to: State::FinWait1,
            sock: Sock {
                state: State::FinWait1,
                inode: 7,
                rq: 0,
                wq: 0,
            },
        };
        let owners = [Owner {
            pid: 4242,
            comm: "netecho".into(),
        }];
        assert_eq!(
            format_change(&c, &owners),
            "127.0.0.1:54260 -> 127.0.0.1:6666 ESTABLISHED => FIN-WAIT-1 (pid 4242 netecho) rq=0 wq=0"
        );
        let gone = Change {
            to: State::Closed,
            from: Some(State::TimeWait),
            ..c
        };
        assert!(format_change(&gone, &[]).contains("TIME-WAIT => CLOSED rq=0"));
        let new = Change { from: None, ..c };
        assert!(format_change(&new, &[]).contains("(new) => FIN-WAIT-1 (no process)"));
    }

    #[test]
    fn listener_peer_is_a_star() {
        assert_eq!(format_addr("0.0.0.0:0".parse().unwrap()), "0.0.0.0:*");
        assert_eq!(format_addr("[::]:0".parse().unwrap()), "[::]:*");
        assert_eq!(format_addr("[::1]:80".parse().unwrap()), "[::1]:80");
    }

    #[test]
    fn zombies_are_loud() {
        let z = ProcInfo {
            ppid: 1,
            comm: "x".into(),
            state: 'Z',
            wchan: "-".into(),
        };
        let c = ProcChange {
            pid: 9,
            from: None,
            to: Some(z),
        };
        assert!(format_proc_change(&c).contains("ZOMBIE"));
    }
}
