//! A worker's accepting: one multishot accept per listener, its pauses
//! after errors, its end when the server stops, and admission of what it
//! brings.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::cqueue;
use socket2::SockRef;
use tracing::{debug, warn};

use super::conn::{Conn, Path, Slot, peer_of, peer_text};
use super::op::Op;
use super::plain::Plain;
use super::spliced::Spliced;
use super::tls::UringTls;
use super::tuning::ACCEPT_ERROR_PAUSE;
use super::worker::Worker;
use crate::serve::admission::Permit;
use crate::serve::blocking::accept::{self, AcceptError};
use crate::serve::blocking::faulted;
use crate::serve::contract::End;
use crate::serve::transport::splice::Switch;
use netecho_core::tls::{EPROTO, Session};

/// The address a permit is taken for when no `--max-conns-per-ip` needs
/// the real one (a multishot accept gives none, and asking costs a system
/// call per connection).
const UNADDRESSED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Worker {
    pub(super) fn arm_accept(&mut self, i: usize) {
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if l.armed || self.stopping {
            return;
        }
        l.armed = true;
        self.q.accept_multi(l.sock.as_raw_fd(), Op::Accept(i));
    }

    /// After the signal: accept nothing more. The supervisor's shutdown(2)
    /// of the listeners ends the accepts too; cancelling does not depend on it.
    pub(super) fn stop_accepting(&mut self) {
        self.stopping = true;
        for i in 0..self.listeners.len() {
            self.listeners[i].resume_at = None;
            if self.listeners[i].armed {
                self.q.cancel(Op::Accept(i));
            }
        }
    }

    /// Re-arms the accepts whose pause is over.
    pub(super) fn resume_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i].resume_at.is_some_and(|t| t <= self.now) {
                self.listeners[i].resume_at = None;
                self.arm_accept(i);
            }
        }
    }

    pub(super) fn on_accept(&mut self, i: usize, res: i32, flags: u32) {
        // The supervisor's shutdown(2) may end an accept before this loop
        // looked at the stop flag: look now, so it is not taken for an error.
        if !self.stopping && self.ctx.stats.stopping() {
            self.stop_accepting();
        }
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(i) else {
            return;
        };
        if !more {
            l.armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a descriptor the kernel
            // just installed for this process; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            let tls = self.listeners[i].tls;
            self.admit(fd, tls);
        } else {
            let errno = -res;
            let pause = match errno {
                // Our own cancel: when stopping, or after a pause began
                // (which re-arms it when it ends).
                libc::ECANCELED => None,
                // The listener shut down by the supervisor: never re-armed.
                libc::EINVAL if self.stopping => None,
                _ => match accept::classify(&io::Error::from_raw_os_error(errno)) {
                    AcceptError::Retry => None,
                    AcceptError::Pause(d) => Some(d),
                    // A multishot accept stops after any error: a short
                    // pause before re-arming keeps a persistent one from
                    // spinning.
                    AcceptError::Skip | AcceptError::ListenerClosed => Some(ACCEPT_ERROR_PAUSE),
                },
            };
            if let Some(p) = pause {
                self.listeners[i].resume_at = Some(self.now + p);
                // A multishot accept that reports an error and goes on would
                // keep failing: stop it; the pause re-arms it.
                if more {
                    self.q.cancel(Op::Accept(i));
                }
            }
        }
        if !more && self.listeners[i].resume_at.is_none() {
            self.arm_accept(i);
        }
    }

    /// Takes an accepted descriptor under `--max-conns` (and
    /// `--max-conns-per-ip`) and starts serving it.
    fn admit(&mut self, fd: OwnedFd, tls: bool) {
        let ctx = self.ctx;
        // A multishot accept gives no address: ask for it only when the
        // per-address limit needs it.
        let peer = match ctx.max_conns_per_ip {
            None => None,
            Some(_) => match peer_of(&fd) {
                Some(p) => Some(p),
                // Reset before we looked: nothing to serve, nothing taken.
                None => return,
            },
        };
        // Without that limit the address plays no part in admission: the
        // permit counts the connection under `--max-conns` alone.
        let Some(permit) = Permit::take(ctx, &peer.unwrap_or(UNADDRESSED)) else {
            let peer = peer.or_else(|| peer_of(&fd));
            drop(fd);
            accept::log_rejected(peer, ctx);
            return;
        };
        if let Some(f) = faulted::Faulted::of(&fd, ctx) {
            // A faulted connection (TLS too) is served on a thread of its own.
            faulted::spawn(std::net::TcpStream::from(fd), f, tls, permit, ctx);
            return;
        }
        // A connection refused from here on is closed, counted, and its
        // permit given back (dropped) on return.
        let refuse = |e: &io::Error| ctx.stats.count_end(End::from_io(e));
        // TCP_NODELAY: inherited from the listener, or set here.
        if let Err(e) = ctx.nodelay(SockRef::from(&fd)) {
            // Only a socket already dead fails here: closed, as in every model.
            debug!("TCP_NODELAY on an accepted socket: {e}; closing");
            drop(fd);
            refuse(&e);
            return;
        }
        let tls = match ctx.tls.as_ref().filter(|_| tls) {
            None => None,
            Some(t) => match Session::new(&t.config, self.now, t.handshake_timeout) {
                Ok(c) => Some(Box::new(UringTls::new(c, self.now))),
                Err(e) => {
                    warn!("cannot start a TLS session: {e}");
                    drop(fd);
                    ctx.stats.count_end(End::Error(EPROTO));
                    return;
                }
            },
        };
        // The debug lines name the peer at open and at close (kept aside:
        // a socket reset by the close can no longer say whom it served).
        let logged = if tracing::enabled!(tracing::Level::DEBUG) {
            let peer = peer.or_else(|| peer_of(&fd));
            debug!(peer = %peer_text(peer), tls = tls.is_some(), "connection open");
            peer
        } else {
            None
        };
        let path = match tls {
            Some(t) => Path::Tls(t),
            None => {
                let mut switch = Switch::new(ctx.zero_copy);
                // `--zero-copy on`: on the pipe from the first byte.
                match switch
                    .take(true)
                    .then(|| Spliced::switch(&fd, self.now))
                    .flatten()
                {
                    Some(z) => Path::Spliced(z),
                    None => Path::Plain(Plain::new(self.now, self.held_cap, switch)),
                }
            }
        };
        let (slot, generation) = match self.free_slots.pop() {
            Some(key) => key,
            None => {
                self.slots.push(Slot { conn: None });
                (self.slots.len() - 1, 0)
            }
        };
        if let Some(p) = logged {
            self.peers.insert(slot, p);
        }
        self.slots[slot].conn = Some(Conn {
            fd,
            generation,
            armed: None,
            _permit: permit,
            path,
        });
        self.live += 1;
        self.progress(slot);
    }
}
