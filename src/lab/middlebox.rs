//! `lab middlebox` (root): what a path does to a connection, shown live.
//! It builds its own network namespaces — a client, two routers, a
//! server running `serve --inspect-listen` — and, one step at a time,
//! makes the routers into middleboxes with nftables: a masquerading NAT,
//! an MSS clamp, a DSCP rewrite. After each step `ping --inspect` runs from
//! the client and the new finding must appear; the `conclusion:` line says
//! which did, from this run's reports. Everything it made is deleted at
//! the end, on an error, and on Ctrl-C.

use std::process::{Command, Stdio};

use serde_json::Value;

use super::netns::Line;
use super::walkthrough::{Server, conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::serve::ListenKind;
use crate::sys::stop;

/// The inspect port in the server's namespace.
const PORT: u16 = 7007;
/// The TOS the client sends in the last step: DSCP 46 (EF), which router 1
/// rewrites to CS1 (8).
const SENT_TOS: &str = "0xb8";

/// One step's middlebox: which router, its rules, what the client adds,
/// the finding kind it should cause, and how the conclusion names it.
struct Change {
    title: &'static str,
    expect: &'static str,
    router: usize,
    rules: &'static str,
    args: &'static [&'static str],
    kind: &'static str,
    name: &'static str,
}

const CHANGES: [Change; 3] = [
    Change {
        title: "router 2 masquerades (NAT)",
        expect: "Router 2 rewrites the client's source address to its own on the \
                 server's link: expect `nat`, over TCP and UDP.",
        router: 2,
        rules: "table ip lab_nat {\n chain postrouting_nat {\n  type nat hook postrouting priority srcnat;\n  \
                oifname \"tosrv\" masquerade\n }\n}\n",
        args: &[],
        kind: "nat",
        name: "router 2's masquerade",
    },
    Change {
        title: "router 1 clamps the MSS to 1200",
        expect: "Router 1 rewrites the MSS option of every SYN it forwards: expect \
                 `mss`, 1460 sent (a 1500-byte link), 1200 seen.",
        router: 1,
        rules: "table inet lab_clamp {\n chain forward_mangle {\n  type filter hook forward priority mangle;\n  \
                tcp flags syn tcp option maxseg size set 1200\n }\n}\n",
        args: &[],
        kind: "mss",
        name: "the clamp",
    },
    Change {
        title: "router 1 rewrites DSCP to CS1",
        expect: "The client now sends DSCP 46 (EF, --tos 0xb8); router 1 marks every \
                 packet CS1 (8): expect `dscp`, 46 sent, 8 seen, over TCP and UDP.",
        router: 1,
        rules: "table ip lab_remark {\n chain forward_mangle {\n  type filter hook forward priority mangle;\n  \
                ip dscp set cs1\n }\n}\n",
        args: &["--tos", SENT_TOS],
        kind: "dscp",
        name: "the DSCP rewrite",
    },
];

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Lab(
            "middlebox builds network namespaces and nftables rules: run it as root".into(),
        ));
    }
    let exe = std::env::current_exe().map_err(Error::io("finding this program"))?;
    step(
        1,
        "a client, two routers, a server",
        "Four network namespaces joined by veth pairs; the server runs `netecho \
         serve --inspect-listen`. Nothing rewrites anything yet: expect only `hops`, \
         64 sent and 62 seen (each router takes one off the TTL).",
    );
    let line = Line::build(&format!("netecho-lab-{}", std::process::id()), 2)?;
    let addr = format!("{}:{PORT}", line.server_ip());
    let _server = start_server(&line, &exe, &addr)?;
    evidence(&format!(
        "client {} -> router 1 -> router 2 -> server {addr}",
        line.client_ip()
    ));
    let mut said = Vec::new();
    let first = inspect(&line, &exe, &addr, &[])?;
    said.push(match pick(&first, "hops", "tcp") {
        Some((sent, seen)) => format!("2 routers showed as hops (TTL {sent} sent, {seen} seen)"),
        None => "the routers showed no hops".into(),
    });
    let mut extra: Vec<&str> = Vec::new();
    for (i, c) in CHANGES.iter().enumerate() {
        if stop::requested() {
            return Err(Error::Lab("interrupted; the namespaces are removed".into()));
        }
        step(i as u32 + 2, c.title, c.expect);
        line.nft(c.router, c.rules)?;
        extra.extend_from_slice(c.args);
        let v = inspect(&line, &exe, &addr, &extra)?;
        said.push(match pick(&v, c.kind, "tcp") {
            Some((sent, seen)) => format!("{} as {} ({sent} -> {seen})", c.name, c.kind),
            None => format!("{} went unseen", c.name),
        });
    }
    if stop::requested() {
        return Err(Error::Lab("interrupted; the namespaces are removed".into()));
    }
    conclusion(&format!(
        "{}; its namespaces are removed as it exits",
        said.join("; ")
    ))
}

/// Starts `serve --inspect-listen ADDR` in the server's namespace and waits
/// for its `listening inspect` line.
fn start_server(line: &Line, exe: &std::path::Path, addr: &str) -> Result<Server> {
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--listen", &format!("{}:7000", line.server_ip())])
        .args(["--inspect-listen", addr])
        .stderr(Stdio::null());
    line.command_in(line.nodes.len() - 1, &mut cmd)?;
    let (server, _, said) = Server::start(cmd, ListenKind::Inspect)?;
    evidence(&format!("server: {said}"));
    Ok(server)
}

/// Runs `ping --inspect --json` once from the client's namespace: each
/// finding's sentence shown as evidence, and the report returned.
fn inspect(line: &Line, exe: &std::path::Path, addr: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(exe);
    cmd.args(["ping", "--inspect", addr, "--timeout", "2s", "--json"])
        .args(args)
        .stdin(Stdio::null());
    line.command_in(0, &mut cmd)?;
    let out = cmd.output().map_err(Error::io("running ping --inspect"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        Error::Lab(format!(
            "ping --inspect gave no report: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let findings = v["findings"].as_array().map_or(&[][..], Vec::as_slice);
    for f in findings {
        let (proto, words) = (f["proto"].as_str(), f["words"].as_str());
        evidence(&format!(
            "{}: {}",
            proto.unwrap_or("?"),
            words.unwrap_or("?")
        ));
    }
    if findings.is_empty() {
        evidence("no change seen");
    }
    Ok(v)
}

/// The sent and seen values of the first finding of `kind` over `proto`.
fn pick(v: &Value, kind: &str, proto: &str) -> Option<(String, String)> {
    let f = v["findings"]
        .as_array()?
        .iter()
        .find(|f| f["kind"] == kind && f["proto"] == proto)?;
    let show = |x: &Value| x.as_str().map_or_else(|| x.to_string(), str::to_string);
    Some((show(&f["sent"]), show(&f["seen"])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finding_is_picked_by_kind_and_protocol() {
        let v = json!({"findings": [
            {"kind": "hops", "proto": "udp", "sent": 64, "seen": 61},
            {"kind": "hops", "proto": "tcp", "sent": 64, "seen": 62},
            {"kind": "nat", "proto": "tcp", "sent": "10.77.1.1:4000", "seen": "10.77.3.1:4000"},
        ]});
        assert_eq!(pick(&v, "hops", "tcp"), Some(("64".into(), "62".into())));
        assert_eq!(
            pick(&v, "nat", "tcp"),
            Some(("10.77.1.1:4000".into(), "10.77.3.1:4000".into()))
        );
        assert_eq!(pick(&v, "mss", "tcp"), None);
    }
}
