//! Writes under edge-triggered readiness hints, shared by epoll's loop
//! (`epoll.rs`) and its faulted connections (`epoll_faults.rs`): one way
//! to write, clear the writable hint, and tell a dead socket.

use std::io::{self, Write};

use mio::net::TcpStream;

/// Writes tried per chunk: each one that makes progress or is interrupted
/// counts, so a misbehaving kernel cannot keep us in the loop.
const WRITE_TRIES: usize = 8;

/// Writes `data` until done or the socket would block (clearing
/// `writable`); returns how many bytes went out.
pub(super) fn write_some(
    stream: &mut TcpStream,
    data: &[u8],
    writable: &mut bool,
) -> io::Result<usize> {
    let mut off = 0;
    for _ in 0..WRITE_TRIES {
        if off == data.len() || !*writable {
            break;
        }
        match stream.write(&data[off..]) {
            // A TCP send never takes 0 of a non-empty buffer: it is dead.
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n;
                // A short write filled the send buffer: a writable edge
                // comes when it drains, so skip the write that would block.
                if off < data.len() {
                    *writable = false;
                }
            }
            // The send buffer is full: the rest waits for a writable edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            // A signal: write again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}
