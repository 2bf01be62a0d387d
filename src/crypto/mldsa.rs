//! ML-DSA-65 (FIPS 204) signing and verification through aws-lc-rs, and its key files.
//!
//! The one design choice a reader must know: the secret key file holds the 32-byte FIPS 204 seed
//! (xi), not the 4032-byte expanded key. ML-DSA.KeyGen is deterministic in its seed (the ACVP
//! keyGen vectors in `testdata/ml-dsa-65-keygen-acvp.json` check exactly that), so the seed is the
//! whole secret, and a file holding it cannot disagree with itself:
//!
//! ```text
//! # public key file (hub.pub)            # secret key file (hub.key, mode 0600)
//! ml-dsa-65-public:<base64, 1952 bytes>  ml-dsa-65-seed:<base64, 32 bytes>
//!                                        ml-dsa-65-public:<base64, 1952 bytes>
//! ```
//!
//! Signatures are FIPS 204 ML-DSA.Sign (pure, empty context string, hedged: aws-lc draws the
//! per-signature randomness from its own RNG), 3309 bytes. The expanded key lives in aws-lc's
//! memory for the key's lifetime; aws-lc's `OPENSSL_free` cleanses an allocation when it frees it. The seed comes from the operating
//! system's RNG (getrandom). A key is named on the wire by its [`KeyId`], a tagged SHA3-256 of the
//! public key under a label of its own, so no ML-DSA key id can equal a Falcon-512 one by
//! construction of the same bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsRawBytes;
use aws_lc_rs::signature::{
    KeyPair, ML_DSA_65, ML_DSA_65_SIGNING, PqdsaKeyPair, UnparsedPublicKey,
};

use super::falcon::{KeyError, KeyId};
use super::keyfile;
use crate::secret::SecretBytes;

pub const PUBLIC_KEY_BYTES: usize = 1952;
/// The FIPS 204 seed xi the whole key pair is derived from.
pub const SEED_BYTES: usize = 32;
/// The expanded secret key (FIPS 204 skEncode), for the known-answer tests only.
pub const EXPANDED_SECRET_KEY_BYTES: usize = 4032;
/// Every ML-DSA-65 signature has exactly this length.
pub const SIGNATURE_BYTES: usize = 3309;

const PUBLIC_TAG: &str = "ml-dsa-65-public:";
const SEED_TAG: &str = "ml-dsa-65-seed:";
const KEY_ID_LABEL: &str = "kirq/key-id/ml-dsa-65/v1";

/// True when `text` is an ML-DSA-65 key file (it has an ML-DSA-65 public line).
pub(crate) fn is_key_text(text: &str) -> bool {
    keyfile::find_line(text, PUBLIC_TAG).is_some()
}

/// An ML-DSA-65 public key.
#[derive(Clone)]
pub struct VerifyingKey {
    bytes: Vec<u8>,
    id: KeyId,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MlDsa65VerifyingKey({})", self.id)
    }
}

impl VerifyingKey {
    /// The key from its FIPS 204 pkEncode bytes; `None` unless exactly 1952 bytes (every string
    /// of that length decodes as a public key: rho and packed 10-bit t1 coefficients).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != PUBLIC_KEY_BYTES {
            return None;
        }
        let digest = super::tagged_hash(KEY_ID_LABEL, &[bytes]);
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        Some(Self {
            bytes: bytes.to_vec(),
            id: KeyId(id),
        })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// True when `sig` is a valid ML-DSA-65 signature of `msg` (empty context) under this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        sig.len() == SIGNATURE_BYTES
            && UnparsedPublicKey::new(&ML_DSA_65, &self.bytes)
                .verify(msg, sig)
                .is_ok()
    }

    /// The public key file's text.
    pub fn to_text(&self) -> String {
        keyfile::line(PUBLIC_TAG, &self.bytes)
    }

    /// Reads a public key file (or the public line of a secret key file).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_text(path, &keyfile::read_text(path)?)
    }

    pub(crate) fn from_text(path: &Path, text: &str) -> Result<Self, KeyError> {
        let bytes = keyfile::decode_line(
            path,
            text,
            PUBLIC_TAG,
            PUBLIC_KEY_BYTES,
            "no ml-dsa-65-public: line",
            "public key is not 1952 bytes",
        )?;
        Self::from_bytes(&bytes).ok_or(keyfile::format_error(path, "not an ML-DSA-65 key"))
    }
}

/// An ML-DSA-65 key pair: the seed (zeroed on drop) and aws-lc's expanded key. Never printed.
pub struct SigningKey {
    seed: SecretBytes,
    pair: PqdsaKeyPair,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MlDsa65SigningKey({})", self.public.id)
    }
}

impl SigningKey {
    /// A fresh key pair from a seed read from the operating system's RNG.
    pub fn generate() -> Self {
        let mut seed = SecretBytes::zeroed(SEED_BYTES);
        getrandom::fill(seed.expose_mut()).expect("the OS RNG is available");
        Self::from_seed(seed).expect("a 32-byte seed always makes a key")
    }

    /// ML-DSA.KeyGen_internal from the 32-byte seed xi; `None` for another length.
    pub fn from_seed(seed: SecretBytes) -> Option<Self> {
        if seed.len() != SEED_BYTES {
            return None;
        }
        let pair = PqdsaKeyPair::from_seed(&ML_DSA_65_SIGNING, seed.expose()).ok()?;
        let public = VerifyingKey::from_bytes(pair.public_key().as_ref())?;
        Some(Self { seed, pair, public })
    }

    /// The key from its seed and the public key it must make; `None` unless they match.
    pub fn from_parts(seed: SecretBytes, pk: &[u8]) -> Option<Self> {
        let key = Self::from_seed(seed)?;
        (key.public.as_bytes() == pk).then_some(key)
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The seed, for sealing it at rest.
    pub fn expose_seed(&self) -> &[u8] {
        self.seed.expose()
    }

    /// The expanded secret key (FIPS 204 skEncode), zeroed on drop: for the known-answer tests.
    pub fn expanded_secret_key(&self) -> SecretBytes {
        let raw = self
            .pair
            .private_key()
            .as_raw_bytes()
            .expect("aws-lc serialises its own key");
        SecretBytes::new(raw.as_ref().to_vec())
    }

    /// ML-DSA.Sign (pure, empty context, hedged): a 3309-byte signature.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; SIGNATURE_BYTES];
        let n = self
            .pair
            .sign(msg, &mut sig)
            .expect("the buffer has the signature's length");
        debug_assert_eq!(n, SIGNATURE_BYTES);
        sig
    }

    fn to_text(&self) -> zeroize::Zeroizing<String> {
        keyfile::secret_text(
            "Kirq hub signing key (ML-DSA-65, FIPS 204 seed). Keep it secret.",
            SEED_TAG,
            self.seed.expose(),
            &self.public.to_text(),
        )
    }

    /// Reads a secret key file, refusing one that others can read or whose public line is not
    /// the key its seed makes.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = keyfile::read_secret_text(path)?;
        let seed = SecretBytes::new(keyfile::decode_line(
            path,
            &text,
            SEED_TAG,
            SEED_BYTES,
            "no ml-dsa-65-seed: line",
            "seed is not 32 bytes",
        )?);
        let public = VerifyingKey::from_text(path, &text)?;
        Self::from_parts(seed, public.as_bytes()).ok_or(keyfile::format_error(
            path,
            "the seed does not make the public key on the ml-dsa-65-public: line",
        ))
    }

    /// Writes `DIR/NAME.key` (mode 0600, created new) and `DIR/NAME.pub`.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        keyfile::write_pair(dir, name, &self.to_text(), &self.public.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Kat {
        source: String,
        #[serde(rename = "parameterSet")]
        parameter_set: String,
        tests: Vec<KatCase>,
    }

    #[derive(serde::Deserialize)]
    struct KatCase {
        #[serde(rename = "tcId")]
        tc_id: u32,
        seed: String,
        pk: String,
        sk: String,
    }

    /// FIPS 204 ACVP keyGen vectors: each official seed gives exactly the official public key
    /// and expanded secret key.
    #[test]
    fn acvp_keygen_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/ml-dsa-65-keygen-acvp.json"
        );
        let kat: Kat = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(kat.parameter_set, "ML-DSA-65");
        assert!(kat.source.contains("ACVP"));
        assert!(kat.tests.len() >= 5);
        for t in &kat.tests {
            let seed = SecretBytes::new(hex::decode(&t.seed).unwrap());
            let k = SigningKey::from_seed(seed).unwrap();
            let pk = hex::decode(&t.pk).unwrap();
            let sk = hex::decode(&t.sk).unwrap();
            assert_eq!(pk.len(), PUBLIC_KEY_BYTES);
            assert_eq!(sk.len(), EXPANDED_SECRET_KEY_BYTES);
            assert_eq!(k.verifying_key().as_bytes(), &pk[..], "tcId {} pk", t.tc_id);
            assert_eq!(
                k.expanded_secret_key().expose(),
                &sk[..],
                "tcId {} sk",
                t.tc_id
            );
            // And the key signs what the official public key verifies.
            let vk = VerifyingKey::from_bytes(&pk).unwrap();
            assert!(vk.verify(b"kat", &k.sign(b"kat")));
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::generate();
        let sig = k.sign(b"hello");
        assert_eq!(sig.len(), SIGNATURE_BYTES);
        assert!(k.verifying_key().verify(b"hello", &sig));
        assert!(!k.verifying_key().verify(b"hellp", &sig));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!k.verifying_key().verify(b"hello", &bad));
        assert!(!k.verifying_key().verify(b"hello", &sig[..sig.len() - 1]));
        let other = SigningKey::generate();
        assert!(!other.verifying_key().verify(b"hello", &sig));
        assert_ne!(other.verifying_key().id(), k.verifying_key().id());
    }

    #[test]
    fn key_files_round_trip_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate();
        let (kp, pp) = k.write_pair(dir.path(), "hub").unwrap();
        let mode = std::fs::metadata(&kp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = SigningKey::load(&kp).unwrap();
        let p2 = VerifyingKey::load(&pp).unwrap();
        assert_eq!(p2.id(), k.verifying_key().id());
        assert!(p2.verify(b"m", &k2.sign(b"m")));
        assert!(k.write_pair(dir.path(), "hub").is_err());
        // A seed whose public line belongs to another key is refused.
        let other = SigningKey::generate();
        let text = std::fs::read_to_string(&kp).unwrap();
        let swapped = text.replace(
            k.verifying_key().to_text().trim(),
            other.verifying_key().to_text().trim(),
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, swapped).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SigningKey::load(&bad).unwrap_err().to_string();
        assert!(e.contains("does not make the public key"), "{e}");
        std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            SigningKey::load(&kp),
            Err(KeyError::Permissions { .. })
        ));
        let dbg = format!("{k2:?}");
        assert!(
            dbg.starts_with("MlDsa65SigningKey(") && !dbg.contains(&hex::encode(k2.expose_seed()))
        );
    }
}
