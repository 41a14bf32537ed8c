//! What a buffer-path connection holds between a receive and its echo:
//! pieces of provided buffers, in order, and — once it has spilled — its
//! own copy. Pure code: which buffer to give back and when, how a spill
//! copies, what the next send sends from; the pool and the ring are
//! reached only through the closures passed in, so every rule here is
//! tested without a ring.

use std::collections::VecDeque;

use super::tuning::HELD_BYTES;
use crate::serve::contract::Store;

/// Received bytes not yet echoed: one piece of a provided buffer (all of it
/// unless the ring is incremental), held until its last byte is sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub(super) bid: u16,
    /// Where in the buffer the piece starts.
    pub(super) off: u32,
    pub(super) len: u32,
    /// Bytes of it already sent.
    pub(super) sent: u32,
}

impl Chunk {
    /// A piece the kernel just filled: nothing of it sent.
    pub(super) fn new(bid: u16, off: u32, len: u32) -> Chunk {
        Chunk {
            bid,
            off,
            len,
            sent: 0,
        }
    }

    /// Where in its buffer the unsent bytes start.
    pub(super) fn unsent_at(&self) -> usize {
        (self.off + self.sent) as usize
    }

    /// Bytes of it not yet sent.
    pub(super) fn unsent(&self) -> usize {
        (self.len - self.sent) as usize
    }
}

/// The connection core's [`Store`] on the buffer path: the kernel-filled
/// pieces of buffers themselves, in order, so bytes are never copied. Fully
/// sent pieces stay at the front until [`Held::pop_done`] releases them to
/// the pool (which republishes a buffer once every piece of it is released).
///
/// A connection paused for backpressure while the ring runs low (or while
/// another connection found it empty) *spills*: its held bytes are copied
/// into its own heap buffer, and every piece of a provided buffer it held
/// is released ([`Held::spill_all`]). From then on what it receives is
/// copied there too while it has room ([`Held::absorb`]), and its echo is
/// sent from that copy. So a client that never reads keeps at most its own
/// spill — about [`HELD_BYTES`] plus one buffer, or the one burst it took
/// before its first pause — and no provided buffer: the ring, shared by
/// every connection of the worker, can only be held by connections whose
/// echo moves, and no client can starve the others by not reading.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Bytes spilled out of the ring, older than every chunk. `None` while
    /// lent to the send in flight ([`Held::lend_spill`]).
    ///
    /// Boxed: most connections never spill, and a connection's slot is the
    /// server's memory per connection (a million idle ones hold none).
    spill: Option<Box<Spill>>,
    /// The oldest chunk held, inline: an echo of small messages holds one
    /// at a time, so most connections never allocate for their chunks (an
    /// idle connection's memory is its slot, and a deque allocated at its
    /// first message would add 80 bytes to it).
    first: Option<Chunk>,
    /// The chunks after `first`, in order, for a connection that once held
    /// more than one (a message across two buffers, a client ahead of its
    /// echo). Kept once allocated, so that holding two chunks at every
    /// message costs no allocation per message; boxed, so the connections
    /// that never need it pay one word. Never holds a chunk while `first`
    /// is empty.
    rest: Option<Rest>,
    /// Bytes received and not yet sent.
    unsent: usize,
    /// Buffers one connection may hold before its receive pauses
    /// ([`super::tuning::Tuning::held_cap`]).
    cap_bufs: u16,
    /// The spill is out, owned by the send in flight.
    lent: bool,
}

/// The chunks a connection holds after its first ([`Held`]): boxed, so a
/// slot pays one word for them, not a deque's four.
type Rest = Box<VecDeque<Chunk>>;

/// [`Held::pop_chunk`] on its two fields, for a caller that has the spill
/// borrowed.
fn pop_chunk(first: &mut Option<Chunk>, rest: &mut Option<Rest>) -> Option<Chunk> {
    let c = first.take()?;
    *first = rest.as_mut().and_then(|r| r.pop_front());
    Some(c)
}

/// A connection's spilled bytes ([`Held`]).
#[derive(Debug, Default)]
pub(super) struct Spill {
    /// The bytes; those from `sent` on are unsent.
    bytes: Vec<u8>,
    sent: usize,
}

impl Spill {
    /// Unsent bytes.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent.min(self.bytes.len())..]
    }

    /// Appends a copy made by `copy`, only if it fits in the spare
    /// capacity: the bytes already there never move, so a send in flight
    /// from them reads them where it was told they are.
    fn append_in_place(&mut self, len: usize, copy: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.bytes.capacity() - self.bytes.len() < len {
            return false;
        }
        copy(&mut self.bytes);
        true
    }
}

/// What the next send of a connection sends from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Front {
    /// Unsent bytes of the spill.
    Spill,
    /// The first unsent chunk.
    Chunk(Chunk),
}

impl Held {
    pub(super) fn new(cap_bufs: usize) -> Held {
        Held {
            spill: None,
            first: None,
            rest: None,
            unsent: 0,
            cap_bufs: u16::try_from(cap_bufs).unwrap_or(u16::MAX),
            lent: false,
        }
    }

    /// The chunks held, oldest first.
    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// Holds one more chunk, after the others.
    fn push_chunk(&mut self, c: Chunk) {
        if self.first.is_none() {
            self.first = Some(c);
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(c);
        }
    }

    /// Takes the oldest chunk; the next one (if any) moves inline.
    fn pop_chunk(&mut self) -> Option<Chunk> {
        pop_chunk(&mut self.first, &mut self.rest)
    }

    /// Unsent bytes in the spill at home (0 while it is lent).
    fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.bytes.len() - s.sent)
    }

    /// Where the next send starts: the spill first (its bytes are older).
    /// `None` while the spill is lent: a send is in flight.
    pub(super) fn front(&self) -> Option<Front> {
        if self.lent {
            return None;
        }
        if self.spilled() > 0 {
            return Some(Front::Spill);
        }
        // The inline chunk first: with one message in flight, the only one.
        match self.first {
            Some(c) if c.sent < c.len => Some(Front::Chunk(c)),
            _ => self
                .rest
                .as_deref()?
                .iter()
                .find(|c| c.sent < c.len)
                .copied()
                .map(Front::Chunk),
        }
    }

    /// Hands the spill to the send of its unsent bytes, which owns it until
    /// its completion gives it back with [`Held::unlend`].
    pub(super) fn lend_spill(&mut self) -> Option<Box<Spill>> {
        if self.lent || self.spilled() == 0 {
            return None;
        }
        self.lent = true;
        self.spill.take()
    }

    /// The send of the spill completed: it is home again. Must come before
    /// the core hears what the send took ([`Store::consume`]).
    pub(super) fn unlend(&mut self, spill: Box<Spill>) {
        self.spill = Some(spill);
        self.lent = false;
    }

    /// Takes a buffer whose bytes are all sent off the front.
    pub(super) fn pop_done(&mut self) -> Option<u16> {
        match self.first {
            Some(c) if c.sent >= c.len => self.pop_chunk().map(|c| c.bid),
            _ => None,
        }
    }

    /// Takes every chunk, sent or not: the connection is closing.
    pub(super) fn pop_any(&mut self) -> Option<u16> {
        self.pop_chunk().map(|c| c.bid)
    }

    /// Buffers held, sent or not.
    pub(super) fn bufs(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// Nothing held at all: no buffer, no spilled byte.
    pub(super) fn drained(&self) -> bool {
        !self.lent && self.first.is_none() && self.spilled() == 0
    }

    /// With no send in flight: frees a fully sent spill, or drops its sent
    /// prefix, so the spill's memory is only what is unsent.
    pub(super) fn settle(&mut self) {
        if self.lent {
            return;
        }
        if self.spilled() == 0 {
            self.spill = None;
        } else if let Some(s) = &mut self.spill
            && s.sent > 0
        {
            s.bytes.drain(..s.sent);
            s.sent = 0;
        }
    }

    /// With no send in flight: copies every unsent byte of the held
    /// buffers into the spill, after the bytes already there, and hands
    /// each buffer to `give_back`. Leaves room for one more echo buffer and
    /// one received buffer, so that the single receives that follow are
    /// copied in without moving the spill under a send.
    pub(super) fn spill_all(
        &mut self,
        buf_size: usize,
        mut copy: impl FnMut(u16, usize, usize, &mut Vec<u8>),
        mut give_back: impl FnMut(u16),
    ) {
        if self.lent {
            return;
        }
        self.settle();
        let in_chunks: usize = self.chunks().map(Chunk::unsent).sum();
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.bytes.reserve(in_chunks + HELD_BYTES + buf_size);
        while let Some(c) = pop_chunk(&mut self.first, &mut self.rest) {
            if c.sent < c.len {
                copy(c.bid, c.unsent_at(), c.unsent(), &mut spill.bytes);
            }
            give_back(c.bid);
        }
    }

    /// After a receive, while the spill has unsent bytes (so any send in
    /// flight is from the spill, never from a chunk): copies held chunks
    /// into the spill's spare capacity, oldest first, and hands their
    /// buffers to `give_back`. `lent` is the spill while the send in
    /// flight owns it. A chunk that does not fit stays held until the next
    /// [`Held::spill_all`].
    pub(super) fn absorb(
        &mut self,
        lent: Option<&mut Spill>,
        mut copy: impl FnMut(u16, usize, usize, &mut Vec<u8>),
        mut give_back: impl FnMut(u16),
    ) {
        let spill = match lent {
            Some(s) if self.lent => s,
            _ if self.lent => return,
            _ => match self.spill.as_deref_mut() {
                Some(s) => s,
                None => return,
            },
        };
        if spill.unsent().is_empty() {
            return;
        }
        while let Some(c) = self.first {
            let left = c.unsent();
            if !spill.append_in_place(left, |to| copy(c.bid, c.unsent_at(), left, to)) {
                return;
            }
            pop_chunk(&mut self.first, &mut self.rest);
            give_back(c.bid);
        }
    }
}

impl Store for Held {
    type Piece<'a> = Chunk;

    fn len(&self) -> usize {
        self.unsent
    }

    /// Over about one echo buffer of bytes, or over the buffer cap, reading
    /// pauses. A multishot receive may post a few buffers more before its
    /// cancel lands; they are kept all the same, never dropped.
    fn room(&self) -> usize {
        if self.unsent > HELD_BYTES || self.bufs() > usize::from(self.cap_bufs) {
            0
        } else {
            HELD_BYTES + 1 - self.unsent
        }
    }

    fn piece_len(piece: &Chunk) -> usize {
        piece.len as usize
    }

    fn keep(&mut self, mut piece: Chunk, skip: usize) -> usize {
        let skip = u32::try_from(skip).unwrap_or(u32::MAX).min(piece.len);
        piece.sent = skip;
        self.unsent += (piece.len - skip) as usize;
        self.push_chunk(piece);
        piece.len as usize
    }

    fn consume(&mut self, mut n: usize) {
        debug_assert!(!self.lent, "the spill is given back before consume");
        let from_spill = self.spilled().min(n);
        if let Some(s) = &mut self.spill {
            s.sent += from_spill;
        }
        self.unsent -= from_spill;
        n -= from_spill;
        // The inline chunk first: with one message in flight, the only one.
        if let Some(c) = &mut self.first
            && n > 0
        {
            let take = c.unsent().min(n);
            c.sent += take as u32;
            n -= take;
            self.unsent -= take;
        }
        if n == 0 {
            return;
        }
        for c in self.rest.iter_mut().flat_map(|r| r.iter_mut()) {
            if n == 0 {
                break;
            }
            let take = c.unsent().min(n);
            c.sent += take as u32;
            n -= take;
            self.unsent -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(bid: u16, len: u32) -> Chunk {
        Chunk::new(bid, 0, len)
    }

    /// Buffer `bid` holds bytes `bid * 10 ..`: this copy fakes the pool
    /// with that rule.
    fn fake(b: u16, off: usize, len: usize, to: &mut Vec<u8>) {
        to.extend((off..off + len).map(|i| (usize::from(b) * 10 + i) as u8));
    }

    #[test]
    fn held_buffers_go_back_in_order_once_fully_sent() {
        let mut h = Held::new(4);
        h.keep(chunk(3, 100), 0);
        h.keep(chunk(5, 50), 0);
        assert_eq!(Store::len(&h), 150);
        h.consume(60);
        assert_eq!(h.pop_done(), None, "buffer 3 still has 40 bytes to send");
        assert!(matches!(h.front(), Some(Front::Chunk(c)) if (c.bid, c.sent) == (3, 60)));
        h.consume(40);
        assert!(matches!(h.front(), Some(Front::Chunk(c)) if c.bid == 5));
        assert_eq!(h.pop_done(), Some(3));
        assert_eq!(h.pop_done(), None);
        h.consume(50);
        assert_eq!(h.pop_done(), Some(5));
        assert_eq!((Store::len(&h), h.bufs()), (0, 0));
    }

    #[test]
    fn one_chunk_at_a_time_allocates_nothing_and_more_keep_their_order() {
        let mut h = Held::new(8);
        for bid in 0..3 {
            h.keep(chunk(bid, 10), 0);
            h.consume(10);
            assert_eq!(h.pop_done(), Some(bid));
        }
        assert!(h.rest.is_none(), "one chunk at a time is held inline");
        for bid in 0..5 {
            h.keep(chunk(bid, 10), 0);
        }
        assert_eq!((h.bufs(), Store::len(&h)), (5, 50));
        h.consume(25);
        assert!(matches!(h.front(), Some(Front::Chunk(c)) if (c.bid, c.sent) == (2, 5)));
        assert_eq!(
            (h.pop_done(), h.pop_done(), h.pop_done()),
            (Some(0), Some(1), None)
        );
        h.keep(chunk(9, 10), 0);
        let mut left = Vec::new();
        while let Some(b) = h.pop_any() {
            left.push(b);
        }
        assert_eq!(left, [2, 3, 4, 9], "in the order received");
        assert!(h.drained());
    }

    /// What the test model does to a `Held` and to its reference.
    #[derive(Debug, Clone)]
    enum Op {
        Keep(u32),
        /// Sends this share (per 256) of what is unsent.
        Send(u8),
        PopDone,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The inline chunk and the deque behind it hold chunks exactly as
        /// one `VecDeque` would: the same order, the same front, the same
        /// buffers given back, whatever mix of receives and sends.
        #[test]
        fn the_inline_chunk_and_the_deque_behave_as_one_queue(
            ops in proptest::collection::vec(
                prop_oneof![
                    (1u32..100).prop_map(Op::Keep),
                    any::<u8>().prop_map(Op::Send),
                    Just(Op::PopDone),
                ],
                1..80,
            ),
        ) {
            let mut h = Held::new(usize::from(u16::MAX));
            let mut model: VecDeque<(u16, u32, u32)> = VecDeque::new();
            let mut next_bid = 0u16;
            for op in ops {
                match op {
                    Op::Keep(len) => {
                        h.keep(chunk(next_bid, len), 0);
                        model.push_back((next_bid, len, 0));
                        next_bid += 1;
                    }
                    Op::Send(share) => {
                        let unsent: usize = model.iter().map(|c| (c.1 - c.2) as usize).sum();
                        let mut n = unsent * usize::from(share) / 256;
                        h.consume(n);
                        for c in model.iter_mut() {
                            let take = ((c.1 - c.2) as usize).min(n);
                            c.2 += take as u32;
                            n -= take;
                        }
                    }
                    Op::PopDone => {
                        let want = match model.front() {
                            Some(&(bid, len, sent)) if sent >= len => {
                                model.pop_front();
                                Some(bid)
                            }
                            _ => None,
                        };
                        prop_assert_eq!(h.pop_done(), want);
                    }
                }
                let unsent: usize = model.iter().map(|c| (c.1 - c.2) as usize).sum();
                prop_assert_eq!((h.bufs(), Store::len(&h)), (model.len(), unsent));
                let front = model.iter().find(|c| c.2 < c.1).map(|c| (c.0, c.2));
                let got = match h.front() {
                    Some(Front::Chunk(c)) => Some((c.bid, c.sent)),
                    _ => None,
                };
                prop_assert_eq!(got, front);
            }
            let mut left = Vec::new();
            while let Some(b) = h.pop_any() {
                left.push(b);
            }
            let want: Vec<u16> = model.iter().map(|c| c.0).collect();
            prop_assert_eq!(left, want);
        }
    }

    #[test]
    fn a_spill_gives_every_buffer_back_and_keeps_the_order() {
        let mut h = Held::new(4);
        h.keep(chunk(1, 4), 0);
        h.keep(chunk(2, 3), 0);
        h.consume(1);
        let mut back = Vec::new();
        h.spill_all(8, fake, |b| back.push(b));
        assert_eq!(back, [1, 2], "every held buffer goes back to the ring");
        assert_eq!((h.bufs(), Store::len(&h), h.spilled()), (0, 6, 6));
        assert!(matches!(h.front(), Some(Front::Spill)));
        assert_eq!(h.spill.as_ref().unwrap().unsent(), [11, 12, 13, 20, 21, 22]);
        // A receive while spilled is copied in after what is there.
        h.keep(chunk(5, 2), 0);
        h.absorb(None, fake, |b| back.push(b));
        assert_eq!(back, [1, 2, 5]);
        assert_eq!(
            h.spill.as_ref().unwrap().unsent(),
            [11, 12, 13, 20, 21, 22, 50, 51]
        );
        h.consume(8);
        assert!(h.drained());
        h.settle();
        assert!(h.spill.is_none(), "a sent spill frees its memory");
    }

    #[test]
    fn a_lent_spill_takes_receives_in_place_and_comes_back_whole() {
        let mut h = Held::new(4);
        h.keep(chunk(1, 4), 0);
        let mut back = Vec::new();
        h.spill_all(8, fake, |b| back.push(b));
        let mut lent = h.lend_spill().expect("the spill has unsent bytes");
        let at = lent.unsent().as_ptr();
        assert!(h.front().is_none() && !h.drained(), "a send is in flight");
        assert!(h.lend_spill().is_none(), "lent once");
        // A receive while the send owns the spill: appended in place.
        h.keep(chunk(6, 2), 0);
        h.absorb(Some(&mut lent), fake, |b| back.push(b));
        assert_eq!(back, [1, 6]);
        assert_eq!(lent.unsent(), [10, 11, 12, 13, 60, 61]);
        assert_eq!(lent.unsent().as_ptr(), at, "the bytes in flight never move");
        h.settle();
        h.unlend(lent);
        h.consume(4);
        assert!(matches!(h.front(), Some(Front::Spill)));
        assert_eq!(h.spill.as_ref().unwrap().unsent(), [60, 61]);
    }

    #[test]
    fn a_chunk_that_does_not_fit_the_spill_stays_held() {
        let mut h = Held::new(4);
        h.keep(chunk(1, 4), 0);
        h.spill_all(0, fake, |_| {});
        let room = {
            let s = h.spill.as_ref().unwrap();
            s.bytes.capacity() - s.bytes.len()
        };
        h.keep(chunk(2, room as u32 + 1), 0);
        let mut back = Vec::new();
        h.absorb(None, fake, |b| back.push(b));
        assert!(back.is_empty(), "over the spare room: kept in its buffer");
        assert_eq!(h.bufs(), 1);
    }

    #[test]
    fn reading_pauses_over_one_echo_buffer_or_over_the_buffer_cap() {
        let mut h = Held::new(2);
        assert!(h.room() > 0);
        // One full 64 KiB message held is not yet a reason to pause.
        h.keep(chunk(0, HELD_BYTES as u32), 0);
        assert!(h.room() > 0);
        h.keep(chunk(1, 1), 0);
        assert_eq!(h.room(), 0, "over HELD_BYTES");
        let mut h = Held::new(2);
        for bid in 0..3 {
            h.keep(chunk(bid, 10), 0);
        }
        assert_eq!(h.room(), 0, "over the buffer cap");
    }
}
