//! TLS for client connections (`--ssl`): the certificate and key files,
//! loaded once at start (a bad file is a start error naming it) and again
//! on every reload (SIGHUP, `rustrack restart`, `tmp/restart.txt`), and the
//! rustls acceptor whose certificate resolver hands each new handshake the
//! current pair. A reload swaps one `Arc` under a lock: handshakes under way
//! and connections already open keep the pair they started with, new
//! handshakes get the new one, and a reload that fails keeps the old pair
//! and records the error for `rustrack status`.
//!
//! ALPN offers `h2` then `http/1.1`; a client that offers neither (or no
//! ALPN at all) gets HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::report::TlsStatus;

/// The ALPN names, in the server's order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Where the certificate chain and its private key are read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Hands every handshake the pair loaded last. A read lock and an `Arc`
/// clone per handshake: nothing next to the handshake's own signature.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// What `status` shows about the certificate.
#[derive(Debug, Default)]
struct Record {
    loaded_at: u64,
    reloads: u64,
    error: Option<String>,
    error_at: Option<u64>,
}

/// The TLS side of the listeners: the acceptor and how to reload it.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    record: Mutex<Record>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the certificate chain (end-entity first) and the private key
/// (PKCS#8, PKCS#1 or SEC1) and checks that they belong together. Every
/// error names the file at fault.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
    let cert_path = &files.certificate;
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pem_error(e, cert_path, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, cert_path, "certificate"))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "no PEM certificate (BEGIN CERTIFICATE) in {} (--ssl-certificate)",
            cert_path.display()
        ));
    }
    let key_path = &files.key;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(e, key_path, "key"))?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        anyhow!(
            "unusable private key in {} (--ssl-certificate-key): {e}",
            key_path.display()
        )
    })?;
    let pair = CertifiedKey::new(certs, signing_key);
    // Parses the end-entity certificate too, so a garbled one fails here
    // rather than in every handshake.
    pair.keys_match().map_err(|e| {
        anyhow!(
            "the key in {} does not match the certificate in {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Arc::new(pair))
}

fn pem_error(
    e: tokio_rustls::rustls::pki_types::pem::Error,
    path: &Path,
    what: &str,
) -> anyhow::Error {
    use tokio_rustls::rustls::pki_types::pem::Error as Pem;
    let flag = match what {
        "key" => "--ssl-certificate-key",
        _ => "--ssl-certificate",
    };
    match e {
        Pem::Io(io) => anyhow!("cannot read {} ({flag}): {io}", path.display()),
        Pem::NoItemsFound => anyhow!(
            "no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in {} ({flag})",
            path.display()
        ),
        other => anyhow!("bad PEM {what} in {} ({flag}): {other}", path.display()),
    }
}

impl Tls {
    /// Loads the pair and builds the acceptor; the error names the file.
    pub fn load(files: TlsFiles) -> Result<Tls> {
        let provider = Arc::new(ring::default_provider());
        let pair = load_pair(&files, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(pair),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Tls {
            files,
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            record: Mutex::new(Record {
                loaded_at: unix_now(),
                ..Record::default()
            }),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again. On success new handshakes use the new pair;
    /// on failure the old pair stays, and the error is logged and kept for
    /// `status` until a reload succeeds.
    pub fn reload(&self, why: &str) {
        let result = load_pair(&self.files, &self.provider);
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(pair) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = pair;
                record.loaded_at = unix_now();
                record.reloads += 1;
                record.error = None;
                record.error_at = None;
                tracing::info!(
                    "{why}: reloaded the TLS certificate {}",
                    self.files.certificate.display()
                );
            }
            Err(e) => {
                tracing::error!("{why}: TLS certificate not reloaded, the old one stays: {e:#}");
                record.error = Some(format!("{e:#}"));
                record.error_at = Some(unix_now());
            }
        }
    }

    pub fn status(&self) -> TlsStatus {
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        TlsStatus {
            certificate: self.files.certificate.clone(),
            key: self.files.key.clone(),
            loaded_at: record.loaded_at,
            reloads: record.reloads,
            error: record.error.clone(),
            error_at: record.error_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let certificate = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&certificate, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        TlsFiles {
            certificate,
            key: key_path,
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "not a certificate\n", "nor a key\n");
        let e = format!("{:#}", Tls::load(f.clone()).err().unwrap());
        assert!(
            e.contains("cert.pem") && e.contains("--ssl-certificate"),
            "{e}"
        );

        let missing = TlsFiles {
            certificate: dir.path().join("nope.pem"),
            key: f.key.clone(),
        };
        let e = format!("{:#}", Tls::load(missing).err().unwrap());
        assert!(e.contains("cannot read") && e.contains("nope.pem"), "{e}");
    }
}
