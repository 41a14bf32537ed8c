//! The store of the blocking loops: nothing is copied. A blocking model
//! reads into its one buffer and sends from it until the read is all sent
//! before it reads again, so what the core keeps is just the unsent tail
//! of that buffer, as a range. The core's rules (order, the FIN after the
//! last byte, the close reasons) then hold for the blocking loops as they
//! do for the event models, with no byte moved twice.

use crate::contract::Store;

/// The unsent part of the blocking loop's buffer, `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    /// The buffer's length: how much one read may take.
    cap: usize,
    /// First byte not yet sent.
    start: usize,
    /// End of what the last read put there.
    end: usize,
}

impl InPlace {
    /// A store over a buffer of `cap` bytes, empty.
    pub const fn new(cap: usize) -> Self {
        InPlace {
            cap,
            start: 0,
            end: 0,
        }
    }

    /// Where in the buffer the bytes still to send lie.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl Store for InPlace {
    /// The length of a read into the front of the buffer.
    type Piece<'a> = usize;

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// The whole buffer when all was sent; nothing while a tail waits (the
    /// next read would overwrite it).
    fn room(&self) -> usize {
        if self.start == self.end { self.cap } else { 0 }
    }

    fn piece_len(piece: &usize) -> usize {
        *piece
    }

    /// A read of `piece` bytes landed at the front of the buffer (the only
    /// place a read goes, since it happens only when nothing is kept).
    fn keep(&mut self, piece: usize, skip: usize) -> usize {
        debug_assert!(self.start == self.end, "a read over unsent bytes");
        self.start = skip.min(piece);
        self.end = piece;
        piece
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Conn, End, Next};
    use std::time::Instant;

    #[test]
    fn a_read_is_sent_from_where_it_landed_then_the_buffer_is_free() {
        let now = Instant::now();
        let mut c = Conn::new(now, InPlace::new(100));
        assert_eq!(
            c.next(),
            Next::Io {
                send: false,
                read: 100
            }
        );
        c.on_read(now, 60, 0);
        assert_eq!(c.store().range(), 0..60);
        assert_eq!(
            c.next(),
            Next::Io {
                send: true,
                read: 0
            },
            "no read over the tail"
        );
        c.on_sent(now, 25);
        assert_eq!(c.store().range(), 25..60);
        c.on_sent(now, 35);
        assert_eq!(c.store().range(), 0..0);
        assert_eq!(
            c.next(),
            Next::Io {
                send: false,
                read: 100
            }
        );
        c.on_fin();
        assert_eq!(c.next(), Next::ShutWrite);
        c.on_shut(Ok(()));
        assert_eq!(c.next(), Next::Close(End::Fin));
    }

    #[test]
    fn a_fin_waits_for_the_tail() {
        let now = Instant::now();
        let mut c = Conn::new(now, InPlace::new(10));
        c.on_read(now, 10, 4);
        assert_eq!(c.store().range(), 4..10, "written through: 4 bytes");
        c.on_fin();
        assert_eq!(
            c.next(),
            Next::Io {
                send: true,
                read: 0
            }
        );
        c.on_sent(now, 6);
        assert_eq!(c.next(), Next::ShutWrite);
    }

    #[test]
    fn an_oversized_consume_empties_without_going_past_the_end() {
        let mut s = InPlace::new(8);
        s.keep(5, 0);
        s.consume(9);
        assert_eq!((s.len(), s.room()), (0, 8));
    }
}
