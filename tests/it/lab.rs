//! `netecho lab` runs its whole walkthrough: as root with the capture, and
//! without CAP_NET_RAW with the capture skipped.


use crate::util::is_root;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netecho");

/// Runs a command to the end, killing it after 60 s so a hang fails the
/// test instead of stalling the suite.
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only checks that the pid exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return;
            }
        }
        // SAFETY: the pid is our child's, not yet reaped (wait_with_output
        // below is still waiting on it).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let _ = watchdog.join();
    out
}

const STEPS: [&str; 9] = [
    "== step 1: a fork server starts ==",
    "== step 2: LISTEN: a socket waiting, a process asleep ==",
    "== step 3: the three-way handshake ==",
    "== step 4: ESTABLISHED: both ends, and what each process waits in ==",
    "== step 5: one line echoed ==",
    "== step 6: the four-way close, and TIME-WAIT ==",
    "== step 7: a zombie: a child that exits and is not reaped ==",
    "== step 8: the fork server reaps its children ==",
    "== step 9: the end ==",
];

#[test]
fn lab_runs_every_step() {
    if !is_root() {
        eprintln!("SKIPPED lab_runs_every_step: needs root for the capture");
        return;
    }
    let out = run(Command::new(BIN).arg("lab"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit 0\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut at = 0;
    for s in STEPS {
        let i = text[at..]
            .find(s)
            .unwrap_or_else(|| panic!("step {s:?} missing or out of order:\n{text}"));
        at += i + s.len();
    }
    for live in [
        " LISTEN (pid ",
        "wait channel ",
        "handshake 1/3: client SYN seq=J",
        "handshake 2/3: server SYN-ACK seq=K ack=J+1",
        "handshake 3/3: client ACK ack=K+1",
        "=> ESTABLISHED",
        "the client printed \"hello, lab\"",
        "close 1/4: client FIN",
        "TIME-WAIT (no process)",
        "ZOMBIE",
        "is gone: reaped",
        "0 zombie(s)",
        "exited: exit status: 0",
        "every step ran.",
    ] {
        assert!(text.contains(live), "missing {live:?} in:\n{text}");
    }
}

#[test]
fn lab_without_cap_net_raw_skips_only_the_capture() {
    if !is_root() {
        eprintln!(
            "SKIPPED lab_without_cap_net_raw_skips_only_the_capture: needs root to drop the capability"
        );
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED lab_without_cap_net_raw_skips_only_the_capture: no setpriv");
        return;
    }
    let out = run(Command::new("setpriv").args([
        "--bounding-set",
        "-net_raw",
        "--inh-caps",
        "-net_raw",
        BIN,
        "lab",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit 0\n{text}");
    for s in STEPS {
        assert!(text.contains(s), "step {s:?} missing:\n{text}");
    }
    assert!(
        text.contains("capture skipped: capturing packets"),
        "{text}"
    );
    assert!(
        text.contains("skipped: the packet capture (needs CAP_NET_RAW)"),
        "{text}"
    );
    assert!(!text.contains("handshake 1/3"), "{text}");
    assert!(text.contains("ZOMBIE"), "{text}");
}
