//! Entry points for the cargo-fuzz targets in `fuzz/` that reach the
//! product's own parsers (trace's frames and pcap files); those of the
//! connection core, the UDP policy and the TLS session live in
//! `netecho-core`'s `fuzz` module. Not an API: the crate's items
//! are `pub(crate)`, and a fuzz target is another crate, so each function
//! here takes the fuzzer's bytes, drives the crate's own code with them and
//! panics when an invariant breaks. The same functions run the committed
//! seed corpus on stable in `cargo test` (see the tests below), so a crash
//! the fuzzers found stays fixed without nightly.

use std::time::Duration;

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
