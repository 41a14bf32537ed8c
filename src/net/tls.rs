//! The client side of TLS, shared by `client`, `ping` and `bench`: the
//! `--tls` flags, a rustls [`ClientConfig`] built from them (ring provider,
//! TLS 1.2 and 1.3), the name sent as SNI and checked in the certificate,
//! and a blocking handshake with a one-line error.
//!
//! Nothing here knows netecho's server: the same connector talks to socat,
//! OpenSSL or Python's `ssl` module, which is how the tests use it.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::{Error, Result};

/// The TLS flags of `client`, `ping` and `bench` (flattened into each `Opt`).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TlsOpt {
    /// Speak TLS (1.2 or 1.3, rustls) to the server; the echo is of the
    /// plaintext.
    #[arg(long)]
    pub(crate) tls: bool,

    /// With --tls: trust the CA certificates in FILE (PEM) instead of the
    /// system's roots.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "insecure"
    )]
    pub(crate) tls_ca: Option<PathBuf>,

    /// With --tls: do not verify the server's certificate (its signatures
    /// are still checked to be well-formed); said once on stderr.
    #[arg(long, requires = "tls")]
    pub(crate) insecure: bool,

    /// With --tls: the server name sent (SNI) and checked in the
    /// certificate (default: the host of HOST:PORT; an IP address literal
    /// is checked as an IP address and sends no SNI).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub(crate) sni: Option<String>,
}

/// Everything needed to start TLS to one server: the shared configuration
/// (with its session cache) and the name to ask for.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// `HOST:PORT` as the user gave it, for error lines.
    target: String,
}

impl Connector {
    /// The connector `opt` asks for, or `None` without `--tls`. With
    /// `--insecure` it says on stderr that nothing is verified. `resume`
    /// keeps session tickets between connections; without it every
    /// handshake is a full one.
    pub(crate) fn from_opt(opt: &TlsOpt, target: &str, resume: bool) -> Result<Option<Connector>> {
        if !opt.tls {
            return Ok(None);
        }
        let name = server_name(opt.sni.as_deref(), target)?;
        let config = client_config(opt.tls_ca.as_deref(), opt.insecure, resume)?;
        if opt.insecure {
            eprintln!("netecho: warning: --insecure: the certificate of {target} is not verified");
        }
        Ok(Some(Connector::new(config, name, target)))
    }

    /// A connector from parts, for callers that build their own config.
    pub(crate) fn new(config: Arc<ClientConfig>, name: ServerName<'static>, target: &str) -> Self {
        Connector {
            config,
            name,
            target: target.to_string(),
        }
    }

    /// A fresh client connection (nothing sent yet).
    pub(crate) fn start(&self) -> Result<ClientConnection> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(|e| self.failed(&e.to_string()))
    }

    /// Runs the handshake on a connected blocking socket, within `timeout`,
    /// and hands back the connection and how long the handshake took. The
    /// socket's read and write timeouts are left as they were before.
    pub(crate) fn handshake(
        &self,
        sock: &mut TcpStream,
        timeout: Duration,
    ) -> Result<(ClientConnection, Duration)> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let mut conn = self.start()?;
        let saved = (
            sock.read_timeout().ok().flatten(),
            sock.write_timeout().ok().flatten(),
        );
        let result = (|| {
            while conn.is_handshaking() {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        self.failed(&format!("timed out after {}s", timeout.as_secs_f64()))
                    })?;
                let _ = sock.set_read_timeout(Some(left));
                let _ = sock.set_write_timeout(Some(left));
                match conn.complete_io(sock) {
                    Ok((0, 0)) if conn.is_handshaking() => {
                        return Err(self.failed("the server closed the connection"));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io_failed(e, timeout)),
                }
            }
            Ok(())
        })();
        let _ = sock.set_read_timeout(saved.0);
        let _ = sock.set_write_timeout(saved.1);
        result.map(|()| (conn, t0.elapsed()))
    }

    /// The one-line error for a handshake that failed with `e`.
    pub(crate) fn io_failed(&self, e: io::Error, timeout: Duration) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.failed(&format!("timed out after {}s", timeout.as_secs_f64()))
            }
            io::ErrorKind::UnexpectedEof => self.failed("the server closed the connection"),
            io::ErrorKind::ConnectionReset => self.failed("connection reset by the server"),
            // Our own ClientHello came back: the server echoes plain TCP.
            _ if echoed_hello(&e) => self.failed(
                "the server sent our own ClientHello back: it is a plain echo server, not TLS (drop --tls)",
            ),
            _ => match certificate_words(&e) {
                Some(words) => self.failed(words),
                None => self.failed(&e.to_string()),
            },
        }
    }

    /// The one-line error for a handshake that failed because of `why`.
    pub(crate) fn failed(&self, why: &str) -> Error {
        Error::TlsClient(format!("TLS handshake with {} failed: {why}", self.target))
    }
}

/// The common certificate failures in words, instead of rustls' variant
/// names (`invalid peer certificate: UnknownIssuer`).
fn certificate_words(e: &io::Error) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e.get_ref()?.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match c {
        C::UnknownIssuer => {
            "the server's certificate is not signed by a CA this client trusts \
             (give that CA with --tls-ca FILE, or --insecure)"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate is not valid for this name (--sni NAME names another)"
        }
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check this machine's clock)"
        }
        C::Revoked => "the server's certificate has been revoked",
        C::BadSignature => "the server's certificate has a bad signature",
        _ => return None,
    })
}

/// Whether a handshake failed because the server sent a ClientHello: what
/// a plain (non-TLS) echo server does with ours.
fn echoed_hello(e: &io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InappropriateHandshakeMessage {
            got_type: rustls::HandshakeType::ClientHello,
            ..
        })
    )
}

/// What was agreed, for a line of output: `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
pub(crate) fn describe(conn: &ClientConnection) -> String {
    let version = conn.protocol_version().map_or_else(
        || "TLS".to_string(),
        |v| v.as_str().unwrap_or("TLS").replace('_', "."),
    );
    match conn.negotiated_cipher_suite() {
        Some(suite) => match suite.suite().as_str() {
            Some(name) => format!("{version} {name}"),
            None => format!("{version} cipher suite 0x{:04x}", u16::from(suite.suite())),
        },
        None => version,
    }
}

/// The provider every TLS connection of netecho uses: ring, which builds
/// with a C compiler alone (aws-lc-rs would also need cmake and Go).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration: TLS 1.2 and 1.3, trusting `ca` (a PEM file) or
/// else the system's roots, or nothing at all with `insecure`. Without
/// `resume` no session is kept, so every handshake is a full one (rustls
/// otherwise keeps tickets in memory by default).
pub(crate) fn client_config(
    ca: Option<&Path>,
    insecure: bool,
    resume: bool,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::TlsClient(format!("TLS setup: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        let roots = match ca {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file, each one-line errors when the file
/// cannot be read or holds none.
pub(crate) fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let shown = path.display();
    let bad = |why: String| Error::TlsClient(format!("--tls-ca {shown}: {why}"));
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(pem_error(e)))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        let cert = cert.map_err(|e| bad(pem_error(e)))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

/// A PEM error in words: a missing file is its OS reason, not a debug dump.
fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not PEM: {other}"),
    }
}

/// The system's trusted roots (honouring `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`); none at all is an error, since then no server could
/// ever be verified.
fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::TlsClient(format!(
            "no trusted CA certificates found on this system{why}; give --tls-ca FILE, or --insecure"
        )));
    }
    Ok(roots)
}

/// The name for SNI and certificate checks: `sni` if given, else the host
/// of `target` (`HOST:PORT`, `[v6]:PORT`); an IP literal becomes an
/// IP-address name, which rustls checks against the certificate's IP
/// entries and does not send as SNI.
pub(crate) fn server_name(sni: Option<&str>, target: &str) -> Result<ServerName<'static>> {
    let host = match sni {
        Some(name) => name,
        None => target
            .rsplit_once(':')
            .map_or(target, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| {
        let flag = if sni.is_some() { "--sni" } else { "the host" };
        Error::TlsClient(format!(
            "{flag} '{host}' is not a valid DNS name or IP address"
        ))
    })
}

/// `--insecure`: accepts any certificate, but still checks that the
/// handshake's signatures are well-formed and made with the certificate's
/// key, so the TLS exchange itself stays sound.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_comes_from_the_target_or_sni() {
        let name = |sni, target| server_name(sni, target).map(|n| n.to_str().into_owned());
        assert_eq!(name(None, "localhost:7").unwrap(), "localhost");
        assert_eq!(name(None, "127.0.0.1:7").unwrap(), "127.0.0.1");
        assert!(matches!(
            server_name(None, "[::1]:7"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name(None, "127.0.0.1:7"),
            Ok(ServerName::IpAddress(_))
        ));
        assert_eq!(name(Some("echo.test"), "127.0.0.1:7").unwrap(), "echo.test");
        assert!(server_name(Some("bad name!"), "127.0.0.1:7").is_err());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("netecho-tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = roots_from_file(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = dir.join("missing.pem");
        let e = roots_from_file(&missing).unwrap_err().to_string();
        assert!(e.contains("No such file"), "{e}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = dir.join("good.pem");
        std::fs::write(&good, cert.pem()).unwrap();
        assert_eq!(roots_from_file(&good).unwrap().len(), 1);
        assert!(client_config(Some(&good), false, false).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
