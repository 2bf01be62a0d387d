//! The random driver's ioctls on /dev/random, each declared with nix's macros next to its one
//! safe wrapper. The only `unsafe` of the kernel feeder lives here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::libc::c_int;

// RNDGETENTCNT: _IOR('R', 0x00, int).
nix::ioctl_read!(rnd_get_ent_cnt, b'R', 0x00, c_int);
// RNDADDENTROPY: _IOW('R', 0x03, int[2]). `struct rand_pool_info` ends in a flexible array, so
// the number encodes only the two-int header; the kernel reads `buf_size` bytes after it.
nix::ioctl_write_ptr_bad!(
    rnd_add_entropy,
    nix::request_code_write!(b'R', 0x03, std::mem::size_of::<[c_int; 2]>()),
    c_int
);
// RNDRESEEDCRNG: _IO('R', 0x07).
nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// The kernel's entropy estimate in bits (`entropy_avail`).
pub fn entropy_count(f: &File) -> io::Result<i32> {
    let mut v: c_int = 0;
    // SAFETY: `f` is an open descriptor and `v` is a valid, writable c_int that outlives the call;
    // RNDGETENTCNT writes exactly one int.
    unsafe { rnd_get_ent_cnt(f.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// Mixes `bytes` into the input pool and credits `bits` of entropy (RNDADDENTROPY).
pub fn add_entropy(f: &File, bytes: &[u8], bits: u32) -> io::Result<()> {
    let count = c_int::try_from(bits).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let size =
        c_int::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }`, built in c_int
    // words so the header is aligned; the tail is zero padding the kernel does not read.
    let words = 2 + bytes.len().div_ceil(4);
    let mut info = zeroize::Zeroizing::new(vec![0 as c_int; words]);
    info[0] = count;
    info[1] = size;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = c_int::from_ne_bytes(w);
    }
    // SAFETY: `info` holds the two-int header followed by at least `buf_size` bytes, all
    // initialised, and lives until the call returns; the kernel only reads it.
    unsafe { rnd_add_entropy(f.as_raw_fd(), info.as_ptr()) }?;
    Ok(())
}

/// Forces the CRNG to reseed from the input pool now (RNDRESEEDCRNG).
pub fn reseed_crng(f: &File) -> io::Result<()> {
    // SAFETY: RNDRESEEDCRNG takes no argument; `f` is an open descriptor.
    unsafe { rnd_reseed_crng(f.as_raw_fd()) }?;
    Ok(())
}

/// Whether the kernel's CRNG is initialised: `getrandom(GRND_NONBLOCK)` succeeds only then.
pub fn crng_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: the buffer is valid for writes of its length for the duration of the call.
    let r =
        unsafe { nix::libc::getrandom(b.as_mut_ptr().cast(), b.len(), nix::libc::GRND_NONBLOCK) };
    r == 1
}
