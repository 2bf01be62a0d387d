//! ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381, suite 0x03) over the pinned vrf-rfc9381 crate.
//!
//! The crate is unaudited (0.0.x), so it is pinned to one version and the RFC's appendix vectors
//! run in the tests (`testdata/rfc9381_ecvrf_edwards25519_sha512_tai.json`). Checks the RFC
//! requires and the crate skips are added in [`verify`]: `ECVRF_decode_proof` must reject a
//! scalar `s` not below the group order (the crate reduces it, which would accept a second
//! encoding of the same proof), and points must be canonical encodings (RFC 8032 5.1.3).
//!
//! The secret key is RFC 9381's 32-byte `SK` (hashed into the scalar as in RFC 8032); kirqd draws
//! it from verified pool entropy.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest as _, Sha512};
use vrf_rfc9381::Ciphersuite;
use vrf_rfc9381::ec::edwards25519::EdVrfProof;
use vrf_rfc9381::ec::edwards25519::tai::{
    EdVrfEdwards25519TaiPublicKey, EdVrfEdwards25519TaiSecretKey,
};
use vrf_rfc9381::{Proof as _, Prover as _, Verifier as _};

use crate::secret::SecretBytes;

/// The suite's name as RFC 9381 writes it.
pub const SUITE: &str = "ECVRF-EDWARDS25519-SHA512-TAI";
pub const SECRET_KEY_BYTES: usize = 32;
pub const PUBLIC_KEY_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 80;
pub const OUTPUT_BYTES: usize = 64;

/// A VRF secret key with its public key. Zeroed on drop; `Debug` shows the public key only.
pub struct VrfKey {
    sk: SecretBytes,
    prover: EdVrfEdwards25519TaiSecretKey,
    public: [u8; PUBLIC_KEY_BYTES],
}

impl std::fmt::Debug for VrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfKey(public {})", hex::encode(self.public))
    }
}

/// The output of proving: `pi` and `beta = ECVRF_proof_to_hash(pi)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub pi: [u8; PROOF_BYTES],
    pub beta: [u8; OUTPUT_BYTES],
}

impl VrfKey {
    /// The key for RFC 9381's 32-byte `SK`; `None` for another length.
    pub fn from_secret(sk: SecretBytes) -> Option<Self> {
        let seed: [u8; SECRET_KEY_BYTES] = sk.expose().try_into().ok()?;
        let prover = EdVrfEdwards25519TaiSecretKey::from_slice(&seed).ok()?;
        // The crate keeps Y's encoding private: derive it as RFC 8032 does (x = clamped first
        // half of SHA-512(SK), Y = x*B) and check the crate agrees that it is the same key.
        let mut digest: [u8; 64] = Sha512::digest(seed).into();
        let mut x = [0u8; 32];
        x.copy_from_slice(&digest[..32]);
        let public = EdwardsPoint::mul_base_clamped(x).compress().to_bytes();
        let mut seed = seed;
        zeroize::Zeroize::zeroize(&mut x);
        zeroize::Zeroize::zeroize(&mut digest);
        zeroize::Zeroize::zeroize(&mut seed);
        if EdVrfEdwards25519TaiPublicKey::from_slice(&public).ok()? != prover.verifier() {
            return None;
        }
        Some(Self { sk, prover, public })
    }

    pub fn secret(&self) -> &SecretBytes {
        &self.sk
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.public
    }

    /// `ECVRF_prove(SK, alpha)` and `ECVRF_proof_to_hash(pi)`.
    pub fn prove(&self, alpha: &[u8]) -> Output {
        // TAI fails only if 256 candidates in a row are not curve points (probability ~2^-256).
        let proof = self
            .prover
            .prove(alpha)
            .expect("try-and-increment found a point");
        let pi = proof
            .encode_to_pi()
            .try_into()
            .expect("an edwards25519 proof is 80 bytes");
        let beta = proof
            .proof_to_hash(Ciphersuite::ECVRF_EDWARDS25519_SHA512_TAI)
            .expect("proof_to_hash cannot fail for edwards25519");
        Output {
            pi,
            beta: beta.into(),
        }
    }
}

/// `ECVRF_verify(PK, alpha, pi)`: `Some(beta)` when valid, `None` when invalid, including a
/// public key that is not a canonical point or has small order, and a non-canonical proof.
pub fn verify(public: &[u8], alpha: &[u8], pi: &[u8]) -> Option<[u8; OUTPUT_BYTES]> {
    if public.len() != PUBLIC_KEY_BYTES || pi.len() != PROOF_BYTES {
        return None;
    }
    // RFC 9381 5.4.4 / RFC 8032 5.1.3: Gamma and Y must be canonical encodings, s < q.
    let s: [u8; 32] = pi[48..].try_into().ok()?;
    if !is_canonical_point(public)
        || !is_canonical_point(&pi[..32])
        || bool::from(Scalar::from_canonical_bytes(s).is_none())
    {
        return None;
    }
    let vk = EdVrfEdwards25519TaiPublicKey::from_slice(public).ok()?;
    let proof = EdVrfProof::decode_pi(pi).ok()?;
    vk.verify(alpha, proof).ok().map(Into::into)
}

/// True when `bytes` decode to a point and are that point's one canonical encoding.
fn is_canonical_point(bytes: &[u8]) -> bool {
    let Ok(c) = CompressedEdwardsY::from_slice(bytes) else {
        return false;
    };
    c.decompress().is_some_and(|p| p.compress() == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9381 appendix B.3 (ECVRF-EDWARDS25519-SHA512-TAI), examples 16-18.
    const VECTORS: &str = include_str!("../../testdata/rfc9381_ecvrf_edwards25519_sha512_tai.json");

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        sk: String,
        pk: String,
        alpha: String,
        pi: String,
        beta: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(VECTORS).unwrap()
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn rfc9381_vectors_prove() {
        let vs = vectors();
        assert_eq!(vs.len(), 3);
        for v in vs {
            let k = VrfKey::from_secret(SecretBytes::new(h(&v.sk))).unwrap();
            assert_eq!(k.public_key().to_vec(), h(&v.pk), "{}: public key", v.name);
            let out = k.prove(&h(&v.alpha));
            assert_eq!(out.pi.to_vec(), h(&v.pi), "{}: pi", v.name);
            assert_eq!(out.beta.to_vec(), h(&v.beta), "{}: beta", v.name);
        }
    }

    #[test]
    fn rfc9381_vectors_verify() {
        for v in vectors() {
            let beta = verify(&h(&v.pk), &h(&v.alpha), &h(&v.pi));
            assert_eq!(beta.map(|b| b.to_vec()), Some(h(&v.beta)), "{}", v.name);
            // The same proof for another alpha is invalid.
            let mut alpha = h(&v.alpha);
            alpha.push(0);
            assert_eq!(verify(&h(&v.pk), &alpha, &h(&v.pi)), None, "{}", v.name);
        }
    }

    fn key(b: u8) -> VrfKey {
        VrfKey::from_secret(SecretBytes::new(vec![b; 32])).unwrap()
    }

    #[test]
    fn deterministic_and_unique_across_keys() {
        let (a, b) = (key(1), key(2));
        assert_eq!(a.prove(b"alpha"), a.prove(b"alpha"));
        assert_ne!(a.prove(b"alpha").beta, b.prove(b"alpha").beta);
        assert_ne!(a.prove(b"alpha").beta, a.prove(b"alphb").beta);
        // A proof verifies only under its own key.
        let out = a.prove(b"alpha");
        assert_eq!(verify(&a.public_key(), b"alpha", &out.pi), Some(out.beta));
        assert_eq!(verify(&b.public_key(), b"alpha", &out.pi), None);
    }

    #[test]
    fn tampered_proofs_fail() {
        let k = key(3);
        let out = k.prove(b"m");
        for i in 0..PROOF_BYTES {
            let mut pi = out.pi;
            pi[i] ^= 0x01;
            assert_eq!(verify(&k.public_key(), b"m", &pi), None, "byte {i}");
        }
        // s + q encodes the same scalar mod q: the crate alone would accept it; we must not.
        let mut pi = out.pi;
        let mut carry = 0u16;
        let q: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        for i in 0..32 {
            let sum = u16::from(pi[48 + i]) + u16::from(q[i]) + carry;
            pi[48 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + q < 2^254 fits in 32 bytes");
        assert_eq!(verify(&k.public_key(), b"m", &pi), None, "s + q");
        assert_eq!(verify(&k.public_key(), b"m", &out.pi[..79]), None);
        assert_eq!(verify(&[0u8; 32], b"m", &out.pi), None, "small-order key");
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = key(0xab);
        let shown = format!("{k:?}");
        assert!(shown.starts_with("VrfKey(public "));
        assert!(!shown.contains(&"ab".repeat(8)));
    }
}
