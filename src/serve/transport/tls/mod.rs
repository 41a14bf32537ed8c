//! TLS echo: the server's certificate and settings ([`Tls`], built from
//! the command line before anything binds). The session itself, the one
//! layer every model puts between a TLS socket and the connection core, is
//! `netecho_core::tls::Session`: bytes in, bytes out, no socket.
//!
//! - [`Tls::load`] reads `--tls-cert`/`--tls-key` (PEM; PKCS#8, PKCS#1 or
//!   SEC1 keys), or makes a self-signed certificate for `localhost`,
//!   `127.0.0.1` and `::1` with rcgen and logs its SHA-256 fingerprint;
//!   `--tls-client-ca` asks every client for a certificate signed by it.
//!   rustls with the ring provider, TLS 1.2 and 1.3: ring builds from the
//!   crates alone (a C compiler, no cmake or Go), so a fresh machine needs
//!   nothing more than for the rest of netecho.
//! - Every bad input is a [`TlsError`]: one line, before any socket exists.
//! - [`socket`] drives the session over a non-blocking socket (epoll,
//!   tokio, and [`blocking`] for the blocking models); io_uring feeds it
//!   from its completions.

pub(crate) mod blocking;
pub(crate) mod socket;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The names the self-signed certificate is valid for: what a client on
/// this machine connects to.
const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

pub use crate::error::TlsError;

/// The TLS side of a server: its rustls configuration and the listeners
/// that speak TLS.
#[derive(Debug)]
pub(crate) struct Tls {
    /// Shared by every connection; cheap to clone (an `Arc`).
    pub(crate) config: Arc<ServerConfig>,
    /// `--tls-handshake-timeout`.
    pub(crate) handshake_timeout: Duration,
    /// The TLS listeners' descriptors, filled in after binding: every
    /// model tells a TLS client by the listener it came from (checked on
    /// the original before any clone; a forked worker inherits the same
    /// numbers), with no `getsockname` per connection.
    pub(crate) fds: Vec<RawFd>,
}

/// What `--tls-*` said, before anything is loaded.
#[derive(Debug, Default)]
pub(crate) struct Files<'a> {
    pub(crate) cert: Option<&'a Path>,
    pub(crate) key: Option<&'a Path>,
    pub(crate) client_ca: Option<&'a Path>,
}

impl Tls {
    /// Builds the configuration from the files (or a fresh self-signed
    /// certificate when none are given). Every failure is a [`TlsError`].
    pub(crate) fn load(files: &Files<'_>, handshake_timeout: Duration) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The client CA first: the self-signed certificate is logged only
        // once everything else is known to be good.
        let roots = files.client_ca.map(client_roots).transpose()?;
        let (key, made) = match (files.cert, files.key) {
            (Some(cert), Some(key)) => (load_pair(cert, key, &provider)?, false),
            (None, None) => (self_signed(&provider)?, true),
            _ => {
                return Err(TlsError::Usage(
                    "--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate",
                ));
            }
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match (files.client_ca, roots) {
            (Some(path), Some(roots)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::BadClientCa {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        if made {
            tracing::info!(
                sha256 = %fingerprint(&key.cert[0]),
                names = %SELF_SIGNED_NAMES.join(","),
                "no --tls-cert: serving a self-signed certificate"
            );
        }
        let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        Ok(Tls {
            config: Arc::new(config),
            handshake_timeout,
            fds: Vec::new(),
        })
    }

    /// True when `listener` is one of the TLS listeners.
    pub(crate) fn listens_on(&self, listener: &TcpListener) -> bool {
        self.fds.contains(&listener.as_raw_fd())
    }
}

/// Reads a file named by `flag`, as one typed error if it cannot be.
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order; none is an error.
fn certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let not_cert = |why: String| TlsError::NotCert {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_cert(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(not_cert(String::new()));
    }
    Ok(certs)
}

/// `--tls-cert` and `--tls-key`: the chain, the key, and proof they belong
/// together.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = certs("--tls-cert", cert)?;
    let pem = read("--tls-key", key)?;
    let not_key = |why: String| TlsError::NotKey {
        path: key.to_path_buf(),
        why,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => not_key(String::new()),
        e => not_key(format!(": {e}")),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| not_key(format!(": {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        // A key type that cannot say its public key: rustls cannot check.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(TlsError::BadCert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// A certificate for this machine's loopback names, made now, so that
/// `netecho serve --tls-listen 127.0.0.1:6667` works with no files.
/// [`Tls::load`] logs its fingerprint so a client can pin it.
fn self_signed(provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Setup(e.to_string()))?;
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert], signing))
}

/// SHA-256 of a certificate's DER, as `AB:CD:…` (the form `openssl x509
/// -fingerprint -sha256` prints).
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// `--tls-client-ca`: the roots client certificates must chain to.
fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs("--tls-client-ca", path)? {
        roots.add(cert).map_err(|e| TlsError::BadClientCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
