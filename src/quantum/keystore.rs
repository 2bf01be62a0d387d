//! Sealed key files: secret keys encrypted at rest with AES-256-GCM.
//!
//! A sealed file is text, one record per line, so an operator can see what it holds without
//! being able to read the secret:
//!
//! ```text
//! # Kirq sealed key: vrf (AES-256-GCM under the at-rest key). Do not edit.
//! kirq-sealed-v1 vrf <public key, base64> <nonce ‖ ciphertext ‖ tag, base64>
//! ```
//!
//! The associated data binds the format version, the key kind and the public key, so a VRF blob
//! cannot be passed off as a Falcon key and the clear public key cannot be swapped. The file is
//! written to a temporary name (mode 0600), synced, and then linked into place: a first
//! generation never replaces an existing file ([`write_new`]), and a rotation keeps the old file
//! as `NAME.prev` ([`replace`]). A file that does not decrypt is an error naming the likely cause
//! (the wrong at-rest key) and is never touched.
//!
//! The at-rest key is 32 bytes read from a file (raw, or 64 hex digits) or, under systemd, from
//! the credential `$CREDENTIALS_DIRECTORY/kirq-at-rest-key` (`LoadCredential=`).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::config::QuantumConfig;
use crate::secret::SecretBytes;

const TAG: &str = "kirq-sealed-v1";
const NONCE_BYTES: usize = 12;
/// Largest sealed file read (a Falcon key is about 3 KiB of base64).
const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(
        "no at-rest key: set quantum.at_rest_key_file, or pass the systemd credential `{0}` \
         (LoadCredential=) so $CREDENTIALS_DIRECTORY/{0} exists"
    )]
    NoAtRestKey(String),
    #[error("at-rest key file {path} must hold exactly 32 bytes (raw) or 64 hex digits")]
    AtRestKeyFormat { path: PathBuf },
    #[error("{path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sealed key file {path}: {what}")]
    Format { path: PathBuf, what: &'static str },
    #[error(
        "cannot decrypt sealed key file {path}: wrong at-rest key, or the file was altered; \
         it was left untouched (restore the right key, or move the file away to make a new key)"
    )]
    Decrypt { path: PathBuf },
    #[error("sealed key file {path} already exists; refusing to replace it")]
    Exists { path: PathBuf },
}

/// The 32-byte AES-256-GCM key that seals the service keys. Never printed.
pub struct AtRestKey(SecretBytes);

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRestKey(..)")
    }
}

impl AtRestKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::new(bytes.to_vec()))
    }

    /// The key named by the config: `at_rest_key_file`, else the systemd credential in
    /// `$CREDENTIALS_DIRECTORY`.
    pub fn from_config(cfg: &QuantumConfig) -> Result<Self, KeyStoreError> {
        Self::from_config_in(cfg, std::env::var_os("CREDENTIALS_DIRECTORY").as_deref())
    }

    /// [`AtRestKey::from_config`] with the credentials directory given.
    pub fn from_config_in(
        cfg: &QuantumConfig,
        credentials_dir: Option<&std::ffi::OsStr>,
    ) -> Result<Self, KeyStoreError> {
        let path = match (&cfg.at_rest_key_file, credentials_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(dir)) => Path::new(dir).join(&cfg.at_rest_credential),
            (None, None) => {
                return Err(KeyStoreError::NoAtRestKey(cfg.at_rest_credential.clone()));
            }
        };
        Self::load(&path)
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, KeyStoreError> {
        let raw = read_private(path, 1024)?;
        if raw.len() == 32 {
            return Ok(Self(SecretBytes::new(raw.to_vec())));
        }
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        let mut out = SecretBytes::zeroed(32);
        match hex::decode_to_slice(text, out.expose_mut()) {
            Ok(()) => Ok(Self(out)),
            Err(_) => Err(KeyStoreError::AtRestKeyFormat {
                path: path.to_owned(),
            }),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.expose()).expect("the key is 32 bytes")
    }
}

/// A key kind: names the file's record and is bound into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vrf,
    Falcon,
    MlDsa65,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vrf => "vrf",
            Self::Falcon => "falcon512",
            Self::MlDsa65 => "ml-dsa-65",
        }
    }
}

/// A decrypted sealed file: the public key in clear and the secret.
#[derive(Debug)]
pub struct Opened {
    pub public: Vec<u8>,
    pub secret: SecretBytes,
}

fn aad(kind: Kind, public: &[u8]) -> Vec<u8> {
    [
        TAG.as_bytes(),
        b"\0",
        kind.as_str().as_bytes(),
        b"\0",
        public,
    ]
    .concat()
}

/// The sealed file's text for `secret` under `key`, with a fresh random nonce.
pub fn seal(key: &AtRestKey, kind: Kind, public: &[u8], secret: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_BYTES];
    // A 96-bit random nonce per write; a key is sealed a handful of times in its life.
    getrandom::fill(&mut nonce).expect("the OS RNG is available");
    let ct = key
        .cipher()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: &aad(kind, public),
            },
        )
        .expect("AES-GCM encryption of a small buffer cannot fail");
    format!(
        "# Kirq sealed key: {kind} (AES-256-GCM under the at-rest key). Do not edit.\n\
         {TAG} {kind} {} {}\n",
        B64.encode(public),
        B64.encode([&nonce[..], &ct].concat()),
        kind = kind.as_str(),
    )
}

/// Reads and decrypts a sealed file of `kind`. `Ok(None)` when the file does not exist.
pub fn open(key: &AtRestKey, kind: Kind, path: &Path) -> Result<Option<Opened>, KeyStoreError> {
    if !path.try_exists().map_err(|source| KeyStoreError::Read {
        path: path.to_owned(),
        source,
    })? {
        return Ok(None);
    }
    let raw = read_private(path, MAX_FILE_BYTES)?;
    let fmt_err = |what| KeyStoreError::Format {
        path: path.to_owned(),
        what,
    };
    let text = std::str::from_utf8(&raw).map_err(|_| fmt_err("not UTF-8 text"))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(TAG))
        .ok_or(fmt_err("no kirq-sealed-v1 line"))?;
    let parts: Vec<&str> = line.split_ascii_whitespace().collect();
    let [_, k, public, blob] = parts[..] else {
        return Err(fmt_err("the kirq-sealed-v1 line needs 4 fields"));
    };
    if k != kind.as_str() {
        return Err(fmt_err("holds a key of another kind"));
    }
    let public = B64
        .decode(public)
        .map_err(|_| fmt_err("public key is not base64"))?;
    let blob = B64
        .decode(blob)
        .map_err(|_| fmt_err("sealed data is not base64"))?;
    if blob.len() < NONCE_BYTES + 16 {
        return Err(fmt_err("sealed data is too short"));
    }
    let (nonce, ct) = blob.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at NONCE_BYTES");
    let secret = key
        .cipher()
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: &aad(kind, &public),
            },
        )
        .map_err(|_| KeyStoreError::Decrypt {
            path: path.to_owned(),
        })?;
    Ok(Some(Opened {
        public,
        secret: SecretBytes::new(secret),
    }))
}

/// Reads a file that must not be readable by group or others, at most `max` bytes.
fn read_private(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    let read_err = |source| KeyStoreError::Read {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mode = f.metadata().map_err(read_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut buf = Zeroizing::new(Vec::new());
    f.take(max + 1).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 > max {
        return Err(KeyStoreError::Format {
            path: path.to_owned(),
            what: "file is too large",
        });
    }
    Ok(buf)
}

/// Creates `dir` (mode 0700) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), KeyStoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyStoreError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `text` to a fresh temporary file beside `path` (mode 0600) and syncs it.
fn write_temp(path: &Path, text: &str) -> Result<PathBuf, KeyStoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("the OS RNG is available");
    let name = path
        .file_name()
        .map_or("key".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let write_err = |source| KeyStoreError::Write {
        path: tmp.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    Ok(tmp)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Writes a new sealed file at `path`; fails with [`KeyStoreError::Exists`] if one is there.
pub fn write_new(path: &Path, text: &str) -> Result<(), KeyStoreError> {
    let tmp = write_temp(path, text)?;
    // link(2) fails if `path` exists: an existing key is never replaced by a first generation.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyStoreError::Exists {
            path: path.to_owned(),
        }),
        Err(source) => Err(KeyStoreError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the sealed file at `path`, keeping the previous one as `path.prev`.
pub fn replace(path: &Path, text: &str) -> Result<Option<PathBuf>, KeyStoreError> {
    let tmp = write_temp(path, text)?;
    let prev = path.with_extension(match path.extension() {
        Some(e) => format!("{}.prev", e.to_string_lossy()),
        None => "prev".into(),
    });
    let had_old = path.exists();
    if had_old {
        // hard_link keeps `path` in place until the rename below swaps in the new file.
        let _ = std::fs::remove_file(&prev);
        std::fs::hard_link(path, &prev).map_err(|source| KeyStoreError::Write {
            path: prev.clone(),
            source,
        })?;
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        KeyStoreError::Write {
            path: path.to_owned(),
            source,
        }
    })?;
    sync_dir(path);
    Ok(had_old.then_some(prev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> AtRestKey {
        AtRestKey::from_bytes([b; 32])
    }

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vrf.sealed");
        write_new(&path, &seal(&key(1), Kind::Vrf, b"pub", b"secret!")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let o = open(&key(1), Kind::Vrf, &path).unwrap().unwrap();
        assert_eq!(o.public, b"pub");
        assert_eq!(o.secret.expose(), b"secret!");
        let before = std::fs::read(&path).unwrap();
        let err = open(&key(2), Kind::Vrf, &path).unwrap_err();
        assert!(matches!(err, KeyStoreError::Decrypt { .. }));
        assert!(err.to_string().contains("wrong at-rest key"));
        assert_eq!(std::fs::read(&path).unwrap(), before, "file untouched");
        // Another kind is refused, and so is a file that already exists.
        assert!(open(&key(1), Kind::Falcon, &path).is_err());
        assert!(matches!(
            write_new(&path, "x"),
            Err(KeyStoreError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            open(&key(1), Kind::Vrf, &dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn swapped_public_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let text = seal(&key(1), Kind::Vrf, b"pub", b"s");
        let forged = text.replace(&B64.encode(b"pub"), &B64.encode(b"bup"));
        write_new(&path, &forged).unwrap();
        assert!(matches!(
            open(&key(1), Kind::Vrf, &path),
            Err(KeyStoreError::Decrypt { .. })
        ));
    }

    #[test]
    fn replace_keeps_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("falcon.sealed");
        write_new(&path, &seal(&key(1), Kind::Falcon, b"a", b"1")).unwrap();
        let prev = replace(&path, &seal(&key(1), Kind::Falcon, b"b", b"2"))
            .unwrap()
            .unwrap();
        assert_eq!(
            open(&key(1), Kind::Falcon, &prev).unwrap().unwrap().public,
            b"a"
        );
        assert_eq!(
            open(&key(1), Kind::Falcon, &path).unwrap().unwrap().public,
            b"b"
        );
    }

    #[test]
    fn at_rest_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let write = |data: &[u8], mode| {
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&[7; 32], 0o600);
        AtRestKey::load(&p).unwrap();
        write(format!("{}\n", "ab".repeat(32)).as_bytes(), 0o400);
        AtRestKey::load(&p).unwrap();
        write(b"short", 0o600);
        assert!(matches!(
            AtRestKey::load(&p),
            Err(KeyStoreError::AtRestKeyFormat { .. })
        ));
        write(&[7; 32], 0o644);
        assert!(matches!(
            AtRestKey::load(&p),
            Err(KeyStoreError::Permissions { .. })
        ));
        assert_eq!(format!("{:?}", key(9)), "AtRestKey(..)");
    }

    #[test]
    fn at_rest_key_from_a_systemd_credential() {
        let creds = tempfile::tempdir().unwrap();
        let mut cfg = QuantumConfig::new(creds.path().join("state"));
        let none = AtRestKey::from_config_in(&cfg, None).unwrap_err();
        assert!(none.to_string().contains("LoadCredential="), "{none}");
        let p = creds.path().join("kirq-at-rest-key");
        std::fs::write(&p, [3u8; 32]).unwrap();
        // systemd makes credentials 0400 (owner read-only).
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        let k = AtRestKey::from_config_in(&cfg, Some(creds.path().as_os_str())).unwrap();
        assert_eq!(k.0.expose(), &[3u8; 32]);
        // An explicit key file wins over the credential.
        let f = creds.path().join("file.key");
        std::fs::write(&f, [4u8; 32]).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        cfg.at_rest_key_file = Some(f);
        let k = AtRestKey::from_config_in(&cfg, Some(creds.path().as_os_str())).unwrap();
        assert_eq!(k.0.expose(), &[4u8; 32]);
    }
}
