//! The service keys behind the `/quantum/*` endpoints: an RFC 9381 VRF key, a Falcon-512 and an
//! ML-DSA-65 signing key, all held by kirqd and sealed at rest ([`keystore`]).
//!
//! Where each key's randomness comes from, exactly:
//! - **VRF secret key**: 32 bytes taken once from the single-use pool, from a provenance class
//!   listed in `quantum.keygen_provenance` (verified, non-local classes by default). At first
//!   start the pool may be empty, so a task waits for suitable bytes; until the key exists the
//!   VRF endpoints answer 503 saying so. Proving is deterministic (RFC 9381) and draws no
//!   randomness.
//! - **Falcon-512 key and signatures**: PQClean (through pqcrypto-falcon) calls its `randombytes`,
//!   which reads the operating system's RNG (getrandom(2)) for key generation and for each
//!   signature's nonce and sampler seed. kirqd does not feed pool bytes to Falcon directly; the
//!   link to verified entropy is only that kirqd, where it is set up to, seeds the kernel's RNG
//!   from its pool. The Falcon key is made at first start (it needs no pool bytes).
//! - **ML-DSA-65 key and signatures**: the key's 32-byte FIPS 204 seed is read from the OS RNG
//!   (getrandom) at first start; aws-lc draws each signature's hedging randomness from its own
//!   RNG (seeded from the OS). The same caveat as for Falcon applies.
//!
//! The one design choice a reader must know: keys are loaded or created once, at start, into
//! write-once cells ([`Keys`]); rotation (`kirqd rotate-keys`) rewrites the sealed files and takes
//! effect on the next start, so a running daemon never changes keys under a client.

pub mod keystore;
pub mod vrf;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::QuantumConfig;
use crate::crypto::falcon::{KeyId, SigningKey};
use crate::crypto::mldsa;
use crate::metrics::ConsumerMetrics;
use crate::pool::Pool;
use crate::pool::Want;
use crate::secret::SecretBytes;
use keystore::{AtRestKey, Kind};
use vrf::VrfKey;

/// File names inside `quantum.state_dir`.
pub const VRF_FILE: &str = "vrf.sealed";
pub const FALCON_FILE: &str = "falcon512.sealed";
pub const ML_DSA_FILE: &str = "ml-dsa-65.sealed";

/// Why the VRF key is not there yet (the 503 message).
#[derive(Debug, Clone)]
enum Pending {
    Disabled,
    WaitingForEntropy(String),
}

/// The daemon's quantum service keys: set once, then read by every request.
#[derive(Debug)]
pub struct Keys {
    vrf: OnceLock<VrfKey>,
    falcon: OnceLock<SigningKey>,
    ml_dsa: OnceLock<mldsa::SigningKey>,
    pending: Mutex<Pending>,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            vrf: OnceLock::new(),
            falcon: OnceLock::new(),
            ml_dsa: OnceLock::new(),
            pending: Mutex::new(Pending::Disabled),
        }
    }
}

const DISABLED: &str = "the /quantum endpoints are not configured: kirqd's config has no [quantum] \
                        section (state_dir and an at-rest key)";

impl Keys {
    /// The VRF key, or the reason it is not available (for a 503).
    pub fn vrf(&self) -> Result<&VrfKey, String> {
        if let Some(k) = self.vrf.get() {
            return Ok(k);
        }
        match &*self.pending.lock().unwrap_or_else(|e| e.into_inner()) {
            Pending::Disabled => Err(DISABLED.into()),
            Pending::WaitingForEntropy(m) => Err(m.clone()),
        }
    }

    /// The Falcon-512 service key, or the reason it is not available (for a 503).
    pub fn falcon(&self) -> Result<&SigningKey, String> {
        self.falcon.get().ok_or_else(|| DISABLED.into())
    }

    /// The ML-DSA-65 service key, or the reason it is not available (for a 503).
    pub fn ml_dsa(&self) -> Result<&mldsa::SigningKey, String> {
        self.ml_dsa.get().ok_or_else(|| DISABLED.into())
    }

    fn set_vrf(&self, k: VrfKey) {
        let _ = self.vrf.set(k);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantumError {
    #[error(transparent)]
    KeyStore(#[from] keystore::KeyStoreError),
    #[error("sealed key file {0} does not hold a valid key of its kind")]
    BadKey(PathBuf),
}

pub fn vrf_path(cfg: &QuantumConfig) -> PathBuf {
    cfg.state_dir.join(VRF_FILE)
}

pub fn falcon_path(cfg: &QuantumConfig) -> PathBuf {
    cfg.state_dir.join(FALCON_FILE)
}

/// A signature service key sealed at rest: Falcon-512 or ML-DSA-65.
trait SealedSigner: Sized {
    const KIND: Kind;
    const FILE: &'static str;
    const NAME: &'static str;
    /// A fresh key from the OS RNG.
    fn generate() -> Self;
    /// The key from a decrypted file; `None` unless its secret and public halves are a pair.
    fn from_opened(o: keystore::Opened) -> Option<Self>;
    fn public(&self) -> &[u8];
    fn secret(&self) -> &[u8];
    fn id(&self) -> KeyId;
}

impl SealedSigner for SigningKey {
    const KIND: Kind = Kind::Falcon;
    const FILE: &'static str = FALCON_FILE;
    const NAME: &'static str = "Falcon-512";
    fn generate() -> Self {
        SigningKey::generate()
    }
    fn from_opened(o: keystore::Opened) -> Option<Self> {
        SigningKey::from_parts(o.secret, &o.public)
    }
    fn public(&self) -> &[u8] {
        self.verifying_key().as_bytes()
    }
    fn secret(&self) -> &[u8] {
        self.expose_secret()
    }
    fn id(&self) -> KeyId {
        self.verifying_key().id()
    }
}

impl SealedSigner for mldsa::SigningKey {
    const KIND: Kind = Kind::MlDsa65;
    const FILE: &'static str = ML_DSA_FILE;
    const NAME: &'static str = "ML-DSA-65";
    fn generate() -> Self {
        mldsa::SigningKey::generate()
    }
    fn from_opened(o: keystore::Opened) -> Option<Self> {
        mldsa::SigningKey::from_parts(o.secret, &o.public)
    }
    fn public(&self) -> &[u8] {
        self.verifying_key().as_bytes()
    }
    fn secret(&self) -> &[u8] {
        self.expose_seed()
    }
    fn id(&self) -> KeyId {
        self.verifying_key().id()
    }
}

fn seal_signer<K: SealedSigner>(at_rest: &AtRestKey, k: &K) -> String {
    keystore::seal(at_rest, K::KIND, k.public(), k.secret())
}

/// Loads a sealed signature key, if its file exists.
fn load_signer<K: SealedSigner>(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
) -> Result<Option<K>, QuantumError> {
    let path = cfg.state_dir.join(K::FILE);
    match keystore::open(at_rest, K::KIND, &path)? {
        None => Ok(None),
        Some(o) => K::from_opened(o)
            .map(Some)
            .ok_or(QuantumError::BadKey(path)),
    }
}

/// Loads the sealed Falcon key, if its file exists.
pub fn load_falcon(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
) -> Result<Option<SigningKey>, QuantumError> {
    load_signer(cfg, at_rest)
}

/// Loads the sealed ML-DSA-65 key, if its file exists.
pub fn load_ml_dsa(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
) -> Result<Option<mldsa::SigningKey>, QuantumError> {
    load_signer(cfg, at_rest)
}

/// Loads the sealed VRF key, if its file exists.
pub fn load_vrf(cfg: &QuantumConfig, at_rest: &AtRestKey) -> Result<Option<VrfKey>, QuantumError> {
    let path = vrf_path(cfg);
    match keystore::open(at_rest, Kind::Vrf, &path)? {
        None => Ok(None),
        Some(o) => match VrfKey::from_secret(o.secret) {
            Some(k) if k.public_key()[..] == o.public[..] => Ok(Some(k)),
            _ => Err(QuantumError::BadKey(path)),
        },
    }
}

/// Loads a signature key, or makes and seals one on first start.
fn load_or_create<K: SealedSigner>(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
) -> Result<K, QuantumError> {
    if let Some(k) = load_signer::<K>(cfg, at_rest)? {
        return Ok(k);
    }
    let k = K::generate();
    let path = cfg.state_dir.join(K::FILE);
    keystore::write_new(&path, &seal_signer(at_rest, &k))?;
    tracing::info!(
        key_id = %k.id(),
        path = %path.display(),
        "generated the {} service key (OS RNG) and sealed it at rest",
        K::NAME
    );
    Ok(k)
}

/// Loads (or creates) the service keys into `keys`; returns the task that makes the VRF key
/// from pool entropy (counted under `metrics`, consumer `keys`) when it does not exist yet. Does
/// nothing without a `[quantum]` section.
pub fn start(
    cfg: Option<&QuantumConfig>,
    keys: &Arc<Keys>,
    pool: &Arc<Pool>,
    metrics: ConsumerMetrics,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(cfg) = cfg.cloned() else {
        tracing::info!("no [quantum] section: the /quantum endpoints answer 503");
        return Ok(None);
    };
    let at_rest = AtRestKey::from_config(&cfg)?;
    keystore::ensure_dir(&cfg.state_dir)?;
    let falcon = load_or_create::<SigningKey>(&cfg, &at_rest)?;
    let _ = keys.falcon.set(falcon);
    let ml_dsa = load_or_create::<mldsa::SigningKey>(&cfg, &at_rest)?;
    let _ = keys.ml_dsa.set(ml_dsa);
    if let Some(k) = load_vrf(&cfg, &at_rest)? {
        tracing::info!(public_key = %hex::encode(k.public_key()), "loaded the VRF key");
        keys.set_vrf(k);
        return Ok(None);
    }
    let classes: Vec<&str> = cfg.keygen_provenance.iter().map(|p| p.as_str()).collect();
    *keys.pending.lock().unwrap_or_else(|e| e.into_inner()) = Pending::WaitingForEntropy(format!(
        "the VRF key is not generated yet: kirqd is waiting for {} bytes of verified entropy \
             of provenance {} in its pool",
        vrf::SECRET_KEY_BYTES,
        classes.join(" or ")
    ));
    tracing::warn!(
        provenance = %classes.join(","),
        "no VRF key yet: it will be made from the first suitable pool entropy"
    );
    let task = vrf_keygen_task(keys.clone(), pool.clone(), metrics, cfg, at_rest);
    Ok(Some(tokio::spawn(task)))
}

/// Waits for suitable pool bytes, makes the VRF key from them, seals it, and publishes it.
async fn vrf_keygen_task(
    keys: Arc<Keys>,
    pool: Arc<Pool>,
    metrics: ConsumerMetrics,
    cfg: QuantumConfig,
    at_rest: AtRestKey,
) {
    loop {
        for &class in &cfg.keygen_provenance {
            let Ok(taken) = pool.take(vrf::SECRET_KEY_BYTES, Want::Only(class)) else {
                continue;
            };
            metrics.served(taken.bytes.len());
            match make_vrf_key(&cfg, &at_rest, taken.bytes) {
                Ok(k) => {
                    tracing::info!(
                        provenance = class.as_str(),
                        public_key = %hex::encode(k.public_key()),
                        "generated the VRF key from verified pool entropy and sealed it at rest"
                    );
                    keys.set_vrf(k);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not store the new VRF key; will retry");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
        tokio::select! {
            _ = pool.arrived() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn make_vrf_key(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
    sk: SecretBytes,
) -> Result<VrfKey, QuantumError> {
    let path = vrf_path(cfg);
    let k = VrfKey::from_secret(sk).ok_or_else(|| QuantumError::BadKey(path.clone()))?;
    let text = keystore::seal(at_rest, Kind::Vrf, &k.public_key(), k.secret().expose());
    match keystore::write_new(&path, &text) {
        Ok(()) => Ok(k),
        // Another writer got there first: use its key, never replace it.
        Err(keystore::KeyStoreError::Exists { .. }) => {
            load_vrf(cfg, at_rest)?.ok_or(QuantumError::BadKey(path))
        }
        Err(e) => Err(e.into()),
    }
}

/// What `kirqd rotate-keys` did, for its output.
#[derive(Debug, Default)]
pub struct Rotated {
    pub falcon: Option<(String, Option<PathBuf>)>,
    pub ml_dsa: Option<(String, Option<PathBuf>)>,
    pub vrf_retired: Option<PathBuf>,
}

/// Rotates the signature keys, Falcon-512 and ML-DSA-65 (a new key sealed in place, the old one
/// kept as `.prev`), when `falcon` is set, and, with
/// `vrf`, retires the VRF key (moved to `.prev`) so the next start makes a new one from pool
/// entropy. Each current file must decrypt under the at-rest key first: a wrong at-rest key
/// changes nothing.
pub fn rotate(cfg: &QuantumConfig, falcon: bool, vrf: bool) -> Result<Rotated, QuantumError> {
    let at_rest = AtRestKey::from_config(cfg)?;
    keystore::ensure_dir(&cfg.state_dir)?;
    // Check both before changing either.
    if falcon {
        load_falcon(cfg, &at_rest)?;
        load_ml_dsa(cfg, &at_rest)?;
    }
    if vrf {
        load_vrf(cfg, &at_rest)?;
    }
    let mut out = Rotated::default();
    if falcon {
        out.falcon = Some(replace_signer::<SigningKey>(cfg, &at_rest)?);
        out.ml_dsa = Some(replace_signer::<mldsa::SigningKey>(cfg, &at_rest)?);
    }
    if vrf {
        let path = vrf_path(cfg);
        if path.exists() {
            let prev = retire(&path)?;
            out.vrf_retired = Some(prev);
        }
    }
    Ok(out)
}

/// Seals a new key of `K` in place; returns its id and where the old file went.
fn replace_signer<K: SealedSigner>(
    cfg: &QuantumConfig,
    at_rest: &AtRestKey,
) -> Result<(String, Option<PathBuf>), QuantumError> {
    let k = K::generate();
    let prev = keystore::replace(&cfg.state_dir.join(K::FILE), &seal_signer(at_rest, &k))?;
    Ok((k.id().to_string(), prev))
}

fn retire(path: &Path) -> Result<PathBuf, QuantumError> {
    let prev = path.with_extension("sealed.prev");
    std::fs::rename(path, &prev).map_err(|source| keystore::KeyStoreError::Write {
        path: prev.clone(),
        source,
    })?;
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> QuantumConfig {
        let key = dir.join("at-rest.key");
        if !key.exists() {
            std::fs::write(&key, [5u8; 32]).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut c = QuantumConfig::new(dir.join("state"));
        c.at_rest_key_file = Some(key);
        c
    }

    #[test]
    fn signature_keys_persist_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let at_rest = AtRestKey::from_config(&c).unwrap();
        let k1 = load_or_create::<SigningKey>(&c, &at_rest).unwrap();
        let k2 = load_or_create::<SigningKey>(&c, &at_rest).unwrap();
        let m1 = load_or_create::<mldsa::SigningKey>(&c, &at_rest).unwrap();
        let m2 = load_or_create::<mldsa::SigningKey>(&c, &at_rest).unwrap();
        assert_eq!(m1.verifying_key().as_bytes(), m2.verifying_key().as_bytes());
        assert_eq!(k1.verifying_key().as_bytes(), k2.verifying_key().as_bytes());
        let r = rotate(&c, true, false).unwrap();
        let (id, prev) = r.falcon.unwrap();
        assert!(prev.unwrap().exists());
        let k3 = load_falcon(&c, &at_rest).unwrap().unwrap();
        assert_eq!(k3.verifying_key().id().to_string(), id);
        assert_ne!(k3.verifying_key().as_bytes(), k1.verifying_key().as_bytes());
        let (id, prev) = r.ml_dsa.unwrap();
        assert!(prev.unwrap().exists());
        let m3 = load_ml_dsa(&c, &at_rest).unwrap().unwrap();
        assert_eq!(m3.verifying_key().id().to_string(), id);
        assert_ne!(m3.verifying_key().as_bytes(), m1.verifying_key().as_bytes());
        // A sealed ML-DSA file is not a Falcon key (the kind is bound into the AAD).
        std::fs::copy(c.state_dir.join(ML_DSA_FILE), falcon_path(&c)).unwrap();
        assert!(load_falcon(&c, &at_rest).is_err());
    }

    #[test]
    fn vrf_key_sealed_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let at_rest = AtRestKey::from_config(&c).unwrap();
        let k = make_vrf_key(&c, &at_rest, SecretBytes::new(vec![9; 32])).unwrap();
        let again = load_vrf(&c, &at_rest).unwrap().unwrap();
        assert_eq!(k.public_key(), again.public_key());
        // A second generation does not replace the first key.
        let other = make_vrf_key(&c, &at_rest, SecretBytes::new(vec![8; 32])).unwrap();
        assert_eq!(other.public_key(), k.public_key());
        // Retiring moves it aside; a wrong at-rest key changes nothing.
        let before = std::fs::read(vrf_path(&c)).unwrap();
        let mut wrong = c.clone();
        let wk = dir.path().join("wrong.key");
        std::fs::write(&wk, [6u8; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wk, std::fs::Permissions::from_mode(0o600)).unwrap();
        wrong.at_rest_key_file = Some(wk);
        assert!(rotate(&wrong, true, true).is_err());
        assert_eq!(std::fs::read(vrf_path(&c)).unwrap(), before);
        let r = rotate(&c, false, true).unwrap();
        assert!(r.vrf_retired.unwrap().exists());
        assert!(load_vrf(&c, &at_rest).unwrap().is_none());
    }
}
