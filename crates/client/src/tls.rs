//! TLS for `wss://` and `https://`: rustls, trusting the system's roots or a CA file.
//!
//! [`Tls`] is a client configuration (which roots to trust), made once and shared by
//! every connection; [`Stream`] is what the WebSocket and HTTP clients run over, a plain
//! TCP stream or a TLS one. TLS 1.2 and 1.3 only, ALPN `http/1.1` (the only protocol a
//! Switchboard server speaks), and the certificate must name the URL's host.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};

/// Which certificate authorities a client trusts. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    /// Where the roots came from, for error messages.
    roots: Arc<str>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the system's roots (the certificates of `/etc/ssl/certs` or the platform's
    /// store). Loaded once per process: [`Endpoint::connect`](crate::Endpoint::connect)
    /// uses this when given no other.
    pub fn system() -> Result<Tls> {
        static SYSTEM: OnceLock<std::result::Result<Tls, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), |e| e.to_string());
                    return Err(format!(
                        "no trusted root certificates on this system ({why}): install the \
                         ca-certificates package, or pass --ca FILE"
                    ));
                }
                Tls::with_roots(roots, "the system's roots").map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Tls)
    }

    /// Trusts the certificates of a PEM file (a private CA, a self-signed certificate),
    /// and nothing else.
    pub fn from_ca_file(path: &Path) -> Result<Tls> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Tls(format!("cannot read the CA file {}: {e}", path.display())))?;
        Tls::from_ca_pem(&pem, &path.display().to_string())
    }

    /// Trusts the certificates of PEM text; `name` says where it came from in errors.
    pub fn from_ca_pem(pem: &[u8], name: &str) -> Result<Tls> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Tls(format!("{name} is not valid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("{name}: a certificate cannot be used: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls(format!(
                "{name} holds no certificate (a PEM \"BEGIN CERTIFICATE\" block)"
            )));
        }
        Tls::with_roots(roots, name)
    }

    fn with_roots(roots: RootCertStore, name: &str) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            roots: Arc::from(name),
        })
    }

    /// Does the handshake on `tcp`, checking that the certificate names `host` (a DNS
    /// name or an IP address, without port or brackets).
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> Result<Stream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| Error::Tls(format!("{host:?} is not a host name TLS can check")))?;
        let stream = self.connector.connect(name, tcp).await.map_err(|e| {
            Error::Tls(format!(
                "TLS handshake with {host} failed: {e} (trusting {})",
                self.roots
            ))
        })?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// A connection to a server: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`, `http://`.
    Plain(TcpStream),
    /// `wss://`, `https://`. Boxed: the TLS state is large.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Turns Nagle's algorithm off: the clients' commands and requests are small and
    /// awaited, so its delay would only add latency. `host` names the server in the error.
    pub(crate) fn no_delay(&self, host: &str) -> crate::Result<()> {
        self.tcp()
            .set_nodelay(true)
            .map_err(|cause| crate::Error::Connect {
                addr: host.to_owned(),
                cause,
            })
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Stream {
        Stream::Plain(tcp)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
