//! Third-party TLS echo servers and a test PKI, for tests of netecho's TLS
//! clients (and of its TLS server, as peers to compare against): a Python
//! `ssl` echo server that reports the SNI it was sent (`None` and SKIPPED
//! without python3), `socat OPENSSL-LISTEN:0,…,fork PIPE` (`None` and
//! SKIPPED without socat), a rustls server in this process that echoes or
//! swallows and notes where each client came from, and a CA, a second CA
//! and a leaf for `localhost` / `127.0.0.1` made with rcgen in a scratch
//! directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::peers::serve_listener;

/// How long a server may take to say which port it listens on.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The Python TLS echo server: prints `port N`, then `sni NAME` (`-` when
/// none was sent) for each handshake; echoes until the client's
/// close_notify or FIN, then sends close_notify and closes. TCP_NODELAY,
/// or Nagle holds each first echo behind the unacknowledged session
/// tickets for the client's delayed ACK (40 ms).
pub const PY_TLS_ECHO: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
def on_sni(sslobj, name, c):
    print("sni", name or "-", flush=True)
ctx.sni_callback = on_sni
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(128)
print("port", ls.getsockname()[1], flush=True)
def serve(c):
    try:
        c.settimeout(30)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(c, server_side=True)
        while True:
            d = s.recv(65536)
            if not d:
                break
            s.sendall(d)
        try:
            s.unwrap()
        except (ssl.SSLError, OSError):
            pass
    except (ssl.SSLError, OSError):
        pass
    finally:
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The test PKI in a scratch directory, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// The PKI in a fresh scratch directory named after `name`.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("netecho-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let ca = make_ca("netecho test CA");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("signing the leaf");
        let other = make_ca("netecho other CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("other-ca.pem"), other.pem()).expect("write");
        std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write");
        Pki { dir }
    }

    /// `ca.pem`, `other-ca.pem`, `cert.pem` (the leaf) or `key.pem`.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A rustls client that trusts this PKI's CA (and nothing else), for a
    /// server given `--tls-cert cert.pem --tls-key key.pem`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca.pem") {
            roots
                .add(ca.expect("a PEM certificate"))
                .expect("the test CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A TLS echo server process of ours; killed (by its pid) on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
    /// The Python server's further stdout lines (`sni …`).
    lines: Option<mpsc::Receiver<String>>,
}

impl Peer {
    pub fn target(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }

    /// The SNI of the next handshake the Python server reports.
    pub fn next_sni(&self) -> String {
        let rx = self.lines.as_ref().expect("the Python server reports SNI");
        loop {
            let line = rx.recv_timeout(START_TIMEOUT).expect("an sni line");
            if let Some(name) = line.strip_prefix("sni ") {
                return name.to_string();
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of `out` on a channel, read by a thread.
fn line_channel(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The Python ssl echo server with the test PKI's leaf, or `None` (after
/// SKIPPED on stderr, naming `test`) when python3 is not installed.
pub fn python_server(pki: &Pki, test: &str) -> Option<Peer> {
    let spawned = Command::new("python3")
        .args([
            "-c",
            PY_TLS_ECHO,
            &pki.path("cert.pem"),
            &pki.path("key.pem"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skipped!(
                "SKIPPED: {test}: python3 is not installed (.ci/run installs it where apt works)"
            );
            return None;
        }
        Err(e) => panic!("python3 does not start: {e}"),
    };
    let out: ChildStdout = child.stdout.take().expect("stdout");
    let rx = line_channel(out);
    let line = rx.recv_timeout(START_TIMEOUT).expect("the port line");
    let port = line
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port line: {line}"));
    Some(Peer {
        child,
        port,
        lines: Some(rx),
    })
}

/// `socat OPENSSL-LISTEN:0,…,fork PIPE` with the test PKI's leaf, or `None`
/// (after SKIPPED on stderr) when socat is not installed.
pub fn socat_server(pki: &Pki, test: &str) -> Option<Peer> {
    if Command::new("socat").arg("-V").output().is_err() {
        skipped!("SKIPPED: {test}: socat is not installed (.ci/run installs it where apt works)");
        return None;
    }
    let listen = format!(
        "OPENSSL-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
        pki.path("cert.pem"),
        pki.path("key.pem")
    );
    let mut child = Command::new("socat")
        .args(["-d", "-d", &listen, "PIPE"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("socat starts");
    let rx = line_channel(child.stderr.take().expect("stderr"));
    // `N listening on AF=2 127.0.0.1:PORT`
    let port = loop {
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .expect("socat's listening line");
        if let Some((_, addr)) = line.split_once("listening on AF=2 ") {
            break addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no port in: {line}"));
        }
    };
    Some(Peer {
        child,
        port,
        lines: None,
    })
}

/// What [`rustls_server`] does with a connection's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Echo it, then answer close_notify with close_notify.
    Echo,
    /// Read and drop it: the handshake is made, no echo ever comes.
    Swallow,
    /// Echo it with one bit of plaintext byte N (of the connection) flipped.
    Flip(u64),
}

/// A TLS server in this process (rustls, the test PKI's leaf) on
/// 127.0.0.1:0, a thread per connection; it needs no tool installed.
pub struct RustlsPeer {
    pub addr: SocketAddr,
    /// Each accepted client's address, in order, as `accept` gave it.
    pub clients: Arc<Mutex<Vec<SocketAddr>>>,
}

impl RustlsPeer {
    /// The client addresses so far.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.clients.lock().expect("clients").clone()
    }
}

/// Starts a [`RustlsPeer`] that does `after` with every connection.
pub fn rustls_server(pki: &Pki, after: After) -> RustlsPeer {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("cert.pem"))
        .expect("cert.pem")
        .collect::<Result<_, _>>()
        .expect("a PEM certificate");
    let key = PrivateKeyDer::from_pem_file(pki.path("key.pem")).expect("key.pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the leaf and its key");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS peer");
    let addr = listener.local_addr().expect("local addr");
    let clients = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&clients);
    serve_listener(listener, usize::MAX, move |sock| {
        if let Ok(peer) = sock.peer_addr() {
            seen.lock().expect("clients").push(peer);
        }
        let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        loop {
            // Ok(0) is the client's close_notify; an error its FIN or a
            // failed handshake: either way the connection is over.
            let n = match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let After::Flip(at) = after
                && (offset..offset + n as u64).contains(&at)
            {
                buf[(at - offset) as usize] ^= 0x20;
            }
            offset += n as u64;
            if after != After::Swallow && tls.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    RustlsPeer { addr, clients }
}
