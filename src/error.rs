//! Typed errors of the library. `main` prints one as a single line and exits
//! non-zero; nothing here ever becomes a panic or a backtrace.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop a subcommand. Each variant's message is one line
/// that says what happened in the user's words, not the syscall's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another socket already owns the address (`EADDRINUSE`).
    #[error("address {0} already in use")]
    AddrInUse(SocketAddr),
    /// Binding a port below 1024 without the right to (`EACCES`).
    #[error("permission denied binding {0} (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    BindPermission(SocketAddr),
    /// Any other failure to create, bind or listen on a socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The name in `HOST:PORT` did not resolve.
    #[error("cannot resolve {target}: {reason}")]
    Resolve { target: String, reason: String },
    /// The server answered the SYN with a reset.
    #[error("connection refused by {0}")]
    Refused(String),
    /// No SYN-ACK came back in time.
    #[error("connect to {target} timed out after {}s", .after.as_secs_f64())]
    ConnectTimeout { target: String, after: Duration },
    /// Any other connect failure (no route, unreachable...).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The server closed the connection before everything sent came back.
    #[error("the server closed the connection after echoing {received} of the {sent} bytes sent")]
    Premature { received: u64, sent: u64 },
    /// The server closed the connection while there was still input to
    /// send, though everything sent so far came back.
    #[error(
        "the server closed the connection before the end of the input (all {sent} bytes sent so far came back)"
    )]
    ClosedBeforeEnd { sent: u64 },
    /// The server sent back more bytes than it was sent: not an echo.
    #[error(
        "the server sent back more than the {sent} bytes it was sent: not an echo server (--no-verify talks to any server)"
    )]
    Excess { sent: u64 },
    /// A byte of the echo differs from the byte sent at that offset.
    #[error(
        "mismatch at byte {at} (sent 0x{sent:02x}, got 0x{got:02x}): the server changed the data"
    )]
    Mismatch { at: u64, sent: u8, got: u8 },
    /// The server reset the connection while bytes were outstanding.
    #[error("the server reset the connection after echoing {received} of the {sent} bytes sent")]
    Reset { received: u64, sent: u64 },
    /// Ctrl-C or SIGTERM stopped the client.
    #[error("interrupted: {received} of the {sent} bytes sent had come back")]
    Interrupted { received: u64, sent: u64 },
    /// Bytes were outstanding and nothing came back for the timeout.
    #[error(
        "no echo from the server for {} s: {received} of the {sent} bytes sent came back", .after.as_secs_f64()
    )]
    NoEcho {
        after: Duration,
        received: u64,
        sent: u64,
    },
    /// The sockets passed by systemd (LISTEN_FDS) cannot be used.
    #[error("socket activation: {reason}")]
    Activation { reason: String },
    /// A command line that parses but cannot be used: a target without a
    /// port, a size above a limit, options that parse one by one but not
    /// together (`--size` too big for `--udp`...). One line, exit status 2,
    /// as clap's own errors.
    #[error("{0}")]
    Usage(String),
    /// The run failed for a reason said in words (a file that cannot be
    /// written after the run, a worker with no slot): exit status 1, unlike
    /// [`Error::Usage`].
    #[error("{0}")]
    Failed(String),
    /// `bench` ran to the end, but some requests failed or were lost; the
    /// figures are printed, the exit status says so.
    #[error("bench failed: {0}")]
    BenchFailed(String),
    /// One measurement of `bench --models` could not be taken: the server
    /// did not start, exited, stalled, or echoed wrong bytes. It becomes an
    /// error row; the other measurements go on.
    #[error("{0}")]
    Measure(String),
    /// `bench --models --chart` could not draw or write the chart.
    #[error("cannot write the chart: {0}")]
    Chart(String),
    /// `ping` ran to the end, but some probes failed.
    #[error("{failed} of {sent} {} failed; first: {first}", if *.sent == 1 { "probe" } else { "probes" })]
    PingFailed {
        failed: u64,
        sent: u64,
        first: String,
    },
    /// `ping` was stopped before any probe was answered.
    #[error("no probe was answered")]
    NoAnswer,
    /// `ping --wait`: the service did not come up in time.
    #[error("{target} did not answer within {} s (--wait); last: {last}", .after.as_secs_f64())]
    NotUp {
        target: String,
        after: Duration,
        last: String,
    },
    /// A system call the program cannot do without failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// Opening a packet socket without the right to (`EPERM`).
    #[error(
        "{0} needs CAP_NET_RAW: run it as root, or grant it with `setcap cap_net_raw+ep netecho`"
    )]
    NeedCapNetRaw(&'static str),
    /// `--iface` names no interface, or one whose frames are not Ethernet.
    #[error("cannot capture on interface '{name}': {reason}")]
    Interface { name: String, reason: String },
    /// A `--tls-*` option of `netecho serve` is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// TLS could not be set up or its handshake failed (`--tls`): a bad
    /// `--tls-ca`, no trusted roots, an unverifiable certificate...
    #[error("{0}")]
    TlsClient(String),
    /// A step of `netecho lab` could not be carried out.
    #[error("lab: {0}")]
    Lab(String),
}

impl Error {
    /// True when the error is a closed stdout (`netecho man | head`): the
    /// reader had enough, which is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The exit status this error ends the program with: 2 when the command
    /// line asked for something that cannot be done (a bad value, options
    /// that do not go together, a TLS file or an interface that is not
    /// there: all found before anything ran), 1 when the run itself failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Interface { .. } => 2,
            Error::Tls(TlsError::Setup(_)) => 1,
            Error::Tls(_) => 2,
            _ => 1,
        }
    }

    /// Wraps an I/O error with a short description of what was being done.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { what, source }
    }
}

/// A bad TLS option of `netecho serve`: each one line, reported before
/// anything binds. It lives here, not in `serve::tls`, so that this module
/// imports nothing of the crate (no import circle through `error`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named on the command line cannot be read.
    #[error("{flag} {}: {source}", .path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that should hold certificates holds none (or bad PEM).
    #[error("{flag} {}: no PEM certificate in it{}", .path.display(), .why)]
    NotCert {
        flag: &'static str,
        path: PathBuf,
        /// `: <what the PEM parser said>`, or empty.
        why: String,
    },
    /// The certificate is PEM but not a certificate rustls can use.
    #[error("--tls-cert {}: not a usable certificate: {reason}", .path.display())]
    BadCert { path: PathBuf, reason: String },
    /// `--tls-key` holds no private key in a known encoding.
    #[error("--tls-key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it{}", .path.display(), .why)]
    NotKey {
        path: PathBuf,
        /// `: <what the parser or the provider said>`, or empty.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("--tls-key {} does not match the certificate in {}", .key.display(), .cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// `--tls-client-ca` holds certificates rustls cannot verify with.
    #[error("--tls-client-ca {}: {reason}", .path.display())]
    BadClientCa { path: PathBuf, reason: String },
    /// One of `--tls-cert`/`--tls-key` without the other, or a TLS option
    /// without `--tls-listen`.
    #[error("{0}")]
    Usage(&'static str),
    /// rustls or rcgen refused the configuration itself.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
