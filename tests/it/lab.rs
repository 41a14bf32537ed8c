//! `netecho lab` runs its whole walkthrough: as root with the capture, and
//! without CAP_NET_RAW with the capture skipped.

use std::process::Command;
use std::time::Duration;

use crate::util::{BIN, Run, is_root, netecho, run_to_end};

/// A lab still running then is stuck: it is killed and the test fails,
/// instead of stalling the suite.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn run(cmd: Command) -> Run {
    run_to_end(cmd, None, RUN_LIMIT)
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
    let out = run(netecho(&["lab"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.success(), "exit 0\n{text}\n{}", out.stderr);
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
    let mut setpriv = Command::new("setpriv");
    setpriv.args([
        "--bounding-set",
        "-net_raw",
        "--inh-caps",
        "-net_raw",
        BIN,
        "lab",
    ]);
    let out = run(setpriv);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.success(), "exit 0\n{text}");
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
