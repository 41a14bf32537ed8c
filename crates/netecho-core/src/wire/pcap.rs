//! The classic pcap file format (what `tcpdump -w` writes), by hand: a
//! 24-byte file header, then per packet a 16-byte record header and the
//! bytes. Native byte order with the 0xa1b2c3d4 magic tells readers both
//! the order and that timestamps are in microseconds.

use std::io::{self, Write};
use std::time::Duration;

/// Magic number: microsecond timestamps, written in native byte order.
pub const MAGIC: u32 = 0xa1b2_c3d4;
/// Format version 2.4, the only one in use.
pub const VERSION: (u16, u16) = (2, 4);
/// Link type of Ethernet frames (loopback AF_PACKET frames are too).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// File header length.
pub const FILE_HEADER_LEN: usize = 24;
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 16;

/// Writes a pcap stream to any writer.
pub struct PcapWriter<W: Write> {
    /// Where the file goes.
    out: W,
    /// The longest record the header promises.
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(FILE_HEADER_LEN);
        h.extend_from_slice(&MAGIC.to_ne_bytes());
        h.extend_from_slice(&VERSION.0.to_ne_bytes());
        h.extend_from_slice(&VERSION.1.to_ne_bytes());
        h.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
        h.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_ne_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Writes one packet captured `ts` after the Unix epoch; `orig_len` is
    /// its length on the wire (more than `data` if it was cut short).
    pub fn write(&mut self, ts: Duration, data: &[u8], orig_len: usize) -> io::Result<()> {
        // The wire length is at least what we were handed, before the cut
        // to the snap length (the record would otherwise claim a packet
        // shorter than it was: 0 bytes with a snap length of 0).
        let orig = u32::try_from(orig_len.max(data.len())).unwrap_or(u32::MAX);
        let data = &data[..data.len().min(self.snaplen as usize)];
        let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
        let mut h = Vec::with_capacity(RECORD_HEADER_LEN);
        h.extend_from_slice(&secs.to_ne_bytes());
        h.extend_from_slice(&ts.subsec_micros().to_ne_bytes());
        h.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        h.extend_from_slice(&orig.to_ne_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_are_laid_out_as_libpcap_reads_them() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf, 100).unwrap();
        w.write(Duration::new(1_700_000_000, 123_456_000), b"abcdef", 6)
            .unwrap();
        w.write(Duration::new(5, 0), &[7u8; 200], 300).unwrap();
        let u32at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        assert_eq!(u32at(0), MAGIC);
        assert_eq!(u32at(16), 100);
        assert_eq!(u32at(20), LINKTYPE_ETHERNET);
        assert_eq!(
            (u32at(24), u32at(28), u32at(32), u32at(36)),
            (1_700_000_000, 123_456, 6, 6)
        );
        assert_eq!(&buf[40..46], b"abcdef");
        assert_eq!((u32at(54), u32at(58)), (100, 300), "cut to snaplen");
        assert_eq!(buf.len(), 24 + 16 + 6 + 16 + 100);
    }

    /// Found by the `pcap_round_trip` fuzz target: a record cut to the snap
    /// length, with a smaller (or no) wire length given, claimed the cut
    /// length as its wire length: 0 bytes on the wire with a snap length of 0.
    #[test]
    fn a_cut_record_keeps_the_length_it_had() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf, 0).unwrap();
        w.write(Duration::ZERO, &[1u8; 10], 0).unwrap();
        let mut w = PcapWriter::new(&mut buf, 64).unwrap();
        w.write(Duration::ZERO, &[1u8; 1500], 40).unwrap();
        let u32at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        assert_eq!((u32at(32), u32at(36)), (0, 10));
        let second = 24 + 16 + 24;
        assert_eq!((u32at(second + 8), u32at(second + 12)), (64, 1500));
    }
}
