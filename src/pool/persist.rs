//! The pool at rest: on a clean stop the unserved bytes are sealed to a file; at start the file is
//! read and destroyed before a single byte is served.
//!
//! File layout (all integers big-endian):
//!
//! ```text
//! magic "KIRQPOOL" | version u8 = 1 | generation u64 | host [32] | key_check [8] | nonce [12]
//! AES-256-GCM(key, nonce, aad = everything before, plaintext) ‖ tag
//! plaintext: for each of hybrid, decentralized, qrng, hsm, local, fallback: u32 len ‖ bytes
//! ```
//!
//! `host` is a tagged SHA3-256 of `/etc/machine-id`, so a file copied to another machine is
//! refused there (two machines must never serve the same bytes). `generation` must equal the
//! counter kept beside the file (`<file>.generation`); the counter is advanced and synced before
//! the sealed file is unlinked and before anything is served, so a restored older copy of the file
//! is refused. `key_check` (a tagged hash of the key) tells a wrong key, which refuses to start and
//! leaves the file untouched, from a corrupted file, which is moved aside and never served.
//!
//! A crash can lose buffered entropy (nothing is written until a clean stop) but cannot repeat it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::crypto::tagged_hash;
use crate::secret::SecretBytes;

const MAGIC: &[u8; 8] = b"KIRQPOOL";
const VERSION: u8 = 1;
const HEADER: usize = 8 + 1 + 8 + 32 + 8 + 12;
/// Six segments: five provenance classes and the fallback bytes.
pub const SEGMENTS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read the pool key {path}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pool key {path} must hold 32 bytes (raw) or 64 hex characters")]
    KeyFormat { path: PathBuf },
    #[error("pool key {path} is readable by group or others; chmod 600 it")]
    KeyPermissions { path: PathBuf },
    #[error("{path} was sealed with a different key; refusing to start (the file is left as is)")]
    WrongKey { path: PathBuf },
    #[error("{path} was sealed on another machine; refusing to start (the file is left as is)")]
    WrongHost { path: PathBuf },
    #[error(
        "{path} has generation {found} but the counter says {expected}: an old copy; refusing it"
    )]
    StaleGeneration {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path} is corrupted or truncated ({what}); moved aside to {moved}, nothing served")]
    Corrupted {
        path: PathBuf,
        what: &'static str,
        moved: PathBuf,
    },
    #[error("pool state I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PersistError {
    /// True for errors after which the daemon may start with an empty pool.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, Self::Corrupted { .. })
    }
}

/// The sealing key (32 bytes, zeroed on drop).
pub struct PoolKey(SecretBytes);

impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolKey(..)")
    }
}

impl PoolKey {
    /// Reads a key file: 32 raw bytes or 64 hex characters (whitespace ignored), mode 0600.
    pub fn load(path: &Path) -> Result<Self, PersistError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| PersistError::KeyRead {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        // systemd credentials are 0400 root; anything group/other-readable is refused.
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(PersistError::KeyPermissions {
                path: path.to_owned(),
            });
        }
        let raw = SecretBytes::new(std::fs::read(path).map_err(read_err)?);
        if raw.len() == 32 {
            return Ok(Self(raw));
        }
        let text: Vec<u8> = raw
            .expose()
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let text = SecretBytes::new(text);
        let mut key = SecretBytes::zeroed(32);
        if text.len() != 64 || hex::decode_to_slice(text.expose(), key.expose_mut()).is_err() {
            return Err(PersistError::KeyFormat {
                path: path.to_owned(),
            });
        }
        Ok(Self(key))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::new(bytes.to_vec()))
    }

    fn check(&self) -> [u8; 8] {
        let h = tagged_hash("kirq/pool-key-check/v1", &[self.0.expose()]);
        let mut c = [0; 8];
        c.copy_from_slice(&h[..8]);
        c
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.expose()).expect("32-byte key")
    }
}

/// This machine's identity for binding: a tagged hash of /etc/machine-id (or the hostname).
pub fn host_id() -> [u8; 32] {
    let id = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    tagged_hash("kirq/pool-host/v1", &[id.trim().as_bytes()])
}

/// Bytes read back from an authenticated sealed file. Only [`SealedFile::take`] makes one, and
/// [`super::Pool::restore`] requires it: the second way into the pool, beside verified packets.
#[derive(Debug)]
pub struct Unsealed(pub(super) [SecretBytes; SEGMENTS]);

impl Unsealed {
    pub fn len(&self) -> usize {
        self.0.iter().map(SecretBytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a sealed pool lives, with its generation counter beside it.
#[derive(Debug, Clone)]
pub struct SealedFile {
    pub path: PathBuf,
    pub host: [u8; 32],
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(path: &Path) -> Result<(), PersistError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        // A partial file would keep a full disk full (found by tests/faults_root.rs, disk full
        // when sealing); nothing reads it, so it goes.
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path)
}

impl SealedFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            host: host_id(),
        }
    }

    fn counter_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".generation");
        PathBuf::from(p)
    }

    fn read_counter(&self) -> Result<u64, PersistError> {
        let p = self.counter_path();
        match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().parse().map_err(|_| PersistError::Corrupted {
                path: p.clone(),
                what: "generation counter is not a number",
                moved: p.clone(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Seals `segments` (zeroing nothing: the caller drops them) under the next generation.
    pub fn save(
        &self,
        key: &PoolKey,
        segments: &[SecretBytes; SEGMENTS],
    ) -> Result<usize, PersistError> {
        let generation = self.read_counter()?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS RNG is available");
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&generation.to_be_bytes());
        header.extend_from_slice(&self.host);
        header.extend_from_slice(&key.check());
        header.extend_from_slice(&nonce);
        let total: usize = segments.iter().map(SecretBytes::len).sum();
        let mut plain = SecretBytes::new(Vec::with_capacity(total + 4 * SEGMENTS));
        for s in segments {
            plain.append(&(s.len() as u32).to_be_bytes());
            plain.append(s.expose());
        }
        let sealed = key
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.expose(),
                    aad: &header,
                },
            )
            .expect("AES-GCM encryption of a bounded buffer cannot fail");
        header.extend_from_slice(&sealed);
        write_atomic(&self.path, &header)?;
        Ok(total)
    }

    /// Reads and destroys the sealed pool. `Ok(None)` when there is none.
    ///
    /// On success the generation counter has been advanced and the file unlinked (both synced)
    /// before the bytes are returned.
    pub fn take(&self, key: &PoolKey) -> Result<Option<Unsealed>, PersistError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let corrupted = |what| self.move_aside(what);
        if data.len() < HEADER + 16 || &data[..8] != MAGIC || data[8] != VERSION {
            return Err(corrupted("bad header"));
        }
        let generation = u64::from_be_bytes(data[9..17].try_into().expect("8 bytes"));
        if data[17..49] != self.host {
            return Err(PersistError::WrongHost {
                path: self.path.clone(),
            });
        }
        if data[49..57] != key.check() {
            return Err(PersistError::WrongKey {
                path: self.path.clone(),
            });
        }
        let expected = self.read_counter()?;
        if generation != expected {
            return Err(PersistError::StaleGeneration {
                path: self.path.clone(),
                found: generation,
                expected,
            });
        }
        let nonce: [u8; 12] = data[57..69].try_into().expect("12 bytes");
        let nonce = &Nonce::from(nonce);
        let plain = match key.cipher().decrypt(
            nonce,
            Payload {
                msg: &data[HEADER..],
                aad: &data[..HEADER],
            },
        ) {
            Ok(p) => SecretBytes::new(p),
            Err(_) => return Err(corrupted("authentication failed")),
        };
        let mut segments: [SecretBytes; SEGMENTS] = Default::default();
        let mut rest = plain.expose();
        for seg in &mut segments {
            if rest.len() < 4 {
                return Err(corrupted("segment table truncated"));
            }
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() - 4 < len {
                return Err(corrupted("segment truncated"));
            }
            *seg = SecretBytes::new(rest[4..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        if !rest.is_empty() {
            return Err(corrupted("trailing bytes"));
        }
        // Advance the counter first: from now on this file (or any copy of it) is stale.
        write_atomic(
            &self.counter_path(),
            format!("{}\n", generation + 1).as_bytes(),
        )?;
        std::fs::remove_file(&self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.path)?;
        Ok(Some(Unsealed(segments)))
    }

    fn move_aside(&self, what: &'static str) -> PersistError {
        let mut moved = self.path.clone().into_os_string();
        moved.push(".corrupt");
        let moved = PathBuf::from(moved);
        if let Err(e) = std::fs::rename(&self.path, &moved) {
            return io_err(&self.path)(e);
        }
        let _ = sync_dir(&self.path);
        PersistError::Corrupted {
            path: self.path.clone(),
            what,
            moved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(n: usize) -> [SecretBytes; SEGMENTS] {
        std::array::from_fn(|i| {
            let mut b = SecretBytes::zeroed(n * i);
            getrandom::fill(b.expose_mut()).unwrap();
            b
        })
    }

    #[test]
    fn round_trip_destroys_the_file_and_refuses_old_copies() {
        let dir = tempfile::tempdir().unwrap();
        let f = SealedFile::new(dir.path().join("pool.sealed"));
        let key = PoolKey::from_bytes([7; 32]);
        let s = segs(100);
        assert_eq!(f.save(&key, &s).unwrap(), 1500);
        let copy = std::fs::read(&f.path).unwrap();
        let back = f.take(&key).unwrap().unwrap();
        assert_eq!(back.len(), 1500);
        for (a, b) in back.0.iter().zip(s.iter()) {
            assert_eq!(a.expose(), b.expose());
        }
        assert!(!f.path.exists(), "the sealed file is destroyed once read");
        assert!(f.take(&key).unwrap().is_none());
        // Putting the old file back is refused: its generation is behind the counter.
        std::fs::write(&f.path, &copy).unwrap();
        assert!(matches!(
            f.take(&key),
            Err(PersistError::StaleGeneration {
                found: 0,
                expected: 1,
                ..
            })
        ));
    }

    #[test]
    fn wrong_key_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let f = SealedFile::new(dir.path().join("pool.sealed"));
        f.save(&PoolKey::from_bytes([1; 32]), &segs(10)).unwrap();
        let before = std::fs::read(&f.path).unwrap();
        let e = f.take(&PoolKey::from_bytes([2; 32])).unwrap_err();
        assert!(matches!(e, PersistError::WrongKey { .. }));
        assert!(!e.is_recoverable());
        assert!(e.to_string().contains("different key"));
        assert_eq!(std::fs::read(&f.path).unwrap(), before);
    }

    #[test]
    fn another_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SealedFile::new(dir.path().join("pool.sealed"));
        let key = PoolKey::from_bytes([1; 32]);
        f.save(&key, &segs(10)).unwrap();
        f.host = [9; 32];
        assert!(matches!(f.take(&key), Err(PersistError::WrongHost { .. })));
        assert!(f.path.exists());
    }

    #[test]
    fn corrupted_and_truncated_files_are_moved_aside() {
        for damage in ["flip", "truncate"] {
            let dir = tempfile::tempdir().unwrap();
            let f = SealedFile::new(dir.path().join("pool.sealed"));
            let key = PoolKey::from_bytes([3; 32]);
            f.save(&key, &segs(50)).unwrap();
            let mut data = std::fs::read(&f.path).unwrap();
            if damage == "flip" {
                let i = data.len() - 40;
                data[i] ^= 1;
            } else {
                data.truncate(data.len() - 7);
            }
            std::fs::write(&f.path, &data).unwrap();
            let e = f.take(&key).unwrap_err();
            assert!(matches!(e, PersistError::Corrupted { .. }), "{damage}: {e}");
            assert!(e.is_recoverable());
            assert!(!f.path.exists(), "{damage}: never read again");
            assert!(dir.path().join("pool.sealed.corrupt").exists());
        }
    }

    #[test]
    fn key_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(PoolKey::load(&p).unwrap().0.expose(), &[0xab; 32]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PoolKey::load(&p),
            Err(PersistError::KeyPermissions { .. })
        ));
        std::fs::write(&p, "short").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            PoolKey::load(&p),
            Err(PersistError::KeyFormat { .. })
        ));
        assert_eq!(format!("{:?}", PoolKey::from_bytes([1; 32])), "PoolKey(..)");
    }
}
