//! `trace -r`: reading a capture file as tcpdump, tshark, dumpcap and
//! Wireshark write them, classic pcap (either byte order, micro- or
//! nanosecond timestamps) and pcapng, through the `pcap-file` crate.
//!
//! Each record comes out as its bytes, its link type (Ethernet for `-i lo`
//! or `-i eth0`, Linux cooked for `-i any`, ...) and its time since the
//! Unix epoch; [`super::packet::parse_link`] takes the bytes apart.
//!
//! pcap-file 2.0 hands out a pcapng packet's timestamp as the raw count
//! in nanoseconds, whatever the interface's `if_tsresol` says; [`scale`]
//! applies the resolution (microseconds when the option is absent, as
//! the pcapng specification says).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;

/// First bytes of a pcapng file (a section header block, either order).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Classic pcap magics as they appear on disk: micro- and nanosecond
/// timestamps, each in both byte orders.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
/// The pcapng default timestamp resolution: 10^-6 s.
const DEFAULT_TSRESOL: u8 = 6;

/// Why a file cannot be read (one line for the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError(pub String);

/// One packet of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was captured, since the Unix epoch.
    pub ts: Duration,
    /// Its `LINKTYPE_*`.
    pub link: u32,
    /// The bytes captured (perhaps cut to the snap length).
    pub data: Vec<u8>,
    /// Its length on the wire.
    pub orig_len: usize,
}

/// The two formats, each with what it needs to say per record.
enum Inner<R: Read> {
    /// Classic pcap: one link type for the file.
    Pcap { r: PcapReader<R>, link: u32 },
    /// pcapng: link type and resolution per interface.
    Ng(PcapNgReader<R>),
}

/// A capture file, read record by record.
pub struct CaptureFile<R: Read> {
    /// The format's reader.
    inner: Inner<BufReader<R>>,
    /// Records read so far, for the error message of a damaged file.
    read: usize,
    /// pcapng: each interface's link type and timestamp resolution, by
    /// interface number, for the current section.
    ifaces: Vec<(u32, u8)>,
}

impl<R: Read> CaptureFile<R> {
    /// Reads the file header and tells pcap from pcapng.
    pub fn new(r: R) -> Result<CaptureFile<R>, FileError> {
        let mut r = BufReader::new(r);
        let head = r
            .fill_buf()
            .map_err(|e| FileError(format!("cannot read it: {e}")))?;
        let magic: Option<[u8; 4]> = head.get(..4).and_then(|m| m.try_into().ok());
        let inner = match magic {
            Some(m) if m == PCAPNG_MAGIC => Inner::Ng(
                PcapNgReader::new(r)
                    .map_err(|e| FileError(format!("not a valid pcapng file: {e}")))?,
            ),
            Some(m) if PCAP_MAGICS.contains(&m) => {
                let r = PcapReader::new(r)
                    .map_err(|e| FileError(format!("not a valid pcap file: {e}")))?;
                let link = u32::from(r.header().datalink);
                Inner::Pcap { r, link }
            }
            _ => {
                return Err(FileError(
                    "not a pcap or pcapng file (its first bytes are no known magic number)".into(),
                ));
            }
        };
        Ok(CaptureFile {
            inner,
            read: 0,
            ifaces: Vec::new(),
        })
    }

    /// The next packet; `None` at the end of the file.
    pub fn next_record(&mut self) -> Option<Result<Record, FileError>> {
        let damaged = |n: usize, e: pcap_file::PcapError| {
            FileError(format!("damaged after {n} packets: {e}"))
        };
        loop {
            let rec = match &mut self.inner {
                Inner::Pcap { r, link } => match r.next_packet()? {
                    Ok(p) => Record {
                        ts: p.timestamp,
                        link: *link,
                        orig_len: p.orig_len as usize,
                        data: p.data.into_owned(),
                    },
                    Err(e) => return Some(Err(damaged(self.read, e))),
                },
                Inner::Ng(r) => {
                    let block = match r.next_block()? {
                        Ok(b) => b,
                        Err(e) => return Some(Err(damaged(self.read, e))),
                    };
                    match block {
                        Block::SectionHeader(_) => {
                            self.ifaces.clear();
                            continue;
                        }
                        Block::InterfaceDescription(idb) => {
                            let res = idb
                                .options
                                .iter()
                                .find_map(|o| match o {
                                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                    _ => None,
                                })
                                .unwrap_or(DEFAULT_TSRESOL);
                            self.ifaces.push((u32::from(idb.linktype), res));
                            continue;
                        }
                        Block::EnhancedPacket(p) => {
                            let Some(&(link, res)) = self.ifaces.get(p.interface_id as usize)
                            else {
                                return Some(Err(FileError(format!(
                                    "damaged after {} packets: a packet names interface {}, which the file does not describe",
                                    self.read, p.interface_id
                                ))));
                            };
                            Record {
                                ts: scale(p.timestamp.as_nanos(), res),
                                link,
                                orig_len: p.original_len as usize,
                                data: p.data.into_owned(),
                            }
                        }
                        Block::SimplePacket(p) => {
                            // No timestamp, and always interface 0.
                            let Some(&(link, _)) = self.ifaces.first() else {
                                continue;
                            };
                            Record {
                                ts: Duration::ZERO,
                                link,
                                orig_len: p.original_len as usize,
                                data: p.data.into_owned(),
                            }
                        }
                        // Statistics, name resolution, journal entries.
                        _ => continue,
                    }
                }
            };
            self.read += 1;
            return Some(Ok(rec));
        }
    }
}

/// A pcapng timestamp of `raw` units of resolution `tsresol` (high bit
/// clear: 10^-n s; set: 2^-n s) as a duration.
pub fn scale(raw: u128, tsresol: u8) -> Duration {
    let n = u32::from(tsresol & 0x7f);
    let nanos: u128 = if tsresol & 0x80 != 0 {
        // 2^-n s units.
        if n >= 64 {
            0
        } else {
            raw.saturating_mul(1_000_000_000) >> n
        }
    } else if n <= 9 {
        raw.saturating_mul(10u128.pow(9 - n))
    } else {
        raw / 10u128.checked_pow(n - 9).unwrap_or(u128::MAX)
    };
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// A pcapng file as dumpcap lays it out, little-endian: a section header,
/// one interface of link type `link` with nanosecond timestamps
/// (`if_tsresol` 9) and snap length `snaplen`, then one enhanced packet
/// block per record (timestamp in ns, original length, bytes captured).
/// netecho reads pcapng and writes classic pcap; this writer is for tests,
/// the reader's own and the integration tests' (which turn a tcpdump file
/// into pcapng: tcpdump writes none).
pub fn build_pcapng<'a>(
    link: u16,
    snaplen: u32,
    records: impl IntoIterator<Item = (u64, u32, &'a [u8])>,
) -> Vec<u8> {
    /// Block types (pcapng specification, section 11.1).
    const SHB: u32 = 0x0a0d_0d0a;
    const IDB: u32 = 1;
    const EPB: u32 = 6;
    /// `if_tsresol` and its value: 10^-9 s.
    const IF_TSRESOL: u16 = 9;
    const NANOSECONDS: u8 = 9;
    let mut f = Vec::new();
    let block = |f: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(body);
        f.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes()); // byte-order magic
    shb.extend_from_slice(&1u16.to_le_bytes()); // version 1.0
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    block(&mut f, SHB, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&link.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    idb.extend_from_slice(&IF_TSRESOL.to_le_bytes());
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&[NANOSECONDS, 0, 0, 0]);
    idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    block(&mut f, IDB, &idb);
    for (ts_ns, orig_len, data) in records {
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        epb.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&orig_len.to_le_bytes());
        epb.extend_from_slice(data);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        block(&mut f, EPB, &epb);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet::{Proto, Segment, build_frame, flags, link, parse_link};
    use proptest::prelude::*;

    fn syn() -> Vec<u8> {
        build_frame(
            &Segment {
                src: "127.0.0.1:40000".parse().unwrap(),
                dst: "127.0.0.1:6666".parse().unwrap(),
                seq: 7,
                ack: 0,
                flags: flags::SYN,
                window: 100,
                len: 0,
                offers: None,
            },
            b"",
        )
    }

    fn all(bytes: &[u8]) -> Result<Vec<Record>, FileError> {
        let mut f = CaptureFile::new(bytes)?;
        let mut v = Vec::new();
        while let Some(r) = f.next_record() {
            v.push(r?);
        }
        Ok(v)
    }

    /// What netecho's own writer writes, read back.
    #[test]
    fn reads_a_classic_pcap() {
        let mut buf = Vec::new();
        let mut w = crate::wire::pcap::PcapWriter::new(&mut buf, 65535).unwrap();
        w.write(Duration::new(1_700_000_000, 250_000), &syn(), 0)
            .unwrap();
        let recs = all(&buf).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].link, link::ETHERNET);
        assert_eq!(recs[0].ts, Duration::new(1_700_000_000, 250_000));
        assert!(matches!(
            parse_link(recs[0].link, &recs[0].data).unwrap().proto,
            Proto::Tcp(s) if s.seq == 7
        ));
    }

    /// One Ethernet frame in a pcapng file, stamped `ts_ns`.
    fn pcapng(frame: &[u8], ts_ns: u64) -> Vec<u8> {
        build_pcapng(
            link::ETHERNET as u16,
            65535,
            [(ts_ns, frame.len() as u32, frame)],
        )
    }

    #[test]
    fn reads_a_pcapng_with_nanosecond_stamps() {
        let ns = 1_700_000_000_123_456_789u64;
        let recs = all(&pcapng(&syn(), ns)).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].ts, Duration::from_nanos(ns));
        assert_eq!(recs[0].data, syn());
    }

    #[test]
    fn resolutions() {
        assert_eq!(scale(1_500_000, 6), Duration::from_millis(1500));
        assert_eq!(scale(3, 9), Duration::from_nanos(3));
        assert_eq!(scale(1 << 20, 0x80 | 20), Duration::from_secs(1));
        assert_eq!(scale(u128::MAX, 0).as_secs(), u64::MAX);
        assert_eq!(scale(5, 127), Duration::ZERO);
    }

    #[test]
    fn not_a_capture_is_one_line() {
        let e = all(b"hello world").unwrap_err();
        assert!(e.0.starts_with("not a pcap or pcapng file"), "{e:?}");
        assert!(all(b"").is_err());
    }

    #[test]
    fn a_cut_file_says_after_how_many_packets() {
        let mut buf = Vec::new();
        let mut w = crate::wire::pcap::PcapWriter::new(&mut buf, 65535).unwrap();
        w.write(Duration::ZERO, &syn(), 0).unwrap();
        w.write(Duration::ZERO, &syn(), 0).unwrap();
        buf.truncate(buf.len() - 3);
        let e = all(&buf).unwrap_err();
        assert!(e.0.starts_with("damaged after 1 packets"), "{e:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random bytes after a valid magic number never panic the reader
        /// (or the parser behind it).
        #[test]
        fn random_files_never_panic(
            ng in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = if ng { PCAPNG_MAGIC.to_vec() } else { PCAP_MAGICS[0].to_vec() };
            f.extend_from_slice(&tail);
            if let Ok(mut c) = CaptureFile::new(&f[..]) {
                for _ in 0..1000 {
                    match c.next_record() {
                        Some(Ok(r)) => { let _ = parse_link(r.link, &r.data); }
                        _ => break,
                    }
                }
            }
        }

        /// A valid file cut anywhere, or with one byte changed, never
        /// panics either.
        #[test]
        fn damaged_files_never_panic(
            ng in any::<bool>(), cut in 0usize..400, at in 0usize..400, byte in any::<u8>(),
        ) {
            let mut f = if ng {
                pcapng(&syn(), 1)
            } else {
                let mut buf = Vec::new();
                let mut w = crate::wire::pcap::PcapWriter::new(&mut buf, 65535).unwrap();
                w.write(Duration::ZERO, &syn(), 0).unwrap();
                buf
            };
            if at < f.len() { f[at] = byte; }
            f.truncate(cut);
            if let Ok(mut c) = CaptureFile::new(&f[..]) {
                for _ in 0..1000 {
                    match c.next_record() {
                        Some(Ok(r)) => { let _ = parse_link(r.link, &r.data); }
                        _ => break,
                    }
                }
            }
        }

        #[test]
        fn random_link_layers_never_panic(
            l in prop::sample::select(vec![0u32, 1, 101, 108, 113, 228, 229, 276, 9999]),
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let _ = parse_link(l, &bytes);
        }
    }
}
