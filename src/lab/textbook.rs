//! `lab textbook-client`: the two echo clients of the textbooks, run in
//! batch mode (stdin from a file) against netecho's echo server, beside
//! netecho's own client.
//!
//! - stop-and-wait: write a line, read its echo, repeat. Correct, but one
//!   round trip per line.
//! - select-based: reads stdin and the socket as each is ready, so lines
//!   stream; but it returns as soon as stdin ends, closing the socket
//!   without `shutdown(SHUT_WR)` and without reading what is still on its
//!   way back: the tail of the echoes is lost.
//! - netecho's client half-closes at end of input and reads until the
//!   server's FIN: every line comes back.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::walkthrough::{STEP_TIMEOUT, Server, conclusion, evidence, step};
use crate::error::{Error, Result};
use crate::serve::ListenKind;

/// Lines in the input file: about 120 kB, far more than one round trip
/// carries, so many echoes are in flight when the input ends.
const LINES: usize = 2000;
/// Bytes the select-based client reads at once: the textbook's `MAXLINE`.
const CHUNK: usize = 4096;
/// Upper bound on the select-based client's loop turns.
const MAX_TURNS: usize = 100_000;

/// The input: numbered lines of 60 bytes.
fn input() -> String {
    (0..LINES)
        .map(|i| format!("line {i:05} of the textbook-client lab, padded to sixty.\n"))
        .collect()
}

/// Stop-and-wait: lines echoed, and how long it took.
fn stop_and_wait(port: u16, text: &str) -> Result<(usize, Duration)> {
    let io = Error::io;
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(io("connecting"))?;
    s.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io("setting a timeout"))?;
    let mut w = s.try_clone().map_err(io("cloning the socket"))?;
    let mut r = BufReader::new(s);
    let t0 = Instant::now();
    let mut back = 0;
    let mut echo = String::new();
    for line in text.lines() {
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .map_err(io("writing a line"))?;
        echo.clear();
        if r.read_line(&mut echo).map_err(io("reading an echo"))? == 0 {
            break;
        }
        back += 1;
    }
    Ok((back, t0.elapsed()))
}

/// The select-based client that quits at end of stdin: lines it got back.
/// Each turn serves stdin first, then the socket (the textbook serves the
/// socket first; on loopback the server is so quick that the order decides
/// whether the last chunk's echo happens to be back already, and this order
/// makes the run show the loss every time rather than most times).
fn select_client(port: u16, path: &std::path::Path) -> Result<usize> {
    let io = Error::io;
    let mut file = File::open(path).map_err(io("opening the input"))?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(io("connecting"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut newlines = 0;
    let deadline = Instant::now() + STEP_TIMEOUT;
    for _ in 0..MAX_TURNS {
        if Instant::now() > deadline {
            break;
        }
        let (sock_ready, file_ready) = {
            let mut fds = [
                PollFd::new(s.as_fd(), PollFlags::POLLIN),
                PollFd::new(file.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io("waiting in poll")(e.into())),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if file_ready {
            let n = file.read(&mut buf).map_err(io("reading the input"))?;
            if n == 0 {
                // The textbook's bug: return at end of input. The socket
                // is closed when `s` drops, echoes still in flight unread.
                return Ok(newlines);
            }
            s.write_all(&buf[..n])
                .map_err(io("writing to the server"))?;
        }
        if sock_ready {
            let n = s.read(&mut buf).map_err(io("reading echoes"))?;
            if n == 0 {
                break;
            }
            newlines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
    }
    Ok(newlines)
}

/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    step(
        1,
        "the textbook echo clients in batch mode",
        &format!(
            "{LINES} lines from a file go to netecho's echo server, three ways. Expect: \
             the stop-and-wait client gets every line back, one round trip each; the \
             select-based client, which returns at end of input without shutdown(SHUT_WR), \
             loses the echoes still in flight; netecho's client half-closes, reads \
             until the server's FIN, and gets all {LINES}."
        ),
    );
    let exe = std::env::current_exe().map_err(Error::io("finding this executable"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("NETECHO_LOG", "warn");
    let (server, listening, _) = Server::start(cmd, ListenKind::Tcp)?;
    let port = listening.addr.port();
    evidence(&format!(
        "echo server pid {} on 127.0.0.1:{port}",
        server.0.id()
    ));

    let text = input();
    let path = std::env::temp_dir().join(format!("netecho-lab-{}.txt", std::process::id()));
    std::fs::write(&path, &text).map_err(Error::io("writing the input file"))?;
    let result = (|| {
        let (sw, took) = stop_and_wait(port, &text)?;
        evidence(&format!(
            "stop-and-wait client: {sw} of {LINES} lines back in {:.1} ms ({:.1} us per line: one round trip each)",
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1e6 / LINES as f64
        ));
        let sel = select_client(port, &path)?;
        evidence(&format!(
            "select-based client: {sel} of {LINES} lines back; it returned at end of input, {} lines still in flight were lost",
            LINES.saturating_sub(sel)
        ));
        let t0 = Instant::now();
        let o = Command::new(&exe)
            .args(["client", &format!("127.0.0.1:{port}")])
            .env("NETECHO_LOG", "warn")
            .stdin(File::open(&path).map_err(Error::io("opening the input"))?)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .map_err(Error::io("running netecho client"))?;
        let ours = o.stdout.iter().filter(|&&b| b == b'\n').count();
        evidence(&format!(
            "netecho client: {ours} of {LINES} lines back in {:.1} ms (exit {}), identical to the input: {}",
            t0.elapsed().as_secs_f64() * 1000.0,
            o.status.code().unwrap_or(-1),
            if o.stdout == text.as_bytes() {
                "yes"
            } else {
                "no"
            }
        ));
        conclusion(&format!(
            "textbook client got back {sel} of {LINES} lines; netecho client {ours} of {LINES}"
        ))
    })();
    let _ = std::fs::remove_file(&path);
    drop(server);
    result
}
