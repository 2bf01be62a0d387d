//! Falcon-512 (round 3, PQClean through pqcrypto-falcon) signing and verification, and the key
//! file formats.
//!
//! Keys are stored as text so an operator can inspect and copy them:
//!
//! ```text
//! # public key file (hub.pub)           # secret key file (hub.key, mode 0600)
//! falcon512-public:<base64, 897 bytes>  falcon512-secret:<base64, 1281 bytes>
//!                                       falcon512-public:<base64, 897 bytes>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. The raw bytes are PQClean's formats, so the
//! keys and signatures interoperate with liboqs, PQClean and BouncyCastle's round-3 Falcon-512.
//! A key is named on the wire by its [`KeyId`]: the first 8 bytes of a tagged SHA3-256 of the
//! public key.

use std::fmt;
use std::path::{Path, PathBuf};

use pqcrypto_falcon::falcon512;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};

use super::keyfile;
use crate::secret::SecretBytes;

pub const PUBLIC_KEY_BYTES: usize = 897;
pub const SECRET_KEY_BYTES: usize = 1281;
/// The largest Falcon-512 signature PQClean produces (signatures vary in length).
pub const MAX_SIGNATURE_BYTES: usize = 752;

const PUBLIC_TAG: &str = "falcon512-public:";
const SECRET_TAG: &str = "falcon512-secret:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {what}")]
    Format { path: PathBuf, what: &'static str },
    #[error("secret key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
}

/// An 8-byte key identifier carried in each packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", hex::encode(self.0))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A Falcon-512 public key.
#[derive(Clone)]
pub struct VerifyingKey {
    pk: falcon512::PublicKey,
    id: KeyId,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let pk = falcon512::PublicKey::from_bytes(bytes).ok()?;
        let digest = super::tagged_hash("kirq/key-id/v1", &[bytes]);
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        Some(Self { pk, id: KeyId(id) })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.pk.as_bytes()
    }

    /// True when `sig` is a valid signature of `msg` under this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match falcon512::DetachedSignature::from_bytes(sig) {
            Ok(sig) => falcon512::verify_detached_signature(&sig, msg, &self.pk).is_ok(),
            Err(_) => false,
        }
    }

    /// The public key file's text.
    pub fn to_text(&self) -> String {
        keyfile::line(PUBLIC_TAG, self.as_bytes())
    }

    /// Reads a public key file (or the public line of a secret key file).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_text(path, &keyfile::read_text(path)?)
    }

    /// Parses a key file's text (`path` only names it in errors).
    pub(crate) fn from_text(path: &Path, text: &str) -> Result<Self, KeyError> {
        let bytes = keyfile::decode_line(
            path,
            text,
            PUBLIC_TAG,
            PUBLIC_KEY_BYTES,
            "no falcon512-public: line",
            "public key is not 897 bytes",
        )?;
        Self::from_bytes(&bytes).ok_or(keyfile::format_error(path, "not a Falcon-512 public key"))
    }
}

/// A Falcon-512 secret key with its public key. Zeroed on drop; never printed.
pub struct SigningKey {
    sk: SecretBytes,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.id)
    }
}

impl SigningKey {
    /// A fresh key pair from the operating system's RNG (PQClean's `randombytes`).
    pub fn generate() -> Self {
        let (pk, sk) = falcon512::keypair();
        let sk = SecretBytes::new(sk.as_bytes().to_vec());
        let public = VerifyingKey::from_bytes(pk.as_bytes()).expect("PQClean made this key");
        Self { sk, public }
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The key from PQClean's secret and public key bytes; `None` unless they are a pair.
    pub fn from_parts(sk: SecretBytes, pk: &[u8]) -> Option<Self> {
        if sk.len() != SECRET_KEY_BYTES {
            return None;
        }
        let key = Self {
            sk,
            public: VerifyingKey::from_bytes(pk)?,
        };
        let check = key.sign(b"kirq key check");
        key.public.verify(b"kirq key check", &check).then_some(key)
    }

    /// The secret key's bytes (PQClean format), for sealing it at rest.
    pub fn expose_secret(&self) -> &[u8] {
        self.sk.expose()
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        // The pqcrypto SecretKey is a Copy array: this transient copy is not zeroed by us.
        let sk =
            falcon512::SecretKey::from_bytes(self.sk.expose()).expect("length checked at load");
        falcon512::detached_sign(msg, &sk).as_bytes().to_vec()
    }

    fn to_text(&self) -> zeroize::Zeroizing<String> {
        keyfile::secret_text(
            "Kirq hub signing key (Falcon-512, round 3). Keep it secret.",
            SECRET_TAG,
            self.sk.expose(),
            &self.public.to_text(),
        )
    }

    /// Reads a secret key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = keyfile::read_secret_text(path)?;
        let sk = SecretBytes::new(keyfile::decode_line(
            path,
            &text,
            SECRET_TAG,
            SECRET_KEY_BYTES,
            "no falcon512-secret: line",
            "secret key is not 1281 bytes",
        )?);
        let public = VerifyingKey::from_text(path, &text)?;
        let key = Self { sk, public };
        // A secret key that does not match its public line would sign packets nobody accepts.
        if !key
            .public
            .verify(b"kirq key check", &key.sign(b"kirq key check"))
        {
            return Err(keyfile::format_error(
                path,
                "secret and public keys do not match",
            ));
        }
        Ok(key)
    }

    /// Writes `DIR/NAME.key` (mode 0600, created new) and `DIR/NAME.pub`.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        keyfile::write_pair(dir, name, &self.to_text(), &self.public.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::generate();
        let sig = k.sign(b"hello");
        assert!(sig.len() <= MAX_SIGNATURE_BYTES);
        assert!(k.verifying_key().verify(b"hello", &sig));
        assert!(!k.verifying_key().verify(b"hellp", &sig));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!k.verifying_key().verify(b"hello", &bad));
        assert!(!k.verifying_key().verify(b"hello", &sig[..sig.len() - 1]));
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
        // Refuses to overwrite.
        assert!(k.write_pair(dir.path(), "hub").is_err());
        // Refuses a world-readable secret key.
        std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SigningKey::load(&kp),
            Err(KeyError::Permissions { .. })
        ));
        // Debug never shows key bytes.
        assert!(format!("{k2:?}").starts_with("SigningKey("));
    }
}
