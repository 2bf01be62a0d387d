//! Mutual TLS for every hop that carries entropy: TLS 1.3 only, aws-lc-rs, X25519MLKEM768 offered
//! first, and a `pq_only` switch that refuses any non-post-quantum key exchange.
//!
//! [`serve_mtls`] is the one accept loop: it completes the handshake (requiring a client
//! certificate from the configured CA), then serves an axum router over HTTP/1.1, handing each
//! request the peer's certificate as a [`PeerCert`] extension.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM file {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration rejected")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A certificate chain and its private key. `Debug` hides the key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity {{ chain: {} certs, .. }}", self.chain.len())
    }
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
            path: key.to_owned(),
            source,
        })?;
        Ok(Self { chain, key })
    }

    /// A copy of the private key, for building a custom rustls config.
    pub fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let pem_err = |source| TlsError::Pem {
            path: PathBuf::from("<memory>"),
            source,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err)?;
        Ok(Self { chain, key })
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub fn roots(cas: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for ca in cas {
        store.add(ca.clone())?;
    }
    Ok(Arc::new(store))
}

/// aws-lc-rs with X25519MLKEM768 first; with `pq_only`, post-quantum hybrids only.
pub fn provider(pq_only: bool) -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = if pq_only {
        vec![kx_group::X25519MLKEM768, kx_group::SECP256R1MLKEM768]
    } else {
        vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ]
    };
    Arc::new(p)
}

/// Server side: TLS 1.3, client certificate required and chained to `client_ca`.
pub fn server_config(
    id: &Identity,
    client_ca: &[CertificateDer<'static>],
    pq_only: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider(pq_only);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider.clone()).build()?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client side: TLS 1.3, server certificate chained to `server_ca`, our certificate presented.
pub fn client_config(
    id: &Identity,
    server_ca: &[CertificateDer<'static>],
    pq_only: bool,
) -> Result<ClientConfig, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider(pq_only))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(server_ca)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// An HTTPS client (reqwest) over [`client_config`].
pub fn https_client(cfg: ClientConfig, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("a preconfigured rustls backend always builds")
}

/// The verified client certificate of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<CertificateDer<'static>>);

/// Counters the accept loop reports to.
pub trait HandshakeObserver: Send + Sync + 'static {
    fn handshake_failed(&self);
}

/// Accepts TLS connections on `listener` and serves `router` on each, until the task is dropped.
pub async fn serve_mtls(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
            serve_one(acceptor, tcp, addr, router, observer).await;
        });
    }
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            observer.handshake_failed();
            tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            observer.handshake_failed();
            tracing::info!(peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let group = conn.negotiated_key_exchange_group().map(|g| g.name());
    tracing::debug!(peer = %addr, kx = ?group, "TLS session established");
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()).cloned() else {
        // Unreachable with a mandatory client verifier; refuse rather than serve anonymously.
        observer.handshake_failed();
        return;
    };
    let router = router.layer(axum::Extension(PeerCert(Arc::new(cert))));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let io = hyper_util::rt::TokioIo::new(tls);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// True when `cert` is valid for the DNS name `name` (used to bind a pull request's recipient id
/// to the client certificate that made it).
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&server_name).is_ok()
}
