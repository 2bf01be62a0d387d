//! The proven mixing function and its commitments, in Rescue-Prime (Rp64_256) over winterfell's
//! 64-bit field, so that a STARK can prove them.
//!
//! Everything here is the *definition*: [`commit`] and [`mix`] compute natively what the AIR
//! proves. Both run one sponge shape: 12 field elements, capacity `[0..4]`, rate `[4..12]`,
//! winterfell's `Rp64_256` permutation (7 rounds).
//!
//! **Bytes to elements.** A byte string is cut into 7-byte chunks, each read little-endian into
//! one element (< 2^56 < p, so the map is injective); the last chunk is zero-padded, and the
//! elements are zero-padded to a whole number of 8-element blocks. The byte length sits in the
//! capacity, which makes the padding unambiguous.
//!
//! **Commitment** to one contribution `x` of source `id` in round `r`:
//! capacity = `[TAG_COMMIT, len(x), r, id_element(id)]`, rate = 0; for each block:
//! rate += block, permute. The commitment is the digest `state[4..8]`, 32 bytes (each element's
//! canonical value, little-endian). A node signs this value; the hub lists one per source.
//!
//! **Mix** of contributions `x_1..x_m` (in packet order) into `out_len` bytes: one sponge with
//! capacity = `[TAG_MIX, out_len, r, layout_element(ids and lengths)]` absorbs the blocks of every
//! contribution in order (the same blocks the commitments absorb). After each permutation that
//! absorbs a block of the *last* contribution, the rate `state[4..12]` is one output block: 8
//! elements, each giving its low 7 bytes little-endian, 56 bytes. So every output block depends
//! on every earlier contribution in full (through the capacity) and on the last contribution up
//! to that block: the hub orders contributions so the largest, the bulk source, comes last.
//! `out_len` is a multiple of [`OUTPUT_BLOCK_BYTES`] and at most 56 bytes per block of the last
//! contribution: the output is never longer than the last contribution's padded size.
//!
//! The 7 output bytes of a uniform field element are within 2^-32 statistical distance of
//! uniform (p = 2^64 - 2^32 + 1).

mod air;
#[cfg(test)]
mod proof_tests;
mod prover;
mod verifier;

pub use air::{MAX_PARTS, MAX_TRACE_LEN, proof_options};
pub use prover::{ProveError, Proven, prove};
pub use verifier::{
    MAX_PROOF_BYTES, PublicPart, VerifyError, security_bits, security_bits_at, verify,
};

use sha3::{Digest, Sha3_256};
use winterfell::crypto::hashers::Rp64_256;
use winterfell::math::fields::f64::BaseElement;
use winterfell::math::{FieldElement, StarkField};

use crate::secret::SecretBytes;

/// Sponge state width, rate and capacity (Rp64_256).
pub const STATE_WIDTH: usize = 12;
pub const RATE: usize = 8;
/// Bytes carried by one field element of input or output.
pub const BYTES_PER_ELEMENT: usize = 7;
/// Bytes absorbed, or produced, per permutation.
pub const BLOCK_BYTES: usize = RATE * BYTES_PER_ELEMENT;
/// The output length of a proven mix is a multiple of this.
pub const OUTPUT_BLOCK_BYTES: usize = BLOCK_BYTES;

/// Capacity tags: a commitment sponge can never be taken for a mix sponge.
pub const TAG_COMMIT: u64 = 0x6b69_7271_636d_7401; // "kirqcmt" ‖ 1
pub const TAG_MIX: u64 = 0x6b69_7271_6d69_7801; // "kirqmix" ‖ 1

/// Rounds are field elements: a round number must be below 2^63.
pub const MAX_ROUND: u64 = (1 << 63) - 1;

/// A fresh round number after `last` (which it updates): above every number issued before and at
/// least the wall clock in microseconds, so a restarted hub does not reuse its previous run's
/// numbers; never above [`MAX_ROUND`].
pub fn fresh_round(last: &std::sync::atomic::AtomicU64) -> u64 {
    use std::sync::atomic::Ordering;
    let now_us = crate::util::now_ms().saturating_mul(1000).min(MAX_ROUND);
    let next = |prev: u64| prev.saturating_add(1).max(now_us).min(MAX_ROUND);
    let prev = last
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(next(p)))
        .unwrap_or_else(|p| p);
    next(prev)
}

/// A 32-byte commitment (four field elements in canonical form, little-endian).
pub type Commitment = [u8; 32];

/// Why a commitment or mix input is not admissible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("no contributions")]
    Empty,
    #[error("contribution {index} is empty")]
    EmptyContribution { index: usize },
    #[error("round {0} is above 2^63 - 1")]
    RoundOutOfRange(u64),
    #[error("output length {0} is zero or not a multiple of {OUTPUT_BLOCK_BYTES}")]
    BadOutputLength(usize),
    #[error("output length {out_len} exceeds what the last contribution can carry ({max})")]
    OutputTooLong { out_len: usize, max: usize },
}

/// One element from up to 7 bytes, little-endian.
fn element_from_chunk(chunk: &[u8]) -> BaseElement {
    debug_assert!(chunk.len() <= BYTES_PER_ELEMENT);
    let mut b = [0u8; 8];
    b[..chunk.len()].copy_from_slice(chunk);
    BaseElement::new(u64::from_le_bytes(b))
}

/// The number of 8-element blocks `len` bytes occupy.
pub fn blocks_for(len: usize) -> usize {
    len.div_ceil(BLOCK_BYTES).max(1)
}

/// The input blocks of a byte string: 7-byte chunks as elements, zero-padded to whole blocks.
/// The caller zeroes the result when it holds secrets (the elements are plain `u64`s).
pub fn to_blocks(bytes: &[u8]) -> Vec<[BaseElement; RATE]> {
    let mut blocks = vec![[BaseElement::ZERO; RATE]; blocks_for(bytes.len())];
    for (i, chunk) in bytes.chunks(BYTES_PER_ELEMENT).enumerate() {
        blocks[i / RATE][i % RATE] = element_from_chunk(chunk);
    }
    blocks
}

/// A 63-bit element naming `id`: SHA3-256 of a tagged id, top bit cleared. Public, computed by
/// prover and verifier alike; a node's identity is bound by its Falcon signature, not by this.
pub fn id_element(id: &str) -> BaseElement {
    let d = crate::crypto::tagged_hash("kirq/stark-id/v1", &[id.as_bytes()]);
    element_from_digest(&d)
}

/// A 63-bit element naming the layout of a mix: every contribution's id and byte length, in order.
pub fn layout_element<'a>(parts: impl IntoIterator<Item = (&'a str, usize)>) -> BaseElement {
    let mut h = Sha3_256::new();
    h.update(b"kirq/stark-layout/v1");
    for (id, len) in parts {
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
        h.update((len as u64).to_be_bytes());
    }
    element_from_digest(&h.finalize().into())
}

fn element_from_digest(d: &[u8; 32]) -> BaseElement {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    BaseElement::new(u64::from_le_bytes(b) >> 1)
}

/// The initial sponge state of a commitment.
pub fn commit_state(round: u64, id: &str, len: usize) -> [BaseElement; STATE_WIDTH] {
    let mut s = [BaseElement::ZERO; STATE_WIDTH];
    s[0] = BaseElement::new(TAG_COMMIT);
    s[1] = BaseElement::new(len as u64);
    s[2] = BaseElement::new(round);
    s[3] = id_element(id);
    s
}

/// The initial sponge state of a mix.
pub fn mix_state<'a>(
    round: u64,
    out_len: usize,
    parts: impl IntoIterator<Item = (&'a str, usize)>,
) -> [BaseElement; STATE_WIDTH] {
    let mut s = [BaseElement::ZERO; STATE_WIDTH];
    s[0] = BaseElement::new(TAG_MIX);
    s[1] = BaseElement::new(out_len as u64);
    s[2] = BaseElement::new(round);
    s[3] = layout_element(parts);
    s
}

fn absorb(state: &mut [BaseElement; STATE_WIDTH], block: &[BaseElement; RATE]) {
    for (s, b) in state[4..].iter_mut().zip(block) {
        *s += *b;
    }
    Rp64_256::apply_permutation(state);
}

/// The digest `state[4..8]` as 32 bytes.
pub fn digest_bytes(state: &[BaseElement; STATE_WIDTH]) -> Commitment {
    let mut out = [0u8; 32];
    for (i, e) in state[4..8].iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&e.as_int().to_le_bytes());
    }
    out
}

/// Parses a commitment back into its four elements; `None` if an element is not canonical.
pub fn digest_elements(c: &Commitment) -> Option<[BaseElement; 4]> {
    let mut out = [BaseElement::ZERO; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[i * 8..i * 8 + 8]);
        let v = u64::from_le_bytes(b);
        if v >= BaseElement::MODULUS {
            return None;
        }
        *o = BaseElement::new(v);
    }
    Some(out)
}

/// The commitment to contribution `bytes` of source `id` in `round`.
pub fn commit(round: u64, id: &str, bytes: &[u8]) -> Result<Commitment, MixError> {
    if round > MAX_ROUND {
        return Err(MixError::RoundOutOfRange(round));
    }
    if bytes.is_empty() {
        return Err(MixError::EmptyContribution { index: 0 });
    }
    let mut state = commit_state(round, id, bytes.len());
    let mut blocks = to_blocks(bytes);
    for b in &blocks {
        absorb(&mut state, b);
    }
    wipe_blocks(&mut blocks);
    Ok(digest_bytes(&state))
}

/// Zeroes secret input blocks.
pub fn wipe_blocks(blocks: &mut [[BaseElement; RATE]]) {
    for b in blocks.iter_mut() {
        *b = [BaseElement::ZERO; RATE];
    }
}

/// One contribution to a mix: the source id and its raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub id: &'a str,
    pub bytes: &'a SecretBytes,
}

/// The most output bytes a mix of `last_len` bytes in the last contribution can give.
pub fn max_output_len(last_len: usize) -> usize {
    blocks_for(last_len).saturating_mul(OUTPUT_BLOCK_BYTES)
}

/// Checks a mix's shape; shared by [`mix`], the prover and the verifier.
pub fn check_shape(round: u64, lens: &[usize], out_len: usize) -> Result<(), MixError> {
    if round > MAX_ROUND {
        return Err(MixError::RoundOutOfRange(round));
    }
    let Some(&last) = lens.last() else {
        return Err(MixError::Empty);
    };
    if let Some(index) = lens.iter().position(|&l| l == 0) {
        return Err(MixError::EmptyContribution { index });
    }
    if out_len == 0 || !out_len.is_multiple_of(OUTPUT_BLOCK_BYTES) {
        return Err(MixError::BadOutputLength(out_len));
    }
    let max = max_output_len(last);
    if out_len > max {
        return Err(MixError::OutputTooLong { out_len, max });
    }
    Ok(())
}

/// The output element of a rate cell as 7 bytes.
pub fn output_bytes(e: BaseElement) -> [u8; BYTES_PER_ELEMENT] {
    let v = e.as_int().to_le_bytes();
    let mut out = [0u8; BYTES_PER_ELEMENT];
    out.copy_from_slice(&v[..BYTES_PER_ELEMENT]);
    out
}

/// The proven mix of `parts` (in order; the last carries the output) into `out_len` bytes.
pub fn mix(round: u64, parts: &[Part<'_>], out_len: usize) -> Result<SecretBytes, MixError> {
    let lens: Vec<usize> = parts.iter().map(|p| p.bytes.len()).collect();
    check_shape(round, &lens, out_len)?;
    let mut state = mix_state(round, out_len, parts.iter().map(|p| (p.id, p.bytes.len())));
    let mut out = SecretBytes::zeroed(out_len);
    let mut written = 0;
    let last = parts.len() - 1;
    for (i, p) in parts.iter().enumerate() {
        let mut blocks = to_blocks(p.bytes.expose());
        for b in &blocks {
            absorb(&mut state, b);
            if i == last && written < out_len {
                for e in &state[4..] {
                    out.expose_mut()[written..written + BYTES_PER_ELEMENT]
                        .copy_from_slice(&output_bytes(*e));
                    written += BYTES_PER_ELEMENT;
                }
            }
        }
        wipe_blocks(&mut blocks);
    }
    state.fill(BaseElement::ZERO);
    std::hint::black_box(&state);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(v: &[u8]) -> SecretBytes {
        SecretBytes::new(v.to_vec())
    }

    #[test]
    fn commitment_binds_round_id_and_bytes() {
        let c = commit(1, "node-a", b"hello").unwrap();
        assert_eq!(c, commit(1, "node-a", b"hello").unwrap());
        assert_ne!(c, commit(2, "node-a", b"hello").unwrap());
        assert_ne!(c, commit(1, "node-b", b"hello").unwrap());
        assert_ne!(c, commit(1, "node-a", b"hellp").unwrap());
        // Padding is unambiguous: a trailing zero byte changes the length in the capacity.
        assert_ne!(c, commit(1, "node-a", b"hello\0").unwrap());
        assert!(digest_elements(&c).is_some());
        assert_eq!(
            commit(MAX_ROUND + 1, "a", b"x"),
            Err(MixError::RoundOutOfRange(1 << 63))
        );
    }

    #[test]
    fn rounds_increase_from_the_clock_and_stop_at_the_bound() {
        let last = std::sync::atomic::AtomicU64::new(0);
        let a = fresh_round(&last);
        let b = fresh_round(&last);
        assert!(
            a >= (crate::util::now_ms() - 1000) * 1000,
            "clock in microseconds"
        );
        assert!(b > a);
        last.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(fresh_round(&last), MAX_ROUND);
    }

    #[test]
    fn chunks_are_injective() {
        // 7 bytes 0xff fill an element below p without reduction.
        let b = to_blocks(&[0xff; 7]);
        assert_eq!(b[0][0].as_int(), (1 << 56) - 1);
        assert_eq!(to_blocks(&[0; 57]).len(), 2);
    }

    #[test]
    fn mix_depends_on_every_part_and_has_exact_length() {
        let a = sb(&[1; 40]);
        let b = sb(&[2; 200]);
        let parts = [Part { id: "a", bytes: &a }, Part { id: "b", bytes: &b }];
        let out = mix(7, &parts, 4 * OUTPUT_BLOCK_BYTES).unwrap();
        assert_eq!(out.len(), 224);
        let a2 = sb(&[3; 40]);
        let out2 = mix(
            7,
            &[
                Part {
                    id: "a",
                    bytes: &a2,
                },
                parts[1],
            ],
            224,
        )
        .unwrap();
        // An early contribution changes every output block, the first included.
        assert_ne!(out.expose()[..56], out2.expose()[..56]);
        assert_ne!(out.expose()[168..], out2.expose()[168..]);
        assert_eq!(
            mix(7, &parts, 5 * OUTPUT_BLOCK_BYTES).unwrap_err(),
            MixError::OutputTooLong {
                out_len: 280,
                max: 224
            }
        );
        assert_eq!(
            mix(7, &parts, 55).unwrap_err(),
            MixError::BadOutputLength(55)
        );
        assert_eq!(mix(7, &[], 56).unwrap_err(), MixError::Empty);
    }
}
