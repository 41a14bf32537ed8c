//! The options of `netecho client`, and the sizes and slices its two
//! transports (plain, TLS) share.

use std::time::Duration;

use clap::Args;

use super::linger::DEFAULT_LINGER;
use crate::args::{parse_duration, parse_duration_nonzero};
use crate::net::TargetOpt;
use crate::net::tls::TlsOpt;

/// Bytes moved per read, each way.
pub(crate) const BUF_SIZE: usize = 64 * 1024;
/// Longest wait on the socket before the outstanding bytes' age is looked
/// at again.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(200);

/// What `client --help` says after the options: how the echo is checked
/// and what the exit status means.
const AFTER_HELP: &str = "\
Every byte that comes back is compared with the byte sent at that offset; \
stdout shows only bytes that came back unchanged. At the first difference \
the client stops and says on stderr: mismatch at byte N (sent 0xXX, got 0xYY).

After the end of input and the last echo the server has --linger to \
close the connection; one that keeps it open is then left, with a warning.

Exit status: 0 every byte sent came back unchanged; \
1 a mismatch, the server closed or reset early (the bytes sent and echoed \
are named), no echo for --timeout, Ctrl-C or SIGTERM, or the connect \
failed; 2 a usage error.";

/// Options of `netecho client`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct ClientOpt {
    #[command(flatten)]
    pub(crate) target: TargetOpt,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_nonzero, allow_negative_numbers = true)]
    pub(crate) connect_timeout: Duration,

    /// Fail when bytes have been sent and no echo has come back for this
    /// long. Waiting for input is never timed: an idle terminal session
    /// stays open.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_nonzero, allow_negative_numbers = true)]
    pub(crate) timeout: Duration,

    /// After the end of input, once every byte has come back (with
    /// --no-verify: once nothing more arrives), wait this long for the
    /// server to close, then close with a warning (exit 0: nothing is
    /// missing); 0 does not wait.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_LINGER, value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) linger: Duration,

    /// Talk to a server that is not an echo server: copy its answer to
    /// stdout as it comes, compare nothing, and exit 0 when it closes the
    /// connection (1 only if it resets it or the connect fails).
    #[arg(long)]
    pub(crate) no_verify: bool,

    /// `--tls` and its options (verification, SNI); the TLS handshake
    /// also has to finish within --connect-timeout.
    #[command(flatten)]
    pub(crate) tls: TlsOpt,
}
