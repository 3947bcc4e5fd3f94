//! TLS on the listening port: HTTPS and `wss://` on one port, with rustls.
//!
//! With `[tls]` configured, every accepted connection does a TLS handshake first (TLS 1.2
//! or 1.3, nothing older; ALPN `http/1.1`), within `limits.header_timeout`, and is then
//! served as before. There is no plain HTTP beside it: a port is one or the other, so a
//! page can never be reached without TLS by accident.
//!
//! The certificate comes from a resolver that holds the current chain and key behind a
//! lock: [`Tls::reload`] (the binary calls it on SIGHUP) reads the files again and swaps
//! them, so new handshakes present the new certificate while open connections keep the
//! session they have. A reload that fails (a missing file, a key that does not match)
//! keeps the old certificate and says why. At start-up the same checks are errors that
//! name the file and the setting to fix.
//!
//! The provider is aws-lc-rs (post-quantum key exchange first): see the workspace
//! Cargo.toml for why not ring.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// The protocol versions offered: TLS 1.2 and 1.3 (rustls speaks nothing older anyway; the
/// list makes it explicit and keeps it so).
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&version::TLS13, &version::TLS12];

/// A marker in the extensions of every request that came over TLS: the apps mark their
/// cookies `Secure` when it is there, and the server sends HSTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverTls;

/// Whether a request (its extensions) came over TLS.
pub fn over_tls(extensions: &axum::http::Extensions) -> bool {
    extensions.get::<OverTls>().is_some()
}

/// The server's TLS: the acceptor for new connections and the certificate files, to read
/// again on [`Tls::reload`]. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    cert: PathBuf,
    key: PathBuf,
    /// What the handshakes present; swapped by `reload`.
    resolver: Arc<Resolver>,
    /// Built once: the certificate is not in it but in the resolver.
    acceptor: TlsAcceptor,
    /// `Strict-Transport-Security`, built once from `tls.hsts`.
    hsts: Option<HeaderValue>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .field("hsts", &self.inner.hsts)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate and key of `config` (`None` when TLS is off). A file that is
    /// missing or unreadable, holds no certificate or key, or a key that does not match
    /// the certificate is an error naming the file.
    pub fn load(config: &TlsConfig) -> Result<Option<Tls>> {
        let (cert, key) = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => return Ok(None),
            _ => {
                return Err(Error::Config(
                    "TLS needs both tls.cert and tls.key (--tls-cert, --tls-key)".into(),
                ));
            }
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = read_certified_key(&cert, &key, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(certified)),
        });
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 is all this port speaks (WebSocket upgrades need it).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let hsts = config.hsts.and_then(|max_age| {
            HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())).ok()
        });
        Ok(Some(Tls {
            inner: Arc::new(Inner {
                cert,
                key,
                resolver,
                acceptor: TlsAcceptor::from(Arc::new(server)),
                hsts,
            }),
        }))
    }

    /// Reads the certificate and key files again: new handshakes present them, open
    /// connections keep theirs. On an error the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = read_certified_key(&self.inner.cert, &self.inner.key, &provider)?;
        let mut current = self
            .inner
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(certified);
        Ok(())
    }

    /// The acceptor new connections go through.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.inner.acceptor
    }

    /// The `Strict-Transport-Security` value, when configured.
    pub(crate) fn hsts(&self) -> Option<&HeaderValue> {
        self.inner.hsts.as_ref()
    }
}

/// Presents the current certificate to every client (no SNI-based choice: one server, one
/// certificate, which may name several hosts).
#[derive(Debug)]
struct Resolver {
    /// A read lock per handshake, a write lock per reload: a `std` lock, never held across
    /// an await.
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

/// Reads a PEM chain and key, and checks that the key is the certificate's.
fn read_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let cert_text = read(cert, "certificate", "tls.cert, --tls-cert")?;
    let chain = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "the TLS certificate {} is not valid PEM: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "the TLS certificate {} holds no certificate (a PEM \"BEGIN CERTIFICATE\" block)",
            cert.display()
        )));
    }
    let key_text = read(key, "private key", "tls.key, --tls-key")?;
    let private = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::Config(format!(
            "the TLS key {} holds no private key (a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA \
             PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            key.display()
        )),
        e => Error::Config(format!(
            "the TLS key {} is not valid PEM: {e}",
            key.display()
        )),
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::Config(format!(
            "the TLS key {} does not match the certificate {} (its public key is not the \
             certificate's): check that the two files belong together",
            key.display(),
            cert.display()
        )),
        e => Error::Config(format!(
            "the TLS key {} cannot be used with the certificate {}: {e}",
            key.display(),
            cert.display()
        )),
    })
}

/// Reads a whole file; the error names it, what it should be and the setting.
fn read(path: &Path, what: &str, setting: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| {
        Error::Config(format!(
            "cannot read the TLS {what} {} ({setting}): {cause}",
            path.display()
        ))
    })
}
