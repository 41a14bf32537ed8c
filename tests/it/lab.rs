//! `netecho lab` runs its whole walkthrough: as root with the capture, and
//! without CAP_NET_RAW with the capture skipped.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::util::{BIN, Run, is_root, netecho, own_netns_with_loopback, run_to_end};

/// A lab still running then is stuck: it is killed and the test fails,
/// instead of stalling the suite.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs a lab to its end; as root in a network namespace of its own, so
/// the TIME-WAIT sockets and loopback packets it shows are its own even
/// while the rest of the suite fills the host's table (131,072 TIME-WAIT
/// sockets at most, beyond which the kernel closes without TIME-WAIT).
fn run(mut cmd: Command) -> Run {
    if is_root() {
        // SAFETY: the closure makes only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(own_netns_with_loopback);
        }
    }
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
        skipped!("SKIPPED lab_runs_every_step: needs root for the capture");
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
    // What the figures mean is said next to them (the prose is wrapped:
    // compared with its spaces and line breaks made one).
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for why in [
        "wq is the listen backlog",
        "wq=1024 is a limit, not data waiting to be sent",
        "the client's ESTABLISHED comes before the server's SYN-RECEIVED",
        "request socket in the listener's SYN queue",
        "Linux uses a fixed 60 s (TCP_TIMEWAIT_LEN",
    ] {
        assert!(words.contains(why), "no {why:?} in:\n{text}");
    }
}

#[test]
fn lab_without_cap_net_raw_skips_only_the_capture() {
    if !is_root() {
        skipped!(
            "SKIPPED lab_without_cap_net_raw_skips_only_the_capture: needs root to drop the capability"
        );
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skipped!("SKIPPED lab_without_cap_net_raw_skips_only_the_capture: no setpriv");
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

/// Runs `netecho lab NAME` to its end and returns stdout and the
/// `conclusion:` line's text.
fn scenario(name: &str) -> (String, String) {
    let out = run(netecho(&["lab", name]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.success(), "lab {name} exits 0\n{text}\n{}", out.stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    let c = last
        .strip_prefix("conclusion: ")
        .unwrap_or_else(|| panic!("lab {name} does not end with its conclusion:\n{text}"))
        .to_string();
    (text, c)
}

/// The number just before `unit` after `after` in `s`.
fn number_before(s: &str, after: &str, unit: &str) -> f64 {
    let rest = &s[s.find(after).unwrap_or_else(|| panic!("{after:?} in {s}")) + after.len()..];
    rest.split(unit)
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a number before {unit:?} in {rest}"))
}

#[test]
fn lab_list_names_every_scenario() {
    let out = run(netecho(&["lab", "--list"]));
    assert!(out.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "walkthrough",
            "nagle",
            "textbook-client",
            "rst",
            "backlog",
            "close",
            "middlebox",
            "zombie"
        ]
    );
    assert!(
        text.lines().all(|l| l.split_whitespace().count() > 3),
        "{text}"
    );
    let bad = run(netecho(&["lab", "no-such"]));
    assert!(
        !bad.success() && bad.code().is_some(),
        "an unknown scenario fails without a panic"
    );
    assert!(
        bad.stderr.contains("no lab scenario 'no-such'"),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
}

#[test]
fn lab_nagle_shows_the_delayed_ack_stall() {
    let _t = crate::util::timing();
    let (text, c) = scenario("nagle");
    let with = number_before(&c, "median ", " ms with Nagle");
    let without = number_before(&c, "Nagle, ", " ms with TCP_NODELAY");
    assert!(
        with >= 30.0,
        "Nagle + delayed ACK stalls ~40 ms: {c}\n{text}"
    );
    assert!(without < 5.0, "TCP_NODELAY does not stall: {c}\n{text}");
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "The first exchange is fast all the same: a new connection starts in quick-ACK mode"
        ),
        "the fast first exchange is explained:\n{text}"
    );
}

#[test]
fn lab_textbook_client_loses_the_tail_and_netecho_does_not() {
    let (text, c) = scenario("textbook-client");
    let got = number_before(&c, "textbook client got back ", " of ");
    let n = number_before(&c, "netecho client ", " of ");
    let total = c
        .rsplit(" of ")
        .next()
        .unwrap()
        .trim()
        .parse::<f64>()
        .unwrap();
    assert!(got < total, "the select-based client loses its tail: {c}");
    assert_eq!(n, total, "netecho's client gets every line: {c}");
    assert!(
        text.contains(&format!(
            "stop-and-wait client: {total} of {total} lines back"
        )),
        "{text}"
    );
}

#[test]
fn lab_rst_shows_each_reset_by_its_errno() {
    let (text, c) = scenario("rst");
    assert_eq!(
        c,
        "connect to a closed port: ECONNREFUSED; read after a SO_LINGER 0 close: ECONNRESET; \
         write after the peer's RST: EPIPE",
        "{text}"
    );
    if is_root() {
        assert!(
            text.contains("RST,ACK  seq=0 ack=J+1"),
            "the SYN's RST:\n{text}"
        );
    }
}

#[test]
fn lab_zombie_is_a_zombie_then_gone() {
    let (text, c) = scenario("zombie");
    assert_eq!(
        c, "the child was a zombie before waitpid and was gone after it",
        "{text}"
    );
}

#[test]
fn lab_backlog_fills_the_queue_then_serves_everyone() {
    let (text, c) = scenario("backlog");
    let held = number_before(&c, "the accept queue held ", " of ");
    let waiting = number_before(&c, "(backlog 2); ", " stayed in SYN-SENT");
    let served = number_before(&c, "captured); ", " of 5 served");
    assert_eq!(held, 3.0, "backlog 2 holds 3 on Linux: {c}\n{text}");
    assert_eq!(waiting, 2.0, "the other two wait in SYN-SENT: {c}");
    assert_eq!(served, 5.0, "every client is served after accept: {c}");
    if is_root() {
        let retries = number_before(&c, "SYN-SENT (", " SYN retransmissions");
        assert!(
            retries >= 2.0,
            "each waiting client sent its SYN again: {c}"
        );
    }
}

#[test]
fn lab_close_keeps_time_wait_on_the_active_closer() {
    let (text, c) = scenario("close");
    // Each end's FIN waits behind data the other has no room for, so both
    // ends have shut down before either FIN can cross: every try, under
    // the suite's load too.
    assert!(
        c.starts_with("simultaneous close (both ends TIME-WAIT) in 10 of 10 tries;"),
        "{c}\n{text}"
    );
    assert!(
        c.contains("the active closer's end was TIME-WAIT, the other CLOSED"),
        "{c}\n{text}"
    );
    assert!(
        c.ends_with("restart without SO_REUSEADDR: EADDRINUSE, with: bound"),
        "{c}\n{text}"
    );
}

/// The namespaces a `lab middlebox` of process `pid` made, still there.
fn middlebox_leftovers(pid: i32) -> Vec<String> {
    let prefix = format!("netecho-lab-{pid}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lab_middlebox_names_each_change_and_leaves_nothing() {
    if !is_root() {
        skipped!("SKIPPED lab_middlebox_names_each_change_and_leaves_nothing: needs root");
        return;
    }
    if !crate::util::have_tool("ip") || !crate::util::have_tool("nft") {
        skipped!("SKIPPED lab_middlebox: needs ip and nft (installed by .ci/run)");
        return;
    }
    let running = crate::util::Running::spawn(netecho(&["lab", "middlebox"]), None);
    let pid = running.pid();
    let out = running.wait(RUN_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.success(),
        "lab middlebox exits 0\n{text}\n{}",
        out.stderr
    );
    let c = text
        .lines()
        .rev()
        .find(|l| !l.is_empty())
        .and_then(|l| l.strip_prefix("conclusion: "))
        .unwrap_or_else(|| panic!("no conclusion:\n{text}"));
    for part in [
        "2 routers showed as hops (TTL 64 sent, 62 seen)",
        "router 2's masquerade as nat (10.77.1.1:",
        "the clamp as mss (1460 -> 1200)",
        "the DSCP rewrite as dscp (46 -> 8)",
    ] {
        assert!(c.contains(part), "{part:?} in {c}");
    }
    assert_eq!(middlebox_leftovers(pid), Vec::<String>::new());
}

#[test]
fn lab_middlebox_interrupted_removes_its_namespaces() {
    if !is_root() {
        skipped!("SKIPPED lab_middlebox_interrupted_removes_its_namespaces: needs root");
        return;
    }
    if !crate::util::have_tool("ip") || !crate::util::have_tool("nft") {
        skipped!("SKIPPED lab_middlebox_interrupted_removes_its_namespaces: needs ip and nft");
        return;
    }
    let running = crate::util::Running::spawn(netecho(&["lab", "middlebox"]), None);
    let pid = running.pid();
    let made = crate::util::eventually(Duration::from_secs(10), || {
        !middlebox_leftovers(pid).is_empty()
    });
    assert!(made, "lab middlebox made no namespace within 10 s");
    running.signal(nix::sys::signal::Signal::SIGINT);
    let out = running.wait(RUN_LIMIT);
    assert_eq!(
        middlebox_leftovers(pid),
        Vec::<String>::new(),
        "{}",
        out.stderr
    );
    // A fast machine may finish the four steps before the signal lands;
    // interrupted, it says so in one line and exits 1.
    if !out.success() {
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
    }
}
