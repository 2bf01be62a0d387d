//! Buffers that hold entropy or key material.
//!
//! A [`SecretBytes`] zeroes its memory when dropped, is neither `Clone` nor printable (its `Debug`
//! shows only the length), and so cannot reach a log line by accident. Process-wide protection
//! (memory locking, exclusion from core dumps) is [`harden_process`]'s job.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Owned secret bytes, zeroed on drop.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroed when this value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// `len` zero bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        Self(Zeroizing::new(vec![0; len]))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Appends `bytes`. Reserve first: a reallocation would leave an unzeroed copy behind.
    pub fn extend(&mut self, bytes: &[u8]) {
        debug_assert!(
            self.0.capacity() - self.0.len() >= bytes.len(),
            "reserve first"
        );
        self.0.extend_from_slice(bytes);
    }

    /// Zeroes the contents now (they are zeroed again on drop).
    pub fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Default for SecretBytes {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// What [`harden_process`] managed to do, for the log and `/api/rng/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Hardening {
    /// Core dumps disabled (`PR_SET_DUMPABLE` = 0).
    pub no_core_dumps: bool,
    /// All current and future memory locked (`mlockall`).
    pub memory_locked: bool,
}

/// Locks the process's memory (so entropy is never swapped) and excludes it from core dumps.
///
/// Each step is best effort: an unprivileged run without `RLIMIT_MEMLOCK` cannot lock memory. The
/// result says which steps held so the caller can log it.
pub fn harden_process() -> Hardening {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    let no_core_dumps = nix::sys::prctl::set_dumpable(false).is_ok();
    let memory_locked = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).is_ok();
    Hardening {
        no_core_dumps,
        memory_locked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_length_only() {
        let s = SecretBytes::new(vec![0xAB; 4]);
        let shown = format!("{s:?}");
        assert_eq!(shown, "SecretBytes(4 bytes)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn wipe_zeroes() {
        let mut s = SecretBytes::new(vec![7; 16]);
        s.wipe();
        assert!(s.expose().iter().all(|&b| b == 0));
    }
}
