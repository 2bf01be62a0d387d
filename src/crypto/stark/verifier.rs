//! The verifier: checks a proof against the public statement (round, each contribution's id,
//! length and commitment, the output bytes) with nothing taken from the prover but the proof.
//!
//! **Proof bytes**: `version (1) ‖ top bytes (out_len / 7) ‖ winterfell proof`. The output keeps
//! the low 7 bytes of each rate element; the top bytes complete them into the whole elements the
//! AIR checks (each must give a canonical element, below p). They are a sponge's rate squeezed in
//! full, and they travel with the output they complete.
//!
//! Everything the prover could choose is pinned before winterfell runs: the proof options must
//! equal [`proof_options`] exactly, and the trace shape must be the one the public lengths give.

use std::panic::{AssertUnwindSafe, catch_unwind};

use winter_utils::{ByteReader, Deserializable, DeserializationError};
use winterfell::math::StarkField;
use winterfell::math::fields::f64::BaseElement;
use winterfell::{AcceptableOptions, Proof, VerifierError};

use super::air::{Layout, MAX_PARTS, MAX_TRACE_LEN, MixAir, MixInputs, proof_options};
use super::prover::{Coin, Commit, Hasher, statement_layout};
use super::{BYTES_PER_ELEMENT, Commitment, MixError, RATE, digest_elements};

/// The largest proof accepted (the packet's limit), checked before decoding.
pub const MAX_PROOF_BYTES: usize = 512 * 1024;
/// The proof format's version byte.
pub(crate) const PROOF_VERSION: u8 = 1;

/// One contribution as the verifier knows it: who, how long, and its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicPart {
    pub id: String,
    pub len: usize,
    pub commitment: Commitment,
}

/// Why a proof was rejected. Messages name public quantities only.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("proof of {0} bytes exceeds {MAX_PROOF_BYTES}")]
    ProofTooLarge(usize),
    #[error("inadmissible statement")]
    Shape(#[from] MixError),
    #[error("{0} contributions, at most {MAX_PARTS}")]
    TooManyParts(usize),
    #[error("the statement needs a trace above {MAX_TRACE_LEN} rows")]
    TraceTooLong,
    #[error("commitment {0} is not canonical")]
    CommitmentNotCanonical(usize),
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    #[error("malformed proof")]
    Decode(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("output element {0} is not canonical with its top byte")]
    OutputNotCanonical(usize),
    #[error("proof options differ from the fixed options")]
    WrongOptions,
    #[error("trace of {got_rows} rows × {got_width} columns; the statement needs {rows} × {width}")]
    WrongTraceShape {
        got_rows: usize,
        got_width: usize,
        rows: usize,
        width: usize,
    },
    #[error("proof rejected")]
    Rejected(#[source] VerifierError),
}

impl From<super::ProveError> for VerifyError {
    fn from(e: super::ProveError) -> Self {
        match e {
            super::ProveError::Shape(m) => VerifyError::Shape(m),
            super::ProveError::TooManyParts(n) => VerifyError::TooManyParts(n),
            _ => VerifyError::TraceTooLong,
        }
    }
}

/// A `ByteReader` over the proof bytes that refuses a length prefix claiming more elements than
/// bytes remain. winter-utils' own reader allocates whatever a prefix claims before reading an
/// element (`Vec::with_capacity`), so a proof claiming 2^62 query values made kirqd abort (an
/// allocation failure is an abort that `catch_unwind` cannot stop). Every element of a proof
/// takes at least one byte, so the bound refuses no honest proof. Found by
/// `fuzz/fuzz_targets/stark_proof.rs` (reproducer: `fuzz/corpus/stark_proof/regress-*`).
struct BoundedReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BoundedReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

impl ByteReader for BoundedReader<'_> {
    fn read_u8(&mut self) -> Result<u8, DeserializationError> {
        let b = self.peek_u8()?;
        self.pos += 1;
        Ok(b)
    }

    fn peek_u8(&self) -> Result<u8, DeserializationError> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DeserializationError::UnexpectedEOF)
    }

    fn read_slice(&mut self, len: usize) -> Result<&[u8], DeserializationError> {
        self.check_eor(len)?;
        let s = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], DeserializationError> {
        let s = self.read_slice(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn check_eor(&self, num_bytes: usize) -> Result<(), DeserializationError> {
        if num_bytes > self.remaining() {
            return Err(DeserializationError::UnexpectedEOF);
        }
        Ok(())
    }

    fn has_more_bytes(&self) -> bool {
        self.remaining() > 0
    }

    fn read_many<D: Deserializable>(
        &mut self,
        num_elements: usize,
    ) -> Result<Vec<D>, DeserializationError> {
        self.check_eor(num_elements)?;
        let mut out = Vec::with_capacity(num_elements);
        for _ in 0..num_elements {
            out.push(D::read_from(self)?);
        }
        Ok(out)
    }
}

/// Checks every Merkle path blob the verifier will parse later with winter-utils' unbounded
/// reader: its node-vector count and each vector's digest count must fit in the bytes it holds.
/// `BatchMerkleProof::read_from` calls `Vec::with_capacity` on the count it reads, so a path
/// claiming 2^28 node vectors made kirqd allocate gigabytes (or abort) inside
/// `winterfell::verify`. Found by `fuzz/fuzz_targets/packet_verify.rs` (reproducer:
/// `fuzz/corpus/packet_verify/regress-merkle-path-oom`).
fn merkle_paths_bounded(proof: &Proof) -> bool {
    use winter_utils::Serializable;
    type Digest = <Hasher as winterfell::crypto::Hasher>::Digest;

    fn path_ok(bytes: &[u8]) -> Result<(), DeserializationError> {
        let mut r = BoundedReader::new(bytes);
        let _depth = r.read_u8()?;
        let vectors = r.read_usize()?;
        r.check_eor(vectors)?;
        for _ in 0..vectors {
            Vec::<Digest>::read_from(&mut r)?;
        }
        Ok(())
    }
    // `Queries` encodes as its values then its paths, each a length-prefixed byte vector.
    fn queries_ok(bytes: &[u8]) -> Result<(), DeserializationError> {
        let mut r = BoundedReader::new(bytes);
        let _values = Vec::<u8>::read_from(&mut r)?;
        path_ok(&Vec::<u8>::read_from(&mut r)?)
    }
    // `FriProof` encodes a u8 layer count, then per layer u32-prefixed values and paths.
    fn fri_ok(bytes: &[u8]) -> Result<(), DeserializationError> {
        let mut r = BoundedReader::new(bytes);
        for _ in 0..r.read_u8()? {
            let n = r.read_u32()? as usize;
            r.read_slice(n)?;
            let n = r.read_u32()? as usize;
            path_ok(r.read_slice(n)?)?;
        }
        Ok(())
    }
    proof
        .trace_queries
        .iter()
        .chain(std::iter::once(&proof.constraint_queries))
        .all(|q| queries_ok(&q.to_bytes()).is_ok())
        && fri_ok(&proof.fri_proof.to_bytes()).is_ok()
}

/// Verifies that `output` is the mix, in `round`, of contributions committed to by `parts`.
pub fn verify(
    round: u64,
    parts: &[PublicPart],
    output: &[u8],
    proof: &[u8],
) -> Result<(), VerifyError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(VerifyError::ProofTooLarge(proof.len()));
    }
    let lens: Vec<usize> = parts.iter().map(|p| p.len).collect();
    let layout = statement_layout(round, &lens, output.len())?;
    let mut commitments = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        commitments
            .push(digest_elements(&p.commitment).ok_or(VerifyError::CommitmentNotCanonical(i))?);
    }

    let (&version, rest) = proof.split_first().ok_or(VerifyError::Malformed("empty"))?;
    if version != PROOF_VERSION {
        return Err(VerifyError::Malformed("unknown version"));
    }
    let n_elements = output.len() / BYTES_PER_ELEMENT;
    if rest.len() < n_elements {
        return Err(VerifyError::Malformed("truncated"));
    }
    let (tops, stark) = rest.split_at(n_elements);
    let mut elements = Vec::with_capacity(n_elements);
    for (i, (chunk, &top)) in output.chunks(BYTES_PER_ELEMENT).zip(tops).enumerate() {
        let mut b = [0u8; 8];
        b[..BYTES_PER_ELEMENT].copy_from_slice(chunk);
        b[BYTES_PER_ELEMENT] = top;
        let v = u64::from_le_bytes(b);
        if v >= BaseElement::MODULUS {
            return Err(VerifyError::OutputNotCanonical(i));
        }
        elements.push(BaseElement::new(v));
    }
    debug_assert_eq!(elements.len(), layout.out_blocks * RATE);

    let proof = catch_unwind(|| Proof::read_from(&mut BoundedReader::new(stark)))
        .map_err(|_| VerifyError::Malformed("undecodable"))?
        .map_err(|e| VerifyError::Decode(Box::new(e)))?;
    // winterfell ignores trailing bytes; one statement has one encoding of a proof.
    if proof.to_bytes() != stark {
        return Err(VerifyError::Malformed("not the canonical encoding"));
    }
    if !merkle_paths_bounded(&proof) {
        return Err(VerifyError::Malformed(
            "a Merkle path claims more nodes than it holds",
        ));
    }
    if *proof.options() != proof_options() {
        return Err(VerifyError::WrongOptions);
    }
    let info = layout.trace_info();
    if *proof.trace_info() != info {
        return Err(VerifyError::WrongTraceShape {
            got_rows: proof.trace_info().length(),
            got_width: proof.trace_info().width(),
            rows: info.length(),
            width: info.width(),
        });
    }

    let inputs = MixInputs::new(
        round,
        parts.iter().map(|p| (p.id.as_str(), p.len)),
        output.len(),
        commitments,
        elements,
    );
    let acceptable = AcceptableOptions::OptionSet(vec![proof_options()]);
    catch_unwind(AssertUnwindSafe(|| {
        winterfell::verify::<MixAir, Hasher, Coin, Commit>(proof, inputs, &acceptable)
    }))
    .map_err(|_| VerifyError::Malformed("inconsistent"))?
    .map_err(VerifyError::Rejected)
}

/// `(conjectured, proven)` security in bits of [`proof_options`], as winterfell computes them,
/// for the largest admissible trace (proven security falls slowly as the trace grows); the
/// proven figure is the better of winterfell's list- and unique-decoding bounds.
pub fn security_bits() -> (u32, u32) {
    security_bits_at(MAX_TRACE_LEN, 4)
}

/// As [`security_bits`], for a trace of `trace_len` rows and `parts` contributions.
pub fn security_bits_at(trace_len: usize, parts: usize) -> (u32, u32) {
    let layout = Layout {
        starts: vec![],
        ends: vec![],
        out_first: 0,
        out_blocks: 0,
        cycles: trace_len / super::air::CYCLE,
    };
    let mut proof = Proof::new_dummy();
    proof.context = winter_air::proof::Context::new::<BaseElement>(
        layout.trace_info(),
        proof_options(),
        MixAir::num_constraints(parts),
    );
    let conjectured = proof.conjectured_security::<Hasher>().bits();
    let proven = proof.proven_security::<Hasher>();
    (conjectured, proven.ldr_bits().max(proven.udr_bits()))
}
