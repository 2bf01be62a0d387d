//! The packet signature algorithms a hub key may use: Falcon-512 (the default) and ML-DSA-65.
//!
//! A hub has one signing key; its key file says which algorithm it is (the tag of its lines, see
//! [`super::falcon`] and [`super::mldsa`]). A packet carries both the algorithm id and the key id,
//! and a daemon verifies a packet only with the trusted key its key id names, and only when that
//! key's algorithm is the one the packet claims: a key of the other algorithm never verifies it.
//! Decentralized nodes sign their commitments with Falcon-512 only.

use std::path::{Path, PathBuf};

use super::falcon::{self, KeyError, KeyId};
use super::{keyfile, mldsa};

/// A packet signature algorithm, as named on the wire, on the command line and in key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum SigAlg {
    /// Falcon-512, round 3 (PQClean), wire id 1.
    #[default]
    #[value(name = "falcon512")]
    Falcon512,
    /// ML-DSA-65 (FIPS 204), wire id 2.
    #[value(name = "ml-dsa-65")]
    MlDsa65,
}

impl SigAlg {
    /// The packet's `sig_alg` byte.
    pub fn wire_id(self) -> u8 {
        match self {
            Self::Falcon512 => 1,
            Self::MlDsa65 => 2,
        }
    }

    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Falcon512),
            2 => Some(Self::MlDsa65),
            _ => None,
        }
    }

    /// The name used by `kirq-hub keygen --alg` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Falcon512 => "falcon512",
            Self::MlDsa65 => "ml-dsa-65",
        }
    }

    /// The signature lengths a packet of this algorithm may carry (inclusive).
    pub fn signature_len(self) -> (usize, usize) {
        match self {
            Self::Falcon512 => (1, falcon::MAX_SIGNATURE_BYTES),
            Self::MlDsa65 => (mldsa::SIGNATURE_BYTES, mldsa::SIGNATURE_BYTES),
        }
    }
}

impl std::fmt::Display for SigAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What signs a packet: its algorithm, its key id, and the signature over the packet's digest.
pub trait PacketSigner {
    fn sig_alg(&self) -> SigAlg;
    fn key_id(&self) -> KeyId;
    fn public_key(&self) -> &[u8];
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
}

impl PacketSigner for falcon::SigningKey {
    fn sig_alg(&self) -> SigAlg {
        SigAlg::Falcon512
    }
    fn key_id(&self) -> KeyId {
        self.verifying_key().id()
    }
    fn public_key(&self) -> &[u8] {
        self.verifying_key().as_bytes()
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        falcon::SigningKey::sign(self, msg)
    }
}

impl PacketSigner for mldsa::SigningKey {
    fn sig_alg(&self) -> SigAlg {
        SigAlg::MlDsa65
    }
    fn key_id(&self) -> KeyId {
        self.verifying_key().id()
    }
    fn public_key(&self) -> &[u8] {
        self.verifying_key().as_bytes()
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        mldsa::SigningKey::sign(self, msg)
    }
}

/// A trusted hub public key of either algorithm.
// A daemon holds a handful of these and a hub one signing key: boxing the larger variant
// would save nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum HubVerifyingKey {
    Falcon512(falcon::VerifyingKey),
    MlDsa65(mldsa::VerifyingKey),
}

impl From<falcon::VerifyingKey> for HubVerifyingKey {
    fn from(k: falcon::VerifyingKey) -> Self {
        Self::Falcon512(k)
    }
}

impl From<mldsa::VerifyingKey> for HubVerifyingKey {
    fn from(k: mldsa::VerifyingKey) -> Self {
        Self::MlDsa65(k)
    }
}

impl HubVerifyingKey {
    pub fn alg(&self) -> SigAlg {
        match self {
            Self::Falcon512(_) => SigAlg::Falcon512,
            Self::MlDsa65(_) => SigAlg::MlDsa65,
        }
    }

    pub fn id(&self) -> KeyId {
        match self {
            Self::Falcon512(k) => k.id(),
            Self::MlDsa65(k) => k.id(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Falcon512(k) => k.as_bytes(),
            Self::MlDsa65(k) => k.as_bytes(),
        }
    }

    /// The public key of `alg` from its raw bytes; `None` unless they are one.
    pub fn from_bytes(alg: SigAlg, bytes: &[u8]) -> Option<Self> {
        match alg {
            SigAlg::Falcon512 => falcon::VerifyingKey::from_bytes(bytes).map(Self::Falcon512),
            SigAlg::MlDsa65 => mldsa::VerifyingKey::from_bytes(bytes).map(Self::MlDsa65),
        }
    }

    /// True when `sig` is a valid signature of `msg` under this key, in this key's algorithm.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Falcon512(k) => k.verify(msg, sig),
            Self::MlDsa65(k) => k.verify(msg, sig),
        }
    }

    /// Reads a public key file of either algorithm (the file's tag says which).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = keyfile::read_text(path)?;
        if mldsa::is_key_text(&text) {
            mldsa::VerifyingKey::from_text(path, &text).map(Self::MlDsa65)
        } else {
            falcon::VerifyingKey::from_text(path, &text).map(Self::Falcon512)
        }
    }
}

/// A hub's packet signing key of either algorithm. Its `Debug` shows only the key id.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum HubSigningKey {
    Falcon512(falcon::SigningKey),
    MlDsa65(mldsa::SigningKey),
}

impl From<falcon::SigningKey> for HubSigningKey {
    fn from(k: falcon::SigningKey) -> Self {
        Self::Falcon512(k)
    }
}

impl From<mldsa::SigningKey> for HubSigningKey {
    fn from(k: mldsa::SigningKey) -> Self {
        Self::MlDsa65(k)
    }
}

impl HubSigningKey {
    /// A fresh key of `alg` from the operating system's RNG.
    pub fn generate(alg: SigAlg) -> Self {
        match alg {
            SigAlg::Falcon512 => Self::Falcon512(falcon::SigningKey::generate()),
            SigAlg::MlDsa65 => Self::MlDsa65(mldsa::SigningKey::generate()),
        }
    }

    pub fn verifying_key(&self) -> HubVerifyingKey {
        match self {
            Self::Falcon512(k) => k.verifying_key().clone().into(),
            Self::MlDsa65(k) => k.verifying_key().clone().into(),
        }
    }

    /// Reads a secret key file of either algorithm (the file's tag says which).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = keyfile::read_secret_text(path)?;
        if mldsa::is_key_text(&text) {
            mldsa::SigningKey::load(path).map(Self::MlDsa65)
        } else {
            falcon::SigningKey::load(path).map(Self::Falcon512)
        }
    }

    /// Writes `DIR/NAME.key` (mode 0600, created new) and `DIR/NAME.pub`.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        match self {
            Self::Falcon512(k) => k.write_pair(dir, name),
            Self::MlDsa65(k) => k.write_pair(dir, name),
        }
    }
}

impl PacketSigner for HubSigningKey {
    fn sig_alg(&self) -> SigAlg {
        match self {
            Self::Falcon512(k) => k.sig_alg(),
            Self::MlDsa65(k) => k.sig_alg(),
        }
    }
    fn key_id(&self) -> KeyId {
        match self {
            Self::Falcon512(k) => PacketSigner::key_id(k),
            Self::MlDsa65(k) => PacketSigner::key_id(k),
        }
    }
    fn public_key(&self) -> &[u8] {
        match self {
            Self::Falcon512(k) => PacketSigner::public_key(k),
            Self::MlDsa65(k) => PacketSigner::public_key(k),
        }
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::Falcon512(k) => PacketSigner::sign(k, msg),
            Self::MlDsa65(k) => PacketSigner::sign(k, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_of_either_algorithm_load_as_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [SigAlg::Falcon512, SigAlg::MlDsa65] {
            let k = HubSigningKey::generate(alg);
            let (kp, pp) = k.write_pair(dir.path(), alg.as_str()).unwrap();
            let k2 = HubSigningKey::load(&kp).unwrap();
            let p2 = HubVerifyingKey::load(&pp).unwrap();
            assert_eq!(k2.sig_alg(), alg);
            assert_eq!(p2.alg(), alg);
            assert_eq!(p2.id(), k.key_id());
            let sig = k2.sign(b"m");
            let (lo, hi) = alg.signature_len();
            assert!((lo..=hi).contains(&sig.len()));
            assert!(p2.verify(b"m", &sig));
            assert_eq!(SigAlg::from_wire(alg.wire_id()), Some(alg));
        }
        assert_eq!(SigAlg::from_wire(0), None);
        assert_eq!(SigAlg::from_wire(3), None);
        assert_eq!(SigAlg::default(), SigAlg::Falcon512);
    }

    #[test]
    fn a_key_of_one_algorithm_never_verifies_the_other() {
        let f = HubSigningKey::generate(SigAlg::Falcon512);
        let m = HubSigningKey::generate(SigAlg::MlDsa65);
        let (fs, ms) = (f.sign(b"x"), m.sign(b"x"));
        assert!(!f.verifying_key().verify(b"x", &ms));
        assert!(!m.verifying_key().verify(b"x", &fs));
    }
}
