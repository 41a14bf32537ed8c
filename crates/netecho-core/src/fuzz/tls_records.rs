//! The TLS target's entry point: bytes from an unknown client through the
//! TLS session and the connection core, no socket anywhere.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::contract::Conn;
use crate::pending::Pending;
use crate::tls::{Session, Turn};

/// The server configuration the target uses: a self-signed certificate
/// for `localhost`, as `serve` makes, made once (a key pair per input
/// would be all the fuzzer measures).
fn config() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let cert = made.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("the certificate and its key"),
        )
    })
}

/// Bytes from an unknown client on a `--tls-listen` port, through the TLS
/// session and the connection core: the input arrives as pieces (a length
/// byte, 1–64, then that many bytes; the FIN after the last), the socket
/// takes what is sent in slices of varying size. Whatever arrives, it never
/// panics, ends within a bounded number of turns once the client has
/// nothing more to say, and never echoes a byte (nobody without the
/// handshake's keys can make it decrypt one).
pub fn tls_records(data: &[u8]) {
    let start = Instant::now();
    let mut tls = Session::new(config(), start, Duration::from_secs(10)).expect("a server session");
    let mut core = Conn::new(start, Pending::new());
    let mut input = data;
    let mut buf = vec![0u8; 16 * 1024];
    let mut echoed = 0u64;
    let mut sends = 0usize;
    let mut fin = false;
    // Every turn takes a piece of input or sends some ciphertext; after
    // the FIN, a handful more turns settle the end.
    let bound = data.len() * 4 + 64;
    for _ in 0..bound {
        match tls.process(&mut core, start, &mut buf, &mut echoed) {
            Turn::Close(_) => {
                assert_eq!(echoed, 0, "plaintext echoed without a handshake");
                return;
            }
            Turn::ShutWrite => tls.on_shut(&mut core, Ok(())),
            Turn::Again => {}
            Turn::Wait { read, .. } => {
                if read {
                    match input.split_first() {
                        Some((&len, rest)) => {
                            let n = (usize::from(len % 64) + 1).min(rest.len());
                            tls.on_ciphertext(&rest[..n]);
                            input = &rest[n..];
                        }
                        None if !fin => {
                            fin = true;
                            tls.on_fin();
                        }
                        // The client said all it will: a silent one times out.
                        None => tls.time_out(&mut core),
                    }
                } else if fin {
                    tls.time_out(&mut core);
                }
            }
        }
        // The socket takes a slice of what waits.
        sends += 1;
        let room = sends * 997 % 4096;
        let n = tls.outgoing().len().min(room);
        tls.on_sent(&mut core, start, n);
    }
    assert_eq!(echoed, 0, "plaintext echoed without a handshake");
    panic!(
        "the TLS session never ended the connection ({} bytes in)",
        data.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The committed seed corpus (crash reproducers are kept there too, so
    /// they stay fixed without nightly).
    #[test]
    fn tls_records_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tls_records");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            tls_records(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "empty corpus {}", dir.display());
    }

    #[test]
    fn empty_and_short_inputs_end() {
        tls_records(&[]);
        tls_records(&[0]);
        tls_records(&[0xff; 7]);
        tls_records(&[0x16, 0x03, 0x01, 0x00, 0x05]);
    }
}
