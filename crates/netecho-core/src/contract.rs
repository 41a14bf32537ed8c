//! The echo contract as a state machine with no I/O: the connection core.
//!
//! Like quinn-proto's `Connection` or smoltcp's TCP socket, [`Conn`] makes
//! no system call and knows no I/O library. A model feeds it what happened
//! on the socket — bytes read ([`Conn::on_read`]), bytes sent
//! ([`Conn::on_sent`]), the client's FIN ([`Conn::on_fin`]), an error
//! ([`Conn::on_error`]), the current time — and asks it what to do next
//! ([`Conn::next`]): read (at most so much), send what is kept, shut down
//! writing, or close with a reason; [`Conn::deadline`] says when to wake it.
//! epoll, tokio and io_uring each only perform those actions on their own
//! API, so the contract is written once, here, and tested here without
//! sockets.
//!
//! # The rules it keeps
//! - **Order, no loss**: bytes read are kept in a [`Store`] until sent, in
//!   order; a model may write straight from its read buffer only while
//!   nothing is kept ([`Conn::write_through`]), so nothing overtakes.
//! - **Backpressure**: [`Next::Io`]'s `read` is the room the store has left;
//!   at its cap the model stops reading that client until sends make room.
//! - **Half-close**: after the client's FIN, what is kept goes out, then
//!   [`Next::ShutWrite`] (our FIN); closing then finds an empty receive
//!   queue, so the client sees FIN, never RST.
//! - **Deadlines**: while echo is kept, the send timeout counts from when it
//!   began waiting or last moved ([`End::Stall`]); otherwise the idle timeout
//!   counts from the last byte either way ([`End::Idle`]).
//! - **Errors**: [`classify`] is the one mapping from an I/O error to a
//!   close reason, for every model, the blocking ones included.

/// Bytes read at once, by every model. A blocking model holds exactly one
/// such buffer per connection, which bounds its memory however much a
/// client sends; the event models one per worker.
pub const BUF_SIZE: usize = 64 * 1024;

use std::io;
use std::time::{Duration, Instant};

/// EIO on Linux: what a send that took nothing of a non-empty buffer is
/// reported as (a TCP send never does that on a live socket).
const EIO: i32 = 5;

/// How a connection ended: the reason logged and counted in the metrics,
/// the same in every model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client half-closed; everything was echoed and our FIN sent.
    Fin,
    /// No byte moved either way for `--idle-timeout`.
    Idle,
    /// The client stopped reading our echo for `--stall-timeout`.
    Stall,
    /// The client reset or aborted the connection, or stopped reading for
    /// good (broken pipe, TCP keepalive or retransmission timeout).
    Reset,
    /// The server stopped it (drain deadline).
    Stopped,
    /// Any other socket error, as its raw OS error number.
    Error(i32),
}

impl End {
    /// Every reason's label, in [`End::index`] order: the `reason` label of
    /// `netecho_connections_closed_total`.
    pub const LABELS: [&'static str; 6] = ["fin", "idle", "stall", "reset", "stopped", "error"];

    /// Position of this reason in [`End::LABELS`].
    pub fn index(self) -> usize {
        match self {
            End::Fin => 0,
            End::Idle => 1,
            End::Stall => 2,
            End::Reset => 3,
            End::Stopped => 4,
            End::Error(_) => 5,
        }
    }

    /// How a socket error ends a connection: [`classify`], with a retryable
    /// error (which a caller should have retried) taken as a plain error.
    pub fn from_io(e: &io::Error) -> End {
        classify(e).unwrap_or(End::Error(e.raw_os_error().unwrap_or(EIO)))
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Error(errno) => write!(f, "error: {}", io::Error::from_raw_os_error(*errno)),
            other => f.write_str(End::LABELS[other.index()]),
        }
    }
}

/// What an I/O error means for a connection: `None` when the call should
/// simply be made again (a signal interrupted it, or it would block and the
/// model waits for readiness), else the reason the connection ends.
///
/// ECONNABORTED counts as a reset like ECONNRESET, EPIPE and ETIMEDOUT: the
/// peer (or the path to it) is gone, which is no fault of the server.
pub fn classify(e: &io::Error) -> Option<End> {
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => None,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::TimedOut
        | io::ErrorKind::ConnectionAborted => Some(End::Reset),
        _ => Some(End::Error(e.raw_os_error().unwrap_or(EIO))),
    }
}

/// The two timeouts a connection lives under; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// `--idle-timeout`: nothing moved either way for this long.
    pub idle: Option<Duration>,
    /// How long kept echo may wait without moving: `--stall-timeout`, else
    /// the idle timeout (see `Ctx::send_timeout`).
    pub send: Option<Duration>,
}

/// Where a connection keeps the bytes it read and has not yet sent.
///
/// The event models keep copies ([`crate::pending::Pending`]); io_uring
/// keeps the kernel-filled buffers themselves. The core only needs to know
/// how much is kept and how much more may come.
pub trait Store {
    /// What one read hands over: a byte slice, or a filled buffer.
    type Piece<'a>;
    /// Bytes kept and not yet sent.
    fn len(&self) -> usize;
    /// True when nothing is kept.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How many bytes the next read may take: 0 at the cap (backpressure).
    fn room(&self) -> usize;
    /// The length of a piece a read handed over.
    fn piece_len(piece: &Self::Piece<'_>) -> usize;
    /// Keeps `piece` from byte `skip` on (the first `skip` bytes were
    /// already written back); returns the piece's length.
    fn keep(&mut self, piece: Self::Piece<'_>, skip: usize) -> usize;
    /// Drops the first `n` kept bytes: they were sent.
    fn consume(&mut self, n: usize);
}

/// A [`Store`] that keeps a copy of the bytes it is given as a slice: what
/// the TLS layer needs, since it hands the core decrypted plaintext and
/// encrypts the echo from the kept copy.
pub trait Copied: Store {
    /// The piece a read of these plaintext bytes hands over.
    fn piece(bytes: &[u8]) -> Self::Piece<'_>;
    /// The kept bytes, oldest first.
    fn as_slice(&self) -> &[u8];
}

/// What a model should do for a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Do what the socket allows of these.
    Io {
        /// Kept echo waits: send the front of the store.
        send: bool,
        /// Read at most this many bytes; 0: do not read (the store is at its
        /// cap, or the client's FIN was read).
        read: usize,
    },
    /// Everything read was echoed after the client's FIN: shut down writing
    /// and report it with [`Conn::on_shut`]. [`Next::Close`] always comes
    /// next, so a model that closes at once may let the close send the FIN
    /// (one system call instead of two): the client's FIN was read, the
    /// receive queue is empty, and close(2) of such a socket sends what is
    /// unsent and then a FIN, never a reset.
    ShutWrite,
    /// Close the socket (after any operation in flight has finished).
    Close(End),
}

/// One connection's echo state. See the module documentation.
#[derive(Debug)]
pub struct Conn<S> {
    store: S,
    /// The client's FIN was read: nothing more will come.
    read_closed: bool,
    /// Set once the connection is to close; never changes afterwards.
    end: Option<End>,
    /// When a byte last moved either way (`--idle-timeout`).
    last_io: Instant,
    /// When kept echo began waiting or last moved (`--stall-timeout`);
    /// looked at only while echo is kept.
    last_sent: Instant,
}

impl<S: Store> Conn<S> {
    /// A connection accepted at `now`, keeping its bytes in `store`.
    pub fn new(now: Instant, store: S) -> Self {
        Conn {
            store,
            read_closed: false,
            end: None,
            last_io: now,
            last_sent: now,
        }
    }

    /// What to do now.
    pub fn next(&self) -> Next {
        if let Some(end) = self.end {
            return Next::Close(end);
        }
        let send = !self.store.is_empty();
        if self.read_closed {
            return if send {
                Next::Io { send, read: 0 }
            } else {
                Next::ShutWrite
            };
        }
        Next::Io {
            send,
            read: self.store.room(),
        }
    }

    /// True when bytes just read may be written straight from the read
    /// buffer: nothing is kept that they would overtake.
    pub fn write_through(&self) -> bool {
        self.end.is_none() && self.store.is_empty()
    }

    /// A read returned `piece` (not empty), whose first `echoed` bytes the
    /// model already wrote back straight from its read buffer (0 unless
    /// [`Conn::write_through`] said so). The rest is kept, in order.
    pub fn on_read(&mut self, now: Instant, piece: S::Piece<'_>, echoed: usize) {
        let was_empty = self.store.is_empty();
        let n = S::piece_len(&piece);
        if echoed < n {
            self.store.keep(piece, echoed);
        }
        if n > 0 {
            self.last_io = now;
        }
        if echoed > 0 || (was_empty && n > echoed) {
            // Echo moved, or began waiting now: the stall clock starts here.
            self.last_sent = now;
        }
    }

    /// A read returned end-of-file: the client's FIN.
    pub fn on_fin(&mut self) {
        self.read_closed = true;
    }

    /// A send of the store's front took `n` bytes.
    pub fn on_sent(&mut self, now: Instant, n: usize) {
        if n == 0 {
            // A send that takes nothing of a non-empty buffer would be
            // retried forever: the socket is dead.
            if !self.store.is_empty() {
                self.end.get_or_insert(End::Error(EIO));
            }
            return;
        }
        self.store.consume(n);
        self.last_io = now;
        self.last_sent = now;
    }

    /// Echo moved on beyond the core: a layer between it and the socket
    /// (TLS) had bytes taken by the kernel at `now`. Both clocks restart,
    /// as for [`Conn::on_sent`]: a client reading slowly is not stalled
    /// while the layer, not the store, holds what it waits for.
    pub fn on_progress(&mut self, now: Instant) {
        self.last_io = now;
        self.last_sent = now;
    }

    /// A read, send or socket setup failed. Returns true if the call should
    /// be made again (see [`classify`]); otherwise the connection is to close.
    pub fn on_error(&mut self, e: &io::Error) -> bool {
        match classify(e) {
            None => true,
            Some(end) => {
                self.end.get_or_insert(end);
                false
            }
        }
    }

    /// The result of the shutdown [`Next::ShutWrite`] asked for. ENOTCONN
    /// means the client reset meanwhile: nothing was left to say either way.
    pub fn on_shut(&mut self, r: io::Result<()>) {
        let end = match r {
            Ok(()) => End::Fin,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => End::Fin,
            Err(e) => End::from_io(&e),
        };
        self.end.get_or_insert(end);
    }

    /// The server stops this connection (drain deadline).
    pub fn stop(&mut self) {
        self.end.get_or_insert(End::Stopped);
    }

    /// Ends the connection for a reason found outside the core (for
    /// instance a kernel result that makes no sense).
    pub fn fail(&mut self, end: End) {
        self.end.get_or_insert(end);
    }

    /// True when the deadline may now be sooner than one filed while
    /// nothing was kept: echo is kept, so the stall clock applies. (Traffic
    /// only ever moves the idle deadline later.) Lets a model skip
    /// [`Conn::deadline`] on the common path.
    pub fn deadline_may_be_sooner(&self) -> bool {
        !self.store.is_empty()
    }

    /// When the connection must be looked at again, and how it ends then if
    /// nothing moves: the send timeout while echo is kept, the idle timeout
    /// otherwise. `None` once it is closing, or when no timeout applies.
    pub fn deadline(&self, t: &Timeouts) -> Option<(Instant, End)> {
        if self.end.is_some() {
            return None;
        }
        if self.store.is_empty() {
            t.idle.map(|d| (self.last_io + d, End::Idle))
        } else {
            t.send.map(|d| (self.last_sent + d, End::Stall))
        }
    }

    /// The timer came due at `now`: ends the connection if its deadline has
    /// passed (returns true), else leaves it be (traffic moved it on).
    pub fn on_timer(&mut self, now: Instant, t: &Timeouts) -> bool {
        match self.deadline(t) {
            Some((at, end)) if at <= now => {
                self.end = Some(end);
                true
            }
            _ => false,
        }
    }

    /// The reason the connection is closing, once it is.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// True once the client's FIN was read.
    pub fn read_closed(&self) -> bool {
        self.read_closed
    }

    /// The bytes kept.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The bytes kept, for a model that hands buffers back (io_uring).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pending::{PENDING_CAP, Pending};
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const SECOND: Duration = Duration::from_secs(1);

    fn timeouts(idle: u64, send: u64) -> Timeouts {
        Timeouts {
            idle: Some(Duration::from_secs(idle)),
            send: Some(Duration::from_secs(send)),
        }
    }

    /// One step a socket can take, chosen by the property tests.
    #[derive(Debug, Clone)]
    enum Step {
        /// The client sent this many more bytes (they wait in the kernel).
        ClientSends(usize),
        /// A read of at most this many bytes (capped by the core's room).
        Read(usize),
        /// The kernel takes at most this many bytes of a send.
        Send(usize),
        /// A read that the model writes straight back, of which the kernel
        /// takes at most `.1` bytes.
        ReadThrough(usize, usize),
        /// The client half-closes.
        ClientFin,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1usize..200_000).prop_map(Step::ClientSends),
            (1usize..100_000).prop_map(Step::Read),
            (1usize..100_000).prop_map(Step::Send),
            ((1usize..100_000), (0usize..100_000)).prop_map(|(a, b)| Step::ReadThrough(a, b)),
            Just(Step::ClientFin),
        ]
    }

    /// A client and a kernel around one core: what the client sent and what
    /// came back, checked against a plain queue.
    struct World {
        conn: Conn<Pending>,
        /// Sent by the client, not yet read by the server, in order.
        wire_in: VecDeque<u8>,
        /// Next byte value the client sends.
        next_byte: u8,
        /// Everything the client sent.
        sent: Vec<u8>,
        /// Everything that came back.
        echoed: Vec<u8>,
        /// The client's FIN is queued behind `wire_in`.
        fin_queued: bool,
        /// Our FIN went out.
        shut: bool,
        now: Instant,
    }

    impl World {
        fn new() -> Self {
            World {
                conn: Conn::new(Instant::now(), Pending::new()),
                wire_in: VecDeque::new(),
                next_byte: 0,
                sent: Vec::new(),
                echoed: Vec::new(),
                fin_queued: false,
                shut: false,
                now: Instant::now(),
            }
        }

        fn client_sends(&mut self, n: usize) {
            if self.fin_queued {
                return;
            }
            for _ in 0..n {
                self.wire_in.push_back(self.next_byte);
                self.sent.push(self.next_byte);
                self.next_byte = self.next_byte.wrapping_mul(31).wrapping_add(7);
            }
        }

        /// Takes up to `max` bytes off the wire as a read would; `None` is
        /// end-of-file, `Some(empty)` would block.
        fn read(&mut self, max: usize) -> Option<Vec<u8>> {
            if self.wire_in.is_empty() && self.fin_queued {
                return None;
            }
            let n = max.min(self.wire_in.len());
            Some(self.wire_in.drain(..n).collect())
        }

        fn apply(&mut self, s: &Step) {
            self.now += Duration::from_millis(1);
            match *s {
                Step::ClientSends(n) => self.client_sends(n),
                Step::ClientFin => self.fin_queued = true,
                Step::Read(max) | Step::ReadThrough(max, _) => {
                    let Next::Io { read, .. } = self.conn.next() else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    match self.read(max.min(read)) {
                        None => self.conn.on_fin(),
                        Some(bytes) if bytes.is_empty() => {}
                        Some(bytes) => {
                            let mut echoed = 0;
                            if let Step::ReadThrough(_, take) = *s
                                && self.conn.write_through()
                            {
                                echoed = take.min(bytes.len());
                                self.echoed.extend_from_slice(&bytes[..echoed]);
                            }
                            self.conn.on_read(self.now, &bytes[..], echoed);
                        }
                    }
                }
                Step::Send(take) => match self.conn.next() {
                    Next::Io { send: true, .. } => {
                        let front = self.conn.store().as_slice();
                        let n = take.min(front.len());
                        self.echoed.extend_from_slice(&front[..n]);
                        self.conn.on_sent(self.now, n);
                    }
                    Next::ShutWrite => {
                        self.shut = true;
                        self.conn.on_shut(Ok(()));
                    }
                    _ => {}
                },
            }
            assert!(
                self.conn.store().len() <= PENDING_CAP,
                "kept {} bytes, more than the cap",
                self.conn.store().len()
            );
            assert!(self.conn.store().capacity() <= PENDING_CAP);
            // Nothing lost, duplicated or reordered so far: what came back
            // plus what is kept is exactly a prefix of what was read.
            let read_so_far = self.sent.len() - self.wire_in.len();
            let mut back = self.echoed.clone();
            back.extend_from_slice(self.conn.store().as_slice());
            assert_eq!(back.len(), read_so_far);
            assert_eq!(&back[..], &self.sent[..read_so_far]);
            if self.shut {
                assert!(self.fin_queued && self.wire_in.is_empty());
                assert_eq!(self.echoed, self.sent, "our FIN went out before the echo");
            }
        }

        /// Runs the connection to its end the way a model would: sends as
        /// much as allowed, reads what comes, until it closes.
        fn finish(&mut self) -> End {
            self.fin_queued = true;
            for _ in 0..100_000 {
                match self.conn.next() {
                    Next::Close(end) => return end,
                    Next::ShutWrite => self.apply(&Step::Send(0)),
                    Next::Io { send, read } => {
                        if send {
                            self.apply(&Step::Send(1500));
                        }
                        if read > 0 {
                            self.apply(&Step::Read(4000));
                        }
                    }
                }
            }
            panic!("the connection never ended");
        }
    }

    proptest! {
        /// Under any split of reads and sends, with or without writing
        /// straight through, every byte comes back once and in order, the
        /// cap holds, and our FIN comes last.
        #[test]
        fn any_split_of_reads_and_sends_echoes_everything_in_order(
            steps in proptest::collection::vec(step(), 0..120)
        ) {
            let mut w = World::new();
            for s in &steps {
                w.apply(s);
            }
            prop_assert_eq!(w.finish(), End::Fin);
            prop_assert!(w.shut);
            prop_assert_eq!(&w.echoed, &w.sent);
        }
    }

    #[test]
    fn reads_stop_at_the_cap_until_sends_make_room() {
        let mut c = Conn::new(Instant::now(), Pending::new());
        let now = Instant::now();
        let big = vec![1u8; PENDING_CAP];
        c.on_read(now, &big[..], 0);
        assert_eq!(
            c.next(),
            Next::Io {
                send: true,
                read: 0
            }
        );
        c.on_sent(now, 100);
        assert_eq!(
            c.next(),
            Next::Io {
                send: true,
                read: 100
            }
        );
    }

    #[test]
    fn half_close_drains_then_shuts_then_closes_with_fin() {
        let now = Instant::now();
        let mut c = Conn::new(now, Pending::new());
        c.on_read(now, &b"hello"[..], 2);
        c.on_fin();
        assert_eq!(
            c.next(),
            Next::Io {
                send: true,
                read: 0
            }
        );
        assert_eq!(c.store().as_slice(), b"llo");
        c.on_sent(now, 3);
        assert_eq!(c.next(), Next::ShutWrite);
        c.on_shut(Ok(()));
        assert_eq!(c.next(), Next::Close(End::Fin));
    }

    #[test]
    fn a_shutdown_after_the_client_reset_is_still_a_clean_end() {
        let mut c = Conn::new(Instant::now(), Pending::new());
        c.on_fin();
        c.on_shut(Err(io::Error::from(io::ErrorKind::NotConnected)));
        assert_eq!(c.end(), Some(End::Fin));
        let mut c = Conn::new(Instant::now(), Pending::new());
        c.on_fin();
        c.on_shut(Err(io::Error::from_raw_os_error(9)));
        assert_eq!(c.end(), Some(End::Error(9)));
    }

    #[test]
    fn idle_deadline_counts_from_the_last_byte_either_way() {
        let t0 = Instant::now();
        let t = timeouts(10, 3);
        let mut c = Conn::new(t0, Pending::new());
        assert_eq!(c.deadline(&t), Some((t0 + 10 * SECOND, End::Idle)));
        assert!(!c.on_timer(t0 + 9 * SECOND, &t));
        // A byte read and written straight back at t0 + 5 s.
        c.on_read(t0 + 5 * SECOND, &b"x"[..], 1);
        assert!(!c.on_timer(t0 + 10 * SECOND, &t));
        assert_eq!(c.deadline(&t), Some((t0 + 15 * SECOND, End::Idle)));
        assert!(c.on_timer(t0 + 15 * SECOND, &t));
        assert_eq!(c.next(), Next::Close(End::Idle));
        assert_eq!(c.deadline(&t), None);
    }

    #[test]
    fn stall_deadline_counts_from_when_echo_began_waiting() {
        let t0 = Instant::now();
        let t = timeouts(100, 3);
        let mut c = Conn::new(t0, Pending::new());
        // Idle for 50 s, then a byte the kernel would not take.
        c.on_read(t0 + 50 * SECOND, &b"ab"[..], 0);
        assert_eq!(c.deadline(&t), Some((t0 + 53 * SECOND, End::Stall)));
        // More bytes kept do not move the stall clock; a send does.
        c.on_read(t0 + 52 * SECOND, &b"cd"[..], 0);
        assert_eq!(c.deadline(&t), Some((t0 + 53 * SECOND, End::Stall)));
        c.on_sent(t0 + 52 * SECOND, 1);
        assert_eq!(c.deadline(&t), Some((t0 + 55 * SECOND, End::Stall)));
        assert!(c.on_timer(t0 + 55 * SECOND, &t));
        assert_eq!(c.end(), Some(End::Stall));
        // The first reason sticks.
        c.stop();
        assert_eq!(c.end(), Some(End::Stall));
    }

    #[test]
    fn no_timeout_means_no_deadline() {
        let mut c = Conn::new(Instant::now(), Pending::new());
        let off = Timeouts::default();
        assert_eq!(c.deadline(&off), None);
        c.on_read(Instant::now(), &b"x"[..], 0);
        assert_eq!(c.deadline(&off), None);
        assert!(!c.on_timer(Instant::now() + 1000 * SECOND, &off));
    }

    #[test]
    fn each_error_kind_has_one_close_reason() {
        use io::ErrorKind as K;
        for (e, want) in [
            (io::Error::from_raw_os_error(104), Some(End::Reset)), // ECONNRESET
            (io::Error::from_raw_os_error(32), Some(End::Reset)),  // EPIPE
            (io::Error::from_raw_os_error(110), Some(End::Reset)), // ETIMEDOUT
            (io::Error::from_raw_os_error(103), Some(End::Reset)), // ECONNABORTED
            (io::Error::from_raw_os_error(4), None),               // EINTR
            (io::Error::from_raw_os_error(11), None),              // EAGAIN
            (io::Error::from_raw_os_error(113), Some(End::Error(113))), // EHOSTUNREACH
            (io::Error::from(K::Other), Some(End::Error(EIO))),
        ] {
            assert_eq!(classify(&e), want, "{e}");
        }
        let mut c = Conn::new(Instant::now(), Pending::new());
        assert!(c.on_error(&io::Error::from_raw_os_error(4)));
        assert_eq!(c.end(), None);
        assert!(!c.on_error(&io::Error::from_raw_os_error(103)));
        assert_eq!(c.next(), Next::Close(End::Reset));
    }

    #[test]
    fn a_send_that_takes_nothing_ends_the_connection() {
        let now = Instant::now();
        let mut c = Conn::new(now, Pending::new());
        c.on_sent(now, 0);
        assert_eq!(c.end(), None, "nothing was kept: no send was asked for");
        c.on_read(now, &b"x"[..], 0);
        c.on_sent(now, 0);
        assert_eq!(c.next(), Next::Close(End::Error(EIO)));
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let all = [
            End::Fin,
            End::Idle,
            End::Stall,
            End::Reset,
            End::Stopped,
            End::Error(1),
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(End::Fin.to_string(), "fin");
        assert!(End::Error(104).to_string().starts_with("error: "));
    }
}
