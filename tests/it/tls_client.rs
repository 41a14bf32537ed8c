//! The client side of TLS (`client`, `ping`, `bench` with `--tls`) against
//! third-party TLS echo servers: `socat OPENSSL-LISTEN:…,fork PIPE`
//! (SKIPPED without socat) and a small Python `ssl` echo server that also
//! reports the SNI it was sent. The certificates are made here with rcgen: a
//! test CA, a leaf for `localhost` and `127.0.0.1` signed by it, and a
//! second CA that signed nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::util::{MIB, Rng, Run, compare, netecho, run_to_end, seed_of};

/// A run that should finish: generous for 1 MiB through a forking socat in
/// a debug build.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to say which port it listens on.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The Python TLS echo server: prints `port N`, then `sni NAME` (`-` when
/// none was sent) for each handshake; echoes until the client's
/// close_notify or FIN, then sends close_notify and closes.
const PY_TLS_ECHO: &str = r#"
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
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
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

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A TLS echo server process of ours; killed (by its pid) on drop.
struct Peer {
    child: Child,
    port: u16,
    /// The Python server's further stdout lines (`sni …`).
    lines: Option<mpsc::Receiver<String>>,
}

impl Peer {
    fn target(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }

    /// The SNI of the next handshake the Python server reports.
    fn next_sni(&self) -> String {
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

/// The Python ssl echo server with the test PKI's leaf.
fn python_server(pki: &Pki) -> Peer {
    let mut child = Command::new("python3")
        .args([
            "-c",
            PY_TLS_ECHO,
            &pki.path("cert.pem"),
            &pki.path("key.pem"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 starts");
    let out: ChildStdout = child.stdout.take().expect("stdout");
    let rx = line_channel(out);
    let line = rx.recv_timeout(START_TIMEOUT).expect("the port line");
    let port = line
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port line: {line}"));
    Peer {
        child,
        port,
        lines: Some(rx),
    }
}

/// `socat OPENSSL-LISTEN:0,…,fork PIPE` with the test PKI's leaf, or `None`
/// (after SKIPPED on stderr) when socat is not installed.
fn socat_server(pki: &Pki, test: &str) -> Option<Peer> {
    if Command::new("socat").arg("-V").output().is_err() {
        eprintln!("SKIPPED: {test}: socat is not installed (.ci/run installs it where apt works)");
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

fn run(args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    run_to_end(netecho(args), stdin, RUN_TIMEOUT)
}

/// The `--json` summary of a bench run that must have succeeded.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let r = run(args, None);
    r.assert_code(0, "bench --tls");
    serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("bench --json is not JSON ({e}): {}", r.stdout_str()))
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn client_gets_a_file_back_through_socat() {
    let pki = Pki::new("socat");
    let Some(peer) = socat_server(&pki, "client_gets_a_file_back_through_socat") else {
        return;
    };
    let input = Rng::new(seed_of("tls_client/socat")).bytes(MIB);
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("ca.pem"),
            &peer.target("localhost"),
        ],
        Some(input.clone()),
    );
    r.assert_code(0, "client --tls through socat");
    if let Err(e) = compare("client --tls through socat", &input, &r.stdout) {
        panic!("{e}");
    }
}

#[test]
fn client_gets_a_file_back_through_python_ssl() {
    let pki = Pki::new("py-client");
    let peer = python_server(&pki);
    let input = Rng::new(seed_of("tls_client/python")).bytes(MIB);
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("ca.pem"),
            &peer.target("127.0.0.1"),
        ],
        Some(input.clone()),
    );
    r.assert_code(0, "client --tls through Python ssl");
    if let Err(e) = compare("client --tls through Python ssl", &input, &r.stdout) {
        panic!("{e}");
    }
    assert!(
        r.stderr.is_empty(),
        "a verified run says nothing:\n{}",
        r.stderr
    );
    // An IP target sends no SNI (RFC 6066 forbids IP literals there).
    assert_eq!(peer.next_sni(), "-");
}

#[test]
fn a_wrong_ca_is_a_one_line_error() {
    let pki = Pki::new("wrong-ca");
    let peer = python_server(&pki);
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("other-ca.pem"),
            &peer.target("localhost"),
        ],
        Some(b"hello\n".to_vec()),
    );
    assert_ne!(
        r.code(),
        Some(0),
        "an unverifiable server must fail the run"
    );
    assert!(r.status.is_some(), "killed at the timeout");
    let line = r.one_line_error("client with the wrong CA");
    assert!(
        line.contains("TLS handshake") && line.contains("certificate"),
        "{line}"
    );
    assert!(r.stdout.is_empty(), "nothing was echoed");

    // No CA file at all, and one that holds no certificate.
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("missing.pem"),
            &peer.target("localhost"),
        ],
        Some(Vec::new()),
    );
    assert_eq!(r.code(), Some(1));
    assert!(r.one_line_error("a missing CA file").contains("--tls-ca"));
    let r = run(
        &[
            "ping",
            "--tls",
            "-c",
            "1",
            "--tls-ca",
            &pki.path("key.pem"),
            &peer.target("localhost"),
        ],
        None,
    );
    assert_eq!(r.code(), Some(1));
    assert!(
        r.one_line_error("a key as CA file")
            .contains("no PEM certificate")
    );
}

#[test]
fn no_system_roots_is_a_one_line_error() {
    let pki = Pki::new("no-roots");
    let peer = python_server(&pki);
    let mut cmd = netecho(&["client", "--tls", &peer.target("localhost")]);
    let nowhere = Path::new("/nonexistent/netecho-no-certs");
    cmd.env("SSL_CERT_FILE", nowhere)
        .env("SSL_CERT_DIR", nowhere);
    let r = run_to_end(cmd, Some(Vec::new()), RUN_TIMEOUT);
    assert_eq!(r.code(), Some(1), "stderr: {}", r.stderr);
    let line = r.one_line_error("no trusted roots");
    assert!(line.contains("no trusted CA certificates"), "{line}");
}

#[test]
fn insecure_says_so_and_still_echoes() {
    let pki = Pki::new("insecure");
    let peer = python_server(&pki);
    let r = run(
        &["client", "--tls", "--insecure", &peer.target("localhost")],
        Some(b"no verification\n".to_vec()),
    );
    r.assert_code(0, "client --tls --insecure");
    assert_eq!(r.stdout, b"no verification\n");
    assert!(
        r.stderr.contains("--insecure") && r.stderr.contains("not verified"),
        "stderr should say verification is off:\n{}",
        r.stderr
    );
}

#[test]
fn sni_is_the_host_or_the_flag() {
    let pki = Pki::new("sni");
    let peer = python_server(&pki);
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("ca.pem"),
            &peer.target("localhost"),
        ],
        Some(b"x".to_vec()),
    );
    r.assert_code(0, "client --tls to localhost");
    assert_eq!(peer.next_sni(), "localhost");
    // --sni is sent and checked: the leaf is not for echo.test, so this
    // verifies nothing and needs --insecure.
    let r = run(
        &[
            "client",
            "--tls",
            "--insecure",
            "--sni",
            "echo.test",
            &peer.target("127.0.0.1"),
        ],
        Some(b"y".to_vec()),
    );
    r.assert_code(0, "client --tls --sni echo.test");
    assert_eq!(peer.next_sni(), "echo.test");
    let r = run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &pki.path("ca.pem"),
            "--sni",
            "echo.test",
            &peer.target("127.0.0.1"),
        ],
        Some(b"z".to_vec()),
    );
    assert_eq!(r.code(), Some(1), "a name the certificate lacks must fail");
    assert!(
        r.one_line_error("--sni not in the cert")
            .contains("certificate")
    );
}

#[test]
fn ping_over_tls_times_the_handshake_apart() {
    let pki = Pki::new("ping");
    let peer = python_server(&pki);
    let ca = pki.path("ca.pem");
    let target = peer.target("localhost");
    let r = run(
        &[
            "ping", "--tls", "--tls-ca", &ca, "-c", "3", "-i", "0.01", &target,
        ],
        None,
    );
    r.assert_code(0, "ping --tls");
    let out = r.stdout_str();
    assert!(out.contains(", tls): 64 bytes per probe"), "{out}");
    assert!(out.contains("TLS handshake with 127.0.0.1:"), "{out}");
    assert_eq!(out.matches("bytes from").count(), 3, "{out}");
    assert!(out.contains("(1 handshakes)"), "{out}");
    let r = run(
        &[
            "ping",
            "--tls",
            "--tls-ca",
            &ca,
            "-c",
            "2",
            "-i",
            "0.01",
            "--new-conn",
            &target,
        ],
        None,
    );
    r.assert_code(0, "ping --tls --new-conn");
    let out = r.stdout_str();
    assert_eq!(out.matches(" handshake=").count(), 2, "{out}");
}

#[test]
fn bench_over_tls_closed_loop_has_no_errors() {
    let pki = Pki::new("bench-closed");
    let peer = python_server(&pki);
    let ca = pki.path("ca.pem");
    let target = peer.target("localhost");
    let v = bench_json(&[
        "bench",
        "--tls",
        "--tls-ca",
        &ca,
        "-c",
        "4",
        "-s",
        "3000",
        "-n",
        "400",
        "--warmup",
        "0",
        "--threads",
        "2",
        "--json",
        &target,
    ]);
    assert_eq!(v["proto"], "tls");
    assert_eq!(num(&v, "errors"), 0.0);
    assert_eq!(num(&v, "requests"), 400.0);
    // The kept connections' handshakes, at setup.
    assert_eq!(num(&v, "handshakes"), 4.0);
    assert!(num(&v, "handshake_p50_us") > 0.0, "{v}");
    assert_eq!(num(&v, "handshake_rps"), 0.0);
}

#[test]
fn bench_over_tls_new_conn_measures_full_handshakes() {
    let pki = Pki::new("bench-new");
    let peer = python_server(&pki);
    let ca = pki.path("ca.pem");
    let target = peer.target("localhost");
    let v = bench_json(&[
        "bench",
        "--tls",
        "--tls-ca",
        &ca,
        "--new-conn",
        "-c",
        "2",
        "-n",
        "40",
        "--warmup",
        "0",
        "--json",
        &target,
    ]);
    assert_eq!(v["mode"], "new-conn");
    assert_eq!(num(&v, "errors"), 0.0);
    assert_eq!(num(&v, "requests"), 40.0);
    assert_eq!(num(&v, "handshakes"), 40.0);
    assert_eq!(num(&v, "handshakes_resumed"), 0.0, "resumption is off: {v}");
    assert!(num(&v, "handshake_rps") > 0.0, "{v}");
    for key in ["handshake_p50_us", "handshake_p99_us", "handshake_max_us"] {
        assert!(num(&v, key) > 0.0, "{key}: {v}");
    }
    assert!(num(&v, "handshake_p50_us") <= num(&v, "handshake_max_us"));
}

#[test]
fn bench_tls_resume_measures_resumed_handshakes() {
    let pki = Pki::new("bench-resume");
    let peer = python_server(&pki);
    let ca = pki.path("ca.pem");
    let target = peer.target("localhost");
    // The warm-up's handshakes fetch the first tickets.
    let v = bench_json(&[
        "bench",
        "--tls",
        "--tls-ca",
        &ca,
        "--tls-resume",
        "-c",
        "2",
        "-n",
        "40",
        "--warmup",
        "0.3",
        "--json",
        &target,
    ]);
    assert_eq!(num(&v, "errors"), 0.0);
    assert_eq!(num(&v, "handshakes"), 40.0);
    // Each ticket is used once and each connection brings new ones, so
    // every measured handshake can be a resumed one.
    assert!(
        num(&v, "handshakes_resumed") >= 36.0,
        "most handshakes should be resumed: {v}"
    );
}
