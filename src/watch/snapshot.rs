//! Snapshots of the socket table and the changes between two of them.
//! Pure code: the polling loop feeds it what sock_diag reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::state::State;

/// A connection's identity: the 4-tuple from the socket's own side. It stays
/// the same from SYN-SENT to TIME-WAIT, across the kernel's change of object
/// (full socket, then time-wait socket), so it is what changes are keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    /// Our address and port.
    pub(crate) local: SocketAddr,
    /// The peer's; unspecified with port 0 for a listener.
    pub(crate) remote: SocketAddr,
}

/// What one poll saw of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sock {
    /// Its TCP state.
    pub(crate) state: State,
    /// Its inode, which names it in `/proc/*/fd`; 0 once no process holds
    /// it (a TIME-WAIT socket, or a connection still in the accept queue).
    pub(crate) inode: u32,
    /// Bytes received and not yet read by the application (for a listener:
    /// connections waiting to be accepted).
    pub(crate) rq: u32,
    /// Bytes sent and not yet acknowledged (for a listener: the backlog).
    pub(crate) wq: u32,
}

/// One poll's view of the sockets on the watched port.
pub(crate) type Snapshot = BTreeMap<Key, Sock>;

/// One change between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// Which connection.
    pub(crate) key: Key,
    /// `None` for a socket that was not there before.
    pub(crate) from: Option<State>,
    /// [`State::Closed`] for a socket that vanished.
    pub(crate) to: State,
    /// The socket as last seen (the old one for a vanished socket).
    pub(crate) sock: Sock,
}

impl Change {
    /// Same state, new inode: an accepted connection got its file, or a
    /// socket was handed to another process; shown because the owner is
    /// part of what `watch` promises to print.
    pub(crate) fn is_owner_change(&self) -> bool {
        self.from == Some(self.to)
    }
}

/// The changes from `old` to `new`, in key order: new sockets, state
/// changes, inode changes (new owner) and vanished sockets.
pub(crate) fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for (key, now) in new {
        match old.get(key) {
            None => out.push(Change {
                key: *key,
                from: None,
                to: now.state,
                sock: *now,
            }),
            Some(before) if before.state != now.state || before.inode != now.inode => {
                out.push(Change {
                    key: *key,
                    from: Some(before.state),
                    to: now.state,
                    sock: *now,
                })
            }
            Some(_) => {}
        }
    }
    for (key, before) in old {
        if !new.contains_key(key) {
            out.push(Change {
                key: *key,
                from: Some(before.state),
                to: State::Closed,
                sock: *before,
            });
        }
    }
    out.sort_by_key(|c| c.key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lp: u16, rp: u16) -> Key {
        Key {
            local: SocketAddr::from(([127, 0, 0, 1], lp)),
            remote: SocketAddr::from(([127, 0, 0, 1], rp)),
        }
    }

    fn sock(state: State, inode: u32) -> Sock {
        Sock {
            state,
            inode,
            rq: 0,
            wq: 0,
        }
    }

    #[test]
    fn nothing_changed_nothing_printed() {
        let mut a = Snapshot::new();
        a.insert(key(6666, 0), sock(State::Listen, 10));
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn new_moved_and_gone_sockets() {
        let mut a = Snapshot::new();
        a.insert(key(50000, 6666), sock(State::Established, 11));
        a.insert(key(6666, 50000), sock(State::Established, 12));
        let mut b = Snapshot::new();
        b.insert(key(50000, 6666), sock(State::FinWait1, 11));
        b.insert(key(50001, 6666), sock(State::SynSent, 13));
        let c = diff(&a, &b);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].key, key(6666, 50000));
        assert_eq!(
            (c[0].from, c[0].to),
            (Some(State::Established), State::Closed)
        );
        assert_eq!(c[0].sock.inode, 12, "a vanished socket keeps its last view");
        assert_eq!(
            (c[1].from, c[1].to),
            (Some(State::Established), State::FinWait1)
        );
        assert_eq!((c[2].from, c[2].to), (None, State::SynSent));
        assert!(!c[1].is_owner_change());
    }

    #[test]
    fn accept_gives_the_socket_an_owner() {
        let mut a = Snapshot::new();
        a.insert(key(6666, 50000), sock(State::Established, 0));
        let mut b = Snapshot::new();
        b.insert(key(6666, 50000), sock(State::Established, 42));
        let c = diff(&a, &b);
        assert_eq!(c.len(), 1);
        assert!(c[0].is_owner_change());
    }

    #[test]
    fn queue_sizes_alone_are_not_a_change() {
        let mut a = Snapshot::new();
        a.insert(key(6666, 50000), sock(State::Established, 5));
        let mut b = a.clone();
        if let Some(s) = b.get_mut(&key(6666, 50000)) {
            s.rq = 100;
        }
        assert!(diff(&a, &b).is_empty());
    }
}
