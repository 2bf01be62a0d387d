//! Mixing proofs and node commitments checked by a real kirqd: a proven packet whose nodes the
//! daemon trusts is admitted; each kind of tampering (re-signed by the hub, so only the proof or
//! a node signature can catch it) is refused with its reason, counted, and admits nothing.

mod common;

use common::*;
use kirq::crypto::falcon::SigningKey;
use kirq::crypto::stark;
use kirq::secret::SecretBytes;
use kirq::wire::{MIX_RP64, PROOF_STARK_RP64, Packet, SourceEntry, SourceKind};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// Proven output per packet: small, because the suite runs debug builds.
const OUT: usize = 8 * stark::OUTPUT_BLOCK_BYTES;

fn random(n: usize) -> SecretBytes {
    let mut b = SecretBytes::zeroed(n);
    getrandom::fill(b.expose_mut()).unwrap();
    b
}

struct Setup {
    f: Fleet,
    nodes: Vec<SigningKey>,
    _p: Proc,
}

impl Setup {
    /// kirqd requiring a proof and all three nodes.
    fn start() -> Self {
        let f = Fleet::new();
        let nodes: Vec<SigningKey> = NODES.iter().map(|_| SigningKey::generate()).collect();
        let mut trust = String::from("require_proof = true\nmin_node_quorum = 3\n");
        for (id, k) in NODES.iter().zip(&nodes) {
            k.write_pair(f.dir.path(), id).unwrap();
            trust.push_str(&format!(
                "[[trust.nodes]]\nid = \"{id}\"\npublic_key = \"{id}.pub\"\n"
            ));
        }
        let cfg = f.daemon_config_trust(false, &trust, "[fallback]\nenabled = false");
        let p = kirqd(&f, &cfg, &[]);
        Self { f, nodes, _p: p }
    }

    /// A packet as a hub with three nodes and one bulk source makes it, proven and signed by
    /// the nodes; `round` names the commitments.
    fn packet(&self, round: u64) -> Packet {
        let node_bytes: Vec<SecretBytes> = NODES.iter().map(|_| random(64)).collect();
        let bulk = random(OUT);
        let mut parts: Vec<stark::Part<'_>> = NODES
            .iter()
            .zip(&node_bytes)
            .map(|(id, b)| stark::Part { id, bytes: b })
            .collect();
        parts.push(stark::Part {
            id: "qrng-1",
            bytes: &bulk,
        });
        let proven = stark::prove(round, &parts, OUT).expect("prove");
        let mut provenance: Vec<SourceEntry> = NODES
            .iter()
            .zip(&self.nodes)
            .zip(&proven.commitments)
            .map(|((id, key), c)| SourceEntry {
                kind: SourceKind::Decentralized,
                id: (*id).into(),
                byte_count: 64,
                commitment: *c,
                node_signature: key.sign(&kirq::crypto::node_signing_digest(round, id, c)),
                receipt: None,
            })
            .collect();
        provenance.push(SourceEntry {
            kind: SourceKind::Qrng,
            id: "qrng-1".into(),
            byte_count: OUT as u32,
            commitment: proven.commitments[3],
            node_signature: Vec::new(),
            receipt: None,
        });
        let mut p = self.f.packet(OUT);
        p.mix_alg = MIX_RP64;
        p.proof_alg = PROOF_STARK_RP64;
        p.round = round;
        p.provenance = provenance;
        p.entropy = proven.output;
        p.proof = proven.proof;
        self.receipts(&mut p);
        p
    }

    /// The nodes' receipts over the packet's commitment set as it is now.
    fn receipts(&self, p: &mut Packet) {
        let keys: Vec<(&str, &SigningKey)> = NODES.iter().copied().zip(&self.nodes).collect();
        sign_receipts(p, &keys, DAEMON_ID, 1);
    }

    fn signed(&self, p: &Packet) -> Vec<u8> {
        p.encode_signed(&self.f.key).to_vec()
    }

    fn pool(&self) -> (u64, u64) {
        self.f.pool()
    }

    fn expect_reject(&self, what: &str, body: Vec<u8>, reason: &str) {
        self.f.expect_reject(what, body, 400, reason);
    }
}

#[test]
fn proven_packets_are_admitted_and_tampering_is_refused() {
    let s = Setup::start();
    let good = s.packet(fresh_round(0));
    let (status, resp) = s.f.push_raw(s.signed(&good));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(s.pool(), (OUT as u64, OUT as u64));

    // One output byte flipped, re-signed by the hub: only the proof can tell.
    let mut p = s.packet(fresh_round(1));
    p.entropy.expose_mut()[5] ^= 0x01;
    s.expect_reject("output byte flipped", s.signed(&p), "bad_proof");

    // The bulk source's commitment changed after the nodes revealed: their receipts name the
    // set they were shown, so a hub cannot pick its contribution after seeing theirs.
    let mut p = s.packet(fresh_round(2));
    p.provenance[3].commitment[0] ^= 0x01;
    s.expect_reject(
        "hub commitment changed after the reveals",
        s.signed(&p),
        "bad_node_receipt",
    );
    // Changed before (the receipts name it): the proof shows the output is not its mix.
    let mut p = s.packet(fresh_round(12));
    p.provenance[3].commitment[0] ^= 0x01;
    s.receipts(&mut p);
    s.expect_reject("hub commitment changed", s.signed(&p), "bad_proof");

    // A node's commitment changed: its signature no longer matches.
    let mut p = s.packet(fresh_round(3));
    p.provenance[1].commitment[7] ^= 0x80;
    s.expect_reject(
        "node commitment changed",
        s.signed(&p),
        "bad_node_signature",
    );

    // One proof byte changed, in the middle of the proof.
    let mut p = s.packet(fresh_round(4));
    let mid = p.proof.len() / 2;
    p.proof[mid] ^= 0x01;
    s.expect_reject("proof byte changed", s.signed(&p), "bad_proof");

    // The proof of another packet (same shape, other contributions).
    let donor = s.packet(fresh_round(5));
    let mut p = s.packet(fresh_round(5));
    p.proof = donor.proof;
    s.expect_reject("proof from another packet", s.signed(&p), "bad_proof");

    // A commitment signed by a node the daemon does not trust, under a trusted node's id.
    let mut p = s.packet(fresh_round(6));
    let stranger = SigningKey::generate();
    let c = p.provenance[2].commitment;
    p.provenance[2].node_signature =
        stranger.sign(&kirq::crypto::node_signing_digest(p.round, NODES[2], &c));
    s.expect_reject(
        "untrusted node signature",
        s.signed(&p),
        "bad_node_signature",
    );

    // Only two nodes: below the daemon's quorum of three.
    let mut p = s.packet(fresh_round(7));
    p.provenance.remove(0);
    s.receipts(&mut p);
    s.expect_reject("two nodes of three", s.signed(&p), "quorum_not_met");

    // Without a proof: refused, the daemon requires one.
    let mut p = s.packet(fresh_round(8));
    p.proof_alg = kirq::wire::PROOF_NONE;
    p.proof.clear();
    s.expect_reject("no proof", s.signed(&p), "proof_required");

    // And an honest packet still goes through afterwards.
    let (status, resp) = s.f.push_raw(s.signed(&s.packet(fresh_round(9))));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(s.pool(), (2 * OUT as u64, 2 * OUT as u64));
}

/// Two packets built at once with one prover worker: under `when_idle` one is proven and the
/// other goes out unproven (the provable mixer, no proof) instead of waiting; under `required`
/// both wait for their proof. Proven packets pass a verifier that requires proofs; unproven ones
/// are refused by it as `proof_required`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_modes_decide_whether_a_packet_waits() {
    use kirq::config::{ProofConfig, ProofMode, SourceConfig};
    use kirq::verify::{Policy, Verifier};

    for (mode, want_unproven) in [(ProofMode::WhenIdle, 1), (ProofMode::Required, 0)] {
        let factory = kirq::hub::PacketFactory::new(
            SigningKey::generate(),
            vec![kirq::sources::make_source(&SourceConfig::local("local-1")).unwrap()],
            30,
            std::time::Duration::from_secs(60),
            60_000,
            Default::default(),
        )
        .with_proof(ProofConfig {
            mode,
            workers: 1,
            max_output_bytes: OUT,
        });
        let metrics = kirq::metrics::HubMetrics::new();
        let verifier = Verifier::new(
            Policy {
                recipient: DAEMON_ID.into(),
                max_skew_ms: 5_000,
                require_proof: true,
                min_node_quorum: 0,
                replay_capacity: 1024,
                alpha_exp: 30,
            },
            vec![factory.key().verifying_key().clone()],
        );
        // Whether the second build finds the worker busy depends on scheduling: under
        // `when_idle` a busy worker must show within a few tries; under `required` never.
        let tries = if mode == ProofMode::WhenIdle { 5 } else { 2 };
        let mut unproven = 0;
        for _ in 0..tries {
            // Asking for more than one proof covers gives one proof's worth.
            let (a, b) = tokio::join!(
                factory.build(DAEMON_ID, 4 * OUT, &metrics),
                factory.build(DAEMON_ID, 4 * OUT, &metrics)
            );
            unproven += check_pair(&verifier, [a.unwrap().to_vec(), b.unwrap().to_vec()]);
            if unproven > 0 {
                break;
            }
        }
        assert_eq!(unproven, want_unproven, "{mode:?}");
    }
}

/// Checks two packets built at once; returns how many went out without a proof (at most one:
/// the other build held the only worker).
fn check_pair(verifier: &kirq::verify::Verifier, packets: [Vec<u8>; 2]) -> usize {
    let mut unproven = 0;
    for bytes in packets {
        let p = Packet::decode(&bytes).unwrap().packet;
        assert_eq!(p.mix_alg, MIX_RP64);
        assert_eq!(p.entropy.len(), OUT, "cut to one proof");
        assert_eq!(p.provenance[0].byte_count as usize, OUT);
        let verdict = verifier.verify(&bytes, kirq::util::now_ms());
        if p.proof_alg == PROOF_STARK_RP64 {
            assert!(verdict.is_ok(), "{:?}", verdict.err());
        } else {
            assert!(p.proof.is_empty());
            assert_eq!(verdict.unwrap_err().reason(), "proof_required");
            unproven += 1;
        }
    }
    assert!(unproven <= 1, "one of the two held the worker");
    unproven
}
