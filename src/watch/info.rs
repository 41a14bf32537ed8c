//! `watch --info`: the kernel's own figures for each ESTABLISHED socket
//! (`struct tcp_info` from `include/uapi/linux/tcp.h`, read over sock_diag
//! as `ss -i` does), printed when they change. Pure code: the bytes come
//! from [`super::diag::Diag::tcp_infos`].

use std::collections::HashMap;
use std::ops::Range;

use super::format::format_addr;
use super::snapshot::Key;

/// Field offsets in `struct tcp_info` (stable ABI: the kernel only ever
/// appends fields, and reports how many bytes it filled).
const RETRANSMITS: usize = 2;
/// Byte 7: `tcpi_delivery_rate_app_limited` is its lowest bit.
const APP_LIMITED: usize = 7;
const RTT: Range<usize> = 68..72;
const RTTVAR: Range<usize> = 72..76;
const SND_SSTHRESH: Range<usize> = 76..80;
const SND_CWND: Range<usize> = 80..84;
const BYTES_ACKED: Range<usize> = 120..128;
const BYTES_RECEIVED: Range<usize> = 128..136;
const DELIVERY_RATE: Range<usize> = 160..168;
/// ssthresh before the first loss: "infinite".
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

/// The figures `--info` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    /// Smoothed round-trip time, microseconds.
    pub(crate) rtt_us: u32,
    /// Its mean deviation, microseconds.
    pub(crate) rttvar_us: u32,
    /// Congestion window, segments.
    pub(crate) cwnd: u32,
    /// Slow-start threshold, segments (`None`: not set yet, infinite).
    pub(crate) ssthresh: Option<u32>,
    /// Consecutive retransmission timeouts of the segment at the head.
    pub(crate) retransmits: u8,
    /// Bytes the peer acknowledged.
    pub(crate) bytes_acked: u64,
    /// Bytes received in order.
    pub(crate) bytes_received: u64,
    /// Latest delivery-rate sample, bytes per second.
    pub(crate) delivery_rate: u64,
    /// Whether that sample was limited by the application, not the network.
    pub(crate) app_limited: bool,
}

fn u32_at(b: &[u8], r: Range<usize>) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(r)?.try_into().ok()?))
}

fn u64_at(b: &[u8], r: Range<usize>) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(r)?.try_into().ok()?))
}

impl TcpInfo {
    /// Reads the figures from the attribute's bytes; `None` if the kernel
    /// sent fewer bytes than the delivery rate needs (kernels before 4.9).
    pub(crate) fn parse(b: &[u8]) -> Option<TcpInfo> {
        let ssthresh = u32_at(b, SND_SSTHRESH)?;
        Some(TcpInfo {
            rtt_us: u32_at(b, RTT)?,
            rttvar_us: u32_at(b, RTTVAR)?,
            cwnd: u32_at(b, SND_CWND)?,
            ssthresh: (ssthresh < INFINITE_SSTHRESH).then_some(ssthresh),
            retransmits: *b.get(RETRANSMITS)?,
            bytes_acked: u64_at(b, BYTES_ACKED)?,
            bytes_received: u64_at(b, BYTES_RECEIVED)?,
            delivery_rate: u64_at(b, DELIVERY_RATE)?,
            app_limited: b.get(APP_LIMITED)? & 1 == 1,
        })
    }

    /// `rtt=0.045 ms rttvar=0.022 ms cwnd=10 ...` (the names of `ss -i`).
    pub(crate) fn format(&self) -> String {
        let ms = |us: u32| f64::from(us) / 1000.0;
        let ssthresh = self
            .ssthresh
            .map_or_else(|| "inf".to_string(), |s| s.to_string());
        format!(
            "rtt={:.3} ms rttvar={:.3} ms cwnd={} ssthresh={ssthresh} retransmits={} \
             bytes_acked={} bytes_received={} delivery_rate={} app_limited={}",
            ms(self.rtt_us),
            ms(self.rttvar_us),
            self.cwnd,
            self.retransmits,
            self.bytes_acked,
            self.bytes_received,
            rate(self.delivery_rate),
            if self.app_limited { "yes" } else { "no" }
        )
    }
}

/// Bytes per second as bits per second with a unit, as `ss` prints it.
fn rate(bytes_per_s: u64) -> String {
    let bits = bytes_per_s as f64 * 8.0;
    if bits >= 1e9 {
        format!("{:.1}Gbps", bits / 1e9)
    } else if bits >= 1e6 {
        format!("{:.1}Mbps", bits / 1e6)
    } else if bits >= 1e3 {
        format!("{:.1}kbps", bits / 1e3)
    } else {
        format!("{bits:.0}bps")
    }
}

/// The last figures printed per socket, so only changes are printed.
#[derive(Default)]
pub(crate) struct InfoWatch {
    /// Per connection, the figures last shown.
    prev: HashMap<Key, TcpInfo>,
}

impl InfoWatch {
    /// The lines for the sockets whose figures differ from the last ones
    /// shown; `t` is the printed time. Sockets no longer there are
    /// forgotten.
    pub(crate) fn update(&mut self, t: f64, now: &[(Key, Vec<u8>)]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut seen = HashMap::new();
        for (key, bytes) in now {
            let Some(info) = TcpInfo::parse(bytes) else {
                continue;
            };
            if self.prev.get(key) != Some(&info) {
                lines.push(format!(
                    "{t:8.3} {} -> {} info {}",
                    format_addr(key.local),
                    format_addr(key.remote),
                    info.format()
                ));
            }
            seen.insert(*key, info);
        }
        self.prev = seen;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 232];
        b[RETRANSMITS] = 1;
        b[APP_LIMITED] = 1;
        b[RTT].copy_from_slice(&45u32.to_ne_bytes());
        b[RTTVAR].copy_from_slice(&22u32.to_ne_bytes());
        b[SND_SSTHRESH].copy_from_slice(&INFINITE_SSTHRESH.to_ne_bytes());
        b[SND_CWND].copy_from_slice(&10u32.to_ne_bytes());
        b[BYTES_ACKED].copy_from_slice(&12u64.to_ne_bytes());
        b[BYTES_RECEIVED].copy_from_slice(&11u64.to_ne_bytes());
        b[DELIVERY_RATE].copy_from_slice(&1_000_000u64.to_ne_bytes());
        b
    }

    #[test]
    fn figures_come_from_their_offsets() {
        let i = TcpInfo::parse(&sample()).unwrap();
        assert_eq!(
            i.format(),
            "rtt=0.045 ms rttvar=0.022 ms cwnd=10 ssthresh=inf retransmits=1 \
             bytes_acked=12 bytes_received=11 delivery_rate=8.0Mbps app_limited=yes"
        );
        assert_eq!(TcpInfo::parse(&sample()[..100]), None);
    }

    #[test]
    fn only_changes_are_printed() {
        let key = Key {
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
        };
        let mut w = InfoWatch::default();
        let one = [(key, sample())];
        assert_eq!(w.update(0.0, &one).len(), 1);
        assert!(w.update(0.1, &one).is_empty());
        let mut b = sample();
        b[SND_CWND].copy_from_slice(&20u32.to_ne_bytes());
        let l = w.update(0.2, &[(key, b)]);
        assert!(l[0].contains("cwnd=20"), "{l:?}");
        assert!(w.update(0.3, &[]).is_empty());
        assert_eq!(w.update(0.4, &one).len(), 1, "a socket back is new again");
    }
}
