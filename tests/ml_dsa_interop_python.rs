//! ML-DSA-65 against an independent FIPS 204 implementation: dilithium-py (pure Python, installed
//! by `scripts/test.sh` from `scripts/pip-packages.txt`). The ACVP keyGen vectors pin key
//! generation; this pins the signature format both ways: dilithium-py verifies Kirq's signatures
//! (pure ML-DSA, empty context), and Kirq verifies dilithium-py's, and refuses one made with a
//! context string (Kirq signs and verifies with the empty context only).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::io::Write;
use std::process::{Command, Stdio};

use kirq::crypto::mldsa::{SigningKey, VerifyingKey};
use kirq::secret::SecretBytes;

/// Reads one JSON object from stdin, answers one: the other side of each check.
const PEER: &str = r#"
import json, sys
from dilithium_py.ml_dsa import ML_DSA_65 as M
q = json.load(sys.stdin)
pk, sk = M.key_derive(bytes.fromhex(q["seed"]))
msg = bytes.fromhex(q["message"])
ours = bytes.fromhex(q["signature"])
bad = bytearray(ours); bad[100] ^= 1
json.dump({
    "pk": pk.hex(),
    "verifies_ours": M.verify(pk, msg, ours, ctx=b""),
    "verifies_tampered": M.verify(pk, msg, bytes(bad), ctx=b""),
    "verifies_ours_with_context": M.verify(pk, msg, ours, ctx=b"kirq"),
    "theirs": M.sign(sk, msg, ctx=b"").hex(),
    "theirs_with_context": M.sign(sk, msg, ctx=b"kirq").hex(),
}, sys.stdout)
"#;

fn python() -> String {
    // scripts/test.sh puts its virtualenv first on PATH.
    let ok = Command::new("python3")
        .args(["-c", "import dilithium_py"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import dilithium_py. Run ./scripts/test.sh (it installs \
         scripts/pip-packages.txt into target/test-venv), or: python3 -m venv target/test-venv && \
         target/test-venv/bin/pip install dilithium-py==1.5.1 && \
         PATH=$PWD/target/test-venv/bin:$PATH cargo test --test ml_dsa_interop_python"
    );
    "python3".into()
}

#[test]
fn signatures_interoperate_with_dilithium_py() {
    let py = python();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let key = SigningKey::from_seed(SecretBytes::new(seed.to_vec())).unwrap();
    let message = b"kirq packet digest, or any message".to_vec();
    let sig = key.sign(&message);
    let query = serde_json::json!({
        "seed": hex::encode(seed),
        "message": hex::encode(&message),
        "signature": hex::encode(&sig),
    });
    let mut child = Command::new(py)
        .args(["-c", PEER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(query.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dilithium-py failed");
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The same seed makes the same key in both implementations.
    assert_eq!(a["pk"], hex::encode(key.verifying_key().as_bytes()));
    // dilithium-py accepts Kirq's signature, not a tampered one, not under a context string.
    assert_eq!(a["verifies_ours"], true);
    assert_eq!(a["verifies_tampered"], false);
    assert_eq!(a["verifies_ours_with_context"], false);
    // Kirq accepts dilithium-py's signature (empty context), and refuses one with a context.
    let vk = VerifyingKey::from_bytes(&hex::decode(a["pk"].as_str().unwrap()).unwrap()).unwrap();
    let theirs = hex::decode(a["theirs"].as_str().unwrap()).unwrap();
    assert!(vk.verify(&message, &theirs));
    assert!(!vk.verify(b"another message", &theirs));
    let with_ctx = hex::decode(a["theirs_with_context"].as_str().unwrap()).unwrap();
    assert!(!vk.verify(&message, &with_ctx));
}
