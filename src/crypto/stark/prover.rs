//! The prover: builds the trace of [`super::air`] from the secret contributions and proves it.
//!
//! The trace holds the contributions and every sponge state; it is zeroed when winterfell drops
//! it. winterfell's own copies (polynomials, low-degree extensions) are freed without zeroing,
//! and the proof is not zero-knowledge: its openings are linear combinations of trace cells.

use winterfell::crypto::hashers::{Blake3_256, Rp64_256};
use winterfell::crypto::{DefaultRandomCoin, MerkleTree};
use winterfell::math::FieldElement;
use winterfell::math::fields::f64::BaseElement;
use winterfell::matrix::ColMatrix;
use winterfell::{
    AuxRandElements, CompositionPoly, CompositionPolyTrace, ConstraintCompositionCoefficients,
    DefaultConstraintCommitment, DefaultConstraintEvaluator, DefaultTraceLde, EvaluationFrame,
    PartitionOptions, ProofOptions, Prover, ProverError, StarkDomain, Trace, TraceInfo,
    TracePolyTable,
};

use super::air::{
    AUX_RANDS, CAPACITY, COMMIT, CYCLE, Layout, MAIN_WIDTH, MAX_PARTS, MAX_TRACE_LEN, MIX, MixAir,
    MixInputs, SEL, proof_options,
};
use super::verifier::{MAX_PROOF_BYTES, PROOF_VERSION};
use super::{
    BYTES_PER_ELEMENT, Commitment, MixError, Part, RATE, STATE_WIDTH, SecretBytes, check_shape,
    commit_state, digest_bytes, mix_state, output_bytes, to_blocks, wipe_blocks,
};

/// The Merkle hash of the fixed options.
pub(crate) type Hasher = Blake3_256<BaseElement>;
pub(crate) type Coin = DefaultRandomCoin<Hasher>;
pub(crate) type Commit = MerkleTree<Hasher>;

/// A proven mix: the output, each contribution's commitment (in order) and the proof.
#[derive(Debug)]
pub struct Proven {
    pub output: SecretBytes,
    pub commitments: Vec<Commitment>,
    pub proof: Vec<u8>,
}

/// Why a mix could not be proven.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("inadmissible mix")]
    Shape(#[from] MixError),
    #[error("{0} contributions, at most {MAX_PARTS}")]
    TooManyParts(usize),
    #[error("the contributions need a trace above {MAX_TRACE_LEN} rows")]
    TraceTooLong,
    #[error("proof generation failed")]
    Prover(#[source] ProverError),
    #[error("proof of {0} bytes exceeds {MAX_PROOF_BYTES}")]
    ProofTooLarge(usize),
}

/// Checks a statement's shape and returns its layout; no work proportional to the data.
pub(crate) fn statement_layout(
    round: u64,
    lens: &[usize],
    out_len: usize,
) -> Result<Layout, ProveError> {
    if lens.len() > MAX_PARTS {
        return Err(ProveError::TooManyParts(lens.len()));
    }
    if lens.is_empty() {
        check_shape(round, lens, out_len)?;
    }
    // The layout first: it bounds every length, so the shape check's arithmetic cannot overflow.
    let layout = Layout::new(lens, out_len).ok_or(ProveError::TraceTooLong)?;
    check_shape(round, lens, out_len)?;
    Ok(layout)
}

/// Proves that `mix(round, parts, out_len)` is the output of contributions committed to by
/// `commit(round, id_i, x_i)`.
pub fn prove(round: u64, parts: &[Part<'_>], out_len: usize) -> Result<Proven, ProveError> {
    let lens: Vec<usize> = parts.iter().map(|p| p.bytes.len()).collect();
    let layout = statement_layout(round, &lens, out_len)?;
    let ids = || parts.iter().map(|p| (p.id, p.bytes.len()));

    let trace = {
        let mut blocks: Vec<_> = parts.iter().map(|p| to_blocks(p.bytes.expose())).collect();
        let segments: Vec<Segment<'_>> = parts
            .iter()
            .zip(&blocks)
            .map(|(p, b)| Segment::honest(commit_state(round, p.id, p.bytes.len()), b))
            .collect();
        let t = fill_trace(&layout, mix_state(round, out_len, ids()), &segments);
        blocks.iter_mut().for_each(|b| wipe_blocks(b));
        t
    };
    let digests = read_digests(&trace, &layout);
    let commitments = digests.iter().map(digest_bytes_of).collect();
    let (output, elements) = read_output(&trace, &layout);
    let inputs = MixInputs::new(round, ids(), out_len, digests, elements);
    let proof = prove_trace(trace, inputs)?;
    Ok(Proven {
        output,
        commitments,
        proof,
    })
}

/// Proves `trace` against the statement `inputs` and encodes the proof.
pub(crate) fn prove_trace(trace: MixTrace, inputs: MixInputs) -> Result<Vec<u8>, ProveError> {
    let tops: Vec<u8> = inputs
        .output
        .iter()
        .map(|e| (e.as_int() >> 56) as u8)
        .collect();
    let prover = MixProver {
        options: proof_options(),
        inputs,
    };
    let proof = prover.prove(trace).map_err(ProveError::Prover)?.to_bytes();
    let mut bytes = Vec::with_capacity(1 + tops.len() + proof.len());
    bytes.push(PROOF_VERSION);
    bytes.extend_from_slice(&tops);
    bytes.extend_from_slice(&proof);
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(ProveError::ProofTooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Each contribution's commitment, as elements, read from the commit lane.
pub(crate) fn read_digests(trace: &MixTrace, layout: &Layout) -> Vec<[BaseElement; 4]> {
    layout
        .ends
        .iter()
        .map(|&end| {
            let mut d = [BaseElement::ZERO; 4];
            for (i, e) in d.iter_mut().enumerate() {
                *e = trace
                    .main
                    .get(COMMIT + CAPACITY + i, end * CYCLE + CYCLE - 1);
            }
            d
        })
        .collect()
}

fn digest_bytes_of(d: &[BaseElement; 4]) -> Commitment {
    let mut s = [BaseElement::ZERO; STATE_WIDTH];
    s[CAPACITY..CAPACITY + 4].copy_from_slice(d);
    digest_bytes(&s)
}

/// The output bytes and whole elements, read from the mix lane.
pub(crate) fn read_output(trace: &MixTrace, layout: &Layout) -> (SecretBytes, Vec<BaseElement>) {
    let mut output = SecretBytes::zeroed(layout.out_blocks * RATE * BYTES_PER_ELEMENT);
    let mut elements = Vec::with_capacity(layout.out_blocks * RATE);
    for k in 0..layout.out_blocks {
        let row = (layout.out_first + k) * CYCLE + CYCLE - 1;
        for j in 0..RATE {
            let e = trace.main.get(MIX + CAPACITY + j, row);
            let at = (k * RATE + j) * BYTES_PER_ELEMENT;
            output.expose_mut()[at..at + BYTES_PER_ELEMENT].copy_from_slice(&output_bytes(e));
            elements.push(e);
        }
    }
    (output, elements)
}

/// The main trace; zeroed on drop.
pub(crate) struct MixTrace {
    info: TraceInfo,
    pub(crate) main: ColMatrix<BaseElement>,
}

impl Drop for MixTrace {
    fn drop(&mut self) {
        for col in self.main.columns_mut() {
            col.fill(BaseElement::ZERO);
            std::hint::black_box(&col);
        }
    }
}

impl Trace for MixTrace {
    type BaseField = BaseElement;

    fn info(&self) -> &TraceInfo {
        &self.info
    }

    fn main_segment(&self) -> &ColMatrix<BaseElement> {
        &self.main
    }

    fn read_main_frame(&self, row_idx: usize, frame: &mut EvaluationFrame<BaseElement>) {
        let next = (row_idx + 1) % self.info.length();
        self.main.read_row_into(row_idx, frame.current_mut());
        self.main.read_row_into(next, frame.next_mut());
    }
}

/// One contribution's run through the trace. Honest segments absorb the same blocks in both
/// lanes and reset the commit lane; the other shapes exist for tests of cheating provers.
pub(crate) struct Segment<'a> {
    pub(crate) commit_init: [BaseElement; STATE_WIDTH],
    pub(crate) reset: bool,
    pub(crate) blocks: &'a [[BaseElement; RATE]],
    pub(crate) mix_blocks: &'a [[BaseElement; RATE]],
}

impl<'a> Segment<'a> {
    pub(crate) fn honest(
        commit_init: [BaseElement; STATE_WIDTH],
        blocks: &'a [[BaseElement; RATE]],
    ) -> Self {
        Segment {
            commit_init,
            reset: true,
            blocks,
            mix_blocks: blocks,
        }
    }
}

/// Fills the trace (see [`super::air`] for the layout): the preimage cycle, each segment's
/// blocks, then zero blocks up to the layout's length.
pub(crate) fn fill_trace(
    layout: &Layout,
    mix_init: [BaseElement; STATE_WIDTH],
    segments: &[Segment<'_>],
) -> MixTrace {
    let n = layout.trace_len();
    let mut cols = vec![vec![BaseElement::ZERO; n]; MAIN_WIDTH];
    let mut row = 0;
    let mut mix = inverse_permutation(mix_init);
    let mut com = [BaseElement::ZERO; STATE_WIDTH];
    let mut permute = |cols: &mut Vec<Vec<BaseElement>>,
                       com: &mut [BaseElement; STATE_WIDTH],
                       mix: &mut [BaseElement; STATE_WIDTH]| {
        for r in 0..CYCLE {
            for i in 0..STATE_WIDTH {
                cols[COMMIT + i][row] = com[i];
                cols[MIX + i][row] = mix[i];
            }
            if r < CYCLE - 1 {
                Rp64_256::apply_round(com, r);
                Rp64_256::apply_round(mix, r);
            }
            row += 1;
        }
    };
    permute(&mut cols, &mut com, &mut mix);

    let mut cycle = 1;
    for seg in segments {
        if seg.reset {
            com = seg.commit_init;
            cols[SEL][cycle * CYCLE] = BaseElement::ONE;
        }
        for (b, m) in seg.blocks.iter().zip(seg.mix_blocks) {
            for j in 0..RATE {
                com[CAPACITY + j] += b[j];
                mix[CAPACITY + j] += m[j];
            }
            permute(&mut cols, &mut com, &mut mix);
            cycle += 1;
        }
    }
    while cycle < layout.cycles {
        permute(&mut cols, &mut com, &mut mix);
        cycle += 1;
    }
    com.fill(BaseElement::ZERO);
    mix.fill(BaseElement::ZERO);
    std::hint::black_box((&com, &mix));
    MixTrace {
        info: layout.trace_info(),
        main: ColMatrix::new(cols),
    }
}

/// The inverse of the Rp64_256 permutation (the prover needs the preimage of the mix state).
pub(crate) fn inverse_permutation(mut s: [BaseElement; STATE_WIDTH]) -> [BaseElement; STATE_WIDTH] {
    const INV_ALPHA: u64 = 10540996611094048183;
    let mul = |m: &[[BaseElement; STATE_WIDTH]; STATE_WIDTH], x: &[BaseElement; STATE_WIDTH]| {
        let mut out = [BaseElement::ZERO; STATE_WIDTH];
        for (o, row) in out.iter_mut().zip(m) {
            *o = row
                .iter()
                .zip(x)
                .fold(BaseElement::ZERO, |a, (&c, &v)| a + c * v);
        }
        out
    };
    for r in (0..CYCLE - 1).rev() {
        for (x, k) in s.iter_mut().zip(&Rp64_256::ARK2[r]) {
            *x -= *k;
        }
        s = mul(&Rp64_256::INV_MDS, &s);
        for x in s.iter_mut() {
            *x = x.exp7();
        }
        for (x, k) in s.iter_mut().zip(&Rp64_256::ARK1[r]) {
            *x -= *k;
        }
        s = mul(&Rp64_256::INV_MDS, &s);
        for x in s.iter_mut() {
            *x = x.exp(INV_ALPHA);
        }
    }
    s
}

/// winterfell's prover for one statement.
pub(crate) struct MixProver {
    pub(crate) options: ProofOptions,
    pub(crate) inputs: MixInputs,
}

impl Prover for MixProver {
    type BaseField = BaseElement;
    type Air = MixAir;
    type Trace = MixTrace;
    type HashFn = Hasher;
    type VC = Commit;
    type RandomCoin = Coin;
    type TraceLde<E: FieldElement<BaseField = BaseElement>> = DefaultTraceLde<E, Hasher, Commit>;
    type ConstraintCommitment<E: FieldElement<BaseField = BaseElement>> =
        DefaultConstraintCommitment<E, Hasher, Commit>;
    type ConstraintEvaluator<'a, E: FieldElement<BaseField = BaseElement>> =
        DefaultConstraintEvaluator<'a, MixAir, E>;

    fn get_pub_inputs(&self, _trace: &MixTrace) -> MixInputs {
        self.inputs.clone()
    }

    fn options(&self) -> &ProofOptions {
        &self.options
    }

    fn new_trace_lde<E: FieldElement<BaseField = BaseElement>>(
        &self,
        trace_info: &TraceInfo,
        main_trace: &ColMatrix<BaseElement>,
        domain: &StarkDomain<BaseElement>,
        partition_option: PartitionOptions,
    ) -> (Self::TraceLde<E>, TracePolyTable<E>) {
        DefaultTraceLde::new(trace_info, main_trace, domain, partition_option)
    }

    fn new_evaluator<'a, E: FieldElement<BaseField = BaseElement>>(
        &self,
        air: &'a MixAir,
        aux_rand_elements: Option<AuxRandElements<E>>,
        composition_coefficients: ConstraintCompositionCoefficients<E>,
    ) -> Self::ConstraintEvaluator<'a, E> {
        DefaultConstraintEvaluator::new(air, aux_rand_elements, composition_coefficients)
    }

    fn build_constraint_commitment<E: FieldElement<BaseField = BaseElement>>(
        &self,
        composition_poly_trace: CompositionPolyTrace<E>,
        num_constraint_composition_columns: usize,
        domain: &StarkDomain<BaseElement>,
        partition_options: PartitionOptions,
    ) -> (Self::ConstraintCommitment<E>, CompositionPoly<E>) {
        DefaultConstraintCommitment::new(
            composition_poly_trace,
            num_constraint_composition_columns,
            domain,
            partition_options,
        )
    }

    fn build_aux_trace<E: FieldElement<BaseField = BaseElement>>(
        &self,
        main: &MixTrace,
        rands: &AuxRandElements<E>,
    ) -> ColMatrix<E> {
        let rands = rands.rand_elements();
        debug_assert_eq!(rands.len(), AUX_RANDS);
        let beta = rands[RATE];
        let n = main.info.length();
        let start =
            Layout::new(&self.inputs.lens, self.inputs.out_len).map_or(0, |l| l.out_first * CYCLE);
        // The fingerprint term of absorb-step row `i`.
        let lin = |i: usize| {
            (0..RATE).fold(E::ZERO, |s, j| {
                s + rands[j].mul_base(main.main.get(MIX + STATE_WIDTH - RATE + j, i))
            })
        };
        let mut acc = vec![E::ZERO; n];
        // acc is 0 at the first output row; before it, run the transition backwards (β ≠ 0
        // except with probability 2^-128; then the proof simply fails to verify).
        let beta_inv = beta.inv();
        for i in (0..start).rev() {
            acc[i] = if i % CYCLE == CYCLE - 1 {
                (acc[i + 1] - lin(i)) * beta_inv
            } else {
                acc[i + 1]
            };
        }
        for i in start..n - 1 {
            acc[i + 1] = if i % CYCLE == CYCLE - 1 {
                beta * acc[i] + lin(i)
            } else {
                acc[i]
            };
        }
        ColMatrix::new(vec![acc])
    }
}
