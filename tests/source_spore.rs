//! The `spore` source against a loopback SPORE server that signs its responses (ES256 JWT) with a
//! test certificate: good responses are accepted; a stale timestamp, a wrong challenge, a bad
//! signature, an unpinned certificate (and a few more forgeries) are each refused.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::sources::{TlsServer, https_server, random, source_from_toml};
use kirq::pki::{Ca, Leaf};
use kirq::sources::Source;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

struct TestSigner {
    key: p256::ecdsa::SigningKey,
    der: Vec<u8>,
}

impl TestSigner {
    fn new(leaf: &Leaf) -> Self {
        Self {
            key: p256::ecdsa::SigningKey::from_pkcs8_pem(&leaf.key_pem).unwrap(),
            der: CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
                .unwrap()
                .to_vec(),
        }
    }
}

struct Spore {
    mode: &'static str,
    pinned: TestSigner,
    stranger: TestSigner,
    challenges: Vec<String>,
}

type S = Arc<Mutex<Spore>>;

fn jwt(signer: &TestSigner, header: serde_json::Value, claims: &serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig: p256::ecdsa::Signature = signer.key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

async fn get_entropy(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let mut st = s.lock().unwrap();
    let challenge = q["challenge"].clone();
    st.challenges.push(challenge.clone());
    let now = kirq::util::now_ms();
    let entropy = URL_SAFE_NO_PAD.encode(random(64));
    let mut claims = serde_json::json!({
        "entropy": entropy, "challenge": challenge, "timestamp": now,
    });
    let x5c =
        |s: &TestSigner| serde_json::json!({"alg": "ES256", "x5c": [STANDARD.encode(&s.der)]});
    let mut header = x5c(&st.pinned);
    let mut signer = &st.pinned;
    match st.mode {
        "good" => {}
        "no-x5c" => header = serde_json::json!({"alg": "ES256"}),
        "stale" => claims["timestamp"] = (now - 120_000).into(),
        "future" => claims["timestamp"] = (now + 120_000).into(),
        "challenge" => claims["challenge"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into(),
        "unpinned" => {
            header = x5c(&st.stranger);
            signer = &st.stranger;
        }
        "alg-none" => header["alg"] = "none".into(),
        _ => {}
    }
    let mut token = jwt(signer, header, &claims);
    if st.mode == "bad-signature" {
        // Flip one bit of the signature.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[10] ^= 1;
        token = format!("{head}.{}", URL_SAFE_NO_PAD.encode(raw));
    }
    let mut outer = claims.clone();
    if st.mode == "outer-swap" {
        outer["entropy"] = URL_SAFE_NO_PAD.encode(random(64)).into();
    }
    outer["JWT"] = token.into();
    axum::Json(outer).into_response()
}

struct Setup {
    srv: TlsServer,
    state: S,
    root_only: String,
    leaf_and_root: String,
}

async fn setup() -> Setup {
    let ca = Ca::new("SPORE test root").unwrap();
    let pinned = ca.issue("spore-signer", &[]).unwrap();
    let other_ca = Ca::new("someone else").unwrap();
    let stranger = other_ca.issue("spore-signer", &[]).unwrap();
    let state: S = Arc::new(Mutex::new(Spore {
        mode: "good",
        pinned: TestSigner::new(&pinned),
        stranger: TestSigner::new(&stranger),
        challenges: Vec::new(),
    }));
    let router = Router::new()
        .route("/eaasp/getEntropy", post(get_entropy))
        .with_state(state.clone());
    let srv = https_server(router).await;
    let root_only = srv.dir.path().join("root.pem");
    std::fs::write(&root_only, ca.cert_pem()).unwrap();
    let both = srv.dir.path().join("chain.pem");
    std::fs::write(&both, format!("{}{}", pinned.cert_pem, ca.cert_pem())).unwrap();
    Setup {
        root_only: root_only.display().to_string(),
        leaf_and_root: both.display().to_string(),
        srv,
        state,
    }
}

fn spore(s: &Setup, chain: &str) -> Box<dyn Source> {
    source_from_toml(&format!(
        "type = \"spore\"\nid = \"c4a\"\nbase_url = \"{}\"\ncert_chain = \"{chain}\"\n\
         ca_cert = \"{}\"\nmax_age_secs = 30",
        s.srv.base(),
        s.srv.ca_path.display()
    ))
    .0
}

#[tokio::test]
async fn signed_fresh_answers_to_fresh_challenges_are_accepted() {
    let s = setup().await;
    let src = spore(&s, &s.root_only);
    assert_eq!(src.kind(), kirq::wire::SourceKind::Hsm);
    let got = src.fetch(200).await.unwrap();
    assert_eq!(got.len(), 200);
    let ch = s.state.lock().unwrap().challenges.clone();
    assert_eq!(ch.len(), 4, "64 bytes a response");
    let mut uniq = ch.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "a fresh challenge per call");
    assert!(
        ch.iter()
            .all(|c| URL_SAFE_NO_PAD.decode(c).unwrap().len() == 32)
    );
    // With the signing certificate pinned, a JWT without x5c verifies against it.
    s.state.lock().unwrap().mode = "no-x5c";
    let src = spore(&s, &s.leaf_and_root);
    assert_eq!(src.fetch(64).await.unwrap().len(), 64);
}

#[tokio::test]
async fn every_failed_check_refuses_the_response() {
    let s = setup().await;
    let src = spore(&s, &s.root_only);
    for (mode, says) in [
        ("stale", "stale timestamp"),
        ("future", "in the future"),
        ("challenge", "challenge does not match"),
        ("bad-signature", "signature does not verify"),
        ("unpinned", "does not chain to the pinned anchor"),
        ("alg-none", "alg is not ES256"),
        ("outer-swap", "outer entropy differs"),
        ("no-x5c", "no signing certificate is pinned"),
    ] {
        s.state.lock().unwrap().mode = mode;
        let e = src.fetch(64).await.unwrap_err();
        assert_eq!(e.reason(), "bad_response", "{mode}: {e}");
        assert!(e.to_string().contains(says), "{mode}: {e}");
    }
    // With the leaf pinned, another leaf from the same CA would still chain; a stranger's never.
    let src = spore(&s, &s.leaf_and_root);
    s.state.lock().unwrap().mode = "unpinned";
    let e = src.fetch(64).await.unwrap_err();
    assert!(e.to_string().contains("not the pinned one"), "{e}");
}

#[tokio::test]
async fn a_chain_that_does_not_verify_stops_the_source_at_start() {
    let s = setup().await;
    // The signing certificate of one CA with the root of another: refused when loaded.
    let other = Ca::new("unrelated root").unwrap();
    let leaf = Ca::new("x").unwrap().issue("spore-signer", &[]).unwrap();
    let bad = s.srv.dir.path().join("bad.pem");
    std::fs::write(&bad, format!("{}{}", leaf.cert_pem, other.cert_pem())).unwrap();
    let c: kirq::config::SourceConfig = toml::from_str(&format!(
        "type = \"spore\"\nbase_url = \"{}\"\ncert_chain = \"{}\"",
        s.srv.base(),
        bad.display()
    ))
    .unwrap();
    let e = kirq::sources::make_source(&c).unwrap_err();
    assert!(e.to_string().contains("cert_chain"), "{e}");
}
