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

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::serve::ctx::Ctx;

/// A client's place under the limits, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    ctx: &'static Ctx,
    /// The address counted under `--max-conns-per-ip`, if that is set.
    ip: Option<IpAddr>,
    /// Shared with a forked child: the one release of both copies.
    ticket: Option<&'static AtomicBool>,
    /// Given back already (by [`Permit::release`]).
    released: bool,
}

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
            ip: Some(peer.ip()),
            ticket: None,
            released: false,
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
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        if let Some(t) = self.ticket
            && t.swap(true, Ordering::SeqCst)
        {
            // The other copy (the child, or the parent) gave it back.
            return;
        }
        match self.ip {
            Some(ip) => self.ctx.release_ip(ip),
            None => self.ctx.stats.release(),
        }
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
                ip: parent.ip,
                ticket: parent.ticket,
                released: false,
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
