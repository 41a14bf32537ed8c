//! The entry point for the cargo-fuzz target in `fuzz/` that reaches the
//! TLS layer; those of the connection core, the UDP policy and the wire
//! parsers live in `netecho-core`'s `fuzz` module. Not an API: the crate's items
//! are `pub(crate)`, and a fuzz target is another crate, so each function
//! here takes the fuzzer's bytes, drives the crate's own code with them and
//! panics when an invariant breaks. The same functions run the committed
//! seed corpus on stable in `cargo test` (see the tests below), so a crash
//! the fuzzers found stays fixed without nightly.

use crate::serve::contract::Conn;
use crate::serve::contract::pending::Pending;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Reads the fuzzer's bytes as a stream of small numbers; zeros once they
/// run out, so every input decodes to something.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The server configuration the TLS target uses: the self-signed one
/// `serve` makes, made once (a key pair per input would be all the fuzzer
/// measures).
fn tls_config() -> &'static Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let files = crate::serve::transport::tls::Files::default();
        crate::serve::transport::tls::Tls::load(&files, Duration::from_secs(10))
            .expect("the self-signed TLS configuration")
            .config
    })
}

/// A socket whose peer sends the fuzzer's bytes as pieces (a length byte,
/// 1–64, then that many bytes: `WouldBlock` between pieces, the FIN after
/// the last), and takes what is written in slices of varying size, with
/// `WouldBlock` between them.
struct FuzzWire<'a> {
    input: Bytes<'a>,
    /// Ciphertext still to hand over in the current piece.
    chunk: Vec<u8>,
    /// Bytes the next write may take (0: it would block once).
    room: usize,
    /// Writes that blocked, which picks the next room.
    blocked: usize,
    fin: bool,
    shut: bool,
}

impl io::Read for FuzzWire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            if self.input.is_empty() {
                self.fin = true;
                return Ok(0);
            }
            let n = usize::from(self.input.u8() % 64) + 1;
            self.chunk = (0..n).map(|_| self.input.u8()).collect();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.drain(..n);
        Ok(n)
    }
}

impl io::Write for FuzzWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            self.blocked += 1;
            self.room = self.blocked * 997 % 4096 + 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::serve::transport::tls::session::Wire for FuzzWire<'_> {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

/// Bytes from an unknown client on a `--tls-listen` port, through the TLS
/// layer and the connection core: whatever arrives, it never panics, ends
/// within a bounded number of turns once the client has nothing more to
/// say, and never echoes a byte (nobody without the handshake's keys can
/// make it decrypt one).
pub fn tls_records(data: &[u8]) {
    use crate::serve::transport::tls::session::{TlsConn, Turn};
    let start = Instant::now();
    let mut tls =
        TlsConn::new(tls_config(), start, Duration::from_secs(10)).expect("a server session");
    let mut core = Conn::new(start, Pending::new());
    let mut wire = FuzzWire {
        input: Bytes(data),
        chunk: Vec::new(),
        room: 4096,
        blocked: 0,
        fin: false,
        shut: false,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut echoed = 0u64;
    // Every turn takes at least one byte of input or hands over a piece;
    // after the FIN, a handful more turns settle the end.
    let bound = data.len() * 4 + 64;
    for _ in 0..bound {
        match tls.turn(&mut core, &mut wire, start, &mut buf, &mut echoed) {
            Turn::Close(_) => {
                assert_eq!(echoed, 0, "plaintext echoed without a handshake");
                return;
            }
            Turn::Again | Turn::Wait { .. } => {}
        }
        if wire.fin && wire.chunk.is_empty() {
            // The client said all it will: a silent one times out.
            tls.time_out(&mut core);
        }
    }
    assert_eq!(echoed, 0, "plaintext echoed without a handshake");
    panic!(
        "the TLS layer never ended the connection ({} bytes in)",
        data.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs `f` on every file of the committed seed corpus `fuzz/corpus/NAME`
    /// (crash reproducers are kept there too, so they stay fixed).
    fn corpus(name: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(name);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "empty corpus {}", dir.display());
    }

    #[test]
    fn tls_records_corpus() {
        corpus("tls_records", tls_records);
    }
}
