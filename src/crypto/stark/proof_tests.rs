//! Tests of the mixing proof: honest round trips on random statements, every single change of a
//! public input, and cheating provers that build traces the AIR must reject. Traces stay small
//! (64 to 128 rows) so the debug build runs them quickly.

use winterfell::math::FieldElement;
use winterfell::math::fields::f64::BaseElement;
use winterfell::{AuxRandElements, AuxTraceWithMetadata, Prover, Trace};

use super::air::{CYCLE, Layout, MixAir, MixInputs, proof_options};
use super::prover::{
    MixProver, Segment, fill_trace, inverse_permutation, prove_trace, read_digests, read_output,
};
use super::*;

/// splitmix64: a small deterministic PRNG, seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> SecretBytes {
        SecretBytes::new((0..n).map(|_| self.next() as u8).collect())
    }
}

/// A statement with its secret contributions.
struct Statement {
    round: u64,
    parts: Vec<(String, SecretBytes)>,
    out_len: usize,
}

impl Statement {
    fn random(rng: &mut Rng) -> Statement {
        let n = 1 + rng.below(4);
        let mut parts = Vec::new();
        for i in 0..n {
            // Nodes up to 2 blocks, the last contribution up to 3: at most 9 blocks, 128 rows.
            let max = if i + 1 == n {
                3 * BLOCK_BYTES
            } else {
                2 * BLOCK_BYTES
            };
            let len = 1 + rng.below(max);
            parts.push((format!("node-{i}-{}", rng.below(1000)), rng.bytes(len)));
        }
        let last = parts[n - 1].1.len();
        let out_len = (1 + rng.below(blocks_for(last))) * OUTPUT_BLOCK_BYTES;
        Statement {
            round: rng.next() >> 1,
            parts,
            out_len,
        }
    }

    /// Two 64-byte nodes and a 150-byte bulk contribution, 112 bytes of output.
    fn fixed() -> Statement {
        let mut rng = Rng(7);
        Statement {
            round: 42,
            parts: vec![
                ("node-a".into(), rng.bytes(64)),
                ("node-b".into(), rng.bytes(64)),
                ("bulk".into(), rng.bytes(150)),
            ],
            out_len: 2 * OUTPUT_BLOCK_BYTES,
        }
    }

    fn parts(&self) -> Vec<Part<'_>> {
        self.parts
            .iter()
            .map(|(id, b)| Part { id, bytes: b })
            .collect()
    }

    fn public(&self) -> Vec<PublicPart> {
        self.parts
            .iter()
            .map(|(id, b)| PublicPart {
                id: id.clone(),
                len: b.len(),
                commitment: commit(self.round, id, b.expose()).unwrap(),
            })
            .collect()
    }

    fn layout(&self) -> Layout {
        let lens: Vec<usize> = self.parts.iter().map(|p| p.1.len()).collect();
        Layout::new(&lens, self.out_len).unwrap()
    }

    fn ids(&self) -> impl Iterator<Item = (&str, usize)> + Clone {
        self.parts.iter().map(|(id, b)| (id.as_str(), b.len()))
    }

    fn blocks(&self) -> Vec<Vec<[BaseElement; RATE]>> {
        self.parts.iter().map(|p| to_blocks(p.1.expose())).collect()
    }

    fn honest_segments<'a>(&self, blocks: &'a [Vec<[BaseElement; RATE]>]) -> Vec<Segment<'a>> {
        self.parts
            .iter()
            .zip(blocks)
            .map(|((id, b), bl)| Segment::honest(commit_state(self.round, id, b.len()), bl))
            .collect()
    }

    fn verify(&self, output: &[u8], proof: &[u8]) -> Result<(), VerifyError> {
        verify(self.round, &self.public(), output, proof)
    }
}

/// Proves whatever trace `segments` give, claiming `self`'s public inputs (commitments of the
/// true contributions) and the output the trace's mix lane holds, unless `claim` replaces it.
fn cheat(
    st: &Statement,
    layout: &Layout,
    mix_init: [BaseElement; STATE_WIDTH],
    segments: &[Segment<'_>],
    claim: Option<Vec<BaseElement>>,
) -> (Vec<u8>, Vec<u8>) {
    let trace = fill_trace(layout, mix_init, segments);
    let (_, elements) = read_output(&trace, layout);
    let elements = claim.unwrap_or(elements);
    let output: Vec<u8> = elements.iter().flat_map(|&e| output_bytes(e)).collect();
    let commitments = st
        .public()
        .iter()
        .map(|p| digest_elements(&p.commitment).unwrap())
        .collect();
    let inputs = MixInputs::new(st.round, st.ids(), st.out_len, commitments, elements);
    (output, prove_trace(trace, inputs).unwrap())
}

fn assert_rejected(r: Result<(), VerifyError>) {
    match r {
        Err(VerifyError::Rejected(_)) => {}
        other => panic!("expected the STARK verifier to reject, got {other:?}"),
    }
}

#[test]
fn inverse_permutation_inverts() {
    let mut rng = Rng(1);
    let mut s = [BaseElement::ZERO; STATE_WIDTH];
    s.iter_mut().for_each(|e| *e = BaseElement::new(rng.next()));
    let mut p = inverse_permutation(s);
    winterfell::crypto::hashers::Rp64_256::apply_permutation(&mut p);
    assert_eq!(p, s);
}

#[test]
fn honest_trace_satisfies_every_constraint_and_assertion() {
    let st = Statement::fixed();
    let layout = st.layout();
    let blocks = st.blocks();
    let trace = fill_trace(
        &layout,
        mix_state(st.round, st.out_len, st.ids()),
        &st.honest_segments(&blocks),
    );
    let (output, elements) = read_output(&trace, &layout);
    assert_eq!(
        output.expose(),
        mix(st.round, &st.parts(), st.out_len).unwrap().expose()
    );
    let digests = read_digests(&trace, &layout);
    for (d, p) in digests.iter().zip(st.public()) {
        assert_eq!(Some(*d), digest_elements(&p.commitment));
    }
    let inputs = MixInputs::new(st.round, st.ids(), st.out_len, digests, elements);
    let air =
        <MixAir as winterfell::Air>::new(trace.info().clone(), inputs.clone(), proof_options());
    let prover = MixProver {
        options: proof_options(),
        inputs,
    };
    let rands = AuxRandElements::new(
        (1..=9u64)
            .map(|i| BaseElement::new(i * 0x1234_5678_9abc))
            .collect::<Vec<_>>(),
    );
    let aux_trace = prover.build_aux_trace(&trace, &rands);
    // Panics with the first unsatisfied constraint or assertion.
    trace.validate(
        &air,
        Some(&AuxTraceWithMetadata {
            aux_trace,
            aux_rand_elements: rands,
        }),
    );
}

#[test]
fn random_statements_prove_and_verify() {
    let mut rng = Rng(0x5eed);
    for _ in 0..4 {
        let st = Statement::random(&mut rng);
        let proven = prove(st.round, &st.parts(), st.out_len).unwrap();
        assert_eq!(
            proven.output.expose(),
            mix(st.round, &st.parts(), st.out_len).unwrap().expose()
        );
        let public = st.public();
        let expected: Vec<Commitment> = public.iter().map(|p| p.commitment).collect();
        assert_eq!(proven.commitments, expected);
        assert!(proven.proof.len() < MAX_PROOF_BYTES);
        st.verify(proven.output.expose(), &proven.proof).unwrap();
    }
}

#[test]
fn every_public_input_is_bound() {
    let st = Statement::fixed();
    let proven = prove(st.round, &st.parts(), st.out_len).unwrap();
    let out = proven.output.expose();
    let proof = &proven.proof;
    let public = st.public();
    st.verify(out, proof).unwrap();
    #[track_caller]
    fn check(parts: &[PublicPart], round: u64, out: &[u8], proof: &[u8]) -> VerifyError {
        verify(round, parts, out, proof).expect_err("a changed statement must fail")
    }

    // Output: any byte, and the proof's top byte of any element.
    for i in [0, 6, 7, 55, 56, out.len() - 1] {
        let mut o = out.to_vec();
        o[i] ^= 1;
        assert_rejected(verify(st.round, &public, &o, proof));
    }
    let mut p = proof.clone();
    p[1 + 3] ^= 1; // top byte of output element 3
    let e = check(&public, st.round, out, &p);
    assert!(matches!(
        e,
        VerifyError::Rejected(_) | VerifyError::OutputNotCanonical(3)
    ));
    // A shorter output is another statement (the mix state binds out_len).
    check(&public, st.round, &out[..56], proof);

    // Commitments, ids, lengths, round, order.
    for k in 0..public.len() {
        let mut ps = public.clone();
        ps[k].commitment[5] ^= 1;
        assert_rejected(verify(st.round, &ps, out, proof));
        let mut ps = public.clone();
        ps[k].id.push('x');
        assert_rejected(verify(st.round, &ps, out, proof));
        let mut ps = public.clone();
        ps[k].len -= 1;
        check(&ps, st.round, out, proof);
    }
    let mut ps = public.clone();
    ps[2].commitment[24..].fill(0xff); // above p: not canonical
    assert!(matches!(
        check(&ps, st.round, out, proof),
        VerifyError::CommitmentNotCanonical(2)
    ));
    assert_rejected(verify(st.round + 1, &public, out, proof));
    let mut ps = public.clone();
    ps.swap(0, 1);
    assert_rejected(verify(st.round, &ps, out, proof));
    assert!(matches!(
        check(&public[1..], st.round, out, proof),
        VerifyError::WrongTraceShape { .. } | VerifyError::Rejected(_)
    ));

    // The proof: truncated, extended, a byte flipped anywhere, another statement's proof.
    assert!(matches!(
        check(&public, st.round, out, &proof[..proof.len() - 1]),
        VerifyError::Decode(_)
    ));
    let mut p = proof.clone();
    p.push(0);
    assert!(matches!(
        check(&public, st.round, out, &p),
        VerifyError::Malformed(_)
    ));
    assert!(matches!(
        check(&public, st.round, out, &[]),
        VerifyError::Malformed(_)
    ));
    let mut rng = Rng(99);
    for _ in 0..24 {
        let mut p = proof.clone();
        let i = 1 + rng.below(p.len() - 1);
        let bit = rng.below(8);
        p[i] ^= 1 << bit;
        assert!(
            verify(st.round, &public, out, &p).is_err(),
            "flip of bit {bit} of byte {i} of {} accepted",
            p.len()
        );
    }
    let mut other = Statement::fixed();
    other.round += 1;
    let other_proof = prove(other.round, &other.parts(), other.out_len).unwrap();
    assert_rejected(st.verify(out, &other_proof.proof));
}

#[test]
fn weaker_options_and_other_trace_shapes_are_refused() {
    let st = Statement::fixed();
    let layout = st.layout();
    let blocks = st.blocks();
    let segments = st.honest_segments(&blocks);
    let mix_init = mix_state(st.round, st.out_len, st.ids());

    // The same honest statement proven with 20 queries and no grinding.
    let trace = fill_trace(&layout, mix_init, &segments);
    let (output, elements) = read_output(&trace, &layout);
    let digests = read_digests(&trace, &layout);
    let weak = winterfell::ProofOptions::new(
        20,
        8,
        0,
        winterfell::FieldExtension::Quadratic,
        8,
        127,
        winterfell::BatchingMethod::Linear,
        winterfell::BatchingMethod::Linear,
    );
    let tops: Vec<u8> = elements.iter().map(|e| (e.as_int() >> 56) as u8).collect();
    let prover = MixProver {
        options: weak,
        inputs: MixInputs::new(st.round, st.ids(), st.out_len, digests, elements),
    };
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&tops);
    bytes.extend_from_slice(&prover.prove(trace).unwrap().to_bytes());
    assert!(matches!(
        st.verify(output.expose(), &bytes),
        Err(VerifyError::WrongOptions)
    ));

    // A trace twice as long as the statement's.
    let mut long = layout.clone();
    long.cycles *= 2;
    let (out, proof) = cheat(&st, &long, mix_init, &segments, None);
    assert!(matches!(
        st.verify(&out, &proof),
        Err(VerifyError::WrongTraceShape { .. })
    ));
}

#[test]
fn cheating_provers_are_rejected() {
    let st = Statement::fixed();
    let layout = st.layout();
    let blocks = st.blocks();
    let mix_init = mix_state(st.round, st.out_len, st.ids());
    let honest = st.honest_segments(&blocks);

    // 1. Claims an output the trace does not hold.
    let (out, _) = cheat(&st, &layout, mix_init, &honest, None);
    let mut claim: Vec<BaseElement> = out
        .chunks(BYTES_PER_ELEMENT)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..7].copy_from_slice(c);
            BaseElement::new(u64::from_le_bytes(b))
        })
        .collect();
    claim[9] += BaseElement::ONE;
    let (out, proof) = cheat(&st, &layout, mix_init, &honest, Some(claim));
    assert_rejected(st.verify(&out, &proof));

    // 2. The mix lane absorbs other blocks than the commit lane, in the last contribution
    //    (the output blocks) and in an earlier one.
    for k in [2, 0] {
        let mut other = blocks[k].clone();
        other[0][3] += BaseElement::ONE;
        let mut segs = st.honest_segments(&blocks);
        segs[k].mix_blocks = &other;
        let (out, proof) = cheat(&st, &layout, mix_init, &segs, None);
        assert_rejected(st.verify(&out, &proof));
    }

    // 3. The commit lane absorbs the committed bytes, the mix lane other bytes: the commit lane
    //    follows the statement, the mix lane a contribution nobody committed to.
    let mut rng = Rng(3);
    let fake = to_blocks(rng.bytes(150).expose());
    let mut segs = st.honest_segments(&blocks);
    segs[2].mix_blocks = &fake;
    let (out, proof) = cheat(&st, &layout, mix_init, &segs, None);
    assert_rejected(st.verify(&out, &proof));

    // 4. Segments swapped (equal lengths, so the layout is the same).
    let swapped = [
        Segment::honest(commit_state(st.round, "node-b", 64), &blocks[1]),
        Segment::honest(commit_state(st.round, "node-a", 64), &blocks[0]),
        Segment::honest(commit_state(st.round, "bulk", 150), &blocks[2]),
    ];
    let (out, proof) = cheat(&st, &layout, mix_init, &swapped, None);
    assert_rejected(st.verify(&out, &proof));
    // The blocks swapped but each segment's commit state kept in place.
    let swapped = [
        Segment::honest(commit_state(st.round, "node-a", 64), &blocks[1]),
        Segment::honest(commit_state(st.round, "node-b", 64), &blocks[0]),
        Segment::honest(commit_state(st.round, "bulk", 150), &blocks[2]),
    ];
    let (out, proof) = cheat(&st, &layout, mix_init, &swapped, None);
    assert_rejected(st.verify(&out, &proof));

    // 5. No reset at a contribution boundary: the commit lane runs on through node-b.
    let mut segs = st.honest_segments(&blocks);
    segs[1].reset = false;
    let (out, proof) = cheat(&st, &layout, mix_init, &segs, None);
    assert_rejected(st.verify(&out, &proof));

    // 6. The mix lane starts from another state (another round's).
    let other_init = mix_state(st.round + 1, st.out_len, st.ids());
    let (out, proof) = cheat(&st, &layout, other_init, &honest, None);
    assert_rejected(st.verify(&out, &proof));
}

#[test]
fn oversized_statements_are_refused_before_any_work() {
    let big = SecretBytes::zeroed(MAX_TRACE_LEN / CYCLE * BLOCK_BYTES);
    let parts = [Part {
        id: "bulk",
        bytes: &big,
    }];
    assert!(matches!(
        prove(1, &parts, 56),
        Err(ProveError::TraceTooLong)
    ));
    let public = [PublicPart {
        id: "bulk".into(),
        len: usize::MAX,
        commitment: [0; 32],
    }];
    assert!(matches!(
        verify(1, &public, &[0; 56], &[1]),
        Err(VerifyError::TraceTooLong)
    ));
    let many: Vec<PublicPart> = (0..=MAX_PARTS)
        .map(|i| PublicPart {
            id: i.to_string(),
            len: 1,
            commitment: [0; 32],
        })
        .collect();
    assert!(matches!(
        verify(1, &many, &[0; 56], &[1]),
        Err(VerifyError::TooManyParts(_))
    ));
    assert!(matches!(
        verify(1, &public, &[0; 56], &vec![0; MAX_PROOF_BYTES + 1]),
        Err(VerifyError::ProofTooLarge(_))
    ));
}

#[test]
fn fixed_options_give_127_bits_conjectured() {
    let (conjectured, proven) = security_bits();
    assert!(conjectured >= 127, "{conjectured}");
    assert!(proven > 0 && proven <= conjectured, "{proven}");
}

#[test]
fn fast_matrix_products_match_field_arithmetic() {
    use winterfell::crypto::hashers::Rp64_256;
    use winterfell::math::fields::QuadExtension;
    type Q = QuadExtension<BaseElement>;
    fn slow<E: FieldElement<BaseField = BaseElement>>(
        m: &[[BaseElement; STATE_WIDTH]; STATE_WIDTH],
        x: &[E; STATE_WIDTH],
    ) -> Vec<E> {
        m.iter()
            .map(|row| {
                row.iter()
                    .zip(x)
                    .fold(E::ZERO, |s, (&a, &b)| s + b.mul_base(a))
            })
            .collect()
    }
    let mut rng = Rng(11);
    for _ in 0..50 {
        // Include the extremes of the representation.
        let mut pick = || match rng.below(4) {
            0 => -BaseElement::ONE,
            1 => BaseElement::ZERO,
            _ => BaseElement::new(rng.next()),
        };
        let x: [BaseElement; STATE_WIDTH] = core::array::from_fn(|_| pick());
        let q: [Q; STATE_WIDTH] = core::array::from_fn(|_| Q::new(pick(), pick()));
        for (inverse, m) in [(false, &Rp64_256::MDS), (true, &Rp64_256::INV_MDS)] {
            assert_eq!(
                super::air::mat_mul_for_tests(inverse, &x).to_vec(),
                slow(m, &x)
            );
            assert_eq!(
                super::air::mat_mul_for_tests(inverse, &q).to_vec(),
                slow(m, &q)
            );
        }
    }
}
