//! Mutual TLS for every hop that carries entropy: TLS 1.3 only, aws-lc-rs, X25519MLKEM768 offered
//! first, and a `pq_only` switch that refuses any non-post-quantum key exchange.
//!
//! [`serve_mtls`] is the one accept loop: it completes the handshake (requiring a client
//! certificate from the configured CA), then serves an axum router over HTTP/1.1, handing each
//! request the peer's certificate as a [`PeerCert`] extension.
//!
//! A stranger needs no certificate to open TCP connections, so the loop bounds what they can
//! hold before proving anything ([`ListenerLimits`]): connections per listener (a quarter of the
//! process's descriptors, so one listener's flood never starves the others or the HTTP shim),
//! connections per peer address (an IPv6 peer is its /64), handshakes in flight (a semaphore) and
//! the time to finish one (3 s from accept). A connection over a cap is accepted and closed at
//! once, so it costs a descriptor for microseconds, not for the handshake timeout; each refusal
//! is counted ([`HandshakeObserver::connection_refused`]) and logged at most every 10 s.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long [`serve_mtls`] waits for the next request's headers, on a new connection and
/// between requests on a kept-alive one (hyper's header read timeout starts again after every
/// response): an idle connection is closed after this.
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`https_client`] keeps an idle connection for reuse: well under
/// [`SERVER_IDLE_TIMEOUT`], so a request never goes out on a connection the server is closing
/// at that moment (which fails it: "peer closed connection without sending TLS close_notify",
/// seen in two of three runs of tests/fleet.rs, 50 daemons, when this was 30 s).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

const _: () = assert!(CLIENT_IDLE_TIMEOUT.as_secs() * 2 <= SERVER_IDLE_TIMEOUT.as_secs());

/// An HTTPS client (reqwest) over [`client_config`].
pub fn https_client(cfg: ClientConfig, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(CLIENT_IDLE_TIMEOUT)
        .build()
        .expect("a preconfigured rustls backend always builds")
}

/// The verified client certificate of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<CertificateDer<'static>>);

/// Counters the accept loop reports to.
pub trait HandshakeObserver: Send + Sync + 'static {
    fn handshake_failed(&self);
    /// A connection closed before its handshake began: `reason` is one of
    /// [`REFUSAL_REASONS`].
    fn connection_refused(&self, reason: &'static str);
}

/// Why the accept loop closed a connection at once (metric label values).
pub const REFUSAL_REASONS: [&str; 3] = ["listener_full", "peer_limit", "accept_failed"];

/// What one listener lets unauthenticated peers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once on this listener (handshaking or serving).
    pub max_connections: usize,
    /// Connections open at once from one peer address (an IPv6 /64).
    pub per_peer: usize,
    /// TLS handshakes in progress at once; the others wait, within their deadline.
    pub max_handshakes: usize,
    /// From accept to a finished handshake, waiting for a handshake slot included.
    pub handshake_timeout: Duration,
}

impl ListenerLimits {
    /// Limits for a process allowed `open_files` descriptors: a quarter of them per listener.
    pub fn for_open_files(open_files: u64) -> Self {
        let max_connections = usize::try_from(open_files / 4)
            .unwrap_or(usize::MAX)
            .clamp(16, 16_384);
        Self {
            max_connections,
            per_peer: max_connections.min(32),
            max_handshakes: max_connections.min(64),
            handshake_timeout: Duration::from_secs(3),
        }
    }

    /// Limits for this process's current soft `RLIMIT_NOFILE`.
    pub fn for_this_process() -> Self {
        Self::for_open_files(crate::util::open_file_limit())
    }
}

/// The key a peer's connections are counted under: its IPv4 address, or its IPv6 /64 (one
/// subscriber's allocation).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Connections open on one listener, in total and per peer.
#[derive(Debug)]
struct Gate {
    limits: ListenerLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    gate: Arc<Gate>,
    peer: IpAddr,
}

impl Gate {
    fn new(limits: ListenerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or the refusal reason.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let peer = peer_key(ip);
        let mut g = self.lock();
        let (total, peers) = &mut *g;
        if *total >= self.limits.max_connections {
            return Err("listener_full");
        }
        let n = peers.entry(peer).or_insert(0);
        if *n >= self.limits.per_peer {
            return Err("peer_limit");
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            gate: self.clone(),
            peer,
        })
    }

    fn open_connections(&self) -> usize {
        self.lock().0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        let (total, peers) = &mut *g;
        *total -= 1;
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Lets one log line through per interval and counts the ones held back.
#[derive(Debug)]
struct Quiet {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl Quiet {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn ready(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

/// What the accept loop and its connection tasks share.
struct Listener {
    /// The server config for the next handshake (a hub reload sends a new one; connections
    /// already open keep theirs).
    config: tokio::sync::watch::Receiver<Arc<ServerConfig>>,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
    limits: ListenerLimits,
    handshakes: Arc<tokio::sync::Semaphore>,
    refused_log: Quiet,
    failed_log: Quiet,
}

/// Accepts TLS connections on `listener` and serves `router` on each, until the task is dropped,
/// within [`ListenerLimits::for_this_process`].
pub async fn serve_mtls(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
) {
    let (_keep, config) = tokio::sync::watch::channel(config);
    serve_mtls_reloadable(listener, config, router, observer).await;
}

/// [`serve_mtls`] whose server config (certificate, client CA) can be replaced while it runs:
/// each new handshake uses the latest config `config` has seen, open connections are not touched.
pub async fn serve_mtls_reloadable(
    listener: tokio::net::TcpListener,
    config: tokio::sync::watch::Receiver<Arc<ServerConfig>>,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
) {
    let limits = ListenerLimits::for_this_process();
    serve_mtls_within(listener, config, router, observer, limits).await;
}

/// [`serve_mtls_reloadable`] with explicit limits.
pub async fn serve_mtls_within(
    listener: tokio::net::TcpListener,
    config: tokio::sync::watch::Receiver<Arc<ServerConfig>>,
    router: axum::Router,
    observer: Arc<dyn HandshakeObserver>,
    limits: ListenerLimits,
) {
    let local = listener.local_addr().ok();
    tracing::debug!(
        listen = ?local,
        max_connections = limits.max_connections,
        per_peer = limits.per_peer,
        max_handshakes = limits.max_handshakes,
        handshake_timeout_ms = limits.handshake_timeout.as_millis(),
        "mutual-TLS listener limits"
    );
    let gate = Gate::new(limits);
    let shared = Arc::new(Listener {
        config,
        router,
        observer,
        limits,
        handshakes: Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes)),
        refused_log: Quiet::new(Duration::from_secs(10)),
        failed_log: Quiet::new(Duration::from_secs(10)),
    });
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                shared.observer.connection_refused("accept_failed");
                if let Some(held_back) = shared.refused_log.ready() {
                    tracing::warn!(listen = ?local, error = %e, held_back, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match gate.enter(addr.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                // Closed at once: the descriptor is back before the next accept.
                drop(tcp);
                shared.observer.connection_refused(reason);
                if let Some(held_back) = shared.refused_log.ready() {
                    tracing::warn!(
                        listen = ?local,
                        peer = %addr.ip(),
                        reason,
                        open = gate.open_connections(),
                        held_back,
                        "connection refused before its handshake"
                    );
                }
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_one(&shared, tcp, addr).await;
            drop(slot);
        });
    }
}

async fn serve_one(l: &Listener, tcp: tokio::net::TcpStream, addr: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + l.limits.handshake_timeout;
    let handshake = async {
        let _permit = l
            .handshakes
            .acquire()
            .await
            .expect("the handshake semaphore is never closed");
        let config = l.config.borrow().clone();
        tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
    };
    let tls = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            l.observer.handshake_failed();
            if let Some(held_back) = l.failed_log.ready() {
                tracing::info!(peer = %addr, error = %e, held_back, "TLS handshake refused");
            }
            return;
        }
        Err(_) => {
            l.observer.handshake_failed();
            if let Some(held_back) = l.failed_log.ready() {
                tracing::info!(peer = %addr, held_back, "TLS handshake timed out");
            }
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let group = conn.negotiated_key_exchange_group().map(|g| g.name());
    tracing::debug!(peer = %addr, kx = ?group, "TLS session established");
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()).cloned() else {
        // Unreachable with a mandatory client verifier; refuse rather than serve anonymously.
        l.observer.handshake_failed();
        return;
    };
    let router = l
        .router
        .clone()
        .layer(axum::Extension(PeerCert(Arc::new(cert))));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let io = hyper_util::rt::TokioIo::new(tls);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(SERVER_IDLE_TIMEOUT)
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

/// The SPIFFE ID of daemon `id` in `trust_domain`: `spiffe://<trust_domain>/kirqd/<id>`.
pub fn spiffe_daemon_id(trust_domain: &str, id: &str) -> String {
    format!("spiffe://{trust_domain}/kirqd/{id}")
}

/// True when `cert` names daemon `id`: as a DNS name (what most CAs and the dev PKI issue) or,
/// when `trust_domain` is set, as the URI SAN [`spiffe_daemon_id`] (what SPIRE and cert-manager's
/// SPIFFE driver issue). The chain was already verified against the daemon CA by the handshake;
/// this binds the request's id to it.
pub fn cert_names_daemon(cert: &CertificateDer<'_>, id: &str, trust_domain: Option<&str>) -> bool {
    if cert_names(cert, id) {
        return true;
    }
    let Some(td) = trust_domain else {
        return false;
    };
    let want = spiffe_daemon_id(td, id);
    uri_sans(cert).contains(&want)
}

/// The URI subject alternative names of `cert` (none if it does not parse).
fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = x.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("one PEM certificate")
    }

    #[test]
    fn a_daemon_is_named_by_dns_or_by_its_spiffe_id_in_the_trust_domain() {
        let ca = crate::pki::Ca::new("test daemon CA").unwrap();
        let dns = der(&ca.issue("kirqd-7", &["localhost"]).unwrap().cert_pem);
        assert!(cert_names_daemon(&dns, "kirqd-7", None));
        assert!(cert_names_daemon(&dns, "kirqd-7", Some("example.org")));
        assert!(!cert_names_daemon(&dns, "kirqd-8", Some("example.org")));
        let uri = spiffe_daemon_id("example.org", "kirqd-7");
        assert_eq!(uri, "spiffe://example.org/kirqd/kirqd-7");
        let spiffe = der(&ca.issue_uri(&uri, &["localhost"]).unwrap().cert_pem);
        assert!(cert_names_daemon(&spiffe, "kirqd-7", Some("example.org")));
        // Not without a configured trust domain, not in another one, not for another id, and
        // not for an id that is a prefix of the one named.
        assert!(!cert_names_daemon(&spiffe, "kirqd-7", None));
        assert!(!cert_names_daemon(&spiffe, "kirqd-7", Some("example.com")));
        assert!(!cert_names_daemon(&spiffe, "kirqd-8", Some("example.org")));
        assert!(!cert_names_daemon(&spiffe, "kirqd-", Some("example.org")));
        assert!(!cert_names_daemon(
            &CertificateDer::from(vec![0u8; 16]),
            "kirqd-7",
            Some("example.org")
        ));
    }

    fn limits(max_connections: usize, per_peer: usize) -> ListenerLimits {
        ListenerLimits {
            max_connections,
            per_peer,
            max_handshakes: 1,
            handshake_timeout: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_peer_gets_its_share_and_the_listener_a_bound() {
        let gate = Gate::new(limits(5, 2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = gate.enter(a).unwrap();
        let _a2 = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), "peer_limit");
        let _b = [gate.enter(b).unwrap(), gate.enter(b).unwrap()];
        let _c = gate.enter("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            gate.enter("10.0.0.2".parse().unwrap()).unwrap_err(),
            "listener_full"
        );
        // A closed connection frees its place, for its peer and the listener.
        drop(a1);
        assert_eq!(gate.open_connections(), 4);
        let _a3 = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), "listener_full");
    }

    #[test]
    fn an_ipv6_peer_is_its_64_and_mapped_ipv4_is_ipv4() {
        let gate = Gate::new(limits(100, 2));
        let _x = gate.enter("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _y = gate.enter("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap();
        assert_eq!(
            gate.enter("2001:db8:1:2:abcd::1".parse().unwrap())
                .unwrap_err(),
            "peer_limit"
        );
        assert!(gate.enter("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = [
            gate.enter("192.0.2.1".parse().unwrap()).unwrap(),
            gate.enter("::ffff:192.0.2.1".parse().unwrap()).unwrap(),
        ];
        assert_eq!(
            gate.enter("192.0.2.1".parse().unwrap()).unwrap_err(),
            "peer_limit"
        );
        drop(_v4);
        assert_eq!(
            gate.lock().1.len(),
            1,
            "peers with no connection are forgotten"
        );
    }

    #[test]
    fn limits_follow_the_descriptor_limit() {
        let l = ListenerLimits::for_open_files(1024);
        assert_eq!(
            (l.max_connections, l.per_peer, l.max_handshakes),
            (256, 32, 64)
        );
        assert_eq!(l.handshake_timeout, Duration::from_secs(3));
        assert_eq!(ListenerLimits::for_open_files(20).max_connections, 16);
        assert_eq!(
            ListenerLimits::for_open_files(u64::MAX).max_connections,
            16_384
        );
    }

    #[test]
    fn quiet_lets_one_line_through_per_interval() {
        let q = Quiet::new(Duration::from_secs(3600));
        assert_eq!(q.ready(), Some(0));
        assert_eq!(q.ready(), None);
        assert_eq!(q.ready(), None);
        *q.last.lock().unwrap() = Some(Instant::now() - Duration::from_secs(3601));
        assert_eq!(q.ready(), Some(2));
    }
}
