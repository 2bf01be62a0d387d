//! Pool memory from `memfd_secret(2)`: pages removed from the kernel's direct map, never swapped,
//! unreadable by other processes (root's `/proc/PID/mem` included) and left out of core dumps.
//!
//! Each admitted chunk gets its own secret mapping; where the kernel lacks `memfd_secret` (before
//! 5.14, `secretmem.enable=0`) or RLIMIT_MEMLOCK is too small, the pool keeps chunks on the heap,
//! which `harden_process` locks and excludes from dumps. The daemon logs which one it uses.
#![allow(unsafe_code)]

use std::num::NonZeroUsize;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// One `memfd_secret` mapping, owned exclusively; zeroed and unmapped on drop.
pub struct SecretRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone (no other pointer to it escapes), so moving it
// to another thread or sharing `&SecretRegion` (read-only access) is as safe as for a Box<[u8]>.
unsafe impl Send for SecretRegion {}
// SAFETY: see `Send`; `&self` gives only shared read access.
unsafe impl Sync for SecretRegion {}

impl SecretRegion {
    /// Maps `len` bytes of secret memory (zero-filled by the kernel).
    pub fn new(len: usize) -> std::io::Result<Self> {
        let size = NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty region"))?;
        // SAFETY: memfd_secret takes one flags argument (0 here) and returns a new descriptor or
        // -1 with errno set; no memory is passed to the kernel.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_memfd_secret, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("descriptor out of range"))?;
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let off = i64::try_from(len).map_err(|_| std::io::Error::other("region too large"))?;
        nix::unistd::ftruncate(&fd, off)?;
        // SAFETY: a new shared read-write mapping of a descriptor we own, at an address the kernel
        // chooses; it aliases no Rust object. The mapping outlives `fd`, which may be closed.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// True when this kernel hands out secret memory to this process.
    pub fn available() -> bool {
        Self::new(4096).is_ok()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SecretRegion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.as_mut_slice());
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped once, here; no
        // slice borrowed from it can outlive `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl std::fmt::Debug for SecretRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretRegion({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_round_trip_where_the_kernel_allows() {
        match SecretRegion::new(10_000) {
            Ok(mut r) => {
                assert_eq!(r.len(), 10_000);
                assert!(r.as_slice().iter().all(|&b| b == 0));
                r.as_mut_slice()[9_999] = 7;
                assert_eq!(r.as_slice()[9_999], 7);
                assert_eq!(format!("{r:?}"), "SecretRegion(10000 bytes)");
            }
            // Not every kernel has it; the pool then uses the heap (tested by the pool tests).
            Err(e) => eprintln!("memfd_secret unavailable here: {e}"),
        }
        assert!(SecretRegion::new(0).is_err());
    }
}
