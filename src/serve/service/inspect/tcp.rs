//! The TCP side of the inspect port: accept, describe, write one line, close.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use netecho_core::inspect::report::{TcpInfoSeen, TcpReport};
use netecho_core::inspect::syn;
use tracing::debug;

use crate::sys::sockopt::{
    self, TCPI_OPT_ECN, TCPI_OPT_SACK, TCPI_OPT_TIMESTAMPS, TCPI_OPT_WSCALE,
};

/// A client that does not take its few hundred bytes in this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the listener until the process ends (the sidecar's threads end
/// with it). Connections are answered one at a time: each costs a few
/// system calls and one write that fits any socket buffer.
pub(crate) fn serve(l: &TcpListener) {
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                if let Err(e) = answer(&s, peer) {
                    debug!(peer = %peer, "inspect: {e}");
                }
            }
            // A connection reset before accept, or out of descriptors for
            // a moment: neither ends the service.
            Err(e) => {
                debug!("inspect accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn answer(s: &TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let report = describe(s, peer)?;
    let mut line = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    (&*s).write_all(&line)?;
    // FIN after the line: the client reads to the end.
    s.shutdown(std::net::Shutdown::Write)
}

/// What the server saw of one accepted connection.
pub(crate) fn describe(s: &TcpStream, peer: SocketAddr) -> std::io::Result<TcpReport> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (syn, syn_error) = match sockopt::saved_syn(s.as_fd()) {
        Ok(bytes) => match syn::parse(&bytes) {
            Ok(syn) => (Some(syn), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (
            None,
            Some("the kernel kept no SYN (SYN cookies answered, or the listener was not asked to keep them)".into()),
        ),
        Err(e) => (None, Some(format!("reading the saved SYN: {e}"))),
    };
    let tcp_info = sockopt::tcp_info(s.as_fd()).ok().map(|i| {
        let (snd_wscale, rcv_wscale) = sockopt::wscales(&i);
        let names = [
            (TCPI_OPT_TIMESTAMPS, "timestamps"),
            (TCPI_OPT_SACK, "sack"),
            (TCPI_OPT_WSCALE, "wscale"),
            (TCPI_OPT_ECN, "ecn"),
        ];
        TcpInfoSeen {
            rtt_us: i.tcpi_rtt,
            snd_mss: i.tcpi_snd_mss,
            advmss: i.tcpi_advmss,
            options: names
                .iter()
                .filter(|(bit, _)| i.tcpi_options & bit != 0)
                .map(|(_, n)| (*n).to_string())
                .collect(),
            snd_wscale,
            rcv_wscale,
        }
    });
    Ok(TcpReport {
        proto: "tcp".into(),
        peer: canon(peer),
        local: canon(s.local_addr()?),
        syn,
        syn_error,
        tcp_info,
    })
}
