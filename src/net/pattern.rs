//! The bytes of every message: unique to a (connection, round) pair and
//! cheap to make, so an echo that returns another connection's bytes, an
//! old message, or anything shifted by one byte is caught, with the offset.
//!
//! Pure functions, no I/O. Word `i` (8 bytes, little-endian) of message
//! (`conn`, `round`) is `S(conn)[i] ^ K(round)`: `S` is a splitmix64 stream
//! seeded from the connection, `K` a bijection of the round, so two rounds
//! of one connection differ in every word and two connections differ
//! everywhere. The next round's message is the last one XORed with one
//! word ([`advance`]): a 64 KiB message costs one vectorised pass, not 8192
//! hashes, and the check stays cheaper than the kernel's copy of the bytes.

/// splitmix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Spreads connection ids apart from round numbers before mixing, so that
/// (conn 1, round 0) and (conn 0, round 1) do not share a seed.
const CONN_SPREAD: u64 = 0xD6E8_FEB8_6659_FD93;

/// splitmix64's finaliser: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream's starting point for connection `conn`.
fn seed(conn: u64) -> u64 {
    mix(conn.wrapping_mul(CONN_SPREAD) ^ CONN_SPREAD)
}

/// The word XORed into every word of round `round` (distinct per round,
/// since both steps are bijections).
fn key(round: u64) -> u64 {
    mix(round.wrapping_add(GOLDEN))
}

/// Fills `buf` with the message of connection `conn`, round `round`.
pub(crate) fn fill(conn: u64, round: u64, buf: &mut [u8]) {
    let k = key(round);
    let mut state = seed(conn);
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(GOLDEN);
        let word = (mix(state) ^ k).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Turns the message of round `from` in `buf` into that of round `to`, for
/// the same connection.
pub(crate) fn advance(buf: &mut [u8], from: u64, to: u64) {
    let d = key(from) ^ key(to);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_le_bytes(*w) ^ d).to_le_bytes();
    }
    for (b, db) in tail.iter_mut().zip(d.to_le_bytes()) {
        *b ^= db;
    }
}

/// Where `got` first differs from `want` (compared up to the shorter one).
pub(crate) fn first_difference(want: &[u8], got: &[u8]) -> Option<usize> {
    let n = want.len().min(got.len());
    if want[..n] == got[..n] {
        return None;
    }
    want[..n].iter().zip(&got[..n]).position(|(a, b)| a != b)
}

/// Whether `got` is exactly the message of (`conn`, `round`); `scratch` is
/// reused to avoid an allocation per check.
pub(crate) fn is_message(conn: u64, round: u64, got: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.resize(got.len(), 0);
    fill(conn, round, scratch);
    scratch[..] == *got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conn: u64, round: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(conn, round, &mut v);
        v
    }

    #[test]
    fn messages_differ_by_connection_and_round() {
        let a = message(0, 1, 64);
        assert_ne!(a, message(1, 0, 64));
        assert_ne!(a, message(0, 2, 64));
        assert_ne!(a, message(1, 1, 64));
        assert_eq!(a, message(0, 1, 64));
    }

    #[test]
    fn a_prefix_is_the_shorter_message() {
        // A message of 10 bytes is the first 10 bytes of the 64-byte one, so
        // sizes that are not a multiple of 8 still follow the same stream.
        assert_eq!(message(3, 7, 10)[..], message(3, 7, 64)[..10]);
    }

    #[test]
    fn advance_gives_the_next_rounds_message() {
        for len in [1, 7, 8, 61, 64, 1000] {
            let mut m = message(4, 10, len);
            advance(&mut m, 10, 11);
            assert_eq!(m, message(4, 11, len), "len {len}");
            advance(&mut m, 11, 3);
            assert_eq!(m, message(4, 3, len), "len {len}");
        }
    }

    #[test]
    fn rounds_differ_in_every_word() {
        let (a, b) = (message(9, 1, 4096), message(9, 2, 4096));
        assert!(a.chunks(8).zip(b.chunks(8)).all(|(x, y)| x != y));
    }

    #[test]
    fn first_difference_names_the_offset() {
        let a = message(2, 2, 100);
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[57] ^= 1;
        assert_eq!(first_difference(&a, &b), Some(57));
        assert_eq!(first_difference(&a, &b[..50]), None);
    }

    #[test]
    fn is_message_checks_the_whole_datagram() {
        let mut scratch = Vec::new();
        let a = message(5, 9, 33);
        assert!(is_message(5, 9, &a, &mut scratch));
        assert!(!is_message(5, 8, &a, &mut scratch));
    }
}
