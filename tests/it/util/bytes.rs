//! Deterministic pseudo-random bytes, and comparing byte streams so a
//! failure names the first wrong byte.

use super::*;

/// xorshift64* (Vigna): fast, deterministic, good enough for payloads and
/// chunk sizes. The same seed always gives the same stream, so a failing run
/// can be replayed and a long payload regenerated instead of stored.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is the one state xorshift cannot leave; mix the seed so that
        // small seeds (1, 2, 3) still start far apart.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        Rng(if s == 0 { 1 } else { s })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }

    /// A write size: mostly mid-sized, sometimes tiny, sometimes larger than
    /// any socket buffer chunk, so both short and long writes are exercised.
    pub(super) fn chunk_size(&mut self) -> usize {
        match self.range(0, 9) {
            0 => self.range(1, 16),
            1..=4 => self.range(1, 1500),
            5..=7 => self.range(1, 16 * KIB),
            _ => self.range(16 * KIB, 200 * KIB),
        }
    }
}

/// A seed derived from a name (FNV-1a), so each test has its own stream.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// `Ok` if `got == want`; otherwise names the first differing offset and
/// the lengths, instead of dumping megabytes.
pub fn compare(what: &str, want: &[u8], got: &[u8]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    let first = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let show = |v: &[u8]| {
        let end = (first + 8).min(v.len());
        format!("{:02x?}", &v[first.min(end)..end])
    };
    Err(format!(
        "{what}: sent {} bytes, got {} back; first difference at offset {first} \
         (want {}, got {})",
        want.len(),
        got.len(),
        show(want),
        show(got),
    ))
}
