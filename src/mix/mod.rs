//! The hub's conditioning function: SHAKE256 over the framed contributions of one packet.
//!
//! `output = SHAKE256("kirq/mix/v1" ‖ for each contribution: len(id) ‖ id ‖ len(bytes) ‖ bytes)`,
//! squeezed to the packet's length (lengths are u64 big-endian). Framing makes the input
//! unambiguous; the output length never exceeds the smallest contribution times the number of
//! contributions, so the output is never stretched beyond what went in. The proof issue may
//! replace this with an algebraic sponge it can prove.

use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

use crate::secret::SecretBytes;

/// One source's raw bytes for a packet.
#[derive(Debug)]
pub struct Contribution<'a> {
    pub source_id: &'a str,
    pub bytes: &'a SecretBytes,
}

/// Mixes `parts` into `out_len` bytes.
///
/// # Panics
/// If `parts` is empty or `out_len` exceeds the total contributed bytes: both are hub bugs.
pub fn mix(parts: &[Contribution<'_>], out_len: usize) -> SecretBytes {
    let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
    assert!(
        !parts.is_empty() && out_len <= total,
        "mix asked to stretch its input"
    );
    let mut h = Shake256::default();
    let label = b"kirq/mix/v1";
    h.update(&(label.len() as u64).to_be_bytes());
    h.update(label);
    for p in parts {
        h.update(&(p.source_id.len() as u64).to_be_bytes());
        h.update(p.source_id.as_bytes());
        h.update(&(p.bytes.len() as u64).to_be_bytes());
        h.update(p.bytes.expose());
    }
    let mut out = SecretBytes::zeroed(out_len);
    h.finalize_xof().read(out.expose_mut());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_input_sensitive() {
        let a = SecretBytes::new(vec![1; 32]);
        let b = SecretBytes::new(vec![2; 32]);
        let m1 = mix(
            &[Contribution {
                source_id: "a",
                bytes: &a,
            }],
            32,
        );
        let m2 = mix(
            &[Contribution {
                source_id: "a",
                bytes: &a,
            }],
            32,
        );
        assert_eq!(m1.expose(), m2.expose());
        let m3 = mix(
            &[Contribution {
                source_id: "b",
                bytes: &a,
            }],
            32,
        );
        assert_ne!(m1.expose(), m3.expose(), "source id is part of the input");
        let m4 = mix(
            &[
                Contribution {
                    source_id: "a",
                    bytes: &a,
                },
                Contribution {
                    source_id: "b",
                    bytes: &b,
                },
            ],
            32,
        );
        assert_ne!(m1.expose(), m4.expose());
    }

    #[test]
    #[should_panic(expected = "stretch")]
    fn refuses_to_stretch() {
        let a = SecretBytes::new(vec![1; 16]);
        mix(
            &[Contribution {
                source_id: "a",
                bytes: &a,
            }],
            17,
        );
    }
}
