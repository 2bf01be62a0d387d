//! The `pkcs11` source: an HSM's RNG through its PKCS#11 module (C_GenerateRandom), which is how
//! the Crypto4A HSM is reached.
//!
//! The token is found by label, never by slot number (slots get renumbered). One module is loaded
//! and initialised once per process and never finalised, since C_Finalize would pull it from under
//! any other source using the same module. A session is opened and logged in on first use and
//! reopened after any error (token removed, HSM restarted). Calls block, so they run on tokio's
//! blocking pool, one at a time per source. PKCS#11 keeps login state per process and token: once
//! one session is logged in, another source's C_Login on that token answers "already logged in"
//! whatever its PIN, which is accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::{FetchFuture, Meta, Source, SourceError};
use crate::config::Pkcs11Config;

/// Loads and initialises `module` once per process.
fn module(path: &Path) -> Result<Pkcs11, SourceError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut m = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = m.get(path) {
        return Ok(p.clone());
    }
    let p = Pkcs11::new(path).map_err(|e| {
        SourceError::Fatal(format!(
            "cannot load PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SourceError::Fatal(format!(
                "PKCS#11 module {} failed to initialise: {e}",
                path.display()
            )));
        }
    }
    m.insert(path.to_owned(), p.clone());
    Ok(p)
}

/// An HSM's RNG.
pub struct Pkcs11Source {
    meta: Meta,
    inner: Arc<Inner>,
}

struct Inner {
    module: PathBuf,
    label: String,
    pin: AuthPin,
    chunk: usize,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Pkcs11Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Source")
            .field("id", &self.meta.id)
            .field("module", &self.inner.module)
            .field("token_label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Source {
    /// Reads the PIN file; the module is loaded and the token opened on first fetch.
    pub fn new(meta: Meta, c: &Pkcs11Config) -> Result<Self, SourceError> {
        let pin = super::read_secret_file(&c.pin_file)?;
        Ok(Self {
            meta,
            inner: Arc::new(Inner {
                module: c.module.clone(),
                label: c.token_label.clone(),
                pin: AuthPin::from(pin.as_str().to_owned()),
                chunk: c.chunk_bytes,
                session: Mutex::new(None),
            }),
        })
    }
}

impl Inner {
    fn open_session(&self) -> Result<Session, SourceError> {
        let p = module(&self.module)?;
        let slots = p
            .get_slots_with_token()
            .map_err(|e| SourceError::Unavailable(format!("C_GetSlotList: {e}")))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                p.get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == self.label)
            })
            .ok_or_else(|| {
                SourceError::Fatal(format!(
                    "no token labelled {:?} in {}",
                    self.label,
                    self.module.display()
                ))
            })?;
        let session = p
            .open_ro_session(slot)
            .map_err(|e| SourceError::Unavailable(format!("C_OpenSession: {e}")))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(SourceError::Fatal(format!(
                "the PIN for token {:?} was refused (CKR_PIN_INCORRECT)",
                self.label
            ))),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(SourceError::Fatal(format!(
                "the PIN for token {:?} is locked (CKR_PIN_LOCKED)",
                self.label
            ))),
            Err(e) => Err(SourceError::Unavailable(format!("C_Login: {e}"))),
        }
    }

    fn fill(&self, out: &mut [u8]) -> Result<(), SourceError> {
        let mut guard = super::try_lock(&self.session, "C_GenerateRandom")?;

        if guard.is_none() {
            *guard = Some(self.open_session()?);
        }
        let session = guard
            .as_ref()
            .ok_or_else(|| SourceError::Failed("no session".into()))?;
        for chunk in out.chunks_mut(self.chunk) {
            if let Err(e) = session.generate_random_slice(chunk) {
                // Reopen on the next fetch: the token may have gone and come back.
                *guard = None;
                return Err(SourceError::Unavailable(format!("C_GenerateRandom: {e}")));
            }
        }
        Ok(())
    }
}

impl Source for Pkcs11Source {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn fetch(&self, n: usize) -> FetchFuture<'_> {
        let inner = self.inner.clone();
        super::fetch_blocking(n, "PKCS#11", move |buf| inner.fill(buf))
    }
}
