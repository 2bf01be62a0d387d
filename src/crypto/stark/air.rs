//! The AIR of the mixing proof: the statement "these commitments open to contributions whose
//! [`mix`](super::mix) is this output", as constraints over one execution trace.
//!
//! **Trace.** One row per Rescue-Prime round, 8-row cycles (7 rounds, then one absorb step), and
//! 25 main columns:
//! - `C` = columns 0..12, the *commit lane*: one sponge per contribution, reset at each
//!   contribution's first cycle to its public [`commit_state`](super::commit_state);
//! - `M` = columns 12..24, the *mix lane*: one sponge from the public
//!   [`mix_state`](super::mix_state) that absorbs the blocks the commit lane absorbs;
//! - `SEL` = column 24: at row `8k` it is 1 exactly when cycle `k` starts a contribution. The
//!   prover fills it, a sequence assertion over every cycle start pins it to the public layout.
//!
//! Cycle 0 is a *preimage cycle*: the mix lane holds the inverse permutation of the initial mix
//! state, so that row 7 holds that state itself (asserted) and the first absorb is an ordinary
//! transition. Cycles `1..=B` absorb the `B` blocks of the contributions in order; the rest, up to
//! a power of two with at least one spare cycle, absorb zero blocks and are asserted nothing.
//!
//! **Transition constraints** (`r` = 1 on the 7 round steps, `a = 1 - r` on the absorb step,
//! `s' = SEL` of the next row, ARK1/ARK2 periodic):
//! - rounds, per lane and cell (24, degree 7): `r·((MDS⁻¹(next − ARK2))^7 − MDS·cur^7 − ARK1)`;
//! - commit capacity (4, degree 2): `a·(1 − s')·(C'_c − C_c)` (kept inside a contribution,
//!   asserted at its start);
//! - mix capacity (4, degree 1): `a·(M'_c − M_c)`;
//! - same blocks (8, degree 2): `a·((M'_r − M_r) − (C'_r − (1 − s')·C_r))`: the block the mix
//!   lane adds to its rate is the block the commit lane absorbs (into a zero rate after a reset).
//!
//! **Assertions**: `SEL` at every cycle start; the mix lane's 12 cells at row 7; each
//! contribution's commit capacity at its first row and its commitment (`C[4..8]`) at its last
//! row (`8·end + 7`).
//!
//! **Output.** winterfell's sequence assertions must cover every cycle of the trace, and the mix
//! rate is public only on the output cycles, so the output is checked with a randomized
//! fingerprint in an auxiliary column instead: with random `γ_0..γ_7, β` drawn after the main
//! trace is committed, `acc' = acc + a·((β − 1)·acc + Σ γ_j·M_{4+j})` (degree 1), `acc = 0` at
//! the first output cycle, and `acc` after the last output cycle equals the verifier's Horner
//! evaluation over the claimed output. A wrong output passes with probability at most
//! `(blocks + 1)/|F²|` (Schwartz–Zippel), below 2^-110 for any admissible trace.
//!
//! **Output elements.** The output keeps the low 7 bytes of each rate element; the AIR checks
//! whole elements, so the proof carries each element's top byte (see [`super::verifier`]).

use winterfell::crypto::hashers::Rp64_256;
use winterfell::math::fields::f64::BaseElement;
use winterfell::math::{ExtensionOf, FieldElement, ToElements};
use winterfell::{
    Air, AirContext, Assertion, AuxRandElements, BatchingMethod, EvaluationFrame, FieldExtension,
    ProofOptions, TraceInfo, TransitionConstraintDegree,
};

use super::{RATE, STATE_WIDTH, blocks_for};

/// Rows per absorbed block: 7 rounds and one absorb step.
pub const CYCLE: usize = 8;
/// Rescue-Prime rounds per permutation.
const ROUNDS: usize = 7;
/// First column of the commit lane.
pub const COMMIT: usize = 0;
/// First column of the mix lane.
pub const MIX: usize = STATE_WIDTH;
/// The segment selector column.
pub const SEL: usize = 2 * STATE_WIDTH;
/// Main trace width.
pub const MAIN_WIDTH: usize = SEL + 1;
/// Auxiliary trace width (one extension-field column: the output fingerprint).
pub const AUX_WIDTH: usize = 1;
/// Random elements of the auxiliary segment: `γ_0..γ_7` and `β`.
pub const AUX_RANDS: usize = RATE + 1;
/// Capacity cells at the front of each lane.
pub const CAPACITY: usize = STATE_WIDTH - RATE;

/// The longest trace a proof may have (rows): about 917 KB of contributions. Prover and verifier
/// refuse larger statements before any heavy work.
pub const MAX_TRACE_LEN: usize = 1 << 17;
/// The most contributions one mix may have (each costs two boundary-constraint groups).
pub const MAX_PARTS: usize = 64;

const NUM_MAIN_CONSTRAINTS: usize = 2 * STATE_WIDTH + 2 * CAPACITY + RATE;

/// The only proof options a proof may use: blowup 8 (the least that fits the degree-7 rounds),
/// 38 queries at 3 bits each plus 16 grinding bits, over the quadratic extension of the 64-bit
/// field, for 127 bits of conjectured security; Blake3-256 Merkle trees (128-bit collision
/// resistance); FRI folding 8 with remainders of degree < 128; linear batching, which keeps the
/// proven bound free of the log2(#constraints) loss of algebraic batching.
pub fn proof_options() -> ProofOptions {
    ProofOptions::new(
        38,
        8,
        16,
        FieldExtension::Quadratic,
        8,
        127,
        BatchingMethod::Linear,
        BatchingMethod::Linear,
    )
}

/// Where each contribution sits in the trace, in cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// First cycle of each contribution.
    pub starts: Vec<usize>,
    /// Last cycle of each contribution.
    pub ends: Vec<usize>,
    /// First output cycle (the last contribution's first cycle).
    pub out_first: usize,
    /// Output blocks (56 bytes each).
    pub out_blocks: usize,
    /// Cycles in the trace (a power of two).
    pub cycles: usize,
}

impl Layout {
    /// The layout of contributions of `lens` bytes with `out_len` bytes of output, or `None`
    /// when its trace would exceed [`MAX_TRACE_LEN`] rows. Cheap: no allocation beyond two
    /// vectors of `lens.len()` entries (callers bound that by [`MAX_PARTS`]).
    pub fn new(lens: &[usize], out_len: usize) -> Option<Layout> {
        let mut starts = Vec::with_capacity(lens.len());
        let mut ends = Vec::with_capacity(lens.len());
        let mut next = 1usize; // cycle 0 is the preimage cycle
        for &len in lens {
            let end = next.checked_add(blocks_for(len) - 1)?;
            if end >= MAX_TRACE_LEN / CYCLE {
                return None;
            }
            starts.push(next);
            ends.push(end);
            next = end + 1;
        }
        // At least one spare cycle after the last block: the fingerprint of the last output
        // block is taken on the absorb step that ends its cycle.
        let cycles = (next + 1).next_power_of_two().max(4);
        if cycles.checked_mul(CYCLE)? > MAX_TRACE_LEN {
            return None;
        }
        Some(Layout {
            out_first: *starts.last()?,
            starts,
            ends,
            out_blocks: out_len / super::OUTPUT_BLOCK_BYTES,
            cycles,
        })
    }

    /// Rows of the trace.
    pub fn trace_len(&self) -> usize {
        self.cycles * CYCLE
    }

    /// The trace's shape as the proof must declare it.
    pub fn trace_info(&self) -> TraceInfo {
        TraceInfo::new_multi_segment(MAIN_WIDTH, AUX_WIDTH, AUX_RANDS, self.trace_len(), vec![])
    }
}

/// The public inputs as field elements, as both sides compute them from the public statement.
#[derive(Debug, Clone)]
pub struct MixInputs {
    /// The mix sponge's initial state ([`super::mix_state`]).
    pub mix_init: [BaseElement; STATE_WIDTH],
    /// Each contribution's initial commit capacity ([`super::commit_state`]).
    pub commit_caps: Vec<[BaseElement; CAPACITY]>,
    /// Each contribution's commitment as elements.
    pub commitments: Vec<[BaseElement; 4]>,
    /// The output as whole rate elements, 8 per output block.
    pub output: Vec<BaseElement>,
    /// Contribution lengths in bytes.
    pub lens: Vec<usize>,
    /// Output length in bytes.
    pub out_len: usize,
}

impl MixInputs {
    /// The public inputs of the statement: contributions `(id, len)` in order, their
    /// commitments and the output as whole elements.
    pub fn new<'a>(
        round: u64,
        parts: impl Iterator<Item = (&'a str, usize)> + Clone,
        out_len: usize,
        commitments: Vec<[BaseElement; 4]>,
        output: Vec<BaseElement>,
    ) -> MixInputs {
        MixInputs {
            mix_init: super::mix_state(round, out_len, parts.clone()),
            commit_caps: parts
                .clone()
                .map(|(id, len)| {
                    let s = super::commit_state(round, id, len);
                    let mut c = [BaseElement::ZERO; CAPACITY];
                    c.copy_from_slice(&s[..CAPACITY]);
                    c
                })
                .collect(),
            commitments,
            output,
            lens: parts.map(|(_, len)| len).collect(),
            out_len,
        }
    }
}

impl ToElements<BaseElement> for MixInputs {
    fn to_elements(&self) -> Vec<BaseElement> {
        let mut v = Vec::with_capacity(
            STATE_WIDTH + 1 + self.commit_caps.len() * (CAPACITY + 4) + self.output.len(),
        );
        v.extend_from_slice(&self.mix_init);
        v.push(BaseElement::new(self.commit_caps.len() as u64));
        for (cap, c) in self.commit_caps.iter().zip(&self.commitments) {
            v.extend_from_slice(cap);
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&self.output);
        v
    }
}

/// The mixing AIR for one statement.
pub struct MixAir {
    context: AirContext<BaseElement>,
    inputs: MixInputs,
    layout: Layout,
}

impl MixAir {
    /// Main-trace assertions: 1 sequence + 12 + 8 per contribution.
    fn num_main_assertions(parts: usize) -> usize {
        1 + STATE_WIDTH + 2 * CAPACITY * parts
    }

    /// Transition constraint degrees, in `evaluate_transition` order.
    fn main_degrees() -> Vec<TransitionConstraintDegree> {
        let deg = |d| TransitionConstraintDegree::with_cycles(d, vec![CYCLE]);
        let mut v = Vec::with_capacity(NUM_MAIN_CONSTRAINTS);
        v.extend((0..2 * STATE_WIDTH).map(|_| deg(7)));
        v.extend((0..CAPACITY).map(|_| deg(2)));
        v.extend((0..CAPACITY).map(|_| deg(1)));
        v.extend((0..RATE).map(|_| deg(2)));
        v
    }

    /// Constraints in total (for the security estimate).
    pub fn num_constraints(parts: usize) -> usize {
        NUM_MAIN_CONSTRAINTS + 1 + Self::num_main_assertions(parts) + 2
    }
}

impl Air for MixAir {
    type BaseField = BaseElement;
    type PublicInputs = MixInputs;

    /// Callers check the statement first: `trace_info` must be `Layout::new(..).trace_info()`.
    fn new(trace_info: TraceInfo, inputs: MixInputs, options: ProofOptions) -> Self {
        let mut layout = Layout::new(&inputs.lens, inputs.out_len).unwrap_or(Layout {
            // Unreachable after the callers' checks; a harmless layout keeps this infallible.
            starts: vec![],
            ends: vec![],
            out_first: 1,
            out_blocks: 0,
            cycles: 4,
        });
        // The trace's own length: the verifier accepts only the statement's, but a prover may
        // build another and must still get a consistent AIR.
        layout.cycles = trace_info.length() / CYCLE;
        let context = AirContext::new_multi_segment(
            trace_info,
            Self::main_degrees(),
            vec![TransitionConstraintDegree::with_cycles(1, vec![CYCLE])],
            Self::num_main_assertions(inputs.lens.len()),
            2,
            options,
        );
        MixAir {
            context,
            inputs,
            layout,
        }
    }

    fn context(&self) -> &AirContext<BaseElement> {
        &self.context
    }

    fn evaluate_transition<E: FieldElement<BaseField = BaseElement>>(
        &self,
        frame: &EvaluationFrame<E>,
        periodic: &[E],
        result: &mut [E],
    ) {
        let cur = frame.current();
        let next = frame.next();
        let r = periodic[0];
        let ark1 = &periodic[1..1 + STATE_WIDTH];
        let ark2 = &periodic[1 + STATE_WIDTH..1 + 2 * STATE_WIDTH];
        for lane in [COMMIT, MIX] {
            round_constraints(
                &cur[lane..lane + STATE_WIDTH],
                &next[lane..lane + STATE_WIDTH],
                ark1,
                ark2,
                r,
                &mut result[lane..lane + STATE_WIDTH],
            );
        }
        let a = E::ONE - r;
        let keep = E::ONE - next[SEL];
        let base = 2 * STATE_WIDTH;
        for c in 0..CAPACITY {
            result[base + c] = a * keep * (next[COMMIT + c] - cur[COMMIT + c]);
            result[base + CAPACITY + c] = a * (next[MIX + c] - cur[MIX + c]);
        }
        for j in 0..RATE {
            let i = CAPACITY + j;
            let mix_block = next[MIX + i] - cur[MIX + i];
            let commit_block = next[COMMIT + i] - keep * cur[COMMIT + i];
            result[base + 2 * CAPACITY + j] = a * (mix_block - commit_block);
        }
    }

    fn get_assertions(&self) -> Vec<Assertion<BaseElement>> {
        let l = &self.layout;
        let mut v = Vec::with_capacity(Self::num_main_assertions(l.starts.len()));
        let mut sel = vec![BaseElement::ZERO; l.cycles];
        for &s in &l.starts {
            if let Some(x) = sel.get_mut(s) {
                *x = BaseElement::ONE;
            }
        }
        v.push(Assertion::sequence(SEL, 0, CYCLE, sel));
        for (i, &e) in self.inputs.mix_init.iter().enumerate() {
            v.push(Assertion::single(MIX + i, CYCLE - 1, e));
        }
        for (p, (&start, &end)) in l.starts.iter().zip(&l.ends).enumerate() {
            for (c, &e) in self.inputs.commit_caps[p].iter().enumerate() {
                v.push(Assertion::single(COMMIT + c, start * CYCLE, e));
            }
            for (d, &e) in self.inputs.commitments[p].iter().enumerate() {
                v.push(Assertion::single(
                    COMMIT + CAPACITY + d,
                    end * CYCLE + CYCLE - 1,
                    e,
                ));
            }
        }
        v
    }

    fn evaluate_aux_transition<F, E>(
        &self,
        main: &EvaluationFrame<F>,
        aux: &EvaluationFrame<E>,
        periodic: &[F],
        rands: &AuxRandElements<E>,
        result: &mut [E],
    ) where
        F: FieldElement<BaseField = BaseElement>,
        E: FieldElement<BaseField = BaseElement> + ExtensionOf<F>,
    {
        let rands = rands.rand_elements();
        let beta = rands[RATE];
        let rate = &main.current()[MIX + CAPACITY..MIX + STATE_WIDTH];
        let mut lin = E::ZERO;
        for (g, &x) in rands[..RATE].iter().zip(rate) {
            lin += *g * E::from(x);
        }
        let acc = aux.current()[0];
        let a = E::from(F::ONE - periodic[0]);
        result[0] = aux.next()[0] - acc - a * ((beta - E::ONE) * acc + lin);
    }

    fn get_aux_assertions<E: FieldElement<BaseField = BaseElement>>(
        &self,
        rands: &AuxRandElements<E>,
    ) -> Vec<Assertion<E>> {
        let l = &self.layout;
        let expected = fingerprint(rands.rand_elements(), &self.inputs.output);
        vec![
            Assertion::single(0, l.out_first * CYCLE, E::ZERO),
            Assertion::single(0, (l.out_first + l.out_blocks) * CYCLE, expected),
        ]
    }

    fn get_periodic_column_values(&self) -> Vec<Vec<BaseElement>> {
        let mut cols = Vec::with_capacity(1 + 2 * STATE_WIDTH);
        cols.push(
            (0..CYCLE)
                .map(|s| {
                    if s < ROUNDS {
                        BaseElement::ONE
                    } else {
                        BaseElement::ZERO
                    }
                })
                .collect(),
        );
        for ark in [&Rp64_256::ARK1, &Rp64_256::ARK2] {
            cols.extend((0..STATE_WIDTH).map(|i| {
                let mut col: Vec<BaseElement> = ark.iter().map(|round| round[i]).collect();
                col.push(BaseElement::ZERO); // the absorb step
                col
            }));
        }
        cols
    }
}

/// The fingerprint of output elements (8 per block): Horner in `β` over the blocks, each block
/// the combination `Σ γ_j·e_j`. `rands` = `γ_0..γ_7, β`.
pub fn fingerprint<E: FieldElement<BaseField = BaseElement>>(
    rands: &[E],
    output: &[BaseElement],
) -> E {
    let beta = rands[RATE];
    output.chunks(RATE).fold(E::ZERO, |acc, block| {
        let lin = rands[..RATE]
            .iter()
            .zip(block)
            .fold(E::ZERO, |s, (g, &e)| s + g.mul_base(e));
        acc * beta + lin
    })
}

/// `mask·((MDS⁻¹(next − ARK2))^7 − (MDS·cur^7 + ARK1))`: one Rp64_256 round from `cur` to `next`.
fn round_constraints<E: FieldElement<BaseField = BaseElement>>(
    cur: &[E],
    next: &[E],
    ark1: &[E],
    ark2: &[E],
    mask: E,
    out: &mut [E],
) {
    let mut t = [E::ZERO; STATE_WIDTH];
    for i in 0..STATE_WIDTH {
        t[i] = next[i] - ark2[i];
    }
    let u = mat_mul(&INV_MDS, &t);
    let mut c7 = [E::ZERO; STATE_WIDTH];
    for i in 0..STATE_WIDTH {
        c7[i] = exp7(cur[i]);
    }
    let v = mat_mul(&MDS, &c7);
    for i in 0..STATE_WIDTH {
        out[i] = mask * (exp7(u[i]) - v[i] - ark1[i]);
    }
}

#[inline(always)]
fn exp7<E: FieldElement>(x: E) -> E {
    let x2 = x.square();
    let x4 = x2.square();
    x4 * x2 * x
}

/// `m·x` over the base field, componentwise for extension elements. The matrix-vector product
/// works on the Montgomery representations directly (it is linear): 144 integer products summed
/// in 128 bits with carries counted, then 12 reductions, instead of 144 field multiplications.
#[inline(always)]
fn mat_mul<E: FieldElement<BaseField = BaseElement>>(
    m: &[[u64; STATE_WIDTH]; STATE_WIDTH],
    x: &[E; STATE_WIDTH],
) -> [E; STATE_WIDTH] {
    let d = E::EXTENSION_DEGREE;
    let base = E::slice_as_base_elements(x);
    // Extension degree at most 3.
    let mut out_base = [BaseElement::ZERO; 3 * STATE_WIDTH];
    for c in 0..d {
        let mut v = [0u64; STATE_WIDTH];
        for (i, e) in v.iter_mut().enumerate() {
            *e = base[i * d + c].inner();
        }
        for (i, row) in m.iter().enumerate() {
            out_base[i * d + c] = BaseElement::from_mont(dot(row, &v));
        }
    }
    let mut out = [E::ZERO; STATE_WIDTH];
    out.copy_from_slice(E::slice_from_base_elements(&out_base[..STATE_WIDTH * d]));
    out
}

const P: u64 = 0xffff_ffff_0000_0001;
/// 2^64 mod p.
const EPS: u64 = 0xffff_ffff;

/// `Σ row_j·v_j mod p` for values below p.
#[inline(always)]
fn dot(row: &[u64; STATE_WIDTH], v: &[u64; STATE_WIDTH]) -> u64 {
    let mut acc: u128 = 0;
    let mut carries: u64 = 0;
    for (&a, &b) in row.iter().zip(v) {
        let (s, over) = acc.overflowing_add(a as u128 * b as u128);
        acc = s;
        carries += over as u64;
    }
    // 2^128 = 2^96·2^32 = -2^32 (mod p); carries < 12.
    let r = reduce128(acc);
    let c = carries << 32;
    if r >= c { r - c } else { r + (P - c) }
}

/// `x mod p`, canonical.
#[inline(always)]
fn reduce128(x: u128) -> u64 {
    let lo = x as u64;
    let hi = (x >> 64) as u64;
    // x = lo + hi_lo·2^64 + hi_hi·2^96 = lo + hi_lo·EPS - hi_hi (mod p)
    let (mut t0, borrow) = lo.overflowing_sub(hi >> 32);
    if borrow {
        t0 = t0.wrapping_sub(EPS);
    }
    let (r, carry) = t0.overflowing_add((hi & EPS) * EPS);
    let r = r.wrapping_add(EPS * carry as u64);
    if r >= P { r - P } else { r }
}

/// A matrix of field elements as canonical integers.
const fn int_matrix(
    m: &[[BaseElement; STATE_WIDTH]; STATE_WIDTH],
) -> [[u64; STATE_WIDTH]; STATE_WIDTH] {
    let mut out = [[0u64; STATE_WIDTH]; STATE_WIDTH];
    let mut i = 0;
    while i < STATE_WIDTH {
        let mut j = 0;
        while j < STATE_WIDTH {
            out[i][j] = m[i][j].as_int();
            j += 1;
        }
        i += 1;
    }
    out
}

const MDS: [[u64; STATE_WIDTH]; STATE_WIDTH] = int_matrix(&Rp64_256::MDS);
const INV_MDS: [[u64; STATE_WIDTH]; STATE_WIDTH] = int_matrix(&Rp64_256::INV_MDS);

/// `MDS·x` or `MDS⁻¹·x` through the fast path (tests compare it with field arithmetic).
#[cfg(test)]
pub(crate) fn mat_mul_for_tests<E: FieldElement<BaseField = BaseElement>>(
    inverse: bool,
    x: &[E; STATE_WIDTH],
) -> [E; STATE_WIDTH] {
    mat_mul(if inverse { &INV_MDS } else { &MDS }, x)
}
