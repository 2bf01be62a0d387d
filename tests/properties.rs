//! Properties on stable Rust (proptest), in the normal suite: the packet encoding round-trips and
//! is canonical, the verifier never panics and never admits a mutated packet, and the pool never
//! serves a byte twice under random interleavings of admit, take, seal and restore (with stale
//! copies of sealed files offered back). The fuzz targets in `fuzz/` push the same entry points
//! much further; these run in seconds on every `cargo test`.

use std::collections::HashSet;
use std::sync::OnceLock;

use kirq::crypto::falcon::{KeyId, SigningKey};
use kirq::pool::persist::{PoolKey, SealedFile};
use kirq::pool::{Pool, Want};
use kirq::secret::SecretBytes;
use kirq::verify::{Policy, Verifier};
use kirq::wire::Provenance;
use kirq::wire::{
    MIX_RP64, MIX_SHAKE256, PROOF_NONE, PROOF_STARK_RP64, Packet, SourceEntry, SourceKind,
};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000;
const RECIPIENT: &str = "kirqd-prop";

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(SigningKey::generate)
}

fn verifier() -> Verifier {
    Verifier::new(
        Policy {
            recipient: RECIPIENT.into(),
            max_skew_ms: 5_000,
            require_proof: false,
            min_node_quorum: 0,
            replay_capacity: 100_000,
            alpha_exp: 30,
        },
        vec![key().verifying_key().clone()],
    )
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn kind() -> impl Strategy<Value = SourceKind> {
    prop_oneof![
        Just(SourceKind::Qrng),
        Just(SourceKind::Hsm),
        Just(SourceKind::Local),
        Just(SourceKind::Decentralized),
    ]
}

fn entry() -> impl Strategy<Value = SourceEntry> {
    (
        kind(),
        id(),
        1..=kirq::wire::MAX_CONTRIBUTION_BYTES,
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 1..=752),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 1..=752),
        ),
    )
        .prop_map(
            |(kind, id, byte_count, commitment, sig, (epoch, sequence, receipt))| {
                let node = kind == SourceKind::Decentralized;
                SourceEntry {
                    kind,
                    id,
                    byte_count,
                    commitment,
                    node_signature: if node { sig } else { Vec::new() },
                    receipt: node.then_some(kirq::wire::NodeReceipt {
                        epoch,
                        sequence,
                        signature: receipt,
                    }),
                }
            },
        )
}

/// Any structurally valid packet (its signature bytes are arbitrary: decoding does not check it).
fn packet() -> impl Strategy<Value = Packet> {
    (
        (
            any::<[u8; 8]>(),
            prop_oneof![Just(MIX_SHAKE256), Just(MIX_RP64)],
            any::<bool>(),
            id(),
            any::<u64>(),
            any::<[u8; 16]>(),
            0..u64::MAX - 60_000,
            1..=60_000u64,
            0..=kirq::wire::MAX_ROUND,
        ),
        prop::collection::vec(entry(), 1..=4),
        prop::collection::vec(any::<u8>(), 1..2048),
        prop::collection::vec(any::<u8>(), 1..512),
        prop::collection::vec(any::<u8>(), 1..=752),
    )
        .prop_map(
            |(
                (key_id, mix, proven, recipient, sequence, nonce, issued, life, round),
                provenance,
                entropy,
                proof,
                signature,
            )| Packet {
                key_id: KeyId(key_id),
                sig_alg: kirq::crypto::sig::SigAlg::Falcon512,
                mix_alg: mix,
                proof_alg: if proven { PROOF_STARK_RP64 } else { PROOF_NONE },
                recipient,
                sequence,
                nonce,
                issued_at_ms: issued,
                expires_at_ms: issued + life,
                round,
                provenance,
                entropy: SecretBytes::new(entropy),
                proof: if proven { proof } else { Vec::new() },
                signature,
            },
        )
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut out = p.encode_unsigned().to_vec();
    out.extend_from_slice(&(p.signature.len() as u16).to_be_bytes());
    out.extend_from_slice(&p.signature);
    out
}

/// Signed packets for this daemon, made once (signing is the slow part in a debug build).
fn signed() -> &'static Vec<Vec<u8>> {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        (0..48)
            .map(|i| {
                let mut p = kirq::wire::sample_packet(
                    key(),
                    RECIPIENT,
                    64 + 64 * (i % 4),
                    SourceKind::Qrng,
                );
                p.issued_at_ms = NOW - 1_000;
                p.expires_at_ms = NOW + 59_000;
                p.sequence = i as u64;
                p.encode_signed(key()).to_vec()
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// decode(encode(p)) = p, and the bytes a packet decodes from are the only ones it encodes to.
    #[test]
    fn encoding_round_trips(p in packet()) {
        let bytes = encode(&p);
        let d = Packet::decode(&bytes).expect("a valid packet decodes");
        let q = &d.packet;
        prop_assert_eq!(q.key_id, p.key_id);
        prop_assert_eq!((q.mix_alg, q.proof_alg), (p.mix_alg, p.proof_alg));
        prop_assert_eq!(&q.recipient, &p.recipient);
        prop_assert_eq!((q.sequence, q.nonce, q.round), (p.sequence, p.nonce, p.round));
        prop_assert_eq!((q.issued_at_ms, q.expires_at_ms), (p.issued_at_ms, p.expires_at_ms));
        prop_assert_eq!(&q.provenance, &p.provenance);
        prop_assert_eq!(q.entropy.expose(), p.entropy.expose());
        prop_assert_eq!(&q.proof, &p.proof);
        prop_assert_eq!(&q.signature, &p.signature);
        prop_assert_eq!(d.signed, &bytes[..bytes.len() - 2 - p.signature.len()]);
        prop_assert_eq!(encode(q), bytes);
    }

    /// Canonicality under mutation: a flipped byte, a cut or an appended byte either fails to
    /// decode or decodes to a packet that encodes back to exactly the mutated bytes.
    #[test]
    fn mutated_encodings_are_refused_or_canonical(
        p in packet(),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
        how in 0..3u8,
    ) {
        let mut bytes = encode(&p);
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] ^= xor,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, xor),
        }
        if let Ok(d) = Packet::decode(&bytes) {
            prop_assert_eq!(encode(&d.packet), bytes);
        }
    }

    /// The verifier never panics on arbitrary bytes and admits none of them.
    #[test]
    fn verify_refuses_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(verifier().verify(&bytes, NOW).is_err());
    }

    /// A signed packet with any one byte changed, cut or extended is never admitted; the original
    /// still is (so the refusal was the mutation's doing).
    #[test]
    fn verify_never_admits_a_mutated_packet(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
        how in 0..3u8,
    ) {
        let good = which.get(signed());
        let mut bad = good.clone();
        let i = at.index(bad.len());
        match how {
            0 => bad[i] ^= xor,
            1 => bad.truncate(i),
            _ => bad.insert(i, xor),
        }
        let v = verifier();
        prop_assert!(v.verify(&bad, NOW).is_err(), "mutation {how} at {i} admitted");
        prop_assert!(v.verify(good, NOW).is_ok());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    Take(usize),
    Seal,
    Restore,
    /// Offer the last sealed file's bytes again after it was restored (a stale copy).
    RestoreStale,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        4 => (1..300usize).prop_map(Op::Take),
        1 => Just(Op::Seal),
        1 => Just(Op::Restore),
        1 => Just(Op::RestoreStale),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The pool never serves a byte twice: every 16-byte window of everything served is
    /// distinct, served ≤ admitted, the pool holds exactly admitted − served − dropped, and a
    /// stale sealed file is refused.
    #[test]
    fn pool_never_serves_a_byte_twice(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let sealed = SealedFile::new(dir.path().join("pool.sealed"));
        let pkey = PoolKey::from_bytes([9; 32]);
        let v = verifier();
        let pool = Pool::new(1024, 64);
        let mut next = 0;
        let (mut admitted, mut served, mut dropped) = (0usize, 0usize, 0usize);
        let mut out: Vec<u8> = Vec::new();
        let mut stale: Option<Vec<u8>> = None;
        let mut pending_seal: Option<Vec<u8>> = None;
        let mut in_seal = 0usize;
        for op in ops {
            match op {
                Op::Admit => {
                    let Some(bytes) = signed().get(next) else { continue };
                    next += 1;
                    let verified = v.verify(bytes, NOW).expect("a fresh signed packet");
                    let n = verified.len();
                    match pool.admit(verified) {
                        Ok(k) => admitted += k,
                        Err(_) => prop_assert!(pool.free() < n),
                    }
                    // The same packet again is a replay, never a second admission.
                    prop_assert!(v.verify(bytes, NOW).is_err());
                }
                Op::Take(n) => {
                    if let Ok(t) = pool.take(n, Want::Any) {
                        prop_assert_eq!(t.bytes.len(), n);
                        prop_assert_eq!(t.single_provenance(), Some(Provenance::Qrng));
                        served += n;
                        out.extend_from_slice(t.bytes.expose());
                    }
                }
                Op::Seal => {
                    let segs = pool.drain_for_seal();
                    let n: usize = segs.iter().map(SecretBytes::len).sum();
                    prop_assert!(pool.is_empty());
                    if n > 0 && pending_seal.is_none() {
                        sealed.save(&pkey, &segs).unwrap();
                        pending_seal = Some(std::fs::read(dir.path().join("pool.sealed")).unwrap());
                        in_seal = n;
                    } else {
                        // The daemon seals once per stop; bytes drained beyond that are lost.
                        dropped += n;
                    }
                }
                Op::Restore => {
                    if let Some(file) = pending_seal.take() {
                        let before = pool.len();
                        let u = sealed.take(&pkey).unwrap().expect("the sealed file");
                        let total = u.len();
                        prop_assert_eq!(total, in_seal);
                        in_seal = 0;
                        let back = pool.restore(u);
                        prop_assert_eq!(pool.len(), before + back);
                        dropped += total - back;
                        stale = Some(file);
                    }
                }
                Op::RestoreStale => {
                    // Only while no newer sealed file waits (the stale copy would replace it).
                    if let (Some(file), None) = (&stale, &pending_seal) {
                        std::fs::write(dir.path().join("pool.sealed"), file).unwrap();
                        prop_assert!(sealed.take(&pkey).is_err(), "a stale sealed file was restored");
                        let _ = std::fs::remove_file(dir.path().join("pool.sealed"));
                        let _ = std::fs::remove_file(dir.path().join("pool.sealed.corrupt"));
                    }
                }
            }
            prop_assert!(served <= admitted);
            prop_assert_eq!(pool.len() + in_seal, admitted - served - dropped);
        }
        let mut seen = HashSet::new();
        for w in out.windows(16) {
            prop_assert!(seen.insert(w.to_vec()), "a served 16-byte window repeats");
        }
    }
}
