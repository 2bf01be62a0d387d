//! Transport properties, in process over real loopback sockets: TLS 1.3 only, X25519MLKEM768
//! negotiated by default, `pq_only` refusing classical key exchange, client certificates required
//! and checked against the right CA.

use std::sync::Arc;

use kirq::pki::Ca;
use kirq::tls::{self, Identity};
use rustls::pki_types::ServerName;

struct Setup {
    server_id: Identity,
    client_id: Identity,
    client_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

fn certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn setup() -> Setup {
    let hub_ca = Ca::new("hub ca").unwrap();
    let daemon_ca = Ca::new("daemon ca").unwrap();
    let s = daemon_ca.issue("kirqd-1", &["localhost"]).unwrap();
    let c = hub_ca.issue("hub-1", &[]).unwrap();
    Setup {
        server_id: Identity::from_pem(&s.cert_pem, &s.key_pem).unwrap(),
        client_id: Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap(),
        client_ca: certs(hub_ca.cert_pem()),
        server_ca: certs(daemon_ca.cert_pem()),
    }
}

struct Observer;
impl tls::HandshakeObserver for Observer {
    fn handshake_failed(&self) {}
    fn connection_refused(&self, _reason: &'static str) {}
}

/// Serves a one-route router with `server_cfg`; returns its port.
async fn server(server_cfg: Arc<rustls::ServerConfig>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(tls::serve_mtls(l, server_cfg, router, Arc::new(Observer)));
    port
}

/// Handshakes with `client_cfg`; returns the negotiated group name or the error text.
async fn handshake(port: u16, client_cfg: rustls::ClientConfig) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let mut tls = conn
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 client auth failures surface on the first read after the handshake.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("no HTTP answer: {text:?}"));
    }
    let (_, c) = tls.get_ref();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    Ok(format!(
        "{:?}",
        c.negotiated_key_exchange_group().unwrap().name()
    ))
}

#[tokio::test]
async fn default_negotiates_x25519mlkem768() {
    let s = setup();
    let port = server(tls::server_config(&s.server_id, &s.client_ca, false).unwrap()).await;
    let c = tls::client_config(&s.client_id, &s.server_ca, false).unwrap();
    assert_eq!(handshake(port, c).await.unwrap(), "X25519MLKEM768");
}

#[tokio::test]
async fn pq_only_refuses_a_classical_client() {
    let s = setup();
    let port = server(tls::server_config(&s.server_id, &s.client_ca, true).unwrap()).await;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let classical = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(tls::roots(&s.server_ca).unwrap())
        .with_client_auth_cert(s.client_id.chain.clone(), s.client_id.clone_key())
        .unwrap();
    assert!(handshake(port, classical).await.is_err());
    let pq = tls::client_config(&s.client_id, &s.server_ca, true).unwrap();
    assert_eq!(handshake(port, pq).await.unwrap(), "X25519MLKEM768");
}

#[tokio::test]
async fn client_certificate_is_required_and_from_the_right_ca() {
    let s = setup();
    let port = server(tls::server_config(&s.server_id, &s.client_ca, false).unwrap()).await;
    let anon = rustls::ClientConfig::builder_with_provider(tls::provider(false))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(tls::roots(&s.server_ca).unwrap())
        .with_no_client_auth();
    assert!(
        handshake(port, anon).await.is_err(),
        "no client certificate"
    );
    // A certificate from the daemon CA (not the hub CA) is refused too.
    let other = Ca::new("rogue").unwrap().issue("hub-1", &[]).unwrap();
    let rogue = Identity::from_pem(&other.cert_pem, &other.key_pem).unwrap();
    let c = tls::client_config(&rogue, &s.server_ca, false).unwrap();
    assert!(
        handshake(port, c).await.is_err(),
        "certificate from an untrusted CA"
    );
}

#[tokio::test]
async fn tls12_is_refused() {
    let s = setup();
    let port = server(tls::server_config(&s.server_id, &s.client_ca, false).unwrap()).await;
    let c12 = rustls::ClientConfig::builder_with_provider(tls::provider(false))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(tls::roots(&s.server_ca).unwrap())
        .with_client_auth_cert(s.client_id.chain.clone(), s.client_id.clone_key())
        .unwrap();
    assert!(handshake(port, c12).await.is_err());
}

#[test]
fn certificate_names_bind_recipients() {
    let ca = Ca::new("daemon ca").unwrap();
    let leaf = ca.issue("kirqd-7", &[]).unwrap();
    let cert = &certs(&leaf.cert_pem)[0];
    assert!(tls::cert_names(cert, "kirqd-7"));
    assert!(!tls::cert_names(cert, "kirqd-8"));
}
