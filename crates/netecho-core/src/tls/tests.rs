//! The session without sockets: a rustls client and a [`Session`] + core
//! talking through byte buffers, the test playing the driver.

use super::*;
use crate::pending::Pending;

/// The test PKI: a CA, and a certificate for `localhost` it signed with
/// its key. The server presents the leaf; the client trusts the CA and
/// nothing else, and verifies the server as any client would.
struct Pki {
    ca: rustls::pki_types::CertificateDer<'static>,
    leaf: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

/// Made once for all the tests here (a key pair costs a few milliseconds).
fn pki() -> &'static Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "netecho test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: key.serialize_der(),
        }
    })
}

/// A server configuration presenting the test CA's `localhost` leaf.
fn server_config() -> Arc<ServerConfig> {
    let p = pki();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(p.key.clone().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![p.leaf.clone()], key)
            .unwrap(),
    )
}

/// A client that trusts the test CA alone.
fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki().ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn client() -> rustls::ClientConnection {
    rustls::ClientConnection::new(client_config(), "localhost".try_into().unwrap()).unwrap()
}

/// The server side as a driver sees it: the session, its core, and what
/// went on the wire.
struct Server {
    tls: Session,
    core: Conn<Pending>,
    buf: Vec<u8>,
    bytes: u64,
    /// Our FIN was sent.
    fin_sent: bool,
}

impl Server {
    fn new(now: Instant) -> Server {
        Server {
            tls: Session::new(&server_config(), now, Duration::from_secs(10)).unwrap(),
            core: Conn::new(now, Pending::new()),
            buf: vec![0u8; 64 * 1024],
            bytes: 0,
            fin_sent: false,
        }
    }

    /// One driver turn at `now`: the session works, then at most `room`
    /// bytes of its ciphertext go to `wire` (the client's side).
    fn turn(&mut self, now: Instant, room: usize, wire: &mut Vec<u8>) -> Turn {
        let turn = self
            .tls
            .process(&mut self.core, now, &mut self.buf, &mut self.bytes);
        let out = self.tls.outgoing();
        let n = out.len().min(room);
        wire.extend_from_slice(&out[..n]);
        self.tls.on_sent(&mut self.core, now, n);
        if turn == Turn::ShutWrite {
            self.fin_sent = true;
            self.tls.on_shut(&mut self.core, Ok(()));
        }
        turn
    }
}

/// Hands what the client has to send to the server.
fn client_to_server(client: &mut rustls::ClientConnection, server: &mut Server) {
    while client.wants_write() {
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        server.tls.on_ciphertext(&out);
    }
}

/// The client sends all of `data` (rustls takes at most 64 KiB of
/// plaintext at once): its ciphertext waits in the server's inbox.
fn send_all(client: &mut rustls::ClientConnection, server: &mut Server, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        off += client.writer().write(&data[off..]).unwrap();
        client_to_server(client, server);
    }
}

/// The client takes `wire`'s ciphertext; returns the plaintext and
/// whether close_notify came.
fn server_to_client(client: &mut rustls::ClientConnection, wire: &mut Vec<u8>) -> (Vec<u8>, bool) {
    let mut back = Vec::new();
    let mut close_notify = false;
    let mut rd = &wire[..];
    while !rd.is_empty() {
        client.read_tls(&mut rd).unwrap();
        client.process_new_packets().unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            match client.reader().read(&mut chunk) {
                Ok(0) => {
                    close_notify = true;
                    break;
                }
                Ok(n) => back.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
    }
    wire.clear();
    (back, close_notify)
}

/// A client sends `data` then close_notify and its FIN, reading what
/// comes back; the server's socket takes at most `room` bytes per turn.
/// Returns the echo, the end, and (with [`Session::pause_at_shut`]) what
/// the client had when the driver was told of the end: bytes, whether
/// close_notify, whether our FIN.
fn echo_through(
    data: &[u8],
    room: usize,
    pause: bool,
) -> (Vec<u8>, End, Option<(usize, bool, bool)>) {
    let now = Instant::now();
    let mut server = Server::new(now);
    if pause {
        server.tls.pause_at_shut();
    }
    let mut client = client();
    let (mut sent, mut closed, mut close_notify_seen) = (0, false, false);
    let mut back = Vec::new();
    let mut at_shut = None;
    let mut wire = Vec::new();
    for _ in 0..1_000_000 {
        if !client.is_handshaking() && sent < data.len() {
            sent += client.writer().write(&data[sent..]).unwrap();
        } else if sent == data.len() && !closed && !client.is_handshaking() {
            client.send_close_notify();
            closed = true;
        }
        client_to_server(&mut client, &mut server);
        if closed && !client.wants_write() {
            server.tls.on_fin();
        }
        let turn = server.turn(now, room, &mut wire);
        let shut_now = server.tls.take_shut();
        let (more, cn) = server_to_client(&mut client, &mut wire);
        back.extend(more);
        close_notify_seen |= cn;
        if shut_now {
            assert!(at_shut.is_none(), "take_shut said yes twice");
            at_shut = Some((back.len(), close_notify_seen, server.fin_sent));
        }
        if let Turn::Close(end) = turn {
            if end == End::Fin {
                assert!(server.fin_sent, "Fin without our FIN");
                assert!(close_notify_seen, "Fin without our close_notify");
            }
            return (back, end, at_shut);
        }
    }
    panic!("the connection never ended");
}

#[test]
fn echoes_everything_then_close_notify_and_fin() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for room in [1_000_000, 1000, 7] {
        let (back, end, _) = echo_through(&data, room, false);
        assert_eq!(end, End::Fin, "room {room}");
        assert_eq!(back.len(), data.len(), "room {room}");
        assert!(back == data, "room {room}: bytes differ");
    }
}

#[test]
fn a_driver_paused_at_shut_hears_of_it_after_the_echo_and_before_the_close() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for room in [1 << 20, 16 * 1024, 1000] {
        let (back, end, at_shut) = echo_through(&data, room, true);
        assert_eq!(end, End::Fin, "room {room}");
        assert!(back == data, "room {room}: echo differs");
        let (seen, close_notify, fin) = at_shut.expect("take_shut never said yes");
        assert_eq!(
            seen,
            data.len(),
            "room {room}: told before the echo was out"
        );
        assert!(
            !close_notify && !fin,
            "room {room}: told after the close began"
        );
    }
    // Without the pause nobody is told, and the close is the same.
    let (back, end, at_shut) = echo_through(&data, 16 * 1024, false);
    assert_eq!((back == data, end, at_shut), (true, End::Fin, None));
}

#[test]
fn garbage_is_a_protocol_failure_with_an_alert_and_silence_a_timeout() {
    let now = Instant::now();
    let mut server = Server::new(now);
    server.tls.on_ciphertext(b"GET / HTTP/1.0\r\n\r\n");
    let mut wire = Vec::new();
    let turn = server.turn(now, 1 << 20, &mut wire);
    assert_eq!(turn, Turn::Close(End::Error(EPROTO)));
    assert_eq!(server.tls.failure(), Some(Failure::Protocol));
    assert!(!wire.is_empty(), "no alert to send");

    let mut server = Server::new(now);
    let t = Timeouts {
        idle: Some(Duration::from_secs(300)),
        send: None,
    };
    let turn = server.turn(now, 1 << 20, &mut wire);
    assert_eq!(
        turn,
        Turn::Wait {
            read: true,
            write: false
        }
    );
    let due = server.tls.deadline(&server.core, &t).unwrap();
    assert_eq!(due, now + Duration::from_secs(10));
    let s = &mut server;
    assert!(
        !s.tls
            .on_timer(&mut s.core, now + Duration::from_secs(9), &t)
    );
    assert!(s.tls.on_timer(&mut s.core, due, &t));
    assert_eq!(s.core.end(), Some(End::Idle));
    assert_eq!(s.tls.failure(), Some(Failure::Timeout));
}

#[test]
fn a_fin_before_the_handshake_ends_is_an_eof_failure() {
    let now = Instant::now();
    let mut server = Server::new(now);
    server.tls.on_fin();
    let turn = server.turn(now, 1 << 20, &mut Vec::new());
    assert_eq!(turn, Turn::Close(End::Fin));
    assert_eq!(server.tls.failure(), Some(Failure::Eof));
}

/// A client past its handshake, its tickets read; the server at `t0`.
fn established(t0: Instant) -> (Server, rustls::ClientConnection) {
    let mut server = Server::new(t0);
    let mut client = client();
    let mut wire = Vec::new();
    for _ in 0..10 {
        client_to_server(&mut client, &mut server);
        server.turn(t0, 1 << 20, &mut wire);
        server_to_client(&mut client, &mut wire);
    }
    assert!(!client.is_handshaking() && !server.tls.handshaking());
    (server, client)
}

#[test]
fn ciphertext_the_socket_will_not_take_is_a_stall_on_time() {
    // Small enough that the core keeps nothing: only the session holds
    // it, so the core alone would wait for the idle timeout.
    let t0 = Instant::now();
    let (mut server, mut client) = established(t0);
    let t = Timeouts {
        idle: Some(Duration::from_secs(300)),
        send: Some(Duration::from_secs(3)),
    };
    client.writer().write_all(&[5u8; 1000]).unwrap();
    client_to_server(&mut client, &mut server);
    let t1 = t0 + Duration::from_secs(1);
    server.turn(t1, 0, &mut Vec::new());
    assert!(server.core.store().is_empty(), "the core kept the echo");
    assert!(!server.tls.outgoing().is_empty(), "no ciphertext waits");
    let due = server.tls.deadline(&server.core, &t).unwrap();
    assert_eq!(due, t1 + Duration::from_secs(3));
    let s = &mut server;
    assert!(
        !s.tls
            .on_timer(&mut s.core, due - Duration::from_millis(1), &t)
    );
    assert!(s.tls.on_timer(&mut s.core, due, &t));
    assert_eq!(s.core.end(), Some(End::Stall));
}

#[test]
fn ciphertext_that_moves_slowly_is_no_stall() {
    // 200 KiB echoed to a client whose socket takes 1000 bytes a second:
    // echo always moves, so neither clock fires, though the core's store
    // waits far longer than the send timeout behind the ciphertext.
    let t0 = Instant::now();
    let (mut server, mut client) = established(t0);
    let t = Timeouts {
        idle: Some(Duration::from_secs(300)),
        send: Some(Duration::from_secs(3)),
    };
    send_all(&mut client, &mut server, &vec![9u8; 200 * 1024]);
    let mut wire = Vec::new();
    let mut now = t0;
    for _ in 0..50 {
        now += Duration::from_secs(1);
        let s = &mut server;
        assert!(
            !s.tls.on_timer(&mut s.core, now, &t),
            "closed at {:?}",
            now - t0
        );
        server.turn(now, 1000, &mut wire);
        let due = server.tls.deadline(&server.core, &t).unwrap();
        assert!(
            due >= now + Duration::from_secs(3),
            "due {:?} at {:?}",
            due - t0,
            now - t0
        );
    }
    assert!(server.core.end().is_none());
}

#[test]
fn a_lent_buffer_keeps_its_bytes_and_new_ciphertext_waits_aside() {
    let t0 = Instant::now();
    let (mut server, mut client) = established(t0);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    send_all(&mut client, &mut server, &data);
    let mut back = Vec::new();
    let mut wire = Vec::new();
    for round in 0..10_000 {
        let s = &mut server;
        s.tls.process(&mut s.core, t0, &mut s.buf, &mut s.bytes);
        if let Some((buf, from)) = s.tls.lend() {
            assert!(s.tls.lend().is_none(), "lent twice");
            // While lent, the session goes on: more echo may be encrypted
            // aside, never into the lent buffer.
            s.tls.process(&mut s.core, t0, &mut s.buf, &mut s.bytes);
            // The "kernel" takes part of it, at most 3000 bytes.
            let n = (buf.len() - from).min(3000 + round % 7);
            wire.extend_from_slice(&buf[from..from + n]);
            s.tls.unlend(buf);
            s.tls.on_sent(&mut s.core, t0, n);
        }
        let (more, _) = server_to_client(&mut client, &mut wire);
        back.extend(more);
        if back.len() == data.len() {
            break;
        }
    }
    assert!(
        back == data,
        "{} of {} bytes came back, in order?",
        back.len(),
        data.len()
    );
}

/// Faults act on the plaintext: the echo is held by `latency` (nothing
/// encrypted before its due time), cut at exactly `reset-after`'s plaintext
/// bytes, and `corrupt-at` flips plaintext byte 3 of the echo, so the
/// client reads a changed byte, not a broken record.
#[test]
fn a_shaper_holds_cuts_and_corrupts_the_plaintext() {
    use crate::fault::Fault;
    use crate::fault::tcp::{Shaper, Verdict};
    let t0 = Instant::now();
    let effects = Fault::parse("latency=50ms,reset-after=10,corrupt-at=3")
        .unwrap()
        .effects;
    let mut shaper = Shaper::new(t0, effects, 1);
    let mut server = Server::new(t0);
    let mut client = client();
    let mut wire = Vec::new();
    let turn = |server: &mut Server, shaper: &mut Shaper, now, wire: &mut Vec<u8>| {
        server.tls.process_shaped(
            &mut server.core,
            now,
            &mut server.buf,
            &mut server.bytes,
            Some(shaper),
        );
        let out = server.tls.outgoing().to_vec();
        server.tls.on_sent(&mut server.core, now, out.len());
        wire.extend(out);
    };
    // The handshake.
    for _ in 0..10 {
        client_to_server(&mut client, &mut server);
        turn(&mut server, &mut shaper, t0, &mut wire);
        server_to_client(&mut client, &mut wire);
    }
    assert!(!client.is_handshaking() && !server.tls.handshaking());
    send_all(&mut client, &mut server, &[0u8; 20]);
    turn(&mut server, &mut shaper, t0, &mut wire);
    let (back, _) = server_to_client(&mut client, &mut wire);
    assert!(back.is_empty(), "{} bytes echoed before 50 ms", back.len());
    assert_eq!(
        shaper.verdict(t0, 20),
        Verdict::Wait(t0 + Duration::from_millis(50))
    );
    let due = t0 + Duration::from_millis(50);
    turn(&mut server, &mut shaper, due, &mut wire);
    turn(&mut server, &mut shaper, due, &mut wire);
    let (back, _) = server_to_client(&mut client, &mut wire);
    let mut want = [0u8; 10];
    assert_eq!(back.len(), 10, "{back:?}");
    assert_eq!(back[3].count_ones(), 1, "{back:?}");
    want[3] = back[3];
    assert_eq!(back, want);
    assert_eq!(server.bytes, 10);
    assert_eq!(
        shaper.verdict(due, server.core.store().len()),
        Verdict::End(crate::fault::EndAfter::Reset)
    );
}
