//! Shared by the source tests: a loopback HTTPS server with its own CA, and a packet factory.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kirq::config::{HubConfig, SourceConfig};
use kirq::crypto::falcon::SigningKey;
use kirq::hub::PacketFactory;
use kirq::sources::Source;
use kirq::sources::SourceSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An HTTPS server on 127.0.0.1 serving `router`, with a certificate from a fresh CA.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// PEM of the CA that issued the server's certificate.
    pub ca_path: PathBuf,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn https_server(router: axum::Router) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = kirq::pki::Ca::new("test CA").unwrap();
    let leaf = ca.issue("localhost", &["127.0.0.1"]).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(kirq::tls::provider(false))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        ca_path,
        dir,
        task,
    }
}

/// A source built from a TOML `[[sources]]` table, the way the hub builds it.
pub fn source_from_toml(text: &str) -> (Box<dyn Source>, SourceSettings) {
    let c: SourceConfig = toml::from_str(text).unwrap();
    kirq::sources::make_source(&c).unwrap()
}

/// Checks a hub config's `sources` section the way `kirq-hub check-config` does.
pub fn check_sources(sources_toml: &str) -> Result<HubConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "id = \"hub\"\nsigning_key = \"k\"\nlisten = \"127.0.0.1:0\"\n\
         [tls]\ncert = \"c\"\nkey = \"k\"\ndaemon_ca = \"ca\"\n{sources_toml}"
    );
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, text).unwrap();
    HubConfig::load(&path).map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(&format!(": {x}"));
            src = x.source();
        }
        s
    })
}

pub fn factory(
    sources: Vec<(Box<dyn Source>, SourceSettings)>,
    hybrid: kirq::config::HybridConfig,
) -> PacketFactory {
    PacketFactory::new(
        SigningKey::generate(),
        sources,
        30,
        Duration::from_secs(60),
        60_000,
        hybrid,
    )
}

/// Random bytes for a test server to serve.
pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}
