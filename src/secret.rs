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

    /// Appends `bytes`, growing by hand when the capacity is short: the bytes are copied into a
    /// larger buffer and the old one is zeroed before it is freed, so no unzeroed copy is left
    /// behind (a plain `Vec` reallocation would free the old allocation as it is).
    pub fn append(&mut self, bytes: &[u8]) {
        let need = self.0.len() + bytes.len();
        if need > self.0.capacity() {
            let mut grown = Vec::with_capacity(need.max(self.0.capacity().saturating_mul(2)));
            grown.extend_from_slice(&self.0);
            // The old buffer is zeroed (spare capacity included) as `Zeroizing` drops it.
            drop(std::mem::replace(&mut self.0, Zeroizing::new(grown)));
        }
        self.0.extend_from_slice(bytes);
    }

    /// Shortens to `len` bytes, zeroing what is cut off.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }

    /// The buffer itself, still zeroed on drop (to hand to an owner such as `Bytes::from_owner`).
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
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

/// A request or response body that holds entropy, as `Bytes` whose buffer is zeroed when the
/// last reference (hyper's, reqwest's) drops, not just freed.
pub fn body_bytes(bytes: Zeroizing<Vec<u8>>) -> bytes::Bytes {
    bytes::Bytes::from_owner(ZeroOnDrop(bytes))
}

struct ZeroOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
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
    fn append_grows_and_keeps_every_byte() {
        let mut s = SecretBytes::new(Vec::with_capacity(3));
        let mut want = Vec::new();
        for i in 0..200u8 {
            s.append(&[i; 7]);
            want.extend_from_slice(&[i; 7]);
        }
        assert_eq!(s.expose(), &want[..]);
        s.truncate(10);
        assert_eq!(s.expose(), &want[..10]);
    }

    #[test]
    fn wipe_zeroes() {
        let mut s = SecretBytes::new(vec![7; 16]);
        s.wipe();
        assert!(s.expose().iter().all(|&b| b == 0));
    }
}
