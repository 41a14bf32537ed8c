//! Admission, written once: a [`Permit`] is taken when a client is
//! admitted under `--max-conns` and `--max-conns-per-ip`, and gives both
//! back when it is dropped, exactly once (tokio's semaphore permit in
//! mini-redis is the model). Every model holds one per connection.
//!
//! The fork model's child gives its slot back itself, just before its FIN
//! (so a drain or a waiting client sees it free at once), while the parent
//! must give it back when a child dies without doing so. Both hold a copy
//! of the same permit, tied by a [`Ticket`]: a flag in memory shared with
//! the child, and whichever side turns it first gives the slot back; the
//! other finds it turned and does nothing. So a child killed between its
//! release and its exit is not released twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::serve::ctx::Ctx;
use crate::serve::service::per_ip::IpKey;

/// A client's place under the limits, given back on drop. 24 bytes and no
/// address inside: the client is remembered by where `--max-conns-per-ip`
/// counts it (an [`IpKey`]), so an io_uring connection slot holds it
/// unboxed (`a_permit_stays_small` below).
#[derive(Debug)]
pub(crate) struct Permit {
    ctx: &'static Ctx,
    /// [`IpKey::get`] of where the client is counted under
    /// `--max-conns-per-ip` (0 when that is not set), and [`RELEASED`] once
    /// given back: one word where a key and a flag would take two.
    word: u64,
    /// Shared with a forked child: the one release of both copies.
    ticket: Option<&'static AtomicBool>,
}

/// The bit of [`Permit::word`] saying the permit was given back (an
/// [`IpKey`] stays below 2^54).
const RELEASED: u64 = 1 << 63;

impl Permit {
    /// Admits a client under both limits, or counts it rejected (`None`:
    /// close it at once).
    pub(crate) fn take(ctx: &'static Ctx, peer: &SocketAddr) -> Option<Permit> {
        ctx.admit(peer).then(|| Permit::admitted(ctx, peer))
    }

    /// The permit of a client [`Ctx::admit`] already counted (the accept
    /// step admits before it hands the connection over).
    pub(crate) fn admitted(ctx: &'static Ctx, peer: &SocketAddr) -> Permit {
        Permit {
            ctx,
            word: ctx.per_ip_key(peer.ip()).map_or(0, IpKey::get),
            ticket: None,
        }
    }

    /// Ties this permit to `ticket`, shared with a child about to be forked
    /// with a copy of it: the slot is then given back once, by whichever
    /// copy releases first.
    pub(crate) fn with_ticket(mut self, ticket: &'static AtomicBool) -> Permit {
        ticket.store(false, Ordering::SeqCst);
        self.ticket = Some(ticket);
        self
    }

    /// Gives the slot back now (before the FIN, so the next client finds it
    /// free); dropping the permit later does nothing more.
    pub(crate) fn release(&mut self) {
        if self.word & RELEASED != 0 {
            return;
        }
        self.word |= RELEASED;
        if let Some(t) = self.ticket
            && t.swap(true, Ordering::SeqCst)
        {
            // The other copy (the child, or the parent) gave it back.
            return;
        }
        self.ctx
            .release_counted(IpKey::from_word(self.word & !RELEASED));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

/// The flags that tie a fork child's permit to its parent's copy, in memory
/// shared with the children; one per child alive, reused once it is reaped.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    /// Mappings of [`Tickets::CHUNK`] flags, made as more children live at
    /// once than ever before (never unmapped: children may hold them).
    chunks: Vec<&'static [AtomicBool]>,
    /// Flags no live child holds.
    free: Vec<&'static AtomicBool>,
}

/// One flag of [`Tickets`].
pub(crate) type Ticket = &'static AtomicBool;

impl Tickets {
    /// Flags per shared mapping: one page.
    const CHUNK: usize = 4096;

    /// A flag no live child holds.
    pub(crate) fn take(&mut self) -> std::io::Result<Ticket> {
        if self.free.is_empty() {
            // SAFETY: `AtomicBool` is valid all-zero (false).
            let chunk = unsafe { crate::sys::shm::shared_zeroed::<AtomicBool>(Self::CHUNK) }?;
            self.chunks.push(chunk);
            self.free.extend(chunk.iter());
        }
        Ok(self.free.pop().expect("a free ticket"))
    }

    /// Takes back the flag of a reaped child (its permits are both gone).
    pub(crate) fn give_back(&mut self, t: Ticket) {
        self.free.push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::lifecycle::shutdown::Shutdown;

    fn ctx(max_conns: usize, per_ip: Option<u64>) -> &'static Ctx {
        Box::leak(Box::new(Ctx {
            max_conns,
            max_conns_per_ip: per_ip,
            ..Ctx::for_tests(Shutdown::new().unwrap())
        }))
    }

    #[test]
    fn a_permit_gives_its_slot_back_once_on_drop() {
        let ctx = ctx(2, Some(1));
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut p = Permit::take(ctx, &peer).expect("admitted");
        assert_eq!(ctx.stats.active(), 1);
        assert!(Permit::take(ctx, &peer).is_none(), "per-IP limit 1");
        p.release();
        assert_eq!(ctx.stats.active(), 0);
        drop(p);
        assert_eq!(ctx.stats.active(), 0, "released twice");
        let again = Permit::take(ctx, &peer).expect("the slot came back");
        drop(again);
        assert_eq!(ctx.stats.active(), 0);
    }

    /// An io_uring slot holds its permit unboxed: it was 48 bytes behind a
    /// box (an `IpAddr` inside); it is 24.
    #[test]
    fn a_permit_stays_small() {
        let size = std::mem::size_of::<Permit>();
        assert!(size <= 24, "a permit grew to {size} bytes");
    }

    #[test]
    fn a_per_ip_permit_gives_the_address_its_place_back_once() {
        let ctx = ctx(8, Some(2));
        let a: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let b: SocketAddr = "[2001:db8::7]:40003".parse().unwrap();
        for peer in [a, b] {
            let p1 = Permit::take(ctx, &peer).expect("admitted");
            let mut p2 = Permit::take(ctx, &peer).expect("admitted");
            assert!(Permit::take(ctx, &peer).is_none(), "per-IP limit 2");
            assert_eq!(ctx.stats.per_ip.count(peer.ip()), 2);
            p2.release();
            drop(p2);
            assert_eq!(ctx.stats.per_ip.count(peer.ip()), 1, "released twice");
            drop(p1);
            assert_eq!(ctx.stats.per_ip.count(peer.ip()), 0);
        }
        assert_eq!(ctx.stats.active(), 0);
        assert_eq!(ctx.stats.per_ip.tracked(), 0);
    }

    #[test]
    fn two_copies_tied_by_a_ticket_release_once() {
        let ctx = ctx(4, None);
        let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mut tickets = Tickets::default();
        for child_first in [true, false] {
            let t = tickets.take().unwrap();
            let parent = Permit::take(ctx, &peer).unwrap().with_ticket(t);
            // What fork does: the child's copy of the same permit.
            let mut child = Permit {
                ctx,
                word: parent.word,
                ticket: parent.ticket,
            };
            assert_eq!(ctx.stats.active(), 1);
            if child_first {
                child.release();
                drop(parent);
            } else {
                drop(parent);
                child.release();
            }
            std::mem::forget(child);
            assert_eq!(ctx.stats.active(), 0, "child first: {child_first}");
            tickets.give_back(t);
        }
    }
}
