//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/seed-*`) from real values: packets
//! signed by the committed fuzz hub key (made here once, `fuzz/keys/`), the packet vectors, a real
//! STARK proof, refill frames, the shipped configs, sealed files and SPORE answers.
//!
//! `cargo run --example fuzz_seeds` (from the repository root). Keys are kept if they exist, so
//! re-running refreshes the seeds without changing what the committed ones were signed with.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kirq::crypto::falcon::SigningKey;
use kirq::crypto::stark;
use kirq::secret::SecretBytes;
use kirq::wire::{MIX_RP64, PROOF_STARK_RP64, Packet, SourceEntry, SourceKind, sample_packet};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const NOW_MS: u64 = 1_800_000_000_000;
const RECIPIENT: &str = "kirqd-vectors";

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn random(n: usize) -> SecretBytes {
    let mut b = SecretBytes::zeroed(n);
    getrandom::fill(b.expose_mut()).unwrap();
    b
}

fn at_now(mut p: Packet) -> Packet {
    p.issued_at_ms = NOW_MS - 1_000;
    p.expires_at_ms = NOW_MS + 59_000;
    p
}

fn hub_key(dir: &Path) -> SigningKey {
    let key = dir.join("fuzz-hub.key");
    if !key.exists() {
        std::fs::create_dir_all(dir).unwrap();
        SigningKey::generate().write_pair(dir, "fuzz-hub").unwrap();
    }
    // A fresh clone checks the key out 0644; SigningKey::load insists on 0600.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = SigningKey::load(&key).unwrap();
    let public = dir.join("fuzz-hub.pub");
    if !public.exists() {
        std::fs::write(public, key.verifying_key().to_text()).unwrap();
    }
    key
}

fn frames(packets: &[&[u8]]) -> Vec<u8> {
    kirq::wire::refill::encode(packets.iter().copied())
}

fn packets(key: &SigningKey) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let plain = at_now(sample_packet(key, RECIPIENT, 64, SourceKind::Qrng));
    out.push(("plain-64".into(), plain.encode_signed(key).to_vec()));
    let mut hybrid = at_now(sample_packet(key, RECIPIENT, 512, SourceKind::Qrng));
    hybrid.provenance.push(SourceEntry {
        kind: SourceKind::Hsm,
        id: "hsm-1".into(),
        byte_count: 512,
        commitment: [9; 32],
        node_signature: Vec::new(),
        receipt: None,
    });
    out.push(("hybrid-512".into(), hybrid.encode_signed(key).to_vec()));

    // Two decentralized nodes (both signed by the fuzz key, which the target trusts for
    // node-a and node-b) and a bulk source, mixed by Rescue-Prime and proven.
    // A round the way hubs number them: the issue time's clock in microseconds.
    let round = (NOW_MS - 1_000) * 1000;
    let node_bytes = [random(64), random(64)];
    let out_len = 8 * stark::OUTPUT_BLOCK_BYTES;
    let bulk = random(out_len);
    let ids = ["node-a", "node-b", "qrng-1"];
    let parts = [
        stark::Part {
            id: ids[0],
            bytes: &node_bytes[0],
        },
        stark::Part {
            id: ids[1],
            bytes: &node_bytes[1],
        },
        stark::Part {
            id: ids[2],
            bytes: &bulk,
        },
    ];
    let proven = stark::prove(round, &parts, out_len).unwrap();
    let mut p = at_now(sample_packet(key, RECIPIENT, out_len, SourceKind::Qrng));
    p.mix_alg = MIX_RP64;
    p.proof_alg = PROOF_STARK_RP64;
    p.round = round;
    p.provenance = ids
        .iter()
        .zip(&proven.commitments)
        .enumerate()
        .map(|(i, (id, c))| SourceEntry {
            kind: if i < 2 {
                SourceKind::Decentralized
            } else {
                SourceKind::Qrng
            },
            id: (*id).into(),
            byte_count: if i < 2 { 64 } else { out_len as u32 },
            commitment: *c,
            node_signature: if i < 2 {
                key.sign(&kirq::crypto::node_signing_digest(round, id, c))
            } else {
                Vec::new()
            },
            receipt: None,
        })
        .collect();
    // Each node's receipt over the whole commitment set, as it signs when it reveals.
    let set = kirq::wire::commitment_set(&p.provenance);
    for (n, s) in p.provenance.iter_mut().take(2).enumerate() {
        let sequence = n as u64 + 1;
        s.receipt = Some(kirq::wire::NodeReceipt {
            epoch: 1,
            sequence,
            signature: key.sign(&kirq::crypto::node_receipt_digest(
                round, RECIPIENT, 1, sequence, &set,
            )),
        });
    }
    p.entropy = proven.output;
    p.proof = proven.proof.clone();
    let proven_bytes = p.encode_signed(key).to_vec();
    put("stark_proof", "proof", &proven.proof);
    std::fs::write("fuzz/seeds/stark_packet.bin", &proven_bytes).unwrap();
    out.push(("nodes-proven".into(), proven_bytes));

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("testdata/packet-vectors.json").unwrap())
            .unwrap();
    for (i, x) in v["valid"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["invalid"].as_array().unwrap())
        .enumerate()
    {
        out.push((
            format!("vector-{i:02}"),
            hex::decode(x["packet"].as_str().unwrap()).unwrap(),
        ));
    }
    out
}

fn cuse_requests() -> Vec<(&'static str, Vec<u8>)> {
    fn msg(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((40 + body.len()) as u32).to_le_bytes());
        v.extend_from_slice(&opcode.to_le_bytes());
        v.extend_from_slice(&unique.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes()); // nodeid
        v.extend_from_slice(&0u32.to_le_bytes()); // uid
        v.extend_from_slice(&0u32.to_le_bytes()); // gid
        v.extend_from_slice(&4242u32.to_le_bytes()); // pid
        v.extend_from_slice(&[0; 4]); // total_extlen, padding
        v.extend_from_slice(body);
        v
    }
    let le32 = |xs: &[u32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cat = |parts: &[Vec<u8>]| parts.concat();
    let fh = 5u64.to_le_bytes().to_vec();
    vec![
        ("cuse-init", msg(4096, 1, &le32(&[7, 38, 0, 1]))),
        ("open", msg(14, 2, &le32(&[0o2, 0]))),
        ("open-nonblock", msg(14, 3, &le32(&[0o4002, 0]))),
        (
            "read-4096",
            msg(
                15,
                4,
                &cat(&[
                    fh.clone(),
                    vec![0; 8],
                    le32(&[4096, 0]),
                    vec![0; 8],
                    le32(&[0o2, 0]),
                ]),
            ),
        ),
        (
            "write-4",
            msg(
                16,
                5,
                &cat(&[
                    fh.clone(),
                    vec![0; 8],
                    le32(&[4, 0]),
                    vec![0; 8],
                    le32(&[0, 0]),
                    b"abcd".to_vec(),
                ]),
            ),
        ),
        (
            "ioctl-rndgetentcnt",
            msg(
                39,
                6,
                &cat(&[
                    fh.clone(),
                    le32(&[0, 0x8004_5200]),
                    vec![0; 8],
                    le32(&[0, 4]),
                ]),
            ),
        ),
        (
            "ioctl-tcgets",
            msg(
                39,
                7,
                &cat(&[fh.clone(), le32(&[0, 0x5401]), vec![0; 8], le32(&[0, 60])]),
            ),
        ),
        (
            "poll",
            msg(
                40,
                8,
                &cat(&[fh.clone(), 9u64.to_le_bytes().to_vec(), le32(&[1, 1])]),
            ),
        ),
        (
            "release",
            msg(18, 9, &cat(&[fh.clone(), le32(&[0, 0]), vec![0; 8]])),
        ),
        (
            "flush",
            msg(25, 10, &cat(&[fh.clone(), le32(&[0, 0]), vec![0; 8]])),
        ),
        ("interrupt", msg(36, 11, &4u64.to_le_bytes())),
        ("forget", msg(2, 12, &1u64.to_le_bytes())),
        ("lookup-other", msg(1, 13, b"x\0")),
    ]
}

fn main() {
    std::fs::create_dir_all("fuzz/seeds").unwrap();
    let key = hub_key(Path::new("fuzz/keys"));
    let pk = packets(&key);
    for (name, bytes) in &pk {
        put("packet_decode", name, bytes);
        put(
            "packet_verify",
            &format!("0-{name}"),
            &[&[0u8][..], bytes].concat(),
        );
        put(
            "packet_verify",
            &format!("1-{name}"),
            &[&[1u8][..], bytes].concat(),
        );
    }
    let (a, b) = (&pk[0].1, &pk[1].1);
    put("refill_frames", "one", &frames(&[a]));
    put("refill_frames", "two", &frames(&[a, b]));
    put("refill_frames", "empty", &[]);
    put("refill_frames", "short-len", &[0, 0, 1]);

    for (name, bytes) in cuse_requests() {
        put("cuse_request", name, &bytes);
        put("cuse_reply", name, &bytes);
    }

    // HTTP bodies: the first byte picks the endpoint (see each target).
    for (name, sel, body) in [
        ("random-32", 0u8, r#"{"num_bytes":32}"#.to_owned()),
        (
            "random-b64",
            0,
            r#"{"num_bytes":16,"encoding":"base64"}"#.into(),
        ),
        (
            "random-source",
            0,
            r#"{"num_bytes":8,"encoding":"hex","source":"qrng"}"#.into(),
        ),
        ("random-float", 0, r#"{"num_bytes":2207.0}"#.into()),
        ("health", 2, String::new()),
        ("stats", 3, String::new()),
        ("metrics", 4, String::new()),
    ] {
        put("http_rng", name, &[&[sel][..], body.as_bytes()].concat());
    }
    put("http_rng", "receive-plain", &[&[1u8][..], a].concat());
    let msg = STANDARD.encode(b"hello");
    for (name, sel, body) in [
        ("vrf", 0u8, format!(r#"{{"alpha":"{msg}"}}"#)),
        (
            "vrf-verify",
            1,
            format!(
                r#"{{"alpha":"{msg}","pi":"{}","public_key":"{}"}}"#,
                STANDARD.encode([1u8; 80]),
                STANDARD.encode([2u8; 32])
            ),
        ),
        ("falcon-sign", 2, format!(r#"{{"message":"{msg}"}}"#)),
        (
            "falcon-verify",
            3,
            format!(
                r#"{{"message":"{msg}","signature":"{}","public_key":"{}"}}"#,
                STANDARD.encode(key.sign(b"hello")),
                STANDARD.encode(key.verifying_key().as_bytes())
            ),
        ),
        (
            "falcon-verify-hex",
            3,
            r#"{"message":"00ff","encoding":"hex"}"#.into(),
        ),
    ] {
        put(
            "http_quantum",
            name,
            &[&[sel][..], body.as_bytes()].concat(),
        );
    }
    for (name, sel, body) in [
        ("commit", 0u8, r#"{"round":1,"bytes":32}"#.to_owned()),
        (
            "reveal",
            1,
            format!(
                r#"{{"round":1,"commitments":[{{"node_id":"node-a","commitment":"{}","signature":"{}"}}],"hub_commitments":[{{"source_id":"qrng-1","commitment":"{}"}}]}}"#,
                kirq::wire::node::encode_bytes(&[3; 32]),
                kirq::wire::node::encode_signature(&key.sign(b"x")),
                kirq::wire::node::encode_bytes(&[4; 32])
            ),
        ),
    ] {
        put("node_api", name, &[&[sel][..], body.as_bytes()].concat());
    }

    // Source decoders: first byte picks the format, second the JSON pointer.
    let bytes32 = [0xa5u8; 32];
    for (name, fmt, ptr, body) in [
        (
            "anu-uint8",
            0u8,
            0u8,
            r#"{"data":[1,2,3,250],"success":true}"#.to_owned(),
        ),
        ("anu-uint16", 1, 0, r#"{"data":[1,65535,300]}"#.into()),
        ("anu-hex", 2, 0, r#"{"data":["00ff10","abcd"]}"#.into()),
        (
            "qrypt-b64",
            3,
            1,
            format!(r#"{{"random":["{}"],"size":1}}"#, STANDARD.encode(bytes32)),
        ),
        (
            "b64url",
            4,
            2,
            format!(
                r#"{{"result":{{"random":"{}"}}}}"#,
                URL_SAFE_NO_PAD.encode(bytes32)
            ),
        ),
        ("octets", 5, 0, "\u{1}\u{2}raw".into()),
    ] {
        put(
            "source_rest",
            name,
            &[&[fmt, ptr][..], body.as_bytes()].concat(),
        );
    }

    // SPORE: a pinned CA (committed) and answers signed by its leaf.
    let ca_path = Path::new("fuzz/keys/spore-ca.pem");
    let leaf_path = Path::new("fuzz/keys/spore-leaf.pem");
    if !ca_path.exists() {
        let ca = kirq::pki::Ca::new("spore-fuzz-ca").unwrap();
        let leaf = ca.issue("spore-fuzz", &[]).unwrap();
        std::fs::write(ca_path, ca.cert_pem()).unwrap();
        std::fs::write(leaf_path, format!("{}{}", leaf.cert_pem, &*leaf.key_pem)).unwrap();
    }
    let leaf_pem = std::fs::read_to_string(leaf_path).unwrap();
    let signer = p256::ecdsa::SigningKey::from_pkcs8_pem(
        &leaf_pem[leaf_pem.find("-----BEGIN PRIVATE KEY-----").unwrap()..],
    )
    .unwrap();
    let der = CertificateDer::from_pem_slice(leaf_pem.as_bytes())
        .unwrap()
        .to_vec();
    let challenge = URL_SAFE_NO_PAD.encode([1u8; 32]);
    let entropy = URL_SAFE_NO_PAD.encode([0x5au8; 64]);
    for (name, header) in [
        (
            "good",
            serde_json::json!({"alg": "ES256", "x5c": [STANDARD.encode(&der)]}),
        ),
        ("no-x5c", serde_json::json!({"alg": "ES256"})),
        (
            "alg-none",
            serde_json::json!({"alg": "none", "x5c": [STANDARD.encode(&der)]}),
        ),
    ] {
        let claims =
            serde_json::json!({"entropy": entropy, "challenge": challenge, "timestamp": NOW_MS});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig: p256::ecdsa::Signature = signer.sign(input.as_bytes());
        let mut outer = claims.clone();
        outer["JWT"] = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())).into();
        put("source_spore", name, outer.to_string().as_bytes());
    }

    // Configs: first byte picks daemon (0), hub (1), node (2).
    for (name, sel, file) in [
        ("kirqd", 0u8, "packaging/etc/kirq/kirqd.toml"),
        ("hub", 1, "packaging/etc/kirq/kirq-hub.toml"),
        ("node", 2, "packaging/etc/kirq/kirq-node.toml"),
    ] {
        put(
            "config",
            name,
            &[&[sel][..], &std::fs::read(file).unwrap()].concat(),
        );
    }
    put(
        "config",
        "hub-tty",
        &[
            &[1u8][..],
            br#"id = "hub-1"
signing_key = "k"
listen = "127.0.0.1:1"
[tls]
cert = "c"
key = "k"
daemon_ca = "ca"
[[daemons]]
id = "kirqd-1"
[[sources]]
type = "device"
id = "tty-1"
path = "/dev/ttyACM0"
raw_tty = true
baud = 115200
init = "cmdstream\r\n"
min_entropy_per_byte = 7.5
"#,
        ]
        .concat(),
    );

    // Sealed files (the target rebinds host and key, see fuzz_targets/sealed_pool.rs).
    let dir = tempfile::tempdir().unwrap();
    let sealed = kirq::pool::persist::SealedFile::new(dir.path().join("pool.sealed"));
    let pkey = kirq::pool::persist::PoolKey::from_bytes([7; 32]);
    let segs: [SecretBytes; kirq::pool::persist::SEGMENTS] =
        std::array::from_fn(|i| random(i * 3 + 1));
    sealed.save(&pkey, &segs).unwrap();
    put(
        "sealed_pool",
        "file",
        &[
            &[0u8][..],
            &std::fs::read(dir.path().join("pool.sealed")).unwrap(),
        ]
        .concat(),
    );
    let mut plain = Vec::new();
    for s in &segs {
        plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
        plain.extend_from_slice(s.expose());
    }
    put("sealed_pool", "plaintext", &[&[1u8][..], &plain].concat());
    let akey = kirq::quantum::keystore::AtRestKey::from_bytes([7; 32]);
    let vk = key.verifying_key().as_bytes().to_vec();
    put(
        "sealed_key",
        "falcon",
        &[
            &[1u8][..],
            kirq::quantum::keystore::seal(
                &akey,
                kirq::quantum::keystore::Kind::Falcon,
                &vk,
                b"secret-key-bytes",
            )
            .as_bytes(),
        ]
        .concat(),
    );
    put(
        "sealed_key",
        "vrf",
        &[
            &[0u8][..],
            kirq::quantum::keystore::seal(
                &akey,
                kirq::quantum::keystore::Kind::Vrf,
                &[1; 32],
                &[2; 32],
            )
            .as_bytes(),
        ]
        .concat(),
    );
    println!("seeds written under fuzz/corpus");
}
