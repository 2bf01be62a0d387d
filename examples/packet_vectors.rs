//! Writes `testdata/packet-vectors.json`: valid packets with the key that signed them, and invalid
//! ones with the rejection reason each must produce. Falcon signatures are randomized, so the file
//! is generated once and committed; `src/wire/tests.rs` checks every vector against the code.
//!
//! Run: `cargo run --example packet_vectors > testdata/packet-vectors.json`

use kirq::crypto::falcon::SigningKey;
use kirq::secret::SecretBytes;
use kirq::wire::{Packet, SourceEntry, SourceKind};
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;
const RECIPIENT: &str = "kirqd-vectors";

fn base(entropy_len: usize) -> Packet {
    let entropy: Vec<u8> = (0..entropy_len)
        .map(|i| (i * 131 % 251) as u8 ^ 0x5a)
        .collect();
    Packet {
        sig_alg: kirq::wire::SigAlg::Falcon512,
        key_id: kirq::crypto::falcon::KeyId([0; 8]),
        mix_alg: kirq::wire::MIX_SHAKE256,
        proof_alg: 0,
        recipient: RECIPIENT.into(),
        sequence: 7,
        nonce: *b"vector-nonce-001",
        issued_at_ms: NOW - 1_000,
        expires_at_ms: NOW + 59_000,
        round: 0,
        provenance: vec![SourceEntry {
            kind: SourceKind::Qrng,
            id: "qrng-a".into(),
            byte_count: entropy_len as u32,
            commitment: [0x11; 32],
            node_signature: Vec::new(),
            receipt: None,
        }],
        entropy: SecretBytes::new(entropy),
        proof: Vec::new(),
        signature: Vec::new(),
    }
}

fn signed(p: &Packet, k: &SigningKey) -> Vec<u8> {
    p.encode_signed(k).to_vec()
}

/// Re-signs a hand-modified unsigned prefix so only the modification is wrong.
fn resign(mut unsigned: Vec<u8>, k: &SigningKey) -> Vec<u8> {
    let sig = k.sign(&kirq::wire::signing_digest(&unsigned));
    unsigned.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    unsigned.extend_from_slice(&sig);
    unsigned
}

fn main() {
    let key = SigningKey::generate();
    let other = SigningKey::generate();
    let with_key = |mut p: Packet, k: &SigningKey| {
        p.key_id = k.verifying_key().id();
        p
    };
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    let mut add_bad = |name: &str, bytes: Vec<u8>, reason: &str| {
        invalid.push(json!({ "name": name, "packet": hex::encode(bytes), "reason": reason }));
    };

    let good = with_key(base(64), &key);
    let good_bytes = signed(&good, &key);
    valid.push(json!({
        "name": "one qrng source, 64 bytes",
        "packet": hex::encode(&good_bytes),
        "entropy": hex::encode(good.entropy.expose()),
        "provenance": "qrng",
    }));
    let mut hybrid = with_key(base(4096), &key);
    hybrid.nonce = *b"vector-nonce-002";
    hybrid.provenance.push(SourceEntry {
        kind: SourceKind::Hsm,
        id: "hsm-1".into(),
        byte_count: 4096,
        commitment: [0x22; 32],
        node_signature: Vec::new(),
        receipt: None,
    });
    valid.push(json!({
        "name": "hybrid qrng+hsm, 4096 bytes",
        "packet": hex::encode(signed(&hybrid, &key)),
        "entropy": hex::encode(hybrid.entropy.expose()),
        "provenance": "hybrid",
    }));

    // Structure.
    add_bad(
        "truncated in the signature",
        good_bytes[..good_bytes.len() - 100].to_vec(),
        "truncated",
    );
    add_bad("empty body", Vec::new(), "truncated");
    let mut t = good_bytes.clone();
    t.push(0);
    add_bad("one trailing byte", t, "trailing_bytes");
    let mut v = good.encode_unsigned().to_vec();
    v[4] = 1;
    add_bad("unknown version 1", resign(v, &key), "unknown_version");
    let mut v2 = good.encode_unsigned().to_vec();
    v2[4] = 2;
    add_bad(
        "version 2 (before node receipts)",
        resign(v2, &key),
        "unknown_version",
    );
    let mut m = good_bytes.clone();
    m[0] = b'X';
    add_bad("bad magic", m, "malformed");
    let mut a = good.encode_unsigned().to_vec();
    a[5] = 9;
    add_bad("unknown signature algorithm", resign(a, &key), "malformed");
    let mut long = with_key(base(64), &key);
    long.recipient = "r".repeat(65);
    add_bad("recipient of 65 bytes", signed(&long, &key), "malformed");
    let mut badname = with_key(base(64), &key);
    badname.recipient = "kirqd/../x".into();
    add_bad(
        "recipient with a slash",
        signed(&badname, &key),
        "malformed",
    );
    let mut life = with_key(base(64), &key);
    life.expires_at_ms = life.issued_at_ms + 60_001;
    add_bad("lifetime over 60 s", signed(&life, &key), "malformed");
    let mut none = with_key(base(64), &key);
    none.provenance.clear();
    add_bad("no sources", signed(&none, &key), "malformed");
    let mut many = with_key(base(64), &key);
    many.provenance = (0..17)
        .map(|i| SourceEntry {
            kind: SourceKind::Local,
            id: format!("s{i}"),
            byte_count: 64,
            commitment: [0; 32],
            node_signature: Vec::new(),
            receipt: None,
        })
        .collect();
    add_bad("17 sources", signed(&many, &key), "malformed");
    let mut zero = with_key(base(64), &key);
    zero.provenance[0].byte_count = 0;
    add_bad("source byte_count 0", signed(&zero, &key), "malformed");
    let mut kind = good.encode_unsigned().to_vec();
    let kind_at = 4 + 4 + 8 + 1 + RECIPIENT.len() + 8 + 16 + 8 + 8 + 8 + 1;
    kind[kind_at] = 9;
    add_bad("unknown source kind", resign(kind, &key), "malformed");
    let empty = with_key(base(0), &key);
    add_bad("empty entropy", signed(&empty, &key), "malformed");
    let mut huge = good.encode_unsigned().to_vec();
    let ent_at = kind_at + 1 + 1 + "qrng-a".len() + 4 + 32;
    huge[ent_at..ent_at + 4].copy_from_slice(&(2u32 << 20).to_be_bytes());
    add_bad(
        "entropy length 2 MiB declared",
        resign(huge, &key),
        "malformed",
    );
    let mut stray = with_key(base(64), &key);
    stray.proof = vec![1];
    add_bad(
        "proof bytes without a proof algorithm",
        signed(&stray, &key),
        "malformed",
    );
    let mut mixa = good.encode_unsigned().to_vec();
    mixa[6] = 3;
    add_bad("unknown mix algorithm 3", resign(mixa, &key), "malformed");
    let mut round = with_key(base(64), &key);
    round.round = 1 << 63;
    add_bad("round 2^63", signed(&round, &key), "malformed");
    let mut unsigned_node = with_key(base(64), &key);
    unsigned_node.provenance[0].kind = SourceKind::Decentralized;
    unsigned_node.provenance[0].node_signature = Vec::new();
    add_bad(
        "decentralized source without a node signature",
        signed(&unsigned_node, &key),
        "malformed",
    );
    let mut noproof = with_key(base(64), &key);
    noproof.mix_alg = kirq::wire::MIX_RP64;
    noproof.proof_alg = kirq::wire::PROOF_STARK_RP64;
    add_bad(
        "proof algorithm without proof bytes",
        signed(&noproof, &key),
        "malformed",
    );
    let mut nosig = good.encode_unsigned().to_vec();
    nosig.extend_from_slice(&0u16.to_be_bytes());
    add_bad("zero-length signature", nosig, "malformed");

    // Meaning.
    add_bad(
        "truncated in the entropy",
        good_bytes[..ent_at + 4 + 10].to_vec(),
        "truncated",
    );
    let mut flipped = good_bytes.clone();
    flipped[ent_at + 4] ^= 1;
    add_bad(
        "entropy byte flipped after signing",
        flipped,
        "bad_signature",
    );
    let mut wrong_key_id = with_key(base(64), &key);
    wrong_key_id.key_id = other.verifying_key().id();
    add_bad(
        "signed by an untrusted key",
        signed(&with_key(base(64), &other), &other),
        "unknown_key",
    );
    add_bad(
        "claims a trusted key id, signed by another key",
        signed(&with_key(base(64), &key), &other),
        "bad_signature",
    );
    let _ = wrong_key_id;
    let mut wr = with_key(base(64), &key);
    wr.recipient = "kirqd-other".into();
    add_bad(
        "addressed to another daemon",
        signed(&wr, &key),
        "wrong_recipient",
    );
    let mut exp = with_key(base(64), &key);
    exp.issued_at_ms = NOW - 61_000;
    exp.expires_at_ms = NOW - 1_000;
    add_bad("expired a second ago", signed(&exp, &key), "expired");
    let mut fut = with_key(base(64), &key);
    fut.issued_at_ms = NOW + 6_000;
    fut.expires_at_ms = NOW + 66_000;
    add_bad(
        "issued 6 s in the future (skew 5 s)",
        signed(&fut, &key),
        "issued_in_future",
    );
    let mut stuck = with_key(base(64), &key);
    stuck.entropy = SecretBytes::new(vec![0x42; 64]);
    add_bad("stuck entropy", signed(&stuck, &key), "health_failed");

    let doc = json!({
        "description": "Kirq packet vectors (format version 3). Verify with recipient, now_ms and max_skew_ms as given, trusting only public_key.",
        "recipient": RECIPIENT,
        "now_ms": NOW,
        "max_skew_ms": 5000,
        "public_key": key.verifying_key().to_text().trim(),
        "valid": valid,
        "invalid": invalid,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
}
