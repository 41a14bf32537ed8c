//! The client's promise, as pure code: every byte that comes back is the
//! byte that was sent at that offset of the stream. Bytes are queued here
//! before they are written to the server and leave the queue once their
//! echo has been compared, so the queue holds exactly the bytes in flight;
//! the caller bounds it ([`WINDOW`]) by not sending more until echoes
//! come back. No I/O: the plain and the TLS client both feed it.

use std::collections::VecDeque;

use crate::error::Error;

/// Most bytes sent and not yet echoed. A server that echoes as it reads
/// never holds this much (the kernel's buffers on both sides are a few
/// MiB at most); a server that reads and never answers makes the client
/// stop sending here instead of queueing all of stdin.
pub(crate) const WINDOW: usize = 16 * 1024 * 1024;

/// How the echo departed from what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Byte `at` of the stream came back as `got`; `sent` was sent.
    Mismatch { at: u64, sent: u8, got: u8 },
    /// Byte `at` came back though only `at` bytes were ever sent.
    Excess { at: u64, got: u8 },
}

/// The bytes sent and not yet echoed, and how far the echo has come.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    queue: VecDeque<u8>,
    /// Bytes whose echo has been checked (the stream offset of the queue's
    /// front).
    echoed: u64,
}

impl Outstanding {
    /// Records bytes about to be sent.
    pub(crate) fn push(&mut self, sent: &[u8]) {
        self.queue.extend(sent);
    }

    /// Bytes sent (or about to be) whose echo has not come back.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes whose echo has come back intact.
    pub(crate) fn echoed(&self) -> u64 {
        self.echoed
    }

    /// Checks `got`, the next bytes of the echo. Returns how many of them
    /// are right (all of them, or the prefix before the fault) and the
    /// fault if there is one; the right ones leave the queue.
    pub(crate) fn check(&mut self, got: &[u8]) -> (usize, Option<Fault>) {
        let (a, b) = self.queue.as_slices();
        let good = common_prefix(a, got);
        let good = if good == a.len() {
            good + common_prefix(b, &got[good..])
        } else {
            good
        };
        self.queue.drain(..good);
        self.echoed += good as u64;
        if good == got.len() {
            return (good, None);
        }
        let at = self.echoed;
        let fault = match self.queue.front() {
            Some(&sent) => Fault::Mismatch {
                at,
                sent,
                got: got[good],
            },
            None => Fault::Excess { at, got: got[good] },
        };
        (good, Some(fault))
    }
}

/// How many leading bytes `a` and `b` share.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    if a[..n] == b[..n] {
        return n;
    }
    a[..n]
        .iter()
        .zip(&b[..n])
        .position(|(x, y)| x != y)
        .unwrap_or(n)
}

/// The error for a fault in the echo.
pub(crate) fn fault_error(fault: Fault) -> Error {
    match fault {
        Fault::Mismatch { at, sent, got } => Error::Mismatch { at, sent, got },
        Fault::Excess { at, .. } => Error::Excess { sent: at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intact_echo_empties_the_queue_in_any_pieces() {
        let mut o = Outstanding::default();
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.check(b"hel"), (3, None));
        assert_eq!(o.check(b"lo wo"), (5, None));
        assert_eq!(o.len(), 3);
        assert_eq!(o.check(b"rld"), (3, None));
        assert_eq!((o.len(), o.echoed()), (0, 11));
    }

    #[test]
    fn the_first_wrong_byte_is_named_with_its_offset() {
        let mut o = Outstanding::default();
        o.push(b"banana\n");
        assert_eq!(o.check(b"b"), (1, None));
        assert_eq!(
            o.check(b"bnbnb"),
            (
                0,
                Some(Fault::Mismatch {
                    at: 1,
                    sent: b'a',
                    got: b'b'
                })
            )
        );
    }

    #[test]
    fn a_fault_across_the_queues_wrap_is_found() {
        // Push and check so the ring wraps, then corrupt after the wrap.
        let mut o = Outstanding::default();
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        o.push(&data[..3000]);
        assert_eq!(o.check(&data[..2500]), (2500, None));
        o.push(&data[3000..]);
        let mut got = data[2500..].to_vec();
        got[2000] ^= 1;
        let (good, fault) = o.check(&got);
        assert_eq!(good, 2000);
        assert_eq!(
            fault,
            Some(Fault::Mismatch {
                at: 4500,
                sent: data[4500],
                got: data[4500] ^ 1
            })
        );
    }

    #[test]
    fn bytes_never_sent_are_excess() {
        let mut o = Outstanding::default();
        o.push(b"ab");
        assert_eq!(
            o.check(b"abc"),
            (2, Some(Fault::Excess { at: 2, got: b'c' }))
        );
        let mut empty = Outstanding::default();
        assert_eq!(
            empty.check(b"x"),
            (0, Some(Fault::Excess { at: 0, got: b'x' }))
        );
    }
}
