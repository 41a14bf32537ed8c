//! Per-connection state of the event-driven models (epoll, tokio), kept pure
//! so it can be tested without sockets:
//! - [`Pending`]: the bytes read but not yet written back, capped at
//!   [`PENDING_CAP`]. A worker reads into one shared buffer and writes back at
//!   once; only what the kernel would not take lands here, so an idle
//!   connection holds no buffer at all.

/// Most bytes kept for a client whose echo the kernel will not take. At the
/// cap the worker stops reading that client (backpressure), so memory per
/// connection never exceeds this however much a client sends.
pub const PENDING_CAP: usize = 64 * 1024;

/// Bytes read from a client and not yet written back, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    /// Storage; `buf[head..]` is what is left to write. Empty (no
    /// allocation) whenever everything has been written back.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written back.
    head: usize,
}

impl Pending {
    /// An empty buffer; allocates nothing until bytes are kept.
    pub const fn new() -> Self {
        Pending {
            buf: Vec::new(),
            head: 0,
        }
    }

    /// Bytes left to write back.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when everything read has been written back.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True at the cap: stop reading this client until the kernel takes some.
    pub fn is_full(&self) -> bool {
        self.len() >= PENDING_CAP
    }

    /// How many more bytes may be kept; read at most this much.
    pub fn room(&self) -> usize {
        PENDING_CAP.saturating_sub(self.len())
    }

    /// The bytes to write back next.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Keeps as much of `bytes` as fits under the cap, after what is already
    /// kept; returns how many were kept. A caller that reads at most
    /// [`Pending::room`] bytes never loses any.
    pub fn keep(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        if n == 0 {
            return 0;
        }
        if self.buf.len() + n > self.buf.capacity() {
            // Move the unwritten tail to the front before growing, so the
            // storage never exceeds the cap.
            self.buf.drain(..self.head);
            self.head = 0;
            let want = (self.buf.len() + n)
                .max(self.buf.capacity().saturating_mul(2))
                .min(PENDING_CAP);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// Drops the first `n` bytes, which the kernel took. Frees the storage
    /// once nothing is left, so an idle connection costs no buffer.
    pub fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.buf.len() {
            self.buf = Vec::new();
            self.head = 0;
        }
    }

    /// Bytes of heap this buffer holds now (for tests and accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl crate::contract::Copied for Pending {
    fn piece(bytes: &[u8]) -> &[u8] {
        bytes
    }

    fn as_slice(&self) -> &[u8] {
        Pending::as_slice(self)
    }
}

impl crate::contract::Store for Pending {
    type Piece<'a> = &'a [u8];

    fn len(&self) -> usize {
        Pending::len(self)
    }

    fn room(&self) -> usize {
        Pending::room(self)
    }

    fn piece_len(piece: &&[u8]) -> usize {
        piece.len()
    }

    /// Callers read at most [`Pending::room`], so all of it fits; were one
    /// to read more, the rest is kept all the same (memory over the cap is
    /// better than a lost byte).
    fn keep(&mut self, piece: &[u8], skip: usize) -> usize {
        let rest = &piece[skip.min(piece.len())..];
        let kept = Pending::keep(self, rest);
        if kept < rest.len() {
            self.buf.extend_from_slice(&rest[kept..]);
        }
        piece.len()
    }

    fn consume(&mut self, n: usize) {
        Pending::consume(self, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_keeps_order_across_partial_writes() {
        let mut p = Pending::new();
        assert_eq!(p.keep(b"hello "), 6);
        p.consume(2);
        assert_eq!(p.keep(b"world"), 5);
        assert_eq!(p.as_slice(), b"llo world");
        p.consume(4);
        assert_eq!(p.as_slice(), b"world");
    }

    #[test]
    fn pending_stops_at_the_cap() {
        let mut p = Pending::new();
        let big = vec![7u8; PENDING_CAP + 100];
        assert_eq!(p.keep(&big), PENDING_CAP);
        assert!(p.is_full());
        assert_eq!(p.room(), 0);
        assert_eq!(p.keep(b"x"), 0);
        assert!(p.capacity() <= PENDING_CAP);
        p.consume(10);
        assert_eq!(p.room(), 10);
        assert_eq!(p.keep(&big), 10);
        assert_eq!(p.len(), PENDING_CAP);
        assert!(p.capacity() <= PENDING_CAP);
    }

    #[test]
    fn pending_frees_its_storage_once_written_back() {
        let mut p = Pending::new();
        assert_eq!(p.capacity(), 0);
        p.keep(&[1u8; 1000]);
        assert!(p.capacity() >= 1000);
        p.consume(999);
        assert_eq!(p.len(), 1);
        p.consume(5);
        assert!(p.is_empty());
        assert_eq!(p.capacity(), 0);
    }

    #[test]
    fn pending_matches_a_plain_queue_and_stays_under_the_cap() {
        let mut p = Pending::new();
        let mut model: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        for round in 0..2000u32 {
            let chunk: Vec<u8> = (0..1500u32).map(|i| (round * 7 + i) as u8).collect();
            let kept = p.keep(&chunk);
            model.extend(&chunk[..kept]);
            // Write back a bit less than comes in, so the cap is reached.
            let n = (kept * 9 / 10).min(p.len());
            p.consume(n);
            model.drain(..n);
            assert!(p.capacity() <= PENDING_CAP);
            assert_eq!(p.len(), model.len());
        }
        assert!(p.is_full());
        assert!(p.as_slice().iter().eq(model.iter()));
    }
}
