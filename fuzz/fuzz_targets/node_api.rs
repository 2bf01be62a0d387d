//! A decentralized node's commit and reveal bodies: byte 0 picks `/api/node/commit` or
//! `/api/node/reveal`, the rest is the JSON body, sent as a hub with a client certificate.
//! Never panics, never a 5xx other than the designed 503. One node per fuzz process (its open
//! rounds are bounded by `max_open_rounds`), so a reveal may follow a commit an earlier input made.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use kirq::crypto::falcon::SigningKey;
use kirq::node::NodeState;
use kirq::wire::node as proto;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static kirq::config::NodeConfig {
    static C: OnceLock<kirq::config::NodeConfig> = OnceLock::new();
    C.get_or_init(|| {
        let path = kirq_fuzz::scratch().join("node.toml");
        std::fs::write(
            kirq_fuzz::scratch().join("node-b.pub"),
            include_str!("../keys/fuzz-hub.pub"),
        )
        .unwrap();
        std::fs::write(
            &path,
            "id = \"node-a\"\nsigning_key = \"k\"\nlisten = \"127.0.0.1:1\"\nquorum = 2\n\
             [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[source]\ntype = \"local\"\n[peers]\nnode-b = \"node-b.pub\"\n",
        )
        .unwrap();
        kirq::config::NodeConfig::load(&path).unwrap()
    })
}

fn node() -> Arc<NodeState> {
    static N: OnceLock<Arc<NodeState>> = OnceLock::new();
    N.get_or_init(|| {
        Arc::new(NodeState::new(config(), SigningKey::generate(), HashMap::new(), None).unwrap())
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let app = kirq::node::router(node());
    let cert = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, sel]);
    let reveal = sel & 1 == 1;
    let req = Request::builder()
        .method("POST")
        .uri(if reveal {
            proto::REVEAL_PATH
        } else {
            proto::COMMIT_PATH
        })
        .header("content-type", "application/json")
        .extension(kirq::tls::PeerCert(Arc::new(cert)))
        .body(Body::from(body.to_vec()))
        .unwrap();
    kirq_fuzz::call(app, req);
});
