//! The client side of TLS (`client`, `ping`, `bench` with `--tls`) against
//! third-party TLS echo servers: `socat OPENSSL-LISTEN:…,fork PIPE`
//! (SKIPPED without socat) and a small Python `ssl` echo server that also
//! reports the SNI it was sent (SKIPPED without python3). The certificates are made here with rcgen: a
//! test CA, a leaf for `localhost` and `127.0.0.1` signed by it, and a
//! second CA that signed nothing (all in [`crate::util::tls_peers`]).

use std::path::Path;
use std::time::Duration;

use crate::util::tls_peers::{Pki, python_server, socat_server};
use crate::util::{MIB, Rng, Run, compare, netecho, run_to_end, seed_of};

/// A run that should finish: generous for 1 MiB through a forking socat in
/// a debug build.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

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
    let Some(peer) = python_server(&pki, "client_gets_a_file_back_through_python_ssl") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "a_wrong_ca_is_a_one_line_error") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "no_system_roots_is_a_one_line_error") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "insecure_says_so_and_still_echoes") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "sni_is_the_host_or_the_flag") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "ping_over_tls_times_the_handshake_apart") else {
        return;
    };
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
    assert!(out.contains("(1 handshake)"), "{out}");
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
    let Some(peer) = python_server(&pki, "bench_over_tls_closed_loop_has_no_errors") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "bench_over_tls_new_conn_measures_full_handshakes") else {
        return;
    };
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
    let Some(peer) = python_server(&pki, "bench_tls_resume_measures_resumed_handshakes") else {
        return;
    };
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
