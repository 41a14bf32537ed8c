//! Network namespaces for `lab middlebox`: a line client — routers —
//! server joined by veth pairs, built with `ip` and given nftables rules
//! with `nft`, and deleted whole when dropped (so an error or Ctrl-C
//! leaves nothing behind).
//!
//! Link `k` (from 1, client side first) is 10.77.k.0/24, its client-side
//! end .1 and its server-side end .2; in every namespace the link toward
//! the server is `tosrv`, the one toward the client `tocli`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The namespaces of one run, deleted on drop.
#[derive(Debug)]
pub struct Line {
    /// Client, routers..., server.
    pub nodes: Vec<String>,
}

impl Line {
    /// Builds client — `routers` routers (forwarding on) — server, named
    /// after `tag`.
    pub fn build(tag: &str, routers: usize) -> Result<Line> {
        let mut names = vec![format!("{tag}-client")];
        names.extend((1..=routers).map(|i| format!("{tag}-router{i}")));
        names.push(format!("{tag}-server"));
        let mut line = Line { nodes: Vec::new() };
        for ns in &names {
            ip(&["netns", "add", ns])?;
            // Kept at once, so a later failure still deletes it.
            line.nodes.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        for k in 1..names.len() {
            let (left, right) = (&names[k - 1], &names[k]);
            ip(&[
                "-n", left, "link", "add", "tosrv", "type", "veth", "peer", "name", "tocli",
                "netns", right,
            ])?;
            ip(&[
                "-n",
                left,
                "addr",
                "add",
                &format!("10.77.{k}.1/24"),
                "dev",
                "tosrv",
            ])?;
            ip(&[
                "-n",
                right,
                "addr",
                "add",
                &format!("10.77.{k}.2/24"),
                "dev",
                "tocli",
            ])?;
            ip(&["-n", left, "link", "set", "dev", "tosrv", "up"])?;
            ip(&["-n", right, "link", "set", "dev", "tocli", "up"])?;
        }
        let last = names.len() - 1;
        ip(&[
            "-n",
            &names[0],
            "route",
            "add",
            "default",
            "via",
            "10.77.1.2",
        ])?;
        let back = format!("10.77.{last}.1");
        ip(&["-n", &names[last], "route", "add", "default", "via", &back])?;
        for (k, r) in names.iter().enumerate().take(last).skip(1) {
            let on = format!("10.77.{}.2", k + 1);
            ip(&["-n", r, "route", "add", "default", "via", &on])?;
            for j in 1..k {
                let net = format!("10.77.{j}.0/24");
                ip(&[
                    "-n",
                    r,
                    "route",
                    "add",
                    &net,
                    "via",
                    &format!("10.77.{k}.1"),
                ])?;
            }
            run_in(
                r,
                "sh",
                &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                None,
            )?;
        }
        Ok(line)
    }

    /// The server's address.
    pub fn server_ip(&self) -> String {
        format!("10.77.{}.2", self.nodes.len() - 1)
    }

    /// The client's address.
    pub fn client_ip(&self) -> &'static str {
        "10.77.1.1"
    }

    /// Loads nftables rules (`nft -f` syntax) in the namespace at `node`.
    pub fn nft(&self, node: usize, rules: &str) -> Result<()> {
        run_in(&self.nodes[node], "nft", &["-f", "-"], Some(rules))
    }

    /// `cmd`, to be run in the namespace at `node` (setns(2) before exec).
    pub fn command_in(&self, node: usize, cmd: &mut Command) -> Result<()> {
        let ns = &self.nodes[node];
        let fd = std::fs::File::open(format!("/run/netns/{ns}"))
            .map_err(Error::io("opening a network namespace"))?;
        // SAFETY: the hook only calls setns(2), which is async-signal-safe,
        // on a descriptor the closure owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // Deleting a namespace takes its links, addresses and rules with it.
        for ns in &self.nodes {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Runs `ip ARGS`; its stderr is the error.
fn ip(args: &[&str]) -> Result<()> {
    check(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args).stdin(Stdio::null()).output(),
    )
}

/// Runs `prog ARGS` in namespace `ns` (`ip netns exec`), `input` on its stdin.
fn run_in(ns: &str, prog: &str, args: &[&str], input: Option<&str>) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, prog])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let what = format!("{prog} {} (in {ns})", args.join(" "));
    let out = cmd.spawn().and_then(|mut child| {
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    });
    check(&what, out)
}

fn check(what: &str, out: std::io::Result<std::process::Output>) -> Result<()> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Lab(format!(
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(Error::Lab(format!("{what}: {e}"))),
    }
}
