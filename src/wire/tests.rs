use super::*;
use crate::crypto::falcon::{SigningKey, VerifyingKey};
use crate::verify::{Policy, Verifier};

#[derive(serde::Deserialize)]
struct Vectors {
    recipient: String,
    now_ms: u64,
    max_skew_ms: u64,
    public_key: String,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
}

#[derive(serde::Deserialize)]
struct Valid {
    name: String,
    packet: String,
    entropy: String,
    provenance: String,
}

#[derive(serde::Deserialize)]
struct Invalid {
    name: String,
    packet: String,
    reason: String,
}

fn vectors() -> (Vectors, VerifyingKey) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/packet-vectors.json"
    ))
    .unwrap();
    let v: Vectors = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.pub");
    std::fs::write(&p, &v.public_key).unwrap();
    let key = VerifyingKey::load(&p).unwrap();
    (v, key)
}

fn verifier(v: &Vectors, key: &VerifyingKey) -> Verifier {
    Verifier::new(
        Policy {
            recipient: v.recipient.clone(),
            max_skew_ms: v.max_skew_ms,
            require_proof: false,
            min_node_quorum: 0,
            replay_capacity: 1024,
            alpha_exp: 30,
        },
        vec![key.clone()],
    )
}

#[test]
fn valid_vectors_verify_and_round_trip() {
    let (v, key) = vectors();
    let verifier = verifier(&v, &key);
    assert!(!v.valid.is_empty());
    for t in &v.valid {
        let bytes = hex::decode(&t.packet).unwrap();
        let d = Packet::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(
            hex::encode(d.packet.entropy.expose()),
            t.entropy,
            "{}",
            t.name
        );
        // Canonical: re-encoding the decoded fields gives the same signed prefix.
        assert_eq!(&d.packet.encode_unsigned()[..], d.signed, "{}", t.name);
        let ok = verifier
            .verify(&bytes, v.now_ms)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(ok.class().as_str(), t.provenance, "{}", t.name);
        // The same bytes again are a replay.
        let again = verifier.verify(&bytes, v.now_ms).unwrap_err();
        assert_eq!(again.reason(), "replayed", "{}", t.name);
    }
}

#[test]
fn invalid_vectors_give_their_reason() {
    let (v, key) = vectors();
    let verifier = verifier(&v, &key);
    assert!(v.invalid.len() >= 20);
    for t in &v.invalid {
        let bytes = hex::decode(&t.packet).unwrap();
        let err = verifier.verify(&bytes, v.now_ms).expect_err(&t.name);
        assert_eq!(err.reason(), t.reason, "{}: {err}", t.name);
    }
    // Nothing invalid reached the replay cache.
    assert_eq!(verifier.replay_cache_len(), 0);
}

#[test]
fn distinct_decode_variants() {
    let (v, _) = vectors();
    let find = |name: &str| {
        let t = v.invalid.iter().find(|t| t.name == name).unwrap();
        Packet::decode(&hex::decode(&t.packet).unwrap()).unwrap_err()
    };
    assert!(matches!(
        find("unknown version 1"),
        DecodeError::UnknownVersion(1)
    ));
    assert!(matches!(
        find("round 2^63"),
        DecodeError::CountOutOfRange { field: "round", .. }
    ));
    assert!(matches!(
        find("decentralized source without a node signature"),
        DecodeError::LengthOutOfRange {
            field: "source.node_signature",
            ..
        }
    ));
    assert!(matches!(
        find("unknown mix algorithm 3"),
        DecodeError::UnknownAlgorithm {
            field: "mix_alg",
            value: 3
        }
    ));
    assert!(matches!(
        find("one trailing byte"),
        DecodeError::TrailingBytes(1)
    ));
    assert!(matches!(
        find("truncated in the entropy"),
        DecodeError::Truncated("entropy")
    ));
    assert!(matches!(
        find("truncated in the signature"),
        DecodeError::Truncated("signature")
    ));
    assert!(matches!(
        find("17 sources"),
        DecodeError::CountOutOfRange {
            field: "n_sources",
            ..
        }
    ));
    assert!(matches!(
        find("entropy length 2 MiB declared"),
        DecodeError::LengthOutOfRange {
            field: "entropy",
            ..
        }
    ));
    assert!(matches!(
        find("lifetime over 60 s"),
        DecodeError::LifetimeOutOfRange
    ));
    assert!(matches!(
        find("unknown source kind"),
        DecodeError::UnknownSourceKind(9)
    ));
    assert!(matches!(find("bad magic"), DecodeError::BadMagic));
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let big = vec![0u8; MAX_PACKET_BYTES + 1];
    assert!(matches!(
        Packet::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn every_prefix_of_a_valid_packet_is_rejected_without_panic() {
    let (v, _) = vectors();
    let bytes = hex::decode(&v.valid[0].packet).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            Packet::decode(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
}

#[test]
fn debug_never_prints_entropy() {
    let (v, _) = vectors();
    let bytes = hex::decode(&v.valid[0].packet).unwrap();
    let d = Packet::decode(&bytes).unwrap();
    let shown = format!("{:?}", d.packet);
    assert!(!shown.contains(&v.valid[0].entropy[..16]));
    assert!(shown.contains("SecretBytes(64 bytes)"));
}

#[test]
fn node_signature_round_trips_only_for_decentralized_sources() {
    let key = SigningKey::generate();
    let mut p = crate::wire::sample_packet(&key, "kirqd-a", 64, SourceKind::Qrng);
    p.round = (1 << 63) - 1;
    p.mix_alg = crate::wire::MIX_RP64;
    p.provenance.push(SourceEntry {
        kind: SourceKind::Decentralized,
        id: "node-1".into(),
        byte_count: 64,
        commitment: [7; 32],
        node_signature: vec![9; 700],
        receipt: Some(crate::wire::NodeReceipt {
            epoch: 3,
            sequence: 41,
            signature: vec![5; 650],
        }),
    });
    // A node shown at reveal that did not contribute: no bytes, no receipt.
    p.provenance.push(SourceEntry {
        kind: SourceKind::Decentralized,
        id: "node-2".into(),
        byte_count: 0,
        commitment: [8; 32],
        node_signature: vec![9; 600],
        receipt: None,
    });
    let bytes = p.encode_signed(&key);
    let d = Packet::decode(&bytes).unwrap().packet;
    assert_eq!(d.round, p.round);
    assert_eq!(d.mix_alg, crate::wire::MIX_RP64);
    assert_eq!(d.provenance, p.provenance);
    assert!(d.provenance[0].node_signature.is_empty());
    assert_eq!(d.provenance[1].node_signature.len(), 700);
    assert!(!d.provenance[2].contributes());

    // No bytes is allowed for a shown node only, and such a node carries no receipt.
    let mut q = crate::wire::sample_packet(&key, "kirqd-a", 64, SourceKind::Qrng);
    q.provenance[0].byte_count = 0;
    let e = Packet::decode(&q.encode_signed(&key)).unwrap_err();
    assert_eq!(e.reason(), "malformed", "{e}");
    let mut q = crate::wire::sample_packet(&key, "kirqd-a", 64, SourceKind::Qrng);
    q.provenance.push(SourceEntry {
        kind: SourceKind::Decentralized,
        id: "node-2".into(),
        byte_count: 0,
        commitment: [8; 32],
        node_signature: vec![9; 600],
        receipt: Some(crate::wire::NodeReceipt {
            epoch: 1,
            sequence: 1,
            signature: vec![5; 10],
        }),
    });
    assert!(Packet::decode(&q.encode_signed(&key)).is_err());
    // Version 2 packets (no receipts) are refused as an unknown version, not misread.
    let mut old = crate::wire::sample_packet(&key, "kirqd-a", 64, SourceKind::Qrng)
        .encode_signed(&key)
        .to_vec();
    old[4] = 2;
    assert_eq!(
        Packet::decode(&old).unwrap_err().reason(),
        "unknown_version"
    );
}

#[test]
fn ml_dsa_packets_round_trip_with_their_fixed_signature_length() {
    let key = crate::crypto::mldsa::SigningKey::generate();
    let p = crate::wire::sample_packet(&key, "kirqd-a", 64, SourceKind::Qrng);
    let bytes = p.encode_signed(&key);
    assert_eq!(bytes[5], SIG_ML_DSA_65);
    let d = Packet::decode(&bytes).unwrap();
    assert_eq!(d.packet.sig_alg, SigAlg::MlDsa65);
    assert_eq!(d.packet.key_id, key.verifying_key().id());
    assert_eq!(
        d.packet.signature.len(),
        crate::crypto::mldsa::SIGNATURE_BYTES
    );
    assert!(
        key.verifying_key()
            .verify(&signing_digest(d.signed), &d.packet.signature)
    );
    // One byte short of the fixed length: the signature length field is out of range.
    let mut short = bytes[..d.signed.len()].to_vec();
    short.extend_from_slice(&((crate::crypto::mldsa::SIGNATURE_BYTES - 1) as u16).to_be_bytes());
    short.extend_from_slice(&d.packet.signature[1..]);
    assert!(matches!(
        Packet::decode(&short),
        Err(DecodeError::LengthOutOfRange {
            field: "signature",
            ..
        })
    ));
    assert!(bytes.len() <= MAX_PACKET_BYTES);
}
