//! `netecho serve --tls-listen`: TLS echo in every model, checked with a
//! third-party client (Python's ssl module, i.e. OpenSSL, in
//! `data/tls_client.py`), hostile clients on the TLS port, mutual TLS, the
//! self-signed certificate's logged fingerprint, and every bad TLS input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netecho::serve::ListenKind;

use crate::util::{self, MIB, Server};

/// The Python client, next to this file.
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/data/tls_client.py");

/// True when python3 with its ssl module can run, and `model` on this
/// kernel (uring may be refused); otherwise says SKIPPED.
fn usable(test: &str, model: &str) -> bool {
    crate::util::model_runs(model, test) && python_ssl(test)
}

/// True when python3 with its ssl module can run; otherwise says SKIPPED.
fn python_ssl(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import ssl"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skipped!("SKIPPED: {test}: python3 with the ssl module is not installed");
    }
    ok
}

/// A scratch directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netecho-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the Python client; returns its one stdout line.
fn client(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tls_client.py {args:?}: {stdout}\n{stderr}"
    );
    stdout
}

/// The server's TLS address (from its `listening tls` line).
fn tls_addr(server: &Server) -> SocketAddr {
    server
        .listening(ListenKind::Tls, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no `listening tls` line in {:?}", server.stdout_lines()))
}

/// Sends `payload` with the Python client and checks the answer line:
/// every byte back, then the server's close_notify and FIN.
fn python_echo(addr: SocketAddr, payload: &Path, extra: &[&str]) -> String {
    let port = addr.port().to_string();
    let mut args = vec!["echo", "127.0.0.1", &port, payload.to_str().unwrap()];
    args.extend_from_slice(extra);
    let line = client(&args);
    assert!(line.starts_with("ok "), "{line}");
    line
}

/// 5 MiB through a model's TLS port, byte-identical, TLS 1.3 and then 1.2,
/// the plain port still echoing beside it.
fn five_mib(model: &str) {
    if !usable("five_mib", model) {
        return;
    }
    let _heavy = util::heavy();
    let dir = scratch(&format!("5mib-{model}"));
    let payload = dir.join("payload");
    std::fs::write(
        &payload,
        util::Rng::new(util::seed_of(model)).bytes(5 * MIB),
    )
    .unwrap();
    let server = Server::start(model, &["--tls-listen", "127.0.0.1:0"]);
    let addr = tls_addr(&server);
    let line = python_echo(addr, &payload, &[]);
    assert!(
        line.starts_with(&format!("ok TLSv1.3 {} ", 5 * MIB)),
        "{line}"
    );
    let small = dir.join("small");
    std::fs::write(&small, vec![b'x'; 100_000]).unwrap();
    let line = python_echo(addr, &small, &["--tls12"]);
    assert!(line.starts_with("ok TLSv1.2 100000 "), "{line}");
    util::round_trip(server.addr(), b"plain beside tls", 1).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// `openssl s_time -new` (full handshakes, each closed at once, as a load
/// balancer's health check does) is counted as no handshake failure. Before,
/// epoll, tokio and thread counted most of them as `eof` failures: the
/// client's close met our session tickets still going out, and the
/// handshake was taken for unfinished.
fn s_time(model: &str) {
    if !crate::util::model_runs(model, &format!("s_time {model}")) {
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        skipped!("SKIPPED: s_time {model}: openssl is not installed");
        return;
    }
    let server = Server::start(
        model,
        &["--tls-listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let addr = tls_addr(&server);
    let out = Command::new("openssl")
        .args([
            "s_time",
            "-connect",
            &addr.to_string(),
            "-new",
            "-time",
            "1",
        ])
        .output()
        .expect("openssl s_time");
    let said = String::from_utf8_lossy(&out.stdout);
    let made: u64 = said
        .lines()
        .find_map(|l| {
            l.split_once(" connections in ")
                .map(|(n, _)| n.trim().parse().ok())
        })
        .flatten()
        .unwrap_or(0);
    assert!(
        made >= 3,
        "{model}: openssl s_time made {made} connections:\n{said}"
    );
    let page = util::scrape(server.metrics_addr());
    let failed: u64 = ["timeout", "protocol", "client_cert", "alert", "eof"]
        .iter()
        .map(|r| {
            let name = format!("netecho_tls_handshake_failures_total{{reason=\"{r}\"}}");
            util::sample(&page, &name).unwrap_or(0)
        })
        .sum();
    assert_eq!(
        failed, 0,
        "{model}: {made} full handshakes counted {failed} failures"
    );
}

macro_rules! tls_models {
    ($($model:ident),* $(,)?) => {$(
        mod $model {
            #[test]
            fn five_mib_back_identical_with_close_notify() {
                super::five_mib(stringify!($model));
            }

            #[test]
            fn full_handshakes_then_close_are_not_failures() {
                super::s_time(stringify!($model));
            }
        }
    )*};
}

tls_models!(
    iterative, fork, prefork, thread, prethread, epoll, tokio, uring, auto
);

/// Reads until the server closes, or fails the test after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // The alert rustls sends back: read on to the close.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// One counter of the metrics page, by its full sample name and labels.
fn metric(server: &Server, sample: &str) -> Option<u64> {
    let m = server.metrics_addr();
    let mut s = TcpStream::connect_timeout(&m, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// Plaintext on the TLS port and a client that never speaks are closed
/// and counted, while a TLS client in the middle of them is served.
fn hostile(model: &str) {
    if !usable("hostile", model) {
        return;
    }
    let server = Server::start(
        model,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-handshake-timeout",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = tls_addr(&server);
    let mut silent = util::connect(addr);
    let mut garbage = util::connect(addr);
    garbage
        .write_all(b"GET / HTTP/1.0\r\nHost: netecho\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(10)),
        "{model}: a plaintext client on the TLS port was not closed"
    );
    // The silent client is still open (1 s timeout): a TLS client now.
    let dir = scratch(&format!("hostile-{model}"));
    let payload = dir.join("payload");
    std::fs::write(&payload, util::Rng::new(7).bytes(256 * 1024)).unwrap();
    python_echo(addr, &payload, &[]);
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "{model}: a silent client was not closed after --tls-handshake-timeout"
    );
    let counted = |reason: &str| {
        let sample = format!("netecho_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        util::eventually(Duration::from_secs(5), || {
            metric(&server, &sample).is_some_and(|v| v >= 1)
        })
    };
    assert!(counted("protocol"), "{model}: plaintext not counted");
    assert!(counted("timeout"), "{model}: the silent client not counted");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_clients_are_closed_and_counted_epoll() {
    hostile("epoll");
}

#[test]
fn hostile_clients_are_closed_and_counted_thread() {
    hostile("thread");
}

#[test]
fn hostile_clients_are_closed_and_counted_tokio() {
    hostile("tokio");
}

#[test]
fn hostile_clients_are_closed_and_counted_fork() {
    hostile("fork");
}

#[test]
fn hostile_clients_are_closed_and_counted_uring() {
    hostile("uring");
}

/// Certificates made with rcgen: a CA, a server certificate and a client
/// certificate signed by it, and a client certificate nobody signed; PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "netecho test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client".into()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        stranger_cert: write("stranger.pem", stranger.cert.pem()),
        stranger_key: write("stranger.key", stranger.signing_key.serialize_pem()),
    }
}

/// `--tls-client-ca`: a client signed by the CA is served (and the server
/// certificate from `--tls-cert` verifies against the CA); one with no
/// certificate or a self-signed one is refused and counted.
#[test]
fn mutual_tls_accepts_a_signed_client_and_refuses_others() {
    if !python_ssl("mutual_tls") {
        return;
    }
    let dir = scratch("mtls");
    let p = pki(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (s(&p.ca), s(&p.server_cert), s(&p.server_key));
    let server = Server::start(
        "epoll",
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let port = tls_addr(&server).port().to_string();
    let payload = dir.join("payload");
    std::fs::write(&payload, util::Rng::new(11).bytes(300_000)).unwrap();
    let (ccert, ckey) = (s(&p.client_cert), s(&p.client_key));
    let line = client(&[
        "echo",
        "127.0.0.1",
        &port,
        payload.to_str().unwrap(),
        "--ca",
        &ca,
        "--cert",
        &ccert,
        "--key",
        &ckey,
    ]);
    assert!(line.starts_with("ok TLSv1.3 300000 "), "{line}");
    let line = client(&["refused", "127.0.0.1", &port, "--ca", &ca]);
    assert!(line.starts_with("refused"), "no certificate: {line}");
    let (scert, skey) = (s(&p.stranger_cert), s(&p.stranger_key));
    let line = client(&[
        "refused",
        "127.0.0.1",
        &port,
        "--ca",
        &ca,
        "--cert",
        &scert,
        "--key",
        &skey,
    ]);
    assert!(
        line.starts_with("refused"),
        "an unsigned certificate: {line}"
    );
    let sample = "netecho_tls_handshake_failures_total{reason=\"client_cert\"}";
    assert!(
        util::eventually(Duration::from_secs(5), || metric(&server, sample)
            .is_some_and(|v| v >= 2)),
        "refusals not counted: {:?}",
        metric(&server, sample)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `--tls-cert`, the self-signed certificate's SHA-256 is logged,
/// and it is the one the client is shown.
#[test]
fn the_self_signed_certificate_fingerprint_is_logged() {
    if !python_ssl("fingerprint") {
        return;
    }
    let dir = scratch("fingerprint");
    let payload = dir.join("payload");
    std::fs::write(&payload, b"fingerprint").unwrap();
    let server = Server::start("epoll", &["--tls-listen", "127.0.0.1:0"]);
    let line = python_echo(tls_addr(&server), &payload, &[]);
    let seen = line.rsplit(' ').next().unwrap().to_uppercase();
    let log = server.stderr_text();
    let logged = log
        .split("sha256=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sha256= in the log:\n{log}"))
        .replace(':', "");
    assert_eq!(
        logged, seen,
        "the logged fingerprint is not the served certificate's"
    );
    assert!(log.contains("self-signed"), "{log}");
    // The names it answers to, as a user reads them: no Rust list.
    assert!(log.contains("names=localhost,127.0.0.1,::1"), "{log}");
    assert!(!log.contains("[\""), "debug formatting in the log:\n{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every bad TLS input: one line, a non-zero exit, and no `listening` line
/// (the files are checked before anything binds).
#[test]
fn each_bad_tls_input_is_one_line_and_nothing_binds() {
    let dir = scratch("bad");
    let p = pki(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let missing = s(&dir.join("missing.pem"));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let garbage = s(&garbage);
    let (cert, key, other_key) = (s(&p.server_cert), s(&p.server_key), s(&p.client_key));
    let dir_s = s(&dir);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "missing.pem",
        ),
        (vec!["--tls-cert", &dir_s, "--tls-key", &key], "--tls-cert"),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            "no PEM certificate",
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key],
            "no PEM certificate",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &cert],
            "no PEM private key",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            "no PEM private key",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "does not match",
        ),
        (vec!["--tls-cert", &cert], "go together"),
        (vec!["--tls-key", &key], "go together"),
        (vec!["--tls-client-ca", &missing], "missing.pem"),
        (vec!["--tls-client-ca", &key], "no PEM certificate"),
        (
            vec!["--tls-handshake-timeout", "0"],
            "--tls-handshake-timeout",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(&extra);
        let run = util::assert_refused(&args, Duration::from_secs(10));
        assert!(run.stderr.contains(want), "{extra:?}: {}", run.stderr);
        assert!(
            run.stdout.is_empty(),
            "{extra:?} bound: {:?}",
            run.stdout_str()
        );
    }
    let run = util::assert_refused(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        Duration::from_secs(10),
    );
    assert!(run.stderr.contains("need --tls-listen"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

/// `--max-conns` counts TLS clients from their accept, before any
/// handshake: over the limit one is closed at once, and served again once
/// a place is free.
#[test]
fn max_conns_holds_for_tls_clients() {
    if !python_ssl("max_conns") {
        return;
    }
    let server = Server::start(
        "epoll",
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--max-conns",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = tls_addr(&server);
    let held = util::connect(addr);
    assert!(
        util::eventually(Duration::from_secs(5), || metric(
            &server,
            "netecho_connections_active"
        ) == Some(1)),
        "the first client was not admitted"
    );
    let mut over = util::connect(addr);
    assert!(
        closed_within(&mut over, Duration::from_secs(5)),
        "a TLS client over --max-conns was not closed"
    );
    drop(held);
    assert!(util::eventually(Duration::from_secs(5), || metric(
        &server,
        "netecho_connections_active"
    ) == Some(0)));
    let dir = scratch("max-conns");
    let payload = dir.join("payload");
    std::fs::write(&payload, b"after the limit").unwrap();
    python_echo(addr, &payload, &[]);
    let _ = std::fs::remove_dir_all(dir);
}

/// In the blocking models a TLS client's `--max-conns` slot comes back
/// before our close_notify, as a TCP client's does before the FIN: 60
/// clients one after another under `--max-conns 1`, each connecting the
/// moment it had the server's close_notify, are all served and none is
/// counted as turned away.
fn back_to_back_tls(model: &str) {
    if !usable("back_to_back_tls", model) {
        return;
    }
    let server = Server::start(
        model,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--max-conns",
            "1",
            "--workers",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let port = tls_addr(&server).port().to_string();
    let line = client(&["sequence", "127.0.0.1", &port, "60"]);
    assert_eq!(line, "ok 60", "{model}\n{}", server.stderr_text());
    assert_eq!(
        metric(
            &server,
            "netecho_connections_rejected_total{reason=\"max_conns\"}"
        ),
        Some(0),
        "{model}: a back-to-back TLS client was turned away"
    );
}

#[test]
fn back_to_back_tls_clients_are_never_over_max_conns_thread() {
    back_to_back_tls("thread");
}

#[test]
fn back_to_back_tls_clients_are_never_over_max_conns_prethread() {
    back_to_back_tls("prethread");
}

#[test]
fn back_to_back_tls_clients_are_never_over_max_conns_fork() {
    back_to_back_tls("fork");
}

#[test]
fn back_to_back_tls_clients_are_never_over_max_conns_prefork() {
    back_to_back_tls("prefork");
}

/// A TLS client that sends and never reads is closed after
/// `--stall-timeout`, as a TCP one is, and counted as a stall.
fn stall(model: &str) {
    if !usable("stall", model) {
        return;
    }
    let server = Server::start(
        model,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--stall-timeout",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let port = tls_addr(&server).port().to_string();
    let line = client(&["noread", "127.0.0.1", &port]);
    assert!(line.starts_with("closed"), "{model}: {line}");
    let sample = "netecho_connections_closed_total{reason=\"stall\"}";
    assert!(
        util::eventually(Duration::from_secs(5), || metric(&server, sample)
            == Some(1)),
        "{model}: not counted as a stall: {:?}",
        metric(&server, sample)
    );
}

#[test]
fn a_tls_client_that_never_reads_is_closed_as_a_stall_epoll() {
    stall("epoll");
}

#[test]
fn a_tls_client_that_never_reads_is_closed_as_a_stall_thread() {
    stall("thread");
}

#[test]
fn a_tls_client_that_never_reads_is_closed_as_a_stall_tokio() {
    stall("tokio");
}

#[test]
fn a_tls_client_that_never_reads_is_closed_as_a_stall_uring() {
    stall("uring");
}

/// SIGTERM with a TLS client held open: cut at `--drain-timeout`, exit 0,
/// and the client sees the close (every model that forks, threads or
/// loops, at once).
#[test]
fn sigterm_cuts_a_held_tls_client_at_the_drain_timeout() {
    if !python_ssl("drain") {
        return;
    }
    let models: Vec<&str> = ["fork", "prefork", "thread", "epoll", "tokio", "uring"]
        .into_iter()
        .filter(|m| crate::util::model_runs(m, &format!("drain {m}")))
        .collect();
    std::thread::scope(|sc| {
        for model in models {
            sc.spawn(move || {
                use std::io::BufRead;
                let mut server = Server::start(
                    model,
                    &["--tls-listen", "127.0.0.1:0", "--drain-timeout", "1"],
                );
                let port = tls_addr(&server).port().to_string();
                let mut py = Command::new("python3")
                    .args([CLIENT, "hold", "127.0.0.1", &port])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("python3");
                let mut lines = std::io::BufReader::new(py.stdout.take().unwrap()).lines();
                let first = lines.next().and_then(Result::ok).unwrap_or_default();
                assert_eq!(first, "held", "{model}");
                server.sigterm();
                let status = server.wait_exit(Duration::from_secs(10));
                assert!(
                    status.is_some_and(|s| s.success()),
                    "{model}: exit {status:?} after SIGTERM with a TLS client held"
                );
                let last = lines.next().and_then(Result::ok).unwrap_or_default();
                assert!(last.starts_with("closed"), "{model}: {last}");
                let _ = py.wait();
            });
        }
    });
}

/// `--tls-client-ca` without `--listen` serves TLS only, and says who can
/// reach each socket. Before, plain echo was served beside it, without
/// authentication, on `[::]:6666`: every interface.
#[test]
fn mutual_tls_without_listen_opens_no_plain_port() {
    let dir = scratch("mtls-only");
    let p = pki(&dir);
    let ca = p.ca.to_str().unwrap().to_string();
    let tls_only = ["--tls-listen", "127.0.0.1:0", "--tls-client-ca", &ca];
    let server = Server::start_on("epoll", &[], &tls_only);
    // The announcements come together, once everything is ready.
    let tls = server.listening(ListenKind::Tls, Duration::from_secs(10));
    let lines = server.stdout_lines();
    assert!(
        tls.is_some_and(|a| a.ip().is_loopback()),
        "no TLS listener on 127.0.0.1: {lines:?}\n{}",
        server.stderr_text()
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("listening tcp")),
        "a plain listener beside mutual TLS: {lines:?}"
    );
    let said = util::eventually(Duration::from_secs(5), || {
        let log = server.stderr_text();
        log.contains("open: tls echo") && log.contains("this host only")
    });
    assert!(
        said,
        "the log does not say who can reach the TLS port:\n{}",
        server.stderr_text()
    );
    drop(server);
    // UDP would need a plain address: a usage error, not a silent nothing,
    // and refused before any work (the self-signed certificate's log line
    // came before the error).
    let mut with_udp = vec!["serve"];
    with_udp.extend(tls_only);
    with_udp.push("--udp");
    util::assert_refused(&with_udp, Duration::from_secs(20))
        .assert_code(2, "mutual TLS with --udp");
    let _ = std::fs::remove_dir_all(dir);
}
