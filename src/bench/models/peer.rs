//! The echo servers a user would pick instead of netecho, where installed
//! (`scripts/install-peers.sh`): `socat TCP-LISTEN:P,fork,reuseaddr PIPE`,
//! `ncat -l -k 127.0.0.1 P -e /bin/cat` and xinetd's internal echo service.
//!
//! They cannot print their port, so each cell picks a free one (bind
//! 127.0.0.1:0, read it, drop it), starts the peer on it pinned like the
//! models, and waits (at most 5 s) until a connect succeeds. They fork
//! a process per connection; their CPU is counted the same way, forked
//! children included.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::bench::spawn;
use crate::error::{Error, Result};

/// A peer that accepts no connection by then has failed to start.
const READY: Duration = Duration::from_secs(5);
/// How long a peer's group may take to exit after SIGTERM before SIGKILL.
const STOP: Duration = Duration::from_secs(5);
/// Longest wait for a killed peer's children to be gone.
const GONE: Duration = Duration::from_secs(1);
/// How often the start and stop waits look again.
const POLL: Duration = Duration::from_millis(10);
/// Connect timeout of the readiness probe (a refused connect returns at once).
const PROBE: Duration = Duration::from_millis(500);
/// Pause after the readiness probe, so the child it may have forked is done
/// before the load starts.
pub(crate) const PROBE_SETTLE: Duration = Duration::from_millis(50);

/// A peer echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Socat,
    Ncat,
    Xinetd,
    /// `socat OPENSSL-LISTEN:P,fork PIPE`: the TLS echo a user would pick
    /// instead of `serve --tls-listen`, with a certificate made for the run.
    SocatTls,
}

impl Peer {
    /// The plain-TCP ones, in table order.
    pub const ALL: [Peer; 3] = [Peer::Socat, Peer::Ncat, Peer::Xinetd];

    /// Its name in the tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Socat => "socat",
            Peer::Ncat => "ncat",
            Peer::Xinetd => "xinetd",
            Peer::SocatTls => "socat-tls",
        }
    }

    /// Whether it is driven through TLS.
    pub(crate) fn tls(self) -> bool {
        self == Peer::SocatTls
    }

    /// Where it is installed, if it is.
    pub fn program(self) -> Option<PathBuf> {
        let program = match self {
            Peer::SocatTls => "socat",
            p => p.name(),
        };
        spawn::find_in_path(program)
    }

    /// The arguments that make it an echo server on 127.0.0.1:`port`
    /// (xinetd's config file is written into `scratch`).
    fn args(self, port: u16, scratch: &Path) -> Result<Vec<String>> {
        Ok(match self {
            Peer::Socat => vec![
                format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                "PIPE".into(),
            ],
            Peer::SocatTls => {
                let (cert, key) = (scratch.join("socat-tls.crt"), scratch.join("socat-tls.key"));
                write_self_signed(&cert, &key)?;
                vec![
                    format!(
                        "OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,cert={},key={},verify=0",
                        cert.display(),
                        key.display()
                    ),
                    "PIPE".into(),
                ]
            }
            Peer::Ncat => vec![
                "-l".into(),
                "-k".into(),
                "127.0.0.1".into(),
                port.to_string(),
                "-e".into(),
                "/bin/cat".into(),
            ],
            Peer::Xinetd => {
                // A service on a port /etc/services does not give it must be
                // UNLISTED; `id` picks the stream variant of the internal echo.
                let conf = xinetd_conf(scratch);
                let text = format!(
                    "defaults\n{{\n}}\n\nservice echo\n{{\n\ttype = INTERNAL UNLISTED\n\tid = echo-stream\n\tsocket_type = stream\n\tprotocol = tcp\n\tuser = root\n\twait = no\n\tport = {port}\n\tbind = 127.0.0.1\n\tflags = REUSE\n\tinstances = UNLIMITED\n\tper_source = UNLIMITED\n\tcps = 1000000 1\n}}\n"
                );
                std::fs::write(&conf, text)
                    .map_err(|e| Error::Measure(format!("writing {}: {e}", conf.display())))?;
                vec![
                    "-dontfork".into(),
                    "-f".into(),
                    conf.display().to_string(),
                    "-pidfile".into(),
                    scratch.join("xinetd.pid").display().to_string(),
                ]
            }
        })
    }
}

/// A self-signed certificate for `localhost` and its key, as PEM files.
fn write_self_signed(cert: &Path, key: &Path) -> Result<()> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| Error::Measure(format!("making a certificate for socat: {e}")))?;
    for (path, text) in [
        (cert, made.cert.pem()),
        (key, made.signing_key.serialize_pem()),
    ] {
        std::fs::write(path, text)
            .map_err(|e| Error::Measure(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Where xinetd's configuration is written, for the header to name.
pub(crate) fn xinetd_conf(scratch: &Path) -> PathBuf {
    scratch.join("xinetd-echo.conf")
}

/// A peer we started, leader of its own process group; dropping it stops
/// the whole group.
pub(crate) struct Running {
    child: Child,
    /// Its pid, also its process group id.
    pub(crate) pid: i32,
    /// Where its stderr goes, to explain a failure.
    log: PathBuf,
}

impl Running {
    /// The last line of its stderr as `; its stderr: ...`, or nothing.
    pub(crate) fn tail(&self) -> String {
        std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .map_or_else(String::new, |l| format!("; its stderr: {}", l.trim()))
    }
}

impl Drop for Running {
    /// SIGTERM to the group, SIGKILL if the leader is still there after
    /// [`STOP`], then SIGKILL to whatever of the group is left (forked
    /// per-connection children). The group is ours: its leader is our child,
    /// and a group id is not reused while any member lives.
    fn drop(&mut self) {
        let group = Pid::from_raw(self.pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        // Until the killed children are gone (bounded), so they do not run
        // into the next cell. No signal only asks whether the group has members.
        let deadline = Instant::now() + GONE;
        while killpg(group, None).is_ok() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
}

/// Starts `peer` (the program at `prog`) on a free loopback port, pinned to
/// `cpu`, and waits until a connect succeeds (at most [`READY`]).
pub(crate) fn start(
    peer: Peer,
    prog: &Path,
    scratch: &Path,
    cpu: Option<usize>,
) -> Result<(Running, SocketAddr)> {
    let name = peer.name();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let args = peer.args(addr.port(), scratch)?;
    let log = scratch.join(format!("{name}.stderr"));
    let err_file = File::create(&log)
        .map_err(|e| Error::Measure(format!("creating {}: {e}", log.display())))?;
    let mut child = spawn::pinned_command(prog, cpu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .map_err(|e| Error::Measure(format!("cannot start {}: {e}", prog.display())))?;
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Measure("peer pid out of range".into()));
    };
    let mut running = Running { child, pid, log };
    let deadline = Instant::now() + READY;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(Error::Measure(format!(
                "{name} exited ({status}){}",
                running.tail()
            )));
        }
        if TcpStream::connect_timeout(&addr, PROBE).is_ok() {
            return Ok((running, addr));
        }
        if Instant::now() >= deadline {
            return Err(Error::Measure(format!(
                "{name} accepted no connection on {addr} within {} s{}",
                READY.as_secs(),
                running.tail()
            )));
        }
        thread::sleep(POLL);
    }
}

/// A free loopback port: bind 127.0.0.1:0, read the port, let it go.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("picking a port"))?;
    let port = l.local_addr().map_err(Error::io("picking a port"))?.port();
    Ok(port)
}
