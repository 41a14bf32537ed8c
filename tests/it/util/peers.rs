//! Peers written in the tests, for netecho's clients (`client`, `ping`,
//! `bench`) to talk to: TCP echo servers that misbehave on purpose (a flipped
//! byte, an early close, a stall), a UDP echo server that can lose datagrams,
//! and a port with nothing listening.
//!
//! They run on threads of the test process; a connection that stays silent
//! for [`IO_TIMEOUT`] is given up, so no peer outlives a test by much.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::IO_TIMEOUT;

/// A TCP server on 127.0.0.1:0 in this process; each connection gets its own
/// thread running `serve_conn`, with [`IO_TIMEOUT`] read and write timeouts.
pub fn tcp_server<F>(serve_conn: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    tcp_server_for(usize::MAX, serve_conn)
}

/// Like [`tcp_server`], but it accepts only `max_conns` connections, then
/// drops the listener: a further connect is refused.
pub fn tcp_server_for<F>(max_conns: usize, serve_conn: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let addr = listener.local_addr().expect("local addr");
    serve_listener(listener, max_conns, serve_conn);
    addr
}

/// Serves the first `max_conns` connections of `listener` (of any address
/// family) like [`tcp_server`], on a thread that then drops the listener.
pub fn serve_listener<F>(listener: TcpListener, max_conns: usize, serve_conn: F)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let serve_conn = Arc::new(serve_conn);
    thread::spawn(move || {
        for conn in listener.incoming().filter_map(Result::ok).take(max_conns) {
            let ok = conn.set_read_timeout(Some(IO_TIMEOUT)).is_ok()
                && conn.set_write_timeout(Some(IO_TIMEOUT)).is_ok()
                && conn.set_nodelay(true).is_ok();
            if ok {
                let f = Arc::clone(&serve_conn);
                thread::spawn(move || f(conn));
            }
        }
    });
}

/// Echoes, passing each byte through `alter(offset, byte)`; stops at EOF,
/// an error, or when `alter` says so by returning `None`.
pub fn echo_with(mut s: TcpStream, mut alter: impl FnMut(u64, u8) -> Option<u8>) {
    let mut buf = [0u8; 4096];
    let mut offset = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            match alter(offset, b) {
                Some(b) => out.push(b),
                None => {
                    let _ = s.write_all(&out);
                    return;
                }
            }
            offset += 1;
        }
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// A server that flips one bit of byte `at` of every connection's stream.
pub fn flip_server(at: u64) -> SocketAddr {
    tcp_server(move |s| echo_with(s, move |off, b| Some(if off == at { b ^ 0x20 } else { b })))
}

/// A server that echoes `n` bytes of each connection, then closes it.
pub fn close_after_server(n: u64) -> SocketAddr {
    tcp_server(move |s| echo_with(s, move |off, b| (off < n).then_some(b)))
}

/// A UDP echo server in this process; with `drop_every_other`, every second
/// datagram is swallowed. It stops when dropped.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    pub fn start(drop_every_other: bool) -> UdpEcho {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let addr = sock.local_addr().expect("local addr");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut seen = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                seen += 1;
                if drop_every_other && seen.is_multiple_of(2) {
                    continue;
                }
                let _ = sock.send_to(&buf[..n], peer);
            }
        });
        UdpEcho { addr, stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}
