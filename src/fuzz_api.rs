//! Entry points for the cargo-fuzz targets in `fuzz/` that reach the
//! product's own parsers (trace's frames and pcap files, the TLS layer);
//! those of the connection core and the UDP policy live in `netecho-core`'s
//! `fuzz` module. Not an API: the crate's items
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

use crate::trace::packet::{build_frame, parse_frame};
use crate::trace::pcap::{self, PcapWriter};

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
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An Ethernet frame from a capture: parsing never panics, and a frame that
/// parses rebuilds (without options) into one that parses the same.
pub fn packet(data: &[u8]) {
    let Ok(seg) = parse_frame(data) else {
        return;
    };
    let payload = vec![0u8; seg.len as usize];
    let again = parse_frame(&build_frame(&seg, &payload));
    assert_eq!(again, Ok(seg), "rebuilt frame parses differently");
}

/// Records of any length, time and claimed wire length, written with
/// `trace`'s pcap writer and read back as libpcap would: every field as
/// written, cut to the snap length, the wire length never below the bytes
/// handed over (as far as 32 bits go), nothing before or after.
pub fn pcap_round_trip(data: &[u8]) {
    let mut b = Bytes(data);
    let snaplen = u32::from(b.u16());
    let mut out = Vec::new();
    let mut w = PcapWriter::new(&mut out, snaplen).expect("writing to a Vec");
    let mut want = Vec::new();
    while !b.is_empty() {
        let secs = u64::from(b.u32()) << (b.u8() % 8);
        let ts = Duration::new(secs, b.u32() % 1_000_000_000);
        let len = usize::from(b.u16());
        let orig = usize::from(b.u16()) * usize::from(b.u8() % 4);
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        w.write(ts, &bytes, orig).expect("writing to a Vec");
        want.push((ts, bytes, orig));
    }
    w.flush().expect("flushing a Vec");
    let u32at = |o: usize| u32::from_ne_bytes(out[o..o + 4].try_into().expect("4 bytes"));
    assert_eq!(u32at(0), pcap::MAGIC);
    assert_eq!(u32at(16), snaplen);
    assert_eq!(u32at(20), pcap::LINKTYPE_ETHERNET);
    let mut at = pcap::FILE_HEADER_LEN;
    for (ts, bytes, orig) in want {
        assert!(
            out.len() >= at + pcap::RECORD_HEADER_LEN,
            "record header cut"
        );
        let (sec, usec, incl, wire) = (u32at(at), u32at(at + 4), u32at(at + 8), u32at(at + 12));
        assert_eq!(sec, u32::try_from(ts.as_secs()).unwrap_or(u32::MAX));
        assert_eq!(usec, ts.subsec_micros());
        assert!(usec < 1_000_000);
        let kept = bytes.len().min(snaplen as usize);
        assert_eq!(incl as usize, kept, "cut to the snap length");
        let full = orig.max(bytes.len());
        assert_eq!(wire as usize, full.min(u32::MAX as usize), "wire length");
        at += pcap::RECORD_HEADER_LEN;
        assert_eq!(&out[at..at + kept], &bytes[..kept]);
        at += kept;
    }
    assert_eq!(at, out.len(), "bytes after the last record");
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

    #[test]
    fn packet_corpus() {
        corpus("packet", packet);
    }

    #[test]
    fn pcap_round_trip_corpus() {
        corpus("pcap_round_trip", pcap_round_trip);
    }

    #[test]
    fn empty_and_short_inputs_decode() {
        for f in [packet, pcap_round_trip] {
            f(&[]);
            f(&[0]);
            f(&[0xff; 7]);
        }
    }
}
