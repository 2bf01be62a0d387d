//! The rejection matrix against a real kirqd process: each bad packet is answered with its reason,
//! counted in stats and metrics, and leaves the pool unchanged.

mod common;

use common::*;
use kirq::crypto::falcon::SigningKey;

struct Daemon {
    f: Fleet,
    _p: Proc,
    client: reqwest::blocking::Client,
}

impl Daemon {
    fn start() -> Self {
        let f = Fleet::new();
        let p = kirqd(
            &f,
            &f.daemon_config(false, "[fallback]\nenabled = false"),
            &[],
        );
        let client = f.hub_client();
        Self { f, _p: p, client }
    }

    fn send(&self, body: Vec<u8>) -> (u16, serde_json::Value) {
        self.f.push_raw(body)
    }

    fn pool(&self) -> (u64, u64) {
        self.f.pool()
    }

    /// Sends `body`, expects rejection with `reason` and `status`, and no change to the pool.
    fn expect_reject(&self, body: Vec<u8>, status: u16, reason: &str) {
        self.f.expect_reject(reason, body, status, reason);
    }
}

fn signed(f: &Fleet, p: &kirq::wire::Packet) -> Vec<u8> {
    p.encode_signed(&f.key).to_vec()
}

#[test]
fn bad_signature() {
    let d = Daemon::start();
    let mut pkt = signed(&d.f, &d.f.packet(1024));
    let at = pkt.len() - 800; // inside the entropy, before the signature
    pkt[at] ^= 0x01;
    d.expect_reject(pkt, 400, "bad_signature");
}

#[test]
fn unknown_key() {
    let d = Daemon::start();
    let stranger = SigningKey::generate();
    let pkt = packet_for(&stranger, DAEMON_ID, 1024)
        .encode_signed(&stranger)
        .to_vec();
    d.expect_reject(pkt, 400, "unknown_key");
}

/// A packet that claims ML-DSA-65 under the trusted Falcon-512 key's id (with a well-formed
/// ML-DSA-65 signature) is refused before any signature check: the key's algorithm decides.
#[test]
fn algorithm_mismatch() {
    let d = Daemon::start();
    let ml = kirq::crypto::mldsa::SigningKey::generate();
    let mut p = packet_for(&d.f.key, DAEMON_ID, 1024);
    p.sig_alg = kirq::wire::SigAlg::MlDsa65;
    let pkt = p.encode_signed(&ml).to_vec();
    d.expect_reject(pkt, 400, "algorithm_mismatch");
}

#[test]
fn wrong_recipient() {
    let d = Daemon::start();
    let pkt = packet_for(&d.f.key, "kirqd-2", 1024)
        .encode_signed(&d.f.key)
        .to_vec();
    d.expect_reject(pkt, 400, "wrong_recipient");
}

#[test]
fn expired() {
    let d = Daemon::start();
    let mut p = d.f.packet(1024);
    p.issued_at_ms -= 70_000;
    p.expires_at_ms -= 70_000;
    d.expect_reject(signed(&d.f, &p), 400, "expired");
}

#[test]
fn future_issue_time() {
    let d = Daemon::start();
    let mut p = d.f.packet(1024);
    p.issued_at_ms += 30_000;
    p.expires_at_ms += 30_000;
    d.expect_reject(signed(&d.f, &p), 400, "issued_in_future");
}

#[test]
fn replayed_nonce() {
    let d = Daemon::start();
    let pkt = signed(&d.f, &d.f.packet(1024));
    let (s, resp) = d.send(pkt.clone());
    assert_eq!(s, 200, "{resp}");
    assert_eq!(resp["status"], "accepted");
    assert_eq!(resp["id"].as_str().unwrap().len(), 32);
    assert_eq!(d.pool(), (1024, 1024));
    d.expect_reject(pkt, 400, "replayed");
}

#[test]
fn truncated() {
    let d = Daemon::start();
    let pkt = signed(&d.f, &d.f.packet(1024));
    d.expect_reject(pkt[..pkt.len() - 1].to_vec(), 400, "truncated");
}

#[test]
fn oversize_body() {
    let d = Daemon::start();
    let body = vec![0u8; kirq::wire::MAX_PACKET_BYTES + 1];
    d.expect_reject(body, 413, "body_too_large");
}

#[test]
fn unknown_version() {
    let d = Daemon::start();
    let mut pkt = signed(&d.f, &d.f.packet(1024));
    pkt[4] = 9;
    d.expect_reject(pkt, 400, "unknown_version");
}

#[test]
fn trailing_bytes() {
    let d = Daemon::start();
    let mut pkt = signed(&d.f, &d.f.packet(1024));
    pkt.extend_from_slice(b"extra");
    d.expect_reject(pkt, 400, "trailing_bytes");
}

#[test]
fn failing_health_tests() {
    let d = Daemon::start();
    let mut p = d.f.packet(1024);
    p.entropy = kirq::secret::SecretBytes::new(vec![7; 1024]);
    d.expect_reject(signed(&d.f, &p), 400, "health_failed");
}

#[test]
fn no_client_certificate_is_refused_in_the_handshake() {
    let d = Daemon::start();
    let ca = kirq::tls::load_certs(&d.f.path("daemon-ca.pem")).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(kirq::tls::provider(false))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(kirq::tls::roots(&ca).unwrap())
        .with_no_client_auth();
    let anon = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap();
    let before = d.pool();
    let r = anon
        .post(d.f.receive_url())
        .header(
            kirq::wire::refill::TRANSPORT_HEADER,
            kirq::wire::refill::TRANSPORT_VERSION,
        )
        .body(signed(&d.f, &d.f.packet(1024)))
        .send();
    assert!(
        r.is_err(),
        "a client without a certificate must not get an HTTP answer"
    );
    let stats = get_json(&d.f.http("/api/rng/stats"));
    assert_eq!(stats["tls_handshake_failures"], 1, "{stats}");
    assert_eq!(d.pool(), before);
}

#[test]
fn missing_transport_header_is_refused() {
    let d = Daemon::start();
    let r = d
        .client
        .post(d.f.receive_url())
        .body(signed(&d.f, &d.f.packet(1024)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(d.pool(), (0, 0));
}
