//! `netecho client HOST:PORT`: stdin to the server, the echo to stdout.
//!
//! Unlike the textbook stop-and-wait client (read a line, write it, read the
//! echo), it reads stdin and the socket at the same time, on two threads, so
//! it neither loses the tail of a batch input nor sleeps on stdin while the
//! server has gone away. On stdin EOF it half-closes (`shutdown(SHUT_WR)`)
//! and keeps reading until the server's FIN; it then checks that every byte
//! sent came back. In a terminal the same design gives the classic feel: the
//! terminal hands over a line at a time and its echo is printed at once.
//! With `--tls` the same contract runs over rustls ([`tls`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;

use crate::args::{
    FamilyOpt, join_host_port, parse_duration_nonzero, parse_target, split_host_port,
};
use crate::error::{Error, Result};
use crate::net;
use crate::net::tls::{Connector, TlsOpt};

mod tls;

/// Bytes moved per read, each way.
const BUF_SIZE: usize = 64 * 1024;

/// Options of `netecho client`.
#[derive(Debug, Args)]
pub(crate) struct ClientOpt {
    /// The echo server, as HOST:PORT ([v6addr]:PORT for IPv6 literals), or
    /// HOST alone with PORT after it, as nc takes them.
    #[arg(value_name = "HOST:PORT")]
    pub(crate) target: String,

    /// The port, when HOST is given without one (`client localhost 6666`).
    #[arg(value_name = "PORT")]
    pub(crate) port: Option<u16>,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_nonzero, allow_negative_numbers = true)]
    pub(crate) connect_timeout: Duration,

    /// `-4`, `-6`: which addresses of HOST to use.
    #[command(flatten)]
    pub(crate) family: FamilyOpt,

    /// `--tls` and its options (verification, SNI); the TLS handshake
    /// also has to finish within --connect-timeout.
    #[command(flatten)]
    pub(crate) tls: TlsOpt,
}

impl ClientOpt {
    /// Folds `HOST PORT` into `target` as `HOST:PORT`, and checks the
    /// target's shape: a message for a usage error otherwise.
    pub(crate) fn check(&mut self) -> std::result::Result<(), String> {
        match self.port.take() {
            None => parse_target(&self.target).map(drop),
            Some(port) => {
                if split_host_port(&self.target).is_ok() {
                    return Err(format!(
                        "'{}' has a port already; give HOST PORT or HOST:PORT",
                        self.target
                    ));
                }
                let host = self.target.trim_start_matches('[').trim_end_matches(']');
                self.target = join_host_port(host, port);
                parse_target(&self.target).map(drop)
            }
        }
    }
}

/// Runs the client; `Ok` means every byte sent came back.
pub(crate) fn run(opt: ClientOpt) -> Result<()> {
    if let Some(connector) = Connector::from_opt(&opt.tls, &opt.target, false)? {
        return tls::run(&opt, &connector);
    }
    let stream = connect(&opt)?;
    // Our writes are whatever stdin gave us; no reason to hold them back.
    let _ = stream.set_nodelay(true);
    let writer = stream
        .try_clone()
        .map_err(Error::io("duplicating the socket"))?;
    let sent = Arc::new(AtomicU64::new(0));
    let stdin_done = Arc::new(AtomicBool::new(false));
    {
        let (sent, stdin_done) = (Arc::clone(&sent), Arc::clone(&stdin_done));
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || pump_stdin(writer, &sent, &stdin_done))
            .map_err(Error::io("starting the stdin thread"))?;
    }
    copy_echo(stream, &sent, &stdin_done)
}

/// Resolves `HOST:PORT` and connects to the first address that answers,
/// with the same one-line errors as `bench` and `ping`.
fn connect(opt: &ClientOpt) -> Result<TcpStream> {
    let addrs = net::resolve_in(&opt.target, opt.family.family())?;
    net::connect_any(&opt.target, &addrs, opt.connect_timeout)
}

/// Copies stdin to the socket, counting bytes; on EOF marks the input done
/// and half-closes so the server sees our FIN after the last byte.
fn pump_stdin(mut sock: TcpStream, sent: &AtomicU64, done: &AtomicBool) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("netecho: reading stdin: {e}");
                // Leave `done` unset: the run then fails as incomplete.
                let _ = sock.shutdown(Shutdown::Write);
                return;
            }
        };
        // Counted write by write, so the reader's judgement never sees an
        // echo of bytes not yet counted as sent. A failed write means the
        // server is gone; the reading side reports it with the counts.
        let mut off = 0;
        while off < n {
            match sock.write(&buf[off..n]) {
                Ok(0) => return,
                Ok(w) => {
                    off += w;
                    sent.fetch_add(w as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    let _ = sock.shutdown(Shutdown::Write);
}

/// Copies the echo to stdout until the server's FIN, then judges the run.
fn copy_echo(mut sock: TcpStream, sent: &AtomicU64, stdin_done: &AtomicBool) -> Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut out = io::stdout().lock();
    let mut received: u64 = 0;
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Error::Reset {
                    received,
                    sent: sent.load(Ordering::SeqCst),
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    what: "reading from the server",
                    source,
                });
            }
        };
        received += n as u64;
        match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            Ok(()) => {}
            // Whoever reads our output has had enough (`| head`): not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(source) => {
                return Err(Error::Io {
                    what: "writing to stdout",
                    source,
                });
            }
        }
    }
    let done = stdin_done.load(Ordering::SeqCst);
    let sent = sent.load(Ordering::SeqCst);
    if done && received == sent {
        Ok(())
    } else if done && received > sent {
        Err(Error::Excess { received, sent })
    } else {
        Err(Error::Premature { received, sent })
    }
}
